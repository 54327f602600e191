"""`factory report`: the planner's HTML page after a real (small) training run."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from factory.adapters.data import write_panel
from factory.adapters.registry.registry import Registry
from factory.adapters.state import read_state
from factory.core.synthetic import PanelSpec, generate_panel, product_ids
from factory.reporting.gather import (
    Headline,
    ProductScore,
    ReportData,
    family_summaries,
    headline,
)
from factory.reporting.page import render_page
from factory.settings import get_settings
from tests.support.fleets import write_fleet
from tests.support.homes import home_in
from tests.test_cli import assert_user_error, invoke

IDS = product_ids(12)
SHORT = IDS[5]  # a new product: too short for the family's backtest, still gets a forecast
SECTIONS = (
    "Fleet error vs the seasonal-naive baseline",
    "Per-family comparison",
    "Chosen products: history, forecast and backtest",
)
PLOTLY_INLINE = "window.PlotlyConfig"  # written once, with the inline plotly.js bundle


@pytest.fixture(scope="module")
def trained(
    prefect_harness: None, local_ray: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict]:
    """One `factory train` run on a 12-product panel with a short product."""
    root = tmp_path_factory.mktemp("cli-report")
    with home_in(root) as home:
        panel = generate_panel(PanelSpec(n_products=12, seed=11, defects={SHORT: "too_short"}))
        write_panel(panel.frame, get_settings().resolved_data_url)
        fleet = write_fleet(root / "fleet.yaml", shard_size=6)
        result = invoke("train", "--fleet", str(fleet))
        assert result.exit_code == 0, result.output
        yield {"root": root, "home": home, "fleet": fleet, "panel": panel.frame}


@pytest.fixture
def env(trained: dict) -> dict:
    """The module's trained home, with settings re-read from its environment."""
    get_settings.cache_clear()
    return trained


def full_history_product() -> str:
    """A product whose registered model had the family's full backtest."""
    state = read_state(get_settings().state_dir)
    full = state[(state["status"] == "registered") & (state["history"] == "full")]
    assert len(full), state[["product_id", "status", "history"]]
    return str(full["product_id"].iloc[0])


def expected_headline() -> str:
    """The fleet headline as the state's scores give it."""
    state = read_state(get_settings().state_dir)
    ratios = (state["score"] / state["baseline"]).where(state["baseline"] > 0).dropna()
    return (
        f"<b>{(ratios < 1).mean():.0%}</b> of {len(ratios):,} scored products beat the "
        f"seasonal-naive baseline; median score / baseline ratio <b>{ratios.median():.2f}</b>"
    )


def served_forecast(pid: str) -> pd.DataFrame:
    """The forecast the product's serving model gives, read through the registry."""
    registry = Registry(get_settings())
    mv, _ = registry.serving_version(pid)
    return registry.model_from(registry.version_files(mv)).forecast()


def as_json(values: pd.Series) -> str:
    """Numbers as the page writes them (3 decimals, JSON list items)."""
    return ",".join(json.dumps(round(float(v), 3)) for v in values)


def report_page(*args: str) -> tuple[Path, str]:
    """Run `factory report`; the written page's path (printed) and text."""
    result = invoke("report", *args)
    assert result.exit_code == 0, result.output
    printed = result.stdout.strip().rsplit(" ", 1)[-1]
    path = Path(printed)
    assert path.is_file(), result.stdout
    return path, path.read_text(encoding="utf-8")


def headings(page: str) -> list[str]:
    """The chosen products, in the page's order."""
    return re.findall(r"<h3>(.*?)</h3>", page)


def test_report_draws_every_section_and_the_served_forecast(env: dict, tmp_path: Path) -> None:
    pid = full_history_product()
    out = tmp_path / "report.html"
    path, page = report_page(
        "--products", f"{pid},{SHORT}", "--fleet", str(env["fleet"]), "--out", str(out)
    )
    assert path == out
    for section in SECTIONS:
        assert section in page
    assert expected_headline() in page
    assert headings(page) == [pid, SHORT]
    assert str(env["fleet"]) in page
    assert page.count(PLOTLY_INLINE) == 1  # plotly.js inline, once: no network needed
    assert not re.search(r"<script[^>]*\bsrc=", page)  # nothing loaded from elsewhere
    forecast = served_forecast(pid)
    assert as_json(forecast["yhat"]) in page
    for level in (80, 95):  # each band: out along the upper bound, back along the lower
        hi, lo = forecast[f"yhat_hi_{level}"], forecast[f"yhat_lo_{level}"]
        assert f"{as_json(hi)},{as_json(lo[::-1])}" in page, level
    for name in ("95% interval", "80% interval", "backtest window 1", "backtest window 2"):
        assert f'"name":"{name}' in page, name
    assert "recomputed on today" in page
    short = page[page.index(f"<h3>{SHORT}</h3>") :]
    assert as_json(served_forecast(SHORT)["yhat"]) in short  # the short product's forecast


def test_report_by_default_shows_the_top_sellers_and_a_short_product(env: dict) -> None:
    state = read_state(get_settings().state_dir)
    with_model = set(state.loc[state["production_version"].notna(), "product_id"])
    panel = env["panel"].sort_values(["unique_id", "ds"])
    volume = panel.groupby("unique_id")["y"].apply(lambda y: y.tail(28).sum())
    top = list(volume[volume.index.isin(with_model)].sort_values(ascending=False).index[:2])

    path, page = report_page("--top", "2", "--fleet", str(env["fleet"]))
    assert path.parent == env["home"] / "reports"
    assert path.name.startswith("report-") and path.suffix == ".html"
    assert headings(page) == [*top, SHORT]


def test_report_of_an_unknown_product_is_one_line_naming_it(env: dict) -> None:
    result = invoke("report", "--products", "NOPE", "--fleet", str(env["fleet"]))
    assert_user_error(result, "NOPE", "unknown product")


def test_report_before_any_training_run_says_to_train_first(factory_home: Path) -> None:
    assert_user_error(invoke("report"), "no training run yet", "factory train")


# --- the pure parts: headline arithmetic, and a page that shows ids as text ---------------------


def score(pid: str, value: float | None, baseline: float | None) -> ProductScore:
    return ProductScore(pid, "fam", "registered", "ridge", "full", value, baseline)


def test_headline_counts_products_beating_the_baseline_and_the_median_ratio() -> None:
    scores = [
        score("a", 0.5, 1.0),  # ratio 0.5
        score("b", 1.2, 1.0),  # 1.2: worse than seasonal naive
        score("c", 0.9, 1.0),  # 0.9
        score("d", 1.0, 1.0),  # 1.0: a tie does not beat it
        score("e", 1.0, None),  # no baseline: not scored
        score("f", 0.8, 0.0),  # a zero baseline has no ratio
    ]
    assert headline(scores) == Headline(scored=4, beating=2, median_ratio=0.95)


def test_the_page_shows_hostile_ids_as_text() -> None:
    hostile = '<script>alert("x")</script>'
    scores = (score(hostile, 0.5, 1.0),)
    data = ReportData(
        created_at=pd.Timestamp("2026-11-22", tz="UTC"),
        fleet_path="fleet.yaml",
        fleet_sha256="0" * 64,
        registry_uri="sqlite:///mlflow.db",
        data_url="data",
        metric="mase",
        scores=scores,
        headline=headline(scores),
        families=family_summaries(scores),
        products=(),
        skipped={hostile: "no registered model"},
    )
    page = render_page(data)
    assert hostile not in page
    assert html.escape(hostile) in page
    assert "<b>100%</b> of 1 scored products" in page
