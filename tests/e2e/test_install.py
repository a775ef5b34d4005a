"""A non-editable install works: build the wheel, install it into a fresh venv (no path back to
this checkout), and run the console scripts from a folder outside the repository.

Slow (a venv install takes a minute or two); ``make test-install`` runs it, and CI does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.install]


def _run(*cmd, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}
    env.pop("MLPLAB_RUN_ID", None)
    out = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert out.returncode == 0, f"{cmd}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return out


def test_wheel_install_runs_train_eval_predict_outside_the_repo(tmp_path):
    wheels, venv, outside = tmp_path / "wheels", tmp_path / "venv", tmp_path / "elsewhere"
    outside.mkdir()
    _run(sys.executable, "-m", "pip", "wheel", "-q", ROOT, "--no-deps", "-w", wheels, cwd=tmp_path)
    (wheel,) = wheels.glob("mlplab-*.whl")
    _run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    pip = [venv / "bin" / "python", "-m", "pip", "install", "-q", "-c", ROOT / "constraints.txt"]
    _run(*pip, "torch==2.13.0", cwd=tmp_path)  # the CPU build, never a CUDA download
    _run(*pip, wheel, cwd=tmp_path)

    bin_ = venv / "bin"
    where = _run(bin_ / "python", "-c", "import mlplab; print(mlplab.__file__)", cwd=outside)
    assert str(venv) in where.stdout and str(ROOT) not in where.stdout  # not editable
    train = [bin_ / "mlplab-train", "trainer.max_epochs=1", "run_name=w", "logger=csv"]
    out = _run(*train, cwd=outside)
    assert f"run dir: {outside / 'logs' / 'train' / 'w'}" in out.stdout.replace("./", f"{outside}/")
    ckpt = outside / "logs" / "train" / "w" / "checkpoints" / "best.ckpt"
    assert ckpt.is_file()

    out = _run(bin_ / "mlplab-eval", f"ckpt_path={ckpt}", cwd=outside)
    assert "test/acc" in out.stdout

    (outside / "new.csv").write_text("lectures,hours\n10,8.5\n2,1.0\n")
    _run(bin_ / "mlplab-predict", f"ckpt_path={ckpt}", "input=new.csv", "output=p.csv", cwd=outside)
    lines = (outside / "p.csv").read_text().splitlines()
    assert lines[0].startswith("lectures,hours,prediction") and len(lines) == 3

    out = _run(bin_ / "mlplab-sweep", "--help", cwd=outside)
    assert "hparams_search" in out.stdout
