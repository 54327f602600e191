"""Turn the modes' measurements into rows, ratios, targets and checks; print and save them."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from procmem import TreePeak
from rich.console import Console
from rich.table import Table
from workload import WorkerResult

GIB = 1024**3
STAGES = ("validation", "backtest", "fit", "registry")


@dataclass
class ModeRun:
    """One mode as bench/run.py ran it: the worker's own numbers plus what the parent saw."""

    key: str
    label: str
    result: WorkerResult
    process_s: float  # the worker process's whole life: interpreter, imports, Ray start/stop
    peak: TreePeak
    cpu_s: float  # user + system CPU of the worker's tree (see meta cpu_definition)
    cpu_rusage_s: float  # os.wait4's share of it: the worker and descendants it reaped
    server_cpu_s: float  # CPU the Prefect server spent meanwhile
    task_runs: int  # Prefect task runs of its flow run, from the server's REST API
    flow_state: str | None
    load_avg: tuple[float, float]  # 1-minute load average before and after (noise)
    timeline: dict[str, float] = field(default_factory=dict)  # train-fleet runs only


@dataclass(frozen=True)
class TaskSpan:
    """One Prefect task run: its name and when it ran, in seconds after its flow run started."""

    name: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Row:
    """One line of the results table."""

    key: str
    label: str
    products: int
    models: int
    wall_s: float
    process_s: float | None
    models_per_s: float
    cpu_s: float | None
    peak_rss_gib: float
    peak_pss_gib: float
    task_runs: int
    note: str = ""


@dataclass(frozen=True)
class Target:
    """A goal from the issue, reported (never asserted)."""

    name: str
    goal: str
    value: str
    met: bool
    note: str = ""


@dataclass
class Report:
    """Everything one benchmark run found."""

    meta: dict[str, Any]
    runs: dict[str, ModeRun]
    rows: list[Row] = field(default_factory=list)
    ratios: dict[str, float] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)


def _named(spans: list[TaskSpan], prefix: str) -> list[TaskSpan]:
    return [s for s in spans if s.name.startswith(prefix)]


def factory_timeline(spans: list[TaskSpan], flow_s: float, shard_size: int) -> dict[str, float]:
    """Where a train-fleet run's time went, in seconds, from its task runs' start and end."""
    out = {"flow run, start to end": flow_s}
    steps = {
        "validate-data": "validate-data task (read, validate, start Ray, stage shards)",
        "fetch_champions": "fetch_champions task (registry search)",
    }
    for prefix, step in steps.items():
        for span in _named(spans, prefix):
            out[step] = span.end_s - span.start_s
    ends = sorted(s.end_s for s in _named(spans, "train-"))
    if ends:
        out["first shard done (trained + registered)"] = ends[0]
        out["last shard done"] = ends[-1]
    if len(ends) > 1:
        every = (ends[-1] - ends[0]) / (len(ends) - 1)
        out["then one shard done every"] = every
        out[f"  = ms per product (shard_size {shard_size})"] = 1000 * every / shard_size
    if ends:
        out["after the last shard (state, artifacts)"] = flow_s - ends[-1]
    return out


def mode_row(run: ModeRun, note: str = "") -> Row:
    """A measured mode as a table row; models/s counts every product of the fleet handled."""
    r = run.result
    return Row(
        run.key,
        run.label,
        r.products,
        r.models,
        r.wall_s,
        run.process_s,
        r.products / r.wall_s,
        run.cpu_s + run.server_cpu_s,
        run.peak.rss_bytes / GIB,
        run.peak.pss_bytes / GIB,
        run.task_runs,
        note,
    )


def extrapolated_row(measured: Row, products: int) -> Row:
    """A measured row scaled linearly to `products` (memory stays as measured)."""
    scale = products / measured.products
    return Row(
        f"{measured.key}_extrapolated",
        f"{measured.label}, extrapolated",
        products,
        round(measured.models * scale),
        measured.wall_s * scale,
        None,
        measured.models_per_s,
        None if measured.cpu_s is None else measured.cpu_s * scale,
        measured.peak_rss_gib,
        measured.peak_pss_gib,
        round(measured.task_runs * scale),
        f"naive measured on {measured.products}, extrapolated linearly; memory as measured",
    )


