"""The hostile-input corpus through the `factory` command line, as a new user would meet it.

Each case asserts the exit code, one error line naming the file, field, product or variable, no
traceback, exactly the bad products quarantined with the right reason, the good products ready,
and nothing written outside FACTORY_HOME (temporary files included)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import prefect.main  # noqa: F401  (Prefect's console handler binds stderr at first import)
import pytest
from typer.testing import CliRunner

from factory.cli import app
from factory.settings import get_settings
from tests.support.hostile import AS_OF, FLEET, Case, all_cases

CASES = all_cases()


def test_the_corpus_is_large_and_names_are_unique() -> None:
    names = [c.name for c in CASES]
    assert len(names) >= 60
    assert len(set(names)) == len(names)


def tree(root: Path, skip: Path) -> dict[str, bytes]:
    """Every file under root (outside `skip`) with its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and skip not in p.parents
    }


@pytest.fixture
def case_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder with fleet.yaml, its own FACTORY_HOME and its own temp folder."""
    for var in [v for v in os.environ if v.startswith("FACTORY_")]:
        monkeypatch.delenv(var)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "fleet.yaml").write_text(FLEET)
    return tmp_path


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input(case: Case, case_root: Path) -> None:
    if case.write:
        case.write(case_root)
    home = case_root / "home"
    env = {"FACTORY_HOME": str(home), "FACTORY_AS_OF": AS_OF, "COLUMNS": "200"}
    env |= {k: v.format(root=case_root) for k, v in case.env.items()}
    before = tree(case_root, home)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, case.args, env=env)
    finally:
        get_settings.cache_clear()

    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert result.exit_code == case.exit_code, output
    if case.exit_code:
        assert_one_error_line(result.stderr, case.names)
    else:
        assert_quarantine(json.loads(result.stdout), case)
    assert tree(case_root, home) == before, "wrote outside FACTORY_HOME"
    assert not any((case_root / "tmp").iterdir()), "left temporary files behind"


def assert_one_error_line(stderr: str, names: tuple[str, ...]) -> None:
    """One `error:` line (or click's one usage line) holding every name; a hint at most."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    if not errors:  # click's usage errors: a boxed one-liner under the usage line
        errors = [line for line in lines if "Invalid value" in line or "No such" in line]
    assert len(errors) == 1, stderr
    for name in names:
        assert name in errors[0], f"{name!r} not in {errors[0]!r}"
    if errors[0].startswith("error: "):
        assert len(lines) <= 2, stderr  # the line and its hint


def assert_quarantine(report: dict, case: Case) -> None:
    """Exactly the case's bad products quarantined, each with its reason; the good ones ready."""
    quarantined = report["quarantined"]
    assert set(quarantined) == set(case.quarantined), quarantined
    for pid, words in case.quarantined.items():
        assert words in "; ".join(quarantined[pid]), (pid, quarantined[pid])
    ready = {pid for ids in report["ready"].values() for pid in ids}
    assert set(case.ready) <= ready, set(case.ready) - ready
