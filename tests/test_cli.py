"""The `factory` command line as a user drives it: exit codes, one-line errors, printed tables."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import prefect.main  # noqa: F401  (see the note on `runner`)
import pytest
from typer.testing import CliRunner

from factory.adapters.data import write_panel
from factory.cli import app
from factory.core.synthetic import PanelSpec, generate_panel, product_ids
from factory.settings import get_settings
from tests.support.fleets import AS_OF, REPO, write_fleet
from tests.support.homes import home_in

# Prefect binds its console log handler to the sys.stderr of the moment `prefect.main` is first
# imported; importing it at collection keeps that from being a CliRunner stream closed after use.
runner = CliRunner()
COMMANDS = (
    "demo-data",
    "validate",
    "train",
    "forecast",
    "status",
    "lineage",
    "doctor",
    "up",
    "down",
    "demo",
)


def invoke(*args: str):
    """Run `factory <args>` in-process on a wide terminal (rich tables are not truncated)."""
    result = runner.invoke(app, list(args), env={"COLUMNS": "200"})
    for text in (result.stdout, result.stderr, result.output):
        assert "Traceback" not in text, text
    # a user mistake ends in typer.Exit, never in an unhandled exception
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    return result


def assert_user_error(result, *needles: str) -> str:
    """Exit 2 with exactly one `error:` line (holding every needle) and one `hint:` line."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    error, hint = lines
    assert error.startswith("error: ")
    assert hint.startswith("hint: ")
    for needle in needles:
        assert needle in error, f"{needle!r} not in {error!r}"
    return error


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the rich tables in some output, as lists of stripped cells."""
    return [
        [cell.strip() for cell in line.strip().strip("│").split("│")]
        for line in text.splitlines()
        if line.strip().startswith("│")
    ]


def data_dir() -> Path:
    return Path(get_settings().resolved_data_url)


@pytest.fixture(autouse=True)
def in_tmp_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every command from a scratch folder: nothing a command writes lands in the repo."""
    monkeypatch.chdir(tmp_path)


# --- help ---------------------------------------------------------------------------------------


def test_help_lists_every_command() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.stdout, command


def test_train_help_mentions_fleet_and_products() -> None:
    result = invoke("train", "--help")
    assert result.exit_code == 0
    assert "--fleet" in result.stdout
    assert "--products" in result.stdout


# --- demo-data ----------------------------------------------------------------------------------


def test_demo_data_writes_a_parquet_and_refuses_to_overwrite_without_force(
    factory_home: Path,
) -> None:
    first = invoke("demo-data", "-n", "40", "--seed", "3")
    assert first.exit_code == 0, first.output
    files = list((factory_home / "data").glob("*.parquet"))
    assert len(files) == 1
    path = files[0]
    assert str(path) in first.stdout
    assert pd.read_parquet(path)["unique_id"].nunique() == 40
    before = (path.stat().st_mtime_ns, path.read_bytes())

    again = invoke("demo-data", "-n", "40", "--seed", "3")
    assert_user_error(again, str(factory_home / "data"), "already holds data", "--force")
    assert again.stdout == ""
    assert (path.stat().st_mtime_ns, path.read_bytes()) == before  # nothing was touched

    forced = invoke("demo-data", "-n", "12", "--seed", "4", "--force")
    assert forced.exit_code == 0, forced.output
    assert list((factory_home / "data").glob("*.parquet")) == [path]
    assert pd.read_parquet(path)["unique_id"].nunique() == 12  # really replaced


# --- validate -----------------------------------------------------------------------------------


