"""The code part of the training key: only the code that decides a model, plus library versions."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from factory.adapters.lineage import FACTORY_ROOT, MODEL_CODE, code_fingerprint
from factory.core.fingerprints import training_key
from factory.core.fleet import load_fleet
from tests.support.fleets import REPO

FLEET = load_fleet(REPO / "fleet.yaml").spec


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the factory package (and the flows and tasks beside it) to edit."""
    root = tmp_path / "factory"
    shutil.copytree(FACTORY_ROOT, root, ignore=shutil.ignore_patterns("__pycache__"))
    for package in ("flows", "tasks"):
        shutil.copytree(REPO / package, tmp_path / package)
    return root


def key(root: Path) -> str:
    """A product's training key when the code lives at `root`."""
    code_fingerprint.cache_clear()
    return training_key("data-fp", FLEET.families[0], FLEET.gate, code_fingerprint(root))


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def test_the_installed_tree_and_a_copy_have_the_same_key(tree: Path) -> None:
    assert key(tree) == key(FACTORY_ROOT)


@pytest.mark.parametrize(
    "edited",
    [
        "cli.py",
        "local.py",
        "adapters/registry/registry.py",
        "adapters/lineage.py",
        "core/contract.py",
        "../flows/train_fleet.py",
        "../tasks/train.py",
    ],
)
def test_editing_code_that_does_not_decide_a_model_keeps_every_key(tree: Path, edited: str) -> None:
    before = key(tree)
    append(tree / edited, "\n# a comment, a log line, a new option\n")
    assert key(tree) == before


@pytest.mark.parametrize("edited", MODEL_CODE)
def test_editing_code_that_decides_a_model_changes_the_key(tree: Path, edited: str) -> None:
    before = key(tree)
    append(tree / edited, "\nSEED_OFFSET = 1\n")
    assert key(tree) != before


def test_a_model_library_upgrade_changes_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from factory.adapters import lineage

    before = key(FACTORY_ROOT)
    real = lineage._installed
    monkeypatch.setattr(lineage, "_installed", lambda n: "9.9" if n == "lightgbm" else real(n))
    assert key(FACTORY_ROOT) != before
    code_fingerprint.cache_clear()
