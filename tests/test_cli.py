"""The `factory` command line as a user drives it: exit codes, one-line errors, printed tables."""

from __future__ import annotations

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
    defects = {ids[2]: "negative", ids[4]: "duplicate_dates", ids[7]: "too_short"}
    panel = generate_panel(PanelSpec(n_products=30, seed=5, defects=defects))
    write_panel(panel.frame, get_settings().resolved_data_url)

    result = invoke("validate", "--fleet", str(write_fleet(tmp_path / "fleet.yaml")))
    assert result.exit_code == 0, result.output
    reasons = {row[0]: row[1] for row in table_rows(result.stdout) if row[0] in ids}
    assert set(reasons) == set(defects), reasons
    assert "negative y" in reasons[ids[2]]
    assert "duplicated" in reasons[ids[4]]
    assert "too short" in reasons[ids[7]]
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
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("FACTORY_HOME", str(root / "factory"))
        mp.setenv("FACTORY_AS_OF", AS_OF)
        for var in ("FACTORY_DATA_URL", "FACTORY_MLFLOW_TRACKING_URI", "RAY_ADDRESS"):
            mp.delenv(var, raising=False)
        get_settings.cache_clear()
        panel = generate_panel(PanelSpec(n_products=20, seed=11, defects=TRAIN_DEFECTS))
        write_panel(panel.frame, get_settings().resolved_data_url)
        fleet = write_fleet(root / "fleet.yaml", shard_size=10)
        result = invoke("train", "--fleet", str(fleet))
        yield {"root": root, "result": result}
    get_settings.cache_clear()


@pytest.fixture
def train_env(trained: dict) -> dict:
    """The module's trained home, with settings re-read from its environment."""
    get_settings.cache_clear()
    return trained


def status_rows(*args: str) -> dict[str, dict[str, str]]:
    result = invoke("status", *args)
    assert result.exit_code == 0, result.output
    header = ("family", "status", "production", "staging", "kind", "score", "baseline", "reason")
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
