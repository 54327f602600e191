"""A corpus of hostile inputs, generated in code: data files, fleet files, settings, CLI
arguments and product ids. Each case says what a user must see: the exit code, the words the one
error line names, and exactly which products are quarantined with which reason."""

from __future__ import annotations

import socket
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from textwrap import indent

import numpy as np
import pandas as pd

AS_OF = "2026-11-22"
END = pd.Timestamp("2026-11-20")
DAYS = 120
GOOD = ("good-1", "good-2", "good-3")

FLEET = """\
version: 1
promotion: auto
failure_budget: 0.9
shard_size: 10
families:
  - name: weekly
    frequency: W
    horizon: 4
    season_length: 4
    features: {lags: [1, 4], rolling_means: [4], calendar: [month], exogenous: []}
    models: [{kind: ridge}]
    backtest: {windows: 2}
    products: {match: ["wk-*"]}
  - name: daily
    frequency: D
    horizon: 7
    season_length: 7
    features: {lags: [1, 7], rolling_means: [7], calendar: [dayofweek], exogenous: [price]}
    models: [{kind: ridge}]
    backtest: {windows: 2}
    products: {all: true}
"""


def series(pid: str, days: int = DAYS, freq: str = "D", seed: int = 0) -> pd.DataFrame:
    """One healthy product: weekly season, noise, a price; ends on END."""
    rng = np.random.default_rng(zlib.crc32(pid.encode()) + seed)
    ds = pd.date_range(end=END, periods=days, freq=freq)
    t = np.arange(days)
    y = 20 + 5 * np.sin(2 * np.pi * t / 7) + rng.normal(0, 1, days)
    return pd.DataFrame(
        {"unique_id": pid, "ds": ds, "y": y.round(2), "price": 9.99 + 0 * t, "promo": 0.0}
    )


def panel(*extra: pd.DataFrame) -> pd.DataFrame:
    """The good products plus the given frames."""
    return pd.concat([*(series(p) for p in GOOD), *extra], ignore_index=True)


def with_value(pid: str, column: str, value: object, rows: slice | None = None) -> pd.DataFrame:
    """A product whose `column` holds `value` (on every row, or on `rows`)."""
    frame = series(pid).astype({column: "object"})
    frame.loc[frame.index[rows] if rows else frame.index, column] = value
    return frame


@dataclass
class Case:
    """One hostile input and what the user must see."""

    name: str
    args: list[str]
    exit_code: int = 0
    names: tuple[str, ...] = ()  # words the single `error:` line must hold
    quarantined: dict[str, str] = field(default_factory=dict)  # product -> reason words
    ready: tuple[str, ...] = GOOD  # products that must pass validation
    env: dict[str, str] = field(default_factory=dict)
    write: Callable[[Path], None] | None = None  # writes the inputs into the case folder


def _data(frame: pd.DataFrame, name: str = "sales.parquet") -> Callable[[Path], None]:
    def write(root: Path) -> None:
        folder = root / "home" / "data"
        folder.mkdir(parents=True, exist_ok=True)
        if name.endswith(".csv"):
            frame.to_csv(folder / name, index=False)
        else:
            frame.to_parquet(folder / name, index=False)

    return write


def _raw(text: str | bytes, name: str) -> Callable[[Path], None]:
    def write(root: Path) -> None:
        folder = root / "home" / "data"
        folder.mkdir(parents=True, exist_ok=True)
        data = text.encode() if isinstance(text, str) else text
        (folder / name).write_bytes(data)

    return write


VALIDATE = ["validate", "--json", "-f", "fleet.yaml"]


def quarantine(name: str, pid: str, frame: pd.DataFrame, reason: str, fmt: str = "parquet") -> Case:
    """The good products plus one bad product that must be quarantined with `reason`."""
    return Case(
        name,
        VALIDATE,
        quarantined={pid: reason},
        write=_data(panel(frame), f"sales.{fmt}"),
    )


def refused(name: str, write: Callable[[Path], None], *names: str) -> Case:
    """A data file refused whole: exit 2, one line naming the file and the problem."""
    return Case(name, VALIDATE, exit_code=2, names=names, ready=(), write=write)


def _csv(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False)


