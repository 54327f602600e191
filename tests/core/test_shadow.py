"""Shadow evidence: a challenger's and production's realized WAPE on the same actuals (hand-
checked), attached to the promotion change it describes and shown in the approver's table."""

from __future__ import annotations

import pandas as pd
import pytest

from factory.core.drift import (
    DriftSpec,
    ProductionModel,
    ShadowEvidence,
    assess_fleet,
    shadow_wapes,
)
from factory.core.fleet import PromotionSpec
from factory.core.promotion import Change, blast_radius, describe, with_shadow_evidence
from factory.core.repair import VersionInfo

CUTOFF = pd.Timestamp("2026-03-31")


def frame(values: list[float], name: str, start: str = "2026-04-01") -> pd.DataFrame:
    return pd.DataFrame({"ds": pd.date_range(start, periods=len(values)), name: values})


@pytest.mark.parametrize(
    ("y", "serving", "shadow", "period", "expected"),
    [
        # two periods of 2: serving |2|+|0|+|0|+|2| / 40 = 0.1; shadow |1|*4 / 40 = 0.1
        ([10, 10, 10, 10], [8, 10, 10, 12], [9, 11, 9, 11], 2, (2, 0.1, 0.1)),
        # the incomplete last period is left out of both
        ([10, 10, 10, 10, 10], [10, 10, 10, 10, 0], [5, 5, 5, 5, 10], 2, (2, 0.5, 0.0)),
        ([10, 10], [10, 10], [10, 10], 7, (0, None, None)),  # no complete period yet
    ],
)
def test_shadow_wapes(y, serving, shadow, period, expected) -> None:
    periods, theirs, ours = shadow_wapes(
        frame(y, "y"), frame(serving, "yhat"), frame(shadow, "yhat"), period
    )
    assert (periods, theirs, ours) == (expected[0], *map(_approx, expected[1:]))


def _approx(v: float | None) -> object:
    return None if v is None else pytest.approx(v)


def test_only_dates_both_versions_forecast_and_with_actuals_are_compared() -> None:
    y = frame([10.0] * 10, "y")
    serving = frame([10.0] * 10, "yhat")  # perfect on every date
    shadow = frame([20.0] * 4, "yhat", start="2026-04-05")  # trained later: starts on day 5
    assert shadow_wapes(y, serving, shadow, 2) == (2, pytest.approx(1.0), pytest.approx(0.0))


MODEL = ProductionModel("p", "f.production.p", "3", 0.1, CUTOFF)


def test_assess_fleet_records_the_challengers_error_beside_productions() -> None:
    history = pd.concat(
        [frame([10.0] * 90, "y", "2026-01-01"), frame([10.0] * 14, "y")], ignore_index=True
    ).assign(unique_id="p")
    rows = pd.concat(
        [
            frame([10.0] * 14, "yhat").assign(model_name="f.production.p", model_version="3"),
            frame([12.0] * 14, "yhat").assign(model_name="f.staging.p", model_version="5"),
            frame([99.0] * 14, "yhat").assign(model_name="f.staging.p", model_version="4"),
        ]
    ).assign(unique_id="p")
    shadows = {"p": ("f.staging.p", "5")}
    (out,) = assess_fleet({"p": MODEL}, history, rows, DriftSpec(psi_threshold=9), shadows)
    assert out.shadow == ShadowEvidence(
        shadow_version="5", serving_version="3", periods=2, shadow_wape=0.2, serving_wape=0.0
    )
    assert "shadow v5 WAPE 0.200 vs serving v3 0.000 over 2 period(s)" in out.detail
    (plain,) = assess_fleet({"p": MODEL}, history, rows, DriftSpec(psi_threshold=9))
    assert plain.shadow is None  # no challenger asked for: nothing compared


def change(pid: str, staging: int, production: int | None) -> Change:
    prod = None if production is None else VersionInfo(production, "old")
    return Change(
        pid, "daily", f"f.staging.{pid}", VersionInfo(staging, "new"), f"f.production.{pid}", prod
    )


EVIDENCE = ShadowEvidence(
    shadow_version="5", serving_version="3", periods=4, shadow_wape=0.12, serving_wape=0.2
)


@pytest.mark.parametrize(
    ("staging", "production", "attached"),
    [
        (5, 3, True),
        (6, 3, False),  # a newer winner than the one that was shadowed
        (5, 2, False),  # production moved since the comparison
        (5, None, False),  # a first production model has nothing to compare with
    ],
)
def test_evidence_attaches_only_to_the_versions_it_compared(
    staging: int, production: int | None, attached: bool
) -> None:
    (out,) = with_shadow_evidence([change("p", staging, production)], {"p": EVIDENCE})
    assert (out.shadow == EVIDENCE) is attached


def test_the_approvers_table_shows_shadow_and_production_wape_when_there_is_evidence() -> None:
    changes = with_shadow_evidence([change("p", 5, 3), change("q", 2, 1)], {"p": EVIDENCE})
    text = describe(blast_radius(changes, PromotionSpec(), "mase", 10), "B")
    assert "| shadow WAPE | production WAPE | shadow periods | note |" in text
    rows = {
        line.split("|")[1].strip(" `"): [c.strip() for c in line.strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith("| `")
    }
    assert rows["p"][8:11] == ["0.12", "0.2", "4"]
    assert rows["q"][8:11] == ["-", "-", "-"]
    plain = describe(blast_radius([change("q", 2, 1)], PromotionSpec(), "mase", 10), "B")
    assert "shadow WAPE" not in plain  # no evidence in the batch: the table as before
