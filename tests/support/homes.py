"""A factory home in a scratch folder for the tests that share one trained home per module."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from factory.settings import get_settings
from tests.support.fleets import AS_OF


@contextmanager
def home_in(root: Path) -> Iterator[Path]:
    """Work in `root` with FACTORY_HOME=`root/factory` on embedded defaults (data, SQLite
    MLflow store, local Ray), settings re-read on entry and on exit."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("FACTORY_HOME", str(root / "factory"))
        mp.setenv("FACTORY_AS_OF", AS_OF)
        for var in ("FACTORY_DATA_URL", "FACTORY_MLFLOW_TRACKING_URI", "RAY_ADDRESS"):
            mp.delenv(var, raising=False)
        get_settings.cache_clear()
        try:
            yield root / "factory"
        finally:
            get_settings.cache_clear()