def data_cases() -> list[Case]:
    """Bad values, bad files and bad columns in the sales data."""
    dst = series("berlin")
    local = pd.to_datetime(dst["ds"]).dt.tz_localize("Europe/Berlin")
    dst_csv = dst.assign(ds=local.map(lambda t: t.isoformat()))
    dst_parquet = dst.assign(ds=local)
    bad_ds = series("bad-date").astype({"ds": "object"})
    bad_ds.loc[5, "ds"] = "not-a-date"
    weekly_in_daily = series("every-week", days=40, freq="7D")
    sub_daily = series("hourly").assign(ds=lambda f: f["ds"] + pd.Timedelta(hours=13))
    gaps = series("gappy").drop(index=range(30, 40))
    short = series("short", days=12)
    stale = series("stale").assign(ds=lambda f: f["ds"] - pd.Timedelta(days=60))
    future = series("future").assign(ds=lambda f: f["ds"] + pd.Timedelta(days=30))
    dup = pd.concat([series("dup"), series("dup").iloc[:3]])
    header_only = "unique_id,ds,y\n"
    return [
        quarantine("y-inf", "inf", with_value("inf", "y", np.inf, slice(50, 51)), "non-finite y"),
        quarantine("y-neg-inf", "ninf", with_value("ninf", "y", -np.inf), "non-finite y"),
        quarantine("y-1e300", "huge", with_value("huge", "y", 1e300), "y too large"),
        quarantine("y-spike", "spike", with_value("spike", "y", 1e300, slice(60, 61)), "too large"),
        quarantine("price-inf", "pinf", with_value("pinf", "price", np.inf), "non-finite price"),
        quarantine("price-neg", "pneg", with_value("pneg", "price", -1.0), "negative price"),
        quarantine(
            "y-text", "text", with_value("text", "y", "twelve", slice(7, 8)), "non-numeric y", "csv"
        ),
        quarantine("y-nan", "nan", with_value("nan", "y", np.nan, slice(9, 10)), "null y"),
        quarantine("y-negative", "neg", with_value("neg", "y", -3.0, slice(9, 10)), "negative y"),
        quarantine("y-all-zero", "zero", with_value("zero", "y", 0.0), "all-zero"),
        quarantine("promo-not-binary", "promo2", with_value("promo2", "promo", 2.0), "promo"),
        quarantine("ds-unparseable", "bad-date", bad_ds, "unparseable ds", "csv"),
        quarantine("ds-duplicated", "dup", dup, "duplicated"),
        quarantine("ds-future", "future", future, "future ds"),
        quarantine("ds-stale", "stale", stale, "stale"),
        quarantine("ds-gaps", "gappy", gaps, "gaps"),
        # a new product with 12 days is normal data: ready, for the short-history path
        Case("short-history", VALIDATE, ready=(*GOOD, "short"), write=_data(panel(short))),
        quarantine("weekly-in-daily-family", "every-week", weekly_in_daily, "frequency"),
        quarantine("daily-in-weekly-family", "wk-daily", series("wk-daily"), "frequency"),
        quarantine("sub-daily", "hourly", sub_daily, "frequency"),
        Case("ds-dst-csv", VALIDATE, ready=(*GOOD, "berlin"), write=_data(panel(dst_csv), "s.csv")),
        Case(
            "ds-dst-parquet",
            VALIDATE,
            ready=(*GOOD, "berlin"),
            write=lambda root: (_data(panel())(root), _data(dst_parquet, "berlin.parquet")(root)),
        ),
        refused("header-only-csv", _raw(header_only, "sales.csv"), "sales.csv", "no rows"),
        refused("empty-file", _raw("", "sales.csv"), "sales.csv"),
        refused(
            "garbage-parquet", _raw(b"\x00\xffPAR1 not parquet", "sales.parquet"), "sales.parquet"
        ),
        refused("missing-y", _data(panel().drop(columns="y"), "s.csv"), "s.csv", "y"),
        refused("renamed-ds", _data(panel().rename(columns={"ds": "date"})), "sales.parquet", "ds"),
        refused(
            "semicolon-csv", _raw(_csv(panel()).replace(",", ";"), "s.csv"), "s.csv", "unique_id"
        ),
        refused("no-data-folder", lambda root: None, "data"),
        refused(
            "exogenous-missing",
            _data(panel().drop(columns="price")),
            "price",
        ),
    ]


def hostile_ids() -> dict[str, str]:
    """Product ids a registry, a file system or a shell could choke on: name -> id."""
    return {
        "path-traversal": "../../etc/passwd",
        "slash": "a/b",
        "quotes": 'it\'s "quoted"',
        "unicode": "café-ü-日本語",
        "emoji": "🙂-smile",
        "leading-space": " lead",
        "trailing-space": "trail ",
        "tab": "tab\there",
        "300-chars": "x" * 300,
        "reserved-con": "CON",
        "reserved-nul": "NUL",
        "dot": ".",
        "dotdot": "..",
        "null-word": "null",
        "nan-word": "NaN",
        "none-word": "None",
        "dash-rf": "-rf",
        "format": "%s%n{0}",
        "shell": "$(touch pwned)",
        "sql": "x'; DROP TABLE registered_models;--",
        "backslash": "back\\slash",
        "newline": "new\nline",
    }


