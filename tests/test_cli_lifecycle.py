"""`factory promote | rollback | retire | restore | manifest | audit` as an engineer drives them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from factory.adapters.data import write_panel
from factory.core.synthetic import PanelSpec, generate_panel
from factory.settings import get_settings
from tests.support.fleets import AS_OF, REPO
from tests.support.homes import home_in
from tests.test_cli import assert_user_error, invoke

COMMANDS = ("promote", "rollback", "retire", "restore", "manifest", "audit")


@pytest.fixture(autouse=True)
def in_tmp_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def test_help_lists_the_lifecycle_commands() -> None:
    result = invoke("--help")
    for command in COMMANDS:
        assert command in result.stdout, command
    assert "--approve" in invoke("promote", "--help").stdout
    assert "--batch" in invoke("rollback", "--help").stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["promote", "--approve", "--reject", "no"], "--approve and --reject exclude each other"),
        (["promote", "--only", "a"], "--only needs --approve"),
        (["promote", "--reject", " "], "--reject needs a reason"),
        (["rollback", "-r", "why"], "name --products or a --batch"),
        (["rollback", "-r", "why", "--batch", "B", "--to", "2"], "--to goes with --products"),
        (["retire", "-r", "why", "-p", ","], "name the --products to retire"),
        (["restore", "-r", "why", "-p", " "], "name the --products to restore"),
        (["manifest", "apply", "missing.yaml"], "missing.yaml: no such file"),
    ],
)
def test_option_mistakes_are_one_line(factory_home: Path, args: list[str], needle: str) -> None:
    assert_user_error(invoke(*args), needle)


def test_a_broken_manifest_is_one_line_naming_the_file(factory_home: Path) -> None:
    Path("prod.yaml").write_text("version: 1\nproduction:\n  a: {version: 0}\n")
    assert_user_error(invoke("manifest", "apply", "prod.yaml"), "prod.yaml", "production.a.version")
    Path("dup.yaml").write_text("production:\n  a: {version: 1}\n  a: {version: 2}\n")
    assert_user_error(invoke("manifest", "apply", "dup.yaml"), "dup.yaml:3", "duplicated key")


@pytest.fixture(scope="module")
def governed(
    prefect_harness: None, local_ray: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """A home trained once on the repository's fleet.yaml (promotion: approve)."""
    root = tmp_path_factory.mktemp("governed")
    with home_in(root):
        panel = generate_panel(PanelSpec(n_products=8, seed=2))
        write_panel(panel.frame, get_settings().resolved_data_url)
        trained = invoke("train", "--fleet", str(REPO / "fleet.yaml"))
        assert trained.exit_code == 0, trained.output
        assert "factory promote" in trained.stdout  # staging only: how to go on
    yield root


def test_promote_plan_promote_retire_restore_and_manifest_from_the_command_line(
    governed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FACTORY_HOME", str(governed / "factory"))
    monkeypatch.setenv("FACTORY_AS_OF", AS_OF)
    get_settings.cache_clear()
    fleet = str(REPO / "fleet.yaml")
    plan = invoke("promote", "--fleet", fleet, "--plan")
    assert plan.exit_code == 0, plan.output
    rows = [line.split() for line in plan.stdout.splitlines() if line.strip().endswith("product")]
    rows = [r for r in rows if r[-2:] == ["new", "product"]]  # product family - v1 ... new product
    assert rows and all(r[2] == "-" and r[3] == "v1" for r in rows)
    ids = sorted(r[0] for r in rows)
    assert invoke("manifest", "export").stdout.count("version:") == 1  # nothing in production

    done = invoke("promote", "--fleet", fleet)
    assert done.exit_code == 0 and f"promoted {len(ids)} product(s)" in done.stdout
    again = invoke("promote", "--fleet", fleet)
    assert "production is up to date" in again.stdout

    out = Path("production.yaml")
    assert invoke("manifest", "export", "-o", str(out)).exit_code == 0
    exported = yaml.safe_load(out.read_text())["production"]
    assert sorted(exported) == ids and all(e["version"] == 1 for e in exported.values())
    applied = invoke("manifest", "apply", str(out))
    assert "production matches the manifest" in applied.stdout

    first = ids[0]
    no_earlier = invoke("rollback", "-p", first, "-r", "why")
    assert_user_error(no_earlier, f"{first!r} has no earlier production version than v1")
    assert invoke("retire", "-p", first, "-r", "discontinued").exit_code == 0
    status = invoke("status", "--product", first)
    assert "retired" in status.stdout and "discontinued" in status.stdout
    assert_user_error(invoke("lineage", first), f"product {first!r} is retired (discontinued)")
    assert first not in invoke("manifest", "export").stdout
    restored = invoke("restore", "-p", first, "-r", "back")
    assert restored.exit_code == 0 and first in restored.stdout
    assert_user_error(invoke("restore", "-p", first, "-r", "x"), f"not retired: {first!r}")

    trail = invoke("audit", "--json")
    actions = [r["action"] for r in __import__("json").loads(trail.stdout)]
    assert actions[-3:] == ["promote", "retire", "restore"] and "register" in actions
    assert invoke("audit", "verify").exit_code == 0
