"""Landing merge and delivery checks: upsert never loses or duplicates; bad products held back."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from factory.core.contract import validate_rows
from factory.core.landing import upsert
from tests.support.fleets import as_of


def rows(*items: tuple[str, str, float]) -> pd.DataFrame:
    """A small panel from (product, date, y) triples."""
    return pd.DataFrame(
        {
            "unique_id": pd.array([i[0] for i in items], dtype="string"),
            "ds": pd.to_datetime([i[1] for i in items]),
            "y": [float(i[2]) for i in items],
        }
    )


# --- upsert: never loses, never duplicates ------------------------------------------------------


HISTORY = rows(("a", "2026-01-01", 1), ("a", "2026-01-02", 2), ("b", "2026-01-01", 5))


@pytest.mark.parametrize(
    ("batch", "added", "changed", "affected", "expected"),
    [
        pytest.param(
            rows(("a", "2026-01-03", 3)),
            1,
            0,
            ["a"],
            {
                ("a", "2026-01-01"): 1,
                ("a", "2026-01-02"): 2,
                ("a", "2026-01-03"): 3,
                ("b", "2026-01-01"): 5,
            },
            id="new day",
        ),
        pytest.param(
            rows(("b", "2026-01-01", 7)),
            0,
            1,
            ["b"],
            {("a", "2026-01-01"): 1, ("a", "2026-01-02"): 2, ("b", "2026-01-01"): 7},
            id="correction",
        ),
        pytest.param(
            rows(("a", "2026-01-02", 2), ("b", "2026-01-01", 5)),
            0,
            0,
            [],
            {("a", "2026-01-01"): 1, ("a", "2026-01-02"): 2, ("b", "2026-01-01"): 5},
            id="identical rows",
        ),
        pytest.param(
            rows(("c", "2026-01-01", 1), ("c", "2026-01-01", 4)),
            1,
            0,
            ["c"],
            {
                ("a", "2026-01-01"): 1,
                ("a", "2026-01-02"): 2,
                ("b", "2026-01-01"): 5,
                ("c", "2026-01-01"): 4,
            },
            id="last row of a repeated key wins",
        ),
    ],
)
def test_upsert(batch, added, changed, affected, expected) -> None:
    merged, diff = upsert(HISTORY, batch)
    got = {(r.unique_id, str(r.ds.date())): r.y for r in merged.itertuples()}
    assert got == expected
    assert not merged.duplicated(["unique_id", "ds"]).any()
    assert (diff.added, diff.changed, diff.product_ids) == (added, changed, affected)
    assert diff.added + diff.changed + diff.unchanged == len(
        batch.drop_duplicates(["unique_id", "ds"])
    )


def test_upsert_treats_missing_values_as_equal_and_keeps_dtypes() -> None:
    history = HISTORY.assign(promo=[np.nan, 1.0, 0.0])
    batch = rows(("a", "2026-01-01", 1)).assign(promo=[np.nan])
    merged, diff = upsert(history, batch)
    assert diff.product_ids == [] and len(merged) == 3
    assert merged.dtypes.to_dict() == history.dtypes.to_dict()


def test_upsert_into_an_empty_history() -> None:
    merged, diff = upsert(pd.DataFrame(), HISTORY)
    assert len(merged) == 3 and diff.added == 3 and diff.product_ids == ["a", "b"]


# --- validation of a delivery ---------------------------------------------------------------------


def test_validate_rows_holds_back_whole_bad_products_with_reasons() -> None:
    batch = rows(
        ("a", "2026-01-01", 1),
        ("a", "2026-01-02", -1),
        ("b", "2026-01-01", 2),
        ("c", "2026-01-01", 1),
        ("c", "2026-01-01", 2),
        ("d", "2027-01-01", 1),
    )
    clean, reasons = validate_rows(batch, as_of())
    assert sorted(clean["unique_id"]) == ["b"]
    assert "negative y" in reasons["a"][0]
    assert "duplicated" in reasons["c"][0]
    assert "future" in reasons["d"][0]