BLANK_IDS = {"empty-id": "", "whitespace-id": "   "}


def collisions() -> dict[str, tuple[str, str]]:
    """Pairs of ids that would share one registry name: name -> (id, id)."""
    from factory.core.naming import product_slug

    return {"slug-lookalike": ("x/y", product_slug("x/y")), "case-only": ("Sku-1", "sku-1")}


def id_cases() -> list[Case]:
    """Every hostile id is an ordinary product: it passes validation (blank ids do not)."""
    frames = [series(pid, seed=i) for i, pid in enumerate(hostile_ids().values())]
    blanks = [series(pid) for pid in BLANK_IDS.values()]
    ready = (*GOOD, *hostile_ids().values())
    cases = [
        Case(f"id-{name}", VALIDATE, ready=(*GOOD, pid), write=_data(panel(series(pid)), "s.csv"))
        for name, pid in hostile_ids().items()
    ]
    cases += [
        Case(
            f"id-{name}",
            VALIDATE,
            ready=GOOD,
            quarantined={pid: "blank unique_id"},
            write=_data(panel(series(pid))),
        )
        for name, pid in BLANK_IDS.items()
    ]
    cases += [
        Case(
            f"id-collision-{name}",
            VALIDATE,
            quarantined={a: "registry name collides", b: "registry name collides"},
            write=_data(panel(series(a), series(b))),
        )
        for name, (a, b) in collisions().items()
    ]
    cases.append(
        Case("ids-all-at-once", VALIDATE, ready=ready, write=_data(panel(*frames, *blanks)))
    )
    cases[-1].quarantined = dict.fromkeys(BLANK_IDS.values(), "blank unique_id")
    return cases


def _fleet(text: str | bytes, name: str = "fleet.yaml") -> Callable[[Path], None]:
    def write(root: Path) -> None:
        _data(panel())(root)
        data = text.encode() if isinstance(text, str) else text
        (root / name).write_bytes(data)

    return write


def fleet_case(name: str, text: str | bytes, *names: str) -> Case:
    """A broken fleet.yaml: exit 2, the error names the file (and line and field)."""
    return Case(
        name, VALIDATE, exit_code=2, names=("fleet.yaml", *names), ready=(), write=_fleet(text)
    )