def build_rows(runs: dict[str, ModeRun], products: int) -> list[Row]:
    """Rows in display order, with the naive mode also extrapolated to the full fleet."""
    notes = {
        "raw": "no Prefect, no Ray, no MLflow",
        "factory": "train-fleet, registry included, fresh home",
        "rerun": "same data: every product should be skipped",
        "rerun_changed": "newest value of 1% of products changed",
        "naive": "one @task per product + default MLflow log_model (requirement inference)",
    }
    rows = [mode_row(run, notes.get(key, "")) for key, run in runs.items()]
    naive = next((r for r in rows if r.key == "naive"), None)
    if naive is not None:
        rows.insert(rows.index(naive) + 1, extrapolated_row(naive, products))
    return rows


def compute_ratios(rows: dict[str, Row]) -> dict[str, float]:
    """Wall-time ratios between modes (naive taken at its extrapolated full-fleet time)."""
    factory = rows["factory"].wall_s
    out = {
        "factory/raw": factory / rows["raw"].wall_s,
        "naive/factory": rows["naive_extrapolated"].wall_s / factory,
        "rerun/full": rows["rerun"].wall_s / factory,
        "rerun_changed/full": rows["rerun_changed"].wall_s / factory,
    }
    raw_process, factory_process = rows["raw"].process_s, rows["factory"].process_s
    if raw_process and factory_process:
        out["factory/raw (whole process)"] = factory_process / raw_process
    raw_cpu, factory_cpu = rows["raw"].cpu_s, rows["factory"].cpu_s
    if raw_cpu and factory_cpu:
        out["factory/raw (CPU)"] = factory_cpu / raw_cpu
    return out


def evaluate_targets(rows: dict[str, Row], ratios: dict[str, float], products: int) -> list[Target]:
    """The issue's targets against this run (most are stated for one fleet size)."""
    at = f"measured at {products:,} products"
    factory = rows["factory"]
    per_50 = factory.task_runs / (products / 50)
    peak = max(rows[k].peak_rss_gib for k in ("factory", "rerun", "rerun_changed"))
    return [
        Target(
            "factory vs raw",
            "factory wall <= 1.3 x raw (at 10,000)",
            f"{ratios['factory/raw']:.2f} x",
            ratios["factory/raw"] <= 1.3,
            at,
        ),
        Target(
            "factory vs naive",
            "factory >= 5 x faster than naive (at 1,000)",
            f"{ratios['naive/factory']:.1f} x",
            ratios["naive/factory"] >= 5,
            f"{at}; naive extrapolated",
        ),
        Target(
            "peak memory",
            "<= 6 GiB",
            f"{peak:.2f} GiB",
            peak <= 6,
            "summed RSS of the flow's process tree + Prefect server",
        ),
        Target(
            "task runs",
            "<= 1 per 50 products per flow run",
            f"{factory.task_runs} ({per_50:.2f} per 50)",
            per_50 <= 1,
            at,
        ),
        Target(
            "skip-unchanged rerun",
            "<= 5% of a full run",
            f"{ratios['rerun/full']:.1%}",
            ratios["rerun/full"] <= 0.05,
            at,
        ),
    ]


def run_checks(runs: dict[str, ModeRun], expected_changed: int) -> dict[str, Any]:
    """Sanity checks: identical work, skips, retrained count, code and flow states."""
    res = {k: r.result for k, r in runs.items()}
    rerun, changed = res["rerun"], res["rerun_changed"]
    retrained = changed.products - changed.counts.get("skipped", 0)
    prefect_runs = [runs[k] for k in ("factory", "rerun", "rerun_changed", "naive")]
    return {
        "raw and factory did identical work (outcome digest)": res["raw"].outcome_digest
        == res["factory"].outcome_digest,
        "rerun skipped every product": {k: v for k, v in rerun.counts.items() if v}
        == {"skipped": rerun.products},
        "retrained after the change": retrained,
        "expected retrained (1%)": expected_changed,
        "retrained exactly the changed products": retrained == expected_changed,
        "one code snapshot for all modes": len({r.code_fingerprint for r in res.values()}) == 1,
        "flow runs completed": all(r.flow_state == "Completed" for r in prefect_runs),
        "API task runs == flow's own count": all(
            runs[k].task_runs == res[k].flow_task_runs
            for k in ("factory", "rerun", "rerun_changed")
        ),
    }


