"""The planner's report as one self-contained HTML page: plotly.js is embedded once (inline, no
network needed), every figure after the first reuses it."""

from __future__ import annotations

import html
from collections.abc import Iterable

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from factory.reporting.gather import (
    BacktestPath,
    FamilySummary,
    ProductScore,
    ProductView,
    ReportData,
)

HISTORY_COLOR = "#3b3b3b"
FORECAST_COLOR = "#1f6fb4"
BAND_COLORS = {"95": "rgba(31, 111, 180, 0.15)", "80": "rgba(31, 111, 180, 0.30)"}
BACKTEST_COLORS = ("#e07b00", "#b5179e", "#2a9d8f", "#8d6e63", "#6a4c93")
PLOT_CONFIG = {"displaylogo": False, "responsive": True}
TEMPLATE = "plotly_white"
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; }
h1 { margin-bottom: 0.2rem; } h2 { margin-top: 2.5rem; border-bottom: 1px solid #ddd; }
.meta { color: #555; } .headline { font-size: 1.25rem; }
table { border-collapse: collapse; font-size: 0.9rem; }
th, td { border: 1px solid #ddd; padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
td.num { text-align: right; } .note { color: #8a5a00; }
"""


class Figures:
    """Turns figures into divs: the first carries plotly.js inline, the others reuse it."""

    def __init__(self) -> None:
        self.count = 0

    def div(self, fig: go.Figure) -> str:
        """One figure as an HTML div (with its script)."""
        self.count += 1
        return pio.to_html(
            fig,
            full_html=False,
            include_plotlyjs=self.count == 1,
            config=PLOT_CONFIG,
            div_id=f"figure-{self.count}",
        )


def render_page(data: ReportData) -> str:
    """The whole report page."""
    figures = Figures()
    body = "\n".join(
        (
            header(data),
            fleet_section(data, figures),
            family_section(data, figures),
            products_section(data, figures),
        )
    )
    title = f"Demand forecast report, {data.created_at:%Y-%m-%d %H:%M} UTC"
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{esc(title)}</title>\n<style>{STYLE}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def esc(value: object) -> str:
    """Text as HTML (plotly's labels take the same escaping)."""
    return html.escape(str(value))


def number(value: float | None, fmt: str = "{:.3f}") -> str:
    """A number for the page; an empty string when missing."""
    return "" if value is None else fmt.format(value)


def counts(values: dict[str, int]) -> str:
    """`registered 12, quarantined 2`."""
    return ", ".join(f"{k} {v}" for k, v in values.items())


def values(array: Iterable[float | None]) -> list[float | None]:
    """Numbers as plain JSON values (plotly writes numpy arrays as base64), 3 decimals; a
    missing or non-finite one as a gap."""
    return [None if v is None or not np.isfinite(v) else round(float(v), 3) for v in array]


def dates(array: Iterable[object]) -> list[str]:
    """Dates as `YYYY-MM-DD` (the factory's frequencies are daily or coarser)."""
    return [pd.Timestamp(d).strftime("%Y-%m-%d") for d in array]


# --- header -------------------------------------------------------------------------------------


def header(data: ReportData) -> str:
    """When, how many products, which fleet.yaml and which registry."""
    return (
        "<h1>Demand forecast report</h1>\n"
        f'<p class="meta">Generated {data.created_at:%Y-%m-%d %H:%M:%S} UTC for '
        f"{len(data.scores):,} products ({esc(counts(data.statuses))}).<br>\n"
        f"Fleet: <code>{esc(data.fleet_path)}</code> (sha256 {esc(data.fleet_sha256[:12])}); "
        f"registry: <code>{esc(data.registry_uri)}</code>; "
        f"sales data: <code>{esc(data.data_url)}</code>.</p>"
    )


# --- fleet --------------------------------------------------------------------------------------


def fleet_section(data: ReportData, figures: Figures) -> str:
    """Headline, the distributions of score and baseline, and of their ratio."""
    metric = data.metric.upper()
    h = data.headline
    parts = [f"<h2>Fleet error vs the seasonal-naive baseline ({esc(metric)})</h2>"]
    if h.share is None or h.median_ratio is None:
        parts.append('<p class="note">No product has a backtest score yet.</p>')
        return "\n".join(parts)
    parts.append(
        f'<p class="headline"><b>{h.share:.0%}</b> of {h.scored:,} scored products beat the '
        f"seasonal-naive baseline; median score / baseline ratio <b>{h.median_ratio:.2f}</b> "
        "(below 1 = better than seasonal naive).</p>"
    )
    parts.append(figures.div(ecdf_figure(data.scores, metric)))
    parts.append(figures.div(ratio_figure(data.scores)))
    return "\n".join(parts)


def ecdf_trace(xs: list[float], name: str, color: str) -> go.Scatter:
    """The empirical CDF of some values as a step line."""
    ordered = sorted(xs)
    shares = [(i + 1) / len(ordered) for i in range(len(ordered))]
    return go.Scatter(
        x=values(ordered),
        y=values(shares),
        name=name,
        mode="lines",
        line={"shape": "hv", "color": color},
    )


def ecdf_figure(scores: tuple[ProductScore, ...], metric: str) -> go.Figure:
    """The share of products at or below each score, for the models and for the baseline."""
    fig = go.Figure()
    model = [s.score for s in scores if s.score is not None]
    baseline = [s.baseline for s in scores if s.baseline is not None]
    if model:
        fig.add_trace(ecdf_trace(model, "winning candidate", FORECAST_COLOR))
    if baseline:
        fig.add_trace(ecdf_trace(baseline, "seasonal naive (baseline)", BACKTEST_COLORS[0]))
    fig.update_layout(
        title=f"{metric} over products (ECDF: share of products at or below)",
        xaxis_title=metric,
        yaxis_title="share of products",
        yaxis_tickformat=".0%",
        height=380,
        template=TEMPLATE,
    )
    return fig


def ratio_figure(scores: tuple[ProductScore, ...]) -> go.Figure:
    """Histogram of score / baseline, with the line at 1."""
    ratios = [r for s in scores if (r := s.ratio) is not None]
    fig = go.Figure(
        go.Histogram(x=values(ratios), nbinsx=40, name="products", marker_color=FORECAST_COLOR)
    )
    fig.add_vline(x=1.0, line_dash="dash", line_color="#c0392b")
    fig.update_layout(
        title="score / baseline per product (left of the line: better than seasonal naive)",
        xaxis_title="score / baseline",
        yaxis_title="products",
        height=340,
        bargap=0.05,
        template=TEMPLATE,
    )
    return fig


# --- families -----------------------------------------------------------------------------------


def family_section(data: ReportData, figures: Figures) -> str:
    """One table row per family, and their median scores side by side."""
    metric = data.metric.upper()
    head = ["family", "products", f"median {metric}", f"median baseline {metric}"]
    head += ["by status", "winning model kind", "history path"]
    rows = "\n".join(family_row(f) for f in data.families)
    table = (
        "<table>\n<tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + f"</tr>\n{rows}\n</table>"
    )
    return "\n".join(
        (
            "<h2>Per-family comparison</h2>",
            table,
            figures.div(family_figure(data.families, metric)),
        )
    )


def family_row(f: FamilySummary) -> str:
    """One family as a table row."""
    cells = [f"<td>{esc(f.name)}</td>", f'<td class="num">{f.products:,}</td>']
    cells += [f'<td class="num">{number(v)}</td>' for v in (f.median_score, f.median_baseline)]
    cells += [f"<td>{esc(counts(c))}</td>" for c in (f.statuses, f.kinds, f.histories)]
    return "<tr>" + "".join(cells) + "</tr>"


def family_figure(families: tuple[FamilySummary, ...], metric: str) -> go.Figure:
    """Median score and median baseline per family, as grouped bars."""
    names = [esc(f.name) for f in families]
    fig = go.Figure(
        [
            go.Bar(
                x=names,
                y=values(f.median_score for f in families),
                name="median winning candidate",
                marker_color=FORECAST_COLOR,
            ),
            go.Bar(
                x=names,
                y=values(f.median_baseline for f in families),
                name="median seasonal naive",
                marker_color=BACKTEST_COLORS[0],
            ),
        ]
    )
    fig.update_layout(
        barmode="group",
        title=f"median {metric} per family",
        yaxis_title=metric,
        height=340,
        template=TEMPLATE,
    )
    return fig


# --- products -----------------------------------------------------------------------------------


def products_section(data: ReportData, figures: Figures) -> str:
    """Each chosen product's figure and caption; the products skipped, with why."""
    parts = ["<h2>Chosen products: history, forecast and backtest</h2>"]
    if not data.products and not data.skipped:
        parts.append('<p class="note">No product with a model to show.</p>')
    for view in data.products:
        parts.append(f"<h3>{esc(view.product_id)}</h3>")
        parts.append(f'<p class="meta">{esc(caption(view))}</p>')
        parts += [f'<p class="note">{esc(n)}</p>' for n in view.notes]
        parts.append(figures.div(product_figure(view)))
    if data.skipped:
        items = "".join(
            f"<li><b>{esc(pid)}</b>: skipped, {esc(why)}</li>" for pid, why in data.skipped.items()
        )
        parts.append(f'<ul class="note">{items}</ul>')
    return "\n".join(parts)


def caption(view: ProductView) -> str:
    """Family, model, serving version and scores of a chosen product."""
    metric = view.metric.upper()
    text = (
        f"family {view.family}; {view.kind} model, {view.model_name} version {view.version} "
        f"(@{view.alias}); history path {view.history_path or 'unknown'}. "
        f"Backtest {metric} at training {number(view.score)} vs seasonal naive "
        f"{number(view.baseline)}"
    )
    if view.backtest_score is not None:
        text += f"; recomputed on today's data {number(view.backtest_score)}"
    return text + "."


def product_figure(view: ProductView) -> go.Figure:
    """History, forecast with its 95% and 80% bands, and every backtest window's forecast."""
    fig = go.Figure()
    f = view.forecast
    for level in ("95", "80"):
        lo, hi = f.get(f"yhat_lo_{level}"), f.get(f"yhat_hi_{level}")
        if lo is not None and hi is not None and bool(lo.notna().any()):
            fig.add_trace(band_trace(f["ds"], lo, hi, level))
    fig.add_trace(
        go.Scatter(
            x=dates(view.history["ds"]),
            y=values(view.history["y"]),
            name="history",
            mode="lines",
            line={"color": HISTORY_COLOR, "width": 1.5},
        )
    )
    for i, path in enumerate(view.backtests):
        fig.add_trace(backtest_trace(path, i, view.metric.upper()))
    fig.add_trace(
        go.Scatter(
            x=dates(f["ds"]),
            y=values(f["yhat"]),
            name=f"forecast (version {esc(view.version)})",
            mode="lines",
            line={"color": FORECAST_COLOR, "width": 2.5},
        )
    )
    fig.update_layout(
        title=f"{esc(view.product_id)}: history, forecast and backtest",
        yaxis_title="demand",
        height=420,
        hovermode="x unified",
        template=TEMPLATE,
    )
    return fig


def band_trace(ds: pd.Series, lo: pd.Series, hi: pd.Series, level: str) -> go.Scatter:
    """A prediction interval as one shaded polygon (upper bound out, lower bound back)."""
    x = dates(ds)
    return go.Scatter(
        x=x + x[::-1],
        y=values(hi) + values(lo)[::-1],
        name=f"{level}% interval",
        fill="toself",
        fillcolor=BAND_COLORS[level],
        line={"width": 0},
        hoverinfo="skip",
    )


def backtest_trace(path: BacktestPath, i: int, metric: str) -> go.Scatter:
    """One backtest window's forecast, dashed, with its score in the legend."""
    score = f" ({metric} {path.score:.2f})" if path.score is not None else ""
    return go.Scatter(
        x=dates(path.ds),
        y=values(path.yhat),
        name=f"backtest window {i + 1}{score}",
        mode="lines",
        line={"color": BACKTEST_COLORS[i % len(BACKTEST_COLORS)], "dash": "dash"},
    )