LAUGHS = "a: &a ['lol','lol','lol','lol','lol','lol','lol','lol','lol']\n" + "".join(
    f"{c}: &{c} [{','.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)


def fleet_cases() -> list[Case]:
    """fleet.yaml mistakes, from typos to YAML bombs."""
    ok = FLEET
    return [
        fleet_case("negative-horizon", ok.replace("horizon: 7", "horizon: -7"), "horizon"),
        fleet_case("typo-key", ok.replace("season_length: 7", "season_lenght: 7"), "season_lenght"),
        fleet_case(
            "duplicated-key",
            ok.replace("horizon: 7", "horizon: 7\n    horizon: 14"),
            "horizon",
            "duplicate",
        ),
        fleet_case(
            "unknown-kind",
            ok.replace(
                "{kind: ridge}]\n    backtest: {windows: 2}\n    products: {all",
                "{kind: prophet}]\n    backtest: {windows: 2}\n    products: {all",
            ),
            "kind",
        ),
        fleet_case("wrong-type", ok.replace("horizon: 7", "horizon: soon"), "horizon"),
        fleet_case(
            "one-window",
            ok.replace("windows: 2}\n    products: {all", "windows: 1}\n    products: {all"),
            "windows",
        ),
        fleet_case("bad-promotion", ok.replace("promotion: auto", "promotion: yolo"), "promotion"),
        fleet_case(
            "budget-over-one",
            ok.replace("failure_budget: 0.9", "failure_budget: 3"),
            "failure_budget",
        ),
        fleet_case("duplicate-family", ok.replace("name: weekly", "name: daily"), "daily"),
        fleet_case("bad-family-name", ok.replace("name: weekly", "name: Weekly Family!"), "name"),
        fleet_case("no-families", "version: 1\nfamilies: []\n", "families"),
        fleet_case("top-level-list", "- families\n", "mapping"),
        fleet_case("empty-file", "", "mapping"),
        fleet_case("not-yaml", "families: [\n  - {name: x\n", "YAML"),
        fleet_case("tabs", "version: 1\nfamilies:\n\t- name: x\n", "YAML"),
        fleet_case("binary", b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "fleet.yaml"),
        fleet_case("python-tag", "!!python/object/apply:os.system ['touch pwned']\n", "YAML"),
        fleet_case("billion-laughs", ok + "bomb:\n" + indent(LAUGHS, "  "), "bomb"),
        fleet_case("unknown-top-key", ok + "secrets: {token: x}\n", "secrets"),
        fleet_case(
            "product-in-two-families",
            ok.replace('match: ["wk-*"]', 'ids: ["good-1"]').replace(
                "products: {all: true}", "products: {ids: [good-1]}"
            ),
            "good-1",
        ),
        Case(
            "fleet-missing",
            ["validate", "-f", "nope.yaml"],
            2,
            ("nope.yaml",),
            ready=(),
            write=_data(panel()),
        ),
        Case(
            "fleet-is-folder",
            ["validate", "-f", "fleetdir"],
            2,
            ("fleetdir",),
            ready=(),
            write=lambda root: (_data(panel())(root), (root / "fleetdir").mkdir()),
        ),
    ]


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settings_case(name: str, variable: str, value: str) -> Case:
    """A bad FACTORY_* setting: exit 2 and a line naming the variable."""
    return Case(
        name, VALIDATE, 2, (variable,), ready=(), env={variable: value}, write=_fleet(FLEET)
    )


def settings_cases() -> list[Case]:
    """Bad settings and environment, checked before any work starts."""
    return [
        settings_case("tracking-bogus-scheme", "FACTORY_MLFLOW_TRACKING_URI", "bogus://x"),
        settings_case(
            "tracking-sqlite-dev-null",
            "FACTORY_MLFLOW_TRACKING_URI",
            "sqlite:////dev/null/mlflow.db",
        ),
        settings_case(
            "tracking-closed-port",
            "FACTORY_MLFLOW_TRACKING_URI",
            f"http://127.0.0.1:{closed_port()}",
        ),
        settings_case("registry-bogus", "FACTORY_MLFLOW_REGISTRY_URI", "nope://registry"),
        settings_case("as-of-words", "FACTORY_AS_OF", "yesterday-ish"),
        settings_case("as-of-impossible", "FACTORY_AS_OF", "2026-02-30"),
        settings_case("ray-cpus-text", "FACTORY_RAY_NUM_CPUS", "abc"),
        settings_case("ray-cpus-negative", "FACTORY_RAY_NUM_CPUS", "-2"),
        settings_case("lease-negative", "FACTORY_LEASE_WAIT_S", "-5"),
        settings_case("data-url-protocol", "FACTORY_DATA_URL", "nosuchfs://bucket/data"),
        settings_case("data-url-missing", "FACTORY_DATA_URL", "/nonexistent/factory/data"),
        Case(
            "home-is-a-file",
            VALIDATE,
            2,
            ("FACTORY_HOME",),
            ready=(),
            env={"FACTORY_HOME": "{root}/fleet.yaml"},
            write=_fleet(FLEET),
        ),
    ]


def cli_cases() -> list[Case]:
    """Bad arguments on the command line (no model is registered in these homes)."""
    with_data = _fleet(FLEET)
    return [
        Case(
            "forecast-negative-horizon",
            ["forecast", "--horizon", "-5"],
            2,
            ("horizon",),
            ready=(),
            write=with_data,
        ),
        Case(
            "forecast-text-horizon",
            ["forecast", "--horizon", "abc"],
            2,
            ("horizon",),
            ready=(),
            write=with_data,
        ),
        Case(
            "status-unknown-product",
            ["status", "--product", "NOPE"],
            2,
            ("NOPE",),
            ready=(),
            write=with_data,
        ),
        Case(
            "lineage-unknown-product", ["lineage", "NOPE"], 2, ("NOPE",), ready=(), write=with_data
        ),
        Case(
            "demo-data-bad-source",
            ["demo-data", "--source", "bogus"],
            2,
            ("bogus",),
            ready=(),
            write=with_data,
        ),
        Case(
            "demo-data-zero-products",
            ["demo-data", "-n", "0", "--force"],
            2,
            ("products",),
            ready=(),
            write=with_data,
        ),
        Case(
            "status-zero-limit",
            ["status", "--limit", "-1"],
            2,
            ("limit",),
            ready=(),
            write=with_data,
        ),
        Case("unknown-command", ["trian"], 2, ("trian",), ready=(), write=with_data),
    ]


def all_cases() -> list[Case]:
    """The whole corpus."""
    groups = {"data": data_cases(), "fleet": fleet_cases(), "settings": settings_cases()}
    groups |= {"cli": cli_cases()}
    for prefix, cases in groups.items():
        for case in cases:
            case.name = f"{prefix}-{case.name}"
    return [*groups["data"], *id_cases(), *groups["fleet"], *groups["settings"], *groups["cli"]]
