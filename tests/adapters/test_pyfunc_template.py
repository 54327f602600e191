"""The pyfunc template's temp folder leaves with the process that made it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from tests.support.fleets import REPO

SCRIPT = """
import os, sys
from factory.adapters.registry.pyfunc import _pyfunc_template

template = _pyfunc_template()
assert (template / "MLmodel").is_file()
child = os.fork()
if child == 0:
    sys.exit(0)  # a forked child runs the exit handlers it inherited
os.waitpid(child, 0)
print(template.parent, template.exists(), flush=True)
"""


OUT = {"capture_output": True, "text": True, "check": True}


def test_the_template_folder_is_removed_when_its_process_exits(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], **OUT)
    killed = tmp_path / f"factory-pyfunc-{gone.stdout.strip()}-abc"  # a kill -9 left it
    (killed / "template").mkdir(parents=True)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    folder, kept_after_child_exit = done.stdout.split()
    assert Path(folder).parent == tmp_path
    assert kept_after_child_exit == "True"
    assert not Path(folder).exists()
    assert not killed.exists()
    assert not list(tmp_path.glob("factory-pyfunc-*"))


SHIPPED = """
import json, sys
sys.modules["factory"] = None  # the factory is not installed where the model is loaded
from saved import ProductModel
from pyfunc_model import ProductForecaster
folder = sys.argv[1]
manifest = json.load(open(folder + "/manifest.json"))
model = ProductModel(manifest, open(folder + "/model.bin", "rb").read())
print(json.dumps([float(v) for v in model.forecast()["yhat"]]))
"""


def test_the_shipped_code_loads_a_model_without_the_factory(tmp_path: Path) -> None:
    """What `code_paths` ships (forecaster.py, classical.py, saved.py and the pyfunc entry
    point) is all a registered model needs: a pooled ensemble forecasts the same there."""
    import json

    import numpy as np

    from factory.adapters.registry.pyfunc import (
        CLASSICAL_CODE,
        FORECASTER_CODE,
        MODEL_CODE,
        SAVED_CODE,
        manifest_of,
    )
    from factory.core.fleet import FamilySpec, GateSpec
    from factory.core.training import train_many
    from tests.core.test_pooled import FAMILY, POOLED_MODEL, panel

    ens = {"kind": "ensemble", "members": ["theta", "pooled_lightgbm"], "margin": 0.9}
    fam = FamilySpec.model_validate({**FAMILY, "models": [{"kind": "theta"}, POOLED_MODEL, ens]})
    outcome = train_many(panel([10, 20, 40]), fam, GateSpec(), {})[0]
    assert outcome.challenger == "ensemble"
    code, folder = tmp_path / "code", tmp_path / "model"
    code.mkdir(), folder.mkdir()
    for path in (FORECASTER_CODE, CLASSICAL_CODE, SAVED_CODE, MODEL_CODE):
        (code / path.name).write_text(path.read_text())
    (folder / "manifest.json").write_text(json.dumps(manifest_of(outcome)))
    (folder / "model.bin").write_bytes(outcome.payload)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", SHIPPED, str(folder)],
        env=env,
        cwd=code,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert np.allclose(json.loads(done.stdout), outcome.forecast)


def test_a_saved_model_folder_has_the_digest_it_reports_and_loads_in_mlflow(tmp_path: Path) -> None:
    """The folder is hashed as it is written: the digest registration signs is the one a
    verifier computes from the files, and MLflow loads the folder to the reported forecast."""
    import mlflow
    import numpy as np

    from factory.adapters.registry.digest import folder_digest
    from factory.adapters.registry.pyfunc import save_pyfunc
    from factory.core.fleet import FamilySpec, GateSpec
    from factory.core.training import train_many
    from tests.core.test_pooled import FAMILY, panel

    fam = FamilySpec.model_validate({**FAMILY, "models": [{"kind": "theta"}, {"kind": "ridge"}]})
    outcomes = train_many(panel([10, 20]), fam, GateSpec(), {})
    folders = [tmp_path / o.product_id for o in outcomes]
    digests = [save_pyfunc(o, f) for o, f in zip(outcomes, folders, strict=True)]
    assert digests == [folder_digest(f) for f in folders]
    assert len(set(digests)) == 2
    yhat = mlflow.pyfunc.load_model(str(folders[1])).predict(pd.DataFrame({"h": [12]}))["yhat"]
    assert np.allclose(yhat, outcomes[1].forecast)