def test_validate_names_file_line_and_field_of_a_typo(tmp_path: Path, factory_home: Path) -> None:
    text = (REPO / "fleet.yaml").read_text()
    assert text.count("num_leaves: 15") == 1
    typo = tmp_path / "fleet.yaml"
    typo.write_text(text.replace("num_leaves: 15", "num_leafs: 15"))
    line = next(i for i, s in enumerate(typo.read_text().splitlines(), 1) if "num_leafs" in s)

    result = invoke("validate", "--fleet", str(typo))
    error = assert_user_error(result, f"{typo}:{line}:", "families[0].models[1].num_leafs")
    assert "Extra inputs are not permitted" in error
    assert "fleet.yaml" in result.stderr.splitlines()[1]  # the hint points at the fleet file


def test_error_text_is_shown_verbatim_not_as_markup(tmp_path: Path, factory_home: Path) -> None:
    folder = tmp_path / "a[/b]" / "[old]"
    folder.mkdir(parents=True)
    fleet = folder / "fleet.yaml"
    fleet.write_text((REPO / "fleet.yaml").read_text() + "bogus: 1\n")
    assert_user_error(invoke("validate", "--fleet", str(fleet)), f"{fleet}:", "bogus")


def test_validate_a_missing_fleet_file_is_a_one_line_error(
    tmp_path: Path, factory_home: Path
) -> None:
    missing = tmp_path / "nope.yaml"
    assert_user_error(invoke("validate", "--fleet", str(missing)), str(missing), "cannot read")


def test_validate_lists_quarantined_products_with_reasons(
    tmp_path: Path, factory_home: Path
) -> None:
    ids = product_ids(30)
    defects = {ids[2]: "negative", ids[4]: "duplicate_dates", ids[7]: "all_zero"}
    panel = generate_panel(PanelSpec(n_products=30, seed=5, defects=defects))
    write_panel(panel.frame, get_settings().resolved_data_url)

    result = invoke("validate", "--fleet", str(write_fleet(tmp_path / "fleet.yaml")))
    assert result.exit_code == 0, result.output
    reasons = {row[0]: row[1] for row in table_rows(result.stdout) if row[0] in ids}
    assert set(reasons) == set(defects), reasons
    assert "negative y" in reasons[ids[2]]
    assert "duplicated" in reasons[ids[4]]
    assert "all-zero" in reasons[ids[7]]
    assert "3 quarantined" in result.stdout
    assert "30 products: 27 ready, 3 quarantined" in result.stdout


def test_validate_names_a_data_file_missing_the_target_column(
    tmp_path: Path, factory_home: Path
) -> None:
    panel = generate_panel(PanelSpec(n_products=5, seed=1))
    write_panel(panel.frame, get_settings().resolved_data_url)
    bad = data_dir() / "extra.csv"
    panel.frame.drop(columns="y").head(50).to_csv(bad, index=False)

    result = invoke("validate", "--fleet", str(write_fleet(tmp_path / "fleet.yaml")))
    assert_user_error(result, str(bad), "missing column(s) y")


def test_validate_without_any_data_says_where_it_looked(tmp_path: Path, factory_home: Path) -> None:
    result = invoke("validate", "--fleet", str(write_fleet(tmp_path / "fleet.yaml")))
    assert_user_error(result, str(factory_home / "data"), "no such data folder")


def test_train_rejects_a_broken_fleet_before_starting_prefect(
    tmp_path: Path, factory_home: Path
) -> None:
    broken = tmp_path / "fleet.yaml"
    broken.write_text("families: [\n")
    assert_user_error(invoke("train", "--fleet", str(broken)), str(broken), "not valid YAML")


# --- train, then status / lineage / forecast on its results ------------------------------------

TRAIN_IDS = product_ids(20)
TRAIN_DEFECTS = {TRAIN_IDS[3]: "negative", TRAIN_IDS[6]: "duplicate_dates"}


@pytest.fixture(scope="module")
def trained(
    prefect_harness: None, local_ray: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict]:
    """One `factory train` run on a 20-product panel (2 bad products), shared by the module."""
    root = tmp_path_factory.mktemp("cli-train")
    with home_in(root):
        panel = generate_panel(PanelSpec(n_products=20, seed=11, defects=TRAIN_DEFECTS))
        write_panel(panel.frame, get_settings().resolved_data_url)
        fleet = write_fleet(root / "fleet.yaml", shard_size=10)
        result = invoke("train", "--fleet", str(fleet))
        yield {"root": root, "result": result}


