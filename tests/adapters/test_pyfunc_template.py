"""The pyfunc template's temp folder leaves with the process that made it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