def build_report(meta: dict[str, Any], runs: dict[str, ModeRun], expected_changed: int) -> Report:
    """Rows, ratios, targets and checks for one benchmark run."""
    report = Report(meta, runs, build_rows(runs, meta["products"]))
    by_key = {r.key: r for r in report.rows}
    report.ratios = compute_ratios(by_key)
    report.targets = evaluate_targets(by_key, report.ratios, meta["products"])
    report.checks = run_checks(runs, expected_changed)
    return report


def _num(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def outcomes_text(counts: dict[str, int]) -> str:
    """Non-zero outcome counts, e.g. `95 registered, 5 rejected`."""
    return ", ".join(f"{v:,} {k}" for k, v in sorted(counts.items()) if v)


def modes_table(rows: list[Row], runs: dict[str, ModeRun]) -> Table:
    """The per-mode results as a rich table."""
    table = Table(title="Modes (wall = the timed call; process = the worker's whole life)")
    table.add_column("mode")
    for col in ("products", "models", "wall s", "process s", "CPU s", "models/s"):
        table.add_column(col, justify="right")
    for col in ("peak RSS GiB", "peak PSS GiB", "task runs", "load 1m"):
        table.add_column(col, justify="right")
    table.add_column("outcomes")
    for r in rows:
        run = runs.get(r.key)
        table.add_row(
            r.label,
            f"{r.products:,}",
            f"{r.models:,}",
            f"{r.wall_s:,.1f}",
            _num(r.process_s, ",.1f"),
            _num(r.cpu_s, ",.0f"),
            f"{r.models_per_s:,.1f}",
            f"{r.peak_rss_gib:.2f}",
            f"{r.peak_pss_gib:.2f}",
            f"{r.task_runs:,}",
            f"{run.load_avg[0]:.1f}-{run.load_avg[1]:.1f}" if run else "",
            outcomes_text(run.result.counts) if run else "",
        )
    return table


def print_notes(console: Console, report: Report) -> None:
    """What each mode is, under the modes table."""
    for r in report.rows:
        console.print(f"  {r.label}: {r.note}", highlight=False)
    for note in report.runs["naive"].result.notes:
        console.print(f"  naive: {note}", highlight=False)
    console.print(f"  models/s: {report.meta['models_per_s_definition']}", highlight=False)
    console.print(f"  memory: {report.meta['memory_method']}", highlight=False)
    console.print(f"  CPU s: {report.meta['cpu_definition']}", highlight=False)
    console.print("  load 1m: the machine's 1-minute load average before-after", highlight=False)


def targets_table(report: Report) -> Table:
    """Ratios and the issue's targets."""
    table = Table(title="Ratios and targets (reported, not asserted)")
    for col in ("target", "goal", "value", "met", "note"):
        table.add_column(col)
    for t in report.targets:
        table.add_row(t.name, t.goal, t.value, "yes" if t.met else "NO", t.note)
    for name, value in report.ratios.items():
        kind = "CPU-time" if "CPU" in name else "wall-time"
        table.add_row(name, "", f"{value:.3f}", "", f"{kind} ratio")
    return table


def split_table(report: Report) -> Table:
    """Mean ms per product for each stage (backtest and fit are worker time)."""
    keys = [k for k in ("raw", "factory", "rerun_changed", "naive") if k in report.runs]
    table = Table(
        title="Per-product split, ms (factory: FleetSummary.per_product_ms; backtest and fit are"
        " worker time; naive: elapsed time inside its concurrently running tasks)"
    )
    table.add_column("stage")
    for k in keys:
        table.add_column(report.runs[k].label, justify="right")
    for stage in STAGES:
        cells = [f"{report.runs[k].result.per_product_ms.get(stage, 0.0):.1f}" for k in keys]
        table.add_row(stage, *cells)
    return table


def candidate_table(report: Report) -> Table:
    """Each candidate's backtest cost per product it ran on (worker time)."""
    keys = [k for k in ("raw", "factory") if k in report.runs]
    table = Table(title="Per-candidate backtest cost, ms per product (worker time)")
    table.add_column("candidate")
    for k in keys:
        table.add_column(report.runs[k].label, justify="right")
    labels = sorted({c for k in keys for c in report.runs[k].result.candidate_ms})
    for label in labels:
        cells = [report.runs[k].result.candidate_ms.get(label) for k in keys]
        table.add_row(label, *(_num(c, ",.1f") for c in cells))
    return table


def timeline_table(runs: dict[str, ModeRun]) -> Table:
    """The train-fleet runs' timelines side by side."""
    keys = [k for k, r in runs.items() if r.timeline]
    table = Table(title="train-fleet timeline, s (Prefect API task-run start/end times)")
    table.add_column("step")
    for k in keys:
        table.add_column(runs[k].label, justify="right")
    steps = list(dict.fromkeys(step for k in keys for step in runs[k].timeline))
    for step in steps:
        cells = [runs[k].timeline.get(step) for k in keys]
        table.add_row(step, *(_num(c, ",.1f") for c in cells))
    return table


def checks_table(checks: dict[str, Any]) -> Table:
    """The sanity checks."""
    table = Table(title="Checks")
    table.add_column("check")
    table.add_column("result", justify="right")
    for name, value in checks.items():
        shown = ("yes" if value else "NO") if isinstance(value, bool) else str(value)
        table.add_row(name, shown)
    return table


def print_report(console: Console, report: Report) -> None:
    """All tables, then the markdown for the README."""
    console.print(modes_table(report.rows, report.runs))
    print_notes(console, report)
    tables = (
        targets_table(report),
        split_table(report),
        candidate_table(report),
        timeline_table(report.runs),
    )
    for table in (*tables, checks_table(report.checks)):
        console.print(table)
    flow = report.runs["factory"].result
    console.print(
        f"factory: train_fleet() call {flow.wall_s:.1f} s, flow body {flow.flow_body_s or 0:.1f} s,"
        f" worker process {report.runs['factory'].process_s:.1f} s;"
        f" {flow.shards} shards, {report.runs['factory'].task_runs} task runs"
    )
    console.print("\n" + markdown(report), markup=False, highlight=False)


def markdown(report: Report) -> str:
    """The modes table and ratios as markdown for the README."""
    m = report.meta
    lines = [
        f"{m['products']:,} products x {m['periods']} days, {m['cpu_count']} cores,"
        f" {m['timestamp']} (naive measured on {m['naive_products']}, extrapolated):",
        "",
        "| mode | products | wall (s) | CPU (s) | models/s | peak RSS (GiB) | Prefect task runs |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report.rows:
        lines.append(
            f"| {r.label} | {r.products:,} | {r.wall_s:,.1f} | {_num(r.cpu_s, ',.0f')}"
            f" | {r.models_per_s:,.1f}"
            f" | {r.peak_rss_gib:.2f} | {r.task_runs:,} |"
        )
    ratios = ", ".join(f"{k} = {v:.2f}" for k, v in report.ratios.items())
    lines += ["", f"Ratios (wall): {ratios}."]
    costs = report.runs["factory"].result.candidate_ms
    if costs:
        each = ", ".join(f"{k} {v:,.1f}" for k, v in costs.items())
        lines += ["", f"Backtest ms per product, by candidate (factory, worker time): {each}."]
    return "\n".join(lines)


def to_json(report: Report) -> dict[str, Any]:
    """The whole report as JSON-ready data."""
    return {
        "meta": report.meta,
        "rows": [asdict(r) for r in report.rows],
        "ratios": report.ratios,
        "targets": [asdict(t) for t in report.targets],
        "checks": report.checks,
        "modes": {k: asdict(r) for k, r in report.runs.items()},
        "markdown": markdown(report),
    }


def write_json(report: Report, out_dir: Path) -> list[Path]:
    """`<UTC timestamp>-<products>.json` and `latest-<products>.json`, each written atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(to_json(report), indent=2, default=str)
    products = report.meta["products"]
    paths = [out_dir / f"{report.meta['timestamp']}-{products}.json"]
    paths.append(out_dir / f"latest-{products}.json")
    for path in paths:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return paths