@pytest.fixture
def train_env(trained: dict) -> dict:
    """The module's trained home, with settings re-read from its environment."""
    get_settings.cache_clear()
    return trained


def status_rows(*args: str) -> dict[str, dict[str, str]]:
    result = invoke("status", *args)
    assert result.exit_code == 0, result.output
    header = (
        "family",
        "status",
        "history",
        "production",
        "staging",
        "kind",
        "score",
        "baseline",
        "reason",
    )
    assert all(h in result.stdout for h in ("product", *header))
    return {
        row[0]: dict(zip(header, row[1:], strict=True))
        for row in table_rows(result.stdout)
        if row[0] in TRAIN_IDS
    }


def registered_product() -> str:
    rows = status_rows("--status", "registered")
    assert rows, "the synthetic panel should register some products"
    return sorted(rows)[0]


def test_train_prints_the_outcome_table(train_env: dict) -> None:
    result = train_env["result"]
    assert result.exit_code == 0, result.output
    outcomes = {row[0]: int(row[1]) for row in table_rows(result.stdout)}
    assert outcomes["quarantined"] == len(TRAIN_DEFECTS)
    assert outcomes["registered"] >= 12
    assert sum(outcomes.values()) == 20
    assert "ms per product" in result.stdout


def test_status_lists_every_product_with_its_outcome(train_env: dict) -> None:
    rows = status_rows()
    assert set(rows) == set(TRAIN_IDS)
    assert {r["status"] for r in rows.values()} <= {"registered", "kept", "rejected", "quarantined"}
    for pid in TRAIN_DEFECTS:
        assert rows[pid]["status"] == "quarantined"
        assert rows[pid]["production"] == ""
        assert rows[pid]["reason"]
    registered = [r for r in rows.values() if r["status"] == "registered"]
    assert registered
    assert all(r["production"] == "1" and r["staging"] == "1" for r in registered)


def test_status_filters_by_outcome(train_env: dict) -> None:
    result = invoke("status", "--status", "quarantined")
    assert result.exit_code == 0, result.output
    rows = [row for row in table_rows(result.stdout) if row[0] in TRAIN_IDS]
    assert {row[0] for row in rows} == set(TRAIN_DEFECTS)
    assert all(row[2] == "quarantined" for row in rows)
    assert f"{len(TRAIN_DEFECTS)} products: {len(TRAIN_DEFECTS)} quarantined" in result.stdout


def test_lineage_shows_the_chain_behind_the_champion(train_env: dict) -> None:
    pid = registered_product()
    result = invoke("lineage", pid)
    assert result.exit_code == 0, result.output
    assert f"factory.production.{pid}@champion" in result.stdout
    tags = {row[0]: row[1] for row in table_rows(result.stdout) if len(row) == 2}
    for key in ("factory.data_fingerprint", "factory.flow_run_id", "factory.git_commit"):
        assert tags.get(key), f"{key} missing from lineage of {pid}"
    assert tags["version"] == "1"


def test_lineage_of_an_unknown_product_is_a_one_line_error(train_env: dict) -> None:
    result = invoke("lineage", "no-such-product")
    assert_user_error(result, "no-such-product", "no registered model")
    assert "factory status" in result.stderr.splitlines()[1]


