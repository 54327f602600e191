"""The demand planner's report: one self-contained HTML page (`factory report`, and linked from
each train-fleet run's summary)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from factory.adapters.files import atomic_write
from factory.settings import Settings

DEFAULT_TOP = 6  # products shown by default: the most recent sales volume among those with a model


def default_path(settings: Settings, now: pd.Timestamp | None = None) -> Path:
    """`<home>/reports/report-<UTC timestamp>.html`."""
    stamp = (now or pd.Timestamp.now(tz="UTC")).strftime("%Y%m%dT%H%M%SZ")
    return settings.resolved_home / "reports" / f"report-{stamp}.html"


def write_report(
    settings: Settings,
    products: list[str] | None = None,
    out: Path | None = None,
    *,
    top: int = DEFAULT_TOP,
    fleet_path: Path | str = Path("fleet.yaml"),
) -> Path:
    """Gather the fleet's scores, the chosen products' forecasts and backtests, write the page
    (to `out`, a file or a folder, else under `<home>/reports`) and return its path.

    `products` None: the `top` products by recent sales among those with a model, plus up to
    two short-history ones. Raises a UserError before any training run, or for products the
    factory has no record of."""
    from factory.reporting.gather import gather_report
    from factory.reporting.page import render_page

    data = gather_report(settings, products, top, fleet_path)
    target = out if out is not None else default_path(settings, data.created_at)
    if target.is_dir():
        target = target / default_path(settings, data.created_at).name
    page = render_page(data).encode("utf-8")
    atomic_write(target.absolute(), lambda fh: fh.write(page))
    return target.absolute()