def test_forecast_writes_versioned_rows_for_the_chosen_product(
    train_env: dict, tmp_path: Path
) -> None:
    pid = registered_product()
    out = tmp_path / "fc"
    result = invoke("forecast", "--products", pid, "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "wrote 28 rows for 1 products" in result.stdout
    assert pid not in result.stdout  # not listed as a product without a model
    frame = pd.read_parquet(out / "forecasts.parquet")
    assert {"unique_id", "ds", "yhat", "model_name", "model_version"} <= set(frame.columns)
    assert set(frame["unique_id"]) == {pid}
    assert len(frame) == 28  # the family horizon
    assert (frame["model_name"] == f"factory.production.{pid}").all()
    assert (frame["model_version"] == "1").all()
    assert frame["ds"].min() > pd.Timestamp("2026-10-31")  # after the last observation


def test_forecast_of_known_and_unknown_products_warns_and_forecasts_the_known(
    train_env: dict, tmp_path: Path
) -> None:
    pid = registered_product()
    out = tmp_path / "fc"
    result = invoke("forecast", "--products", f"{pid},NOPE", "--horizon", "3", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "wrote 3 rows for 1 products" in result.stdout
    assert "warning: unknown product(s): NOPE (no registered model)" in result.stderr
    assert set(pd.read_parquet(out / "forecasts.parquet")["unique_id"]) == {pid}


def test_forecast_with_a_bad_inputs_file_names_it_and_writes_nothing(
    train_env: dict, tmp_path: Path
) -> None:
    bad = tmp_path / "promos.csv"
    bad.write_text("unique_id,ds,promo\nsku-1,2026-11-03,maybe\n")
    out = tmp_path / "fc"
    result = invoke("forecast", "--inputs", str(bad), "--out", str(out))
    assert_user_error(result, str(bad), "column promo", "'maybe'")
    assert not out.exists()


def test_forecast_of_unknown_products_only_writes_nothing(train_env: dict, tmp_path: Path) -> None:
    out = tmp_path / "fc"
    out.mkdir()
    earlier = out / "forecasts.parquet"
    earlier.write_bytes(b"earlier forecasts")
    result = invoke("forecast", "--products", "NOPE,GONE", "--out", str(out))
    assert_user_error(result, "unknown product(s): NOPE, GONE (no registered model)")
    assert earlier.read_bytes() == b"earlier forecasts"  # not replaced by an empty file
    assert sorted(p.name for p in out.iterdir()) == ["forecasts.parquet"]


def test_a_train_run_asked_only_for_unknown_products_fails_naming_them(train_env: dict) -> None:
    """The flow itself (as a deployment runs it) refuses, like the CLI does before it starts."""
    from factory.core.outcomes import UnknownProducts
    from flows.train_fleet import train_fleet

    before = status_rows()
    with pytest.raises(UnknownProducts, match=r"unknown product\(s\): NOPE \(not in the sales"):
        train_fleet(str(train_env["root"] / "fleet.yaml"), ["NOPE"])
    assert status_rows() == before  # nothing recorded


# --- one clear line for a bad setting or argument (the installed command, in a subprocess) -----

FACTORY = str(Path(sys.executable).with_name("factory"))


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_factory(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`factory <args>` as a user runs it: its own process, FACTORY_HOME in `home`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FACTORY_", "RAY_ADDRESS"))}
    clean |= {"FACTORY_HOME": str(home), "FACTORY_AS_OF": AS_OF, "COLUMNS": "200", **env}
    done = subprocess.run(
        [FACTORY, *args], env=clean, cwd=home.parent, capture_output=True, text=True, timeout=300
    )
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    return done


def assert_one_line_error(done: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit 2 with one `error:` line holding every needle, then one `hint:` line."""
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: "), done.stderr
    assert lines[1].startswith("hint: "), done.stderr
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


@pytest.mark.parametrize(
    ("command", "var", "value", "needle"),
    [
        (["lineage", "x"], "FACTORY_MLFLOW_TRACKING_URI", "bogus://x", "unknown scheme 'bogus'"),
        (["forecast"], "FACTORY_MLFLOW_TRACKING_URI", "sqlite:////dev/null/m.db", "/dev/null"),
        (["doctor"], "FACTORY_MLFLOW_TRACKING_URI", "http://127.0.0.1:{port}", "no MLflow server"),
        (["forecast"], "FACTORY_MLFLOW_REGISTRY_URI", "http://127.0.0.1:{port}", "no MLflow"),
        (["status"], "FACTORY_AS_OF", "yesterday-ish", "not a date (expected YYYY-MM-DD"),
        (["train"], "FACTORY_RAY_NUM_CPUS", "abc", "not an integer"),
        (["validate"], "FACTORY_DATA_URL", "bogus://x", "unknown storage protocol 'bogus'"),
        (["watch"], "FACTORY_LANDING_URL", "bogus://x", "unknown storage protocol 'bogus'"),
        (["train"], "FACTORY_RAY_ADDRESS", "my cluster", "not a Ray address"),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_variable(
    tmp_path: Path, command: list[str], var: str, value: str, needle: str
) -> None:
    value = value.format(port=closed_port())
    fleet = str(REPO / "fleet.yaml")
    args = [*command, *(["--fleet", fleet] if command[0] in ("train", "doctor", "watch") else [])]
    started = time.monotonic()
    done = run_factory(tmp_path / "home", *args, **{var: value})
    assert time.monotonic() - started < 60  # not MLflow's minutes of retries
    assert_one_line_error(done, f"{var}={value!r}: ", needle)
    assert "factory validate" in done.stderr.splitlines()[1]
    assert not (tmp_path / "home" / "prefect" / "prefect.db").exists()  # before Prefect


def test_factory_home_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.write_text("not a folder")
    done = run_factory(home, "down")
    assert_one_line_error(done, f"FACTORY_HOME={str(home)!r}: is a file, not a folder")


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["forecast", "--horizon", "-5"], "--horizon"),
        (["status", "--limit", "0"], "--limit"),
        (["demo-data", "--products", "0"], "--products"),
        (["demo-data", "--seed", "-1"], "--seed"),
        (["watch", "--poll", "0"], "--poll"),
        (["up", "--mlflow-port", "70000"], "--mlflow-port"),
    ],
)
def test_out_of_range_numbers_are_usage_errors(
    tmp_path: Path, args: list[str], option: str
) -> None:
    done = run_factory(tmp_path / "home", *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"Invalid value for '{option}" in done.stderr


def test_argument_mistakes_are_one_line_each(tmp_path: Path) -> None:
    home = tmp_path / "home"
    binary = tmp_path / "fleet.bin"
    binary.write_bytes(bytes(range(256)))
    cases = [
        (["demo-data", "--source", "bogus"], ["--source 'bogus'", "synthetic, aus_retail, pbs"]),
        (["validate", "--fleet", str(tmp_path)], [str(tmp_path), "cannot read fleet file"]),
        (["validate", "--fleet", str(binary)], [str(binary), "not a text file"]),
        (["doctor", "--fleet", "missing.yaml"], ["missing.yaml", "cannot read fleet file"]),
        (["status", "--product", "NOPE"], ["no status for product 'NOPE'"]),
        (["status", "--status", "bogus"], ["--status 'bogus'", "registered, kept"]),
        (["lineage", "NOPE"], ["NOPE", "no registered model"]),
    ]
    for args, needles in cases:
        assert_one_line_error(run_factory(home, *args), *needles)


def test_train_and_forecast_of_unknown_products_fail_before_prefect_starts(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_panel(generate_panel(PanelSpec(n_products=5, seed=1)).frame, str(home / "data"))
    fleet = str(REPO / "fleet.yaml")
    done = run_factory(home, "train", "--fleet", fleet, "--products", "NOPE,GONE")
    assert_one_line_error(done, "unknown product(s): NOPE, GONE (not in the sales data)")
    assert "factory validate" in done.stderr.splitlines()[1]
    done = run_factory(home, "forecast", "--products", "NOPE")
    assert_one_line_error(done, "unknown product(s): NOPE (no registered model)")
    assert not (home / "forecasts").exists()
    assert not (home / "prefect" / "prefect.db").exists()
