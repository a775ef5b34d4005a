"""The README as printed: its code blocks, in order, from a folder outside the repository.

Blocks: ```` ```bash ```` commands run one by one (the slow test); a ```` ```python ```` or
```` ```yaml ```` block whose first line is ``# file: NAME`` is that file, written where the
commands run; ```` ```bash repo ```` runs in the repository (its ``make`` targets must exist)
and ```` ```bash cluster ```` needs GPUs or SLURM (its commands must compose here); each line
of a ```` ```bash serve ```` block starts a web UI on its ``--port``: it must answer there.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from mlplab.run.preflight import parse_command_line, preflight
from mlplab.runs import build_parser as runs_parser
from tests.conftest import ROOT

README = ROOT / "README.md"
BLOCK = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.S | re.M)
BIN = Path(sys.executable).parent
ENTRY = {"mlplab-train": "train", "mlplab-eval": "eval", "mlplab-predict": "predict"}


def blocks() -> list[tuple[str, str, str]]:
    """(language, tag, text) of each code block, in order."""
    return [(m[1], m[2].strip(), m[3]) for m in BLOCK.finditer(README.read_text())]


def commands(text: str) -> list[str]:
    """The command lines of a bash block, without their comments."""
    lines = []
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            lines.append(shlex.join(words))
    return lines


def file_blocks() -> dict[str, str]:
    found = {}
    for language, _, text in blocks():
        first = text.splitlines()[0]
        if language in ("python", "yaml") and first.startswith("# file: "):
            found[first.removeprefix("# file: ").split()[0]] = text
    return found


def write_files(folder: Path) -> None:
    for name, text in file_blocks().items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


def test_every_block_is_runnable_or_a_file():
    for language, tag, text in blocks():
        first = text.splitlines()[0]
        assert language == "bash" or first.startswith("# file: "), (language, first)
        assert tag in ("", "repo", "cluster", "serve"), tag
    files = file_blocks()
    assert {"my_data.py", "my_model.py", "myconf/model/mine.yaml"} <= set(files)
    for name, text in files.items():
        if name.endswith(".py"):
            compile(text, name, "exec")
        else:
            yaml.safe_load(text)


def test_make_targets_exist_and_make_help_lists_every_target():
    listed = subprocess.run(["make", "help"], cwd=ROOT, capture_output=True, text=True).stdout
    listed = {line.split()[1] for line in listed.splitlines() if line.strip().startswith("make")}
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.M))
    assert targets <= listed, targets - listed
    for _, tag, text in blocks():
        for line in commands(text):
            if line.startswith("make "):
                assert tag == "repo" and line.split()[1] in listed, line


def test_every_ui_is_installed_and_names_its_port():
    served = [line for _, tag, text in blocks() if tag == "serve" for line in commands(text)]
    assert {line.split()[0] for line in served} == {"tensorboard", "mlflow", "optuna-dashboard"}
    for line in served:
        assert (BIN / line.split()[0]).is_file(), line
        assert "--port" in shlex.split(line), line


def serve(line: str, folder: Path, env: dict, timeout: float = 120) -> int:
    """Start the UI of ``line`` in ``folder``; the HTTP status of its first answer on its port
    (it is stopped then)."""
    words = shlex.split(line)
    port = int(words[words.index("--port") + 1])
    server = subprocess.Popen(
        words, cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert server.poll() is None, f"{line} exited: {server.stderr.read().decode()[-2000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as answer:
                    return answer.status
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"{line} did not answer on port {port} in {timeout} s")
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_every_command_composes_and_its_values_check(tmp_path, monkeypatch):
    """Each command line is what its entry point accepts (composed and checked as it would be
    before Hydra starts); those that need an earlier command's output are checked for syntax."""
    monkeypatch.chdir(tmp_path)
    write_files(tmp_path)
    checked = 0
    for _, tag, text in blocks():
        for line in commands(text):
            words = shlex.split(line)
            if words[0] == "python" and tag != "cluster":  # it writes what later lines read
                subprocess.run([sys.executable, *words[1:]], check=True, timeout=120)
                continue
            if words[0] == "srun":
                words = words[1:]
            if words[0] == "mlplab-runs":  # reads what earlier lines trained: its options parse
                runs_parser().parse_args(words[1:])
                continue
            if words[0] not in ENTRY:
                continue
            argv, entry = words[1:], ENTRY[words[0]]
            later = any(w.startswith(("resume=", "rerun=", "ckpt_path=")) for w in argv)
            later = later or "logs/sweep" in line or entry != "train"
            if later or tag == "cluster":  # outputs of earlier commands, or a cluster
                parse_command_line(argv, entry)
                continue
            preflight(argv, entry, train=True)
            checked += 1
    assert checked >= 20


@pytest.mark.slow
def test_readme_runs_as_printed_from_a_folder_outside_the_repo(tmp_path):
    folder = tmp_path / "outside"
    folder.mkdir()
    write_files(folder)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    env.pop("MLPLAB_RUN_ID", None)
    ran = []
    for language, tag, text in blocks():
        if language != "bash" or tag not in ("", "serve"):
            continue
        for line in commands(text):
            if tag == "serve":
                assert serve(line, folder, env) == 200, line
                ran.append(line)
                continue
            done = subprocess.run(
                line, shell=True, cwd=folder, env=env, capture_output=True, text=True, timeout=900
            )
            assert done.returncode == 0, f"{line}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
            ran.append(line)
    assert (folder / "pred.csv").is_file() and (folder / "logs" / "train" / "lit").is_dir()
    assert (folder / "lr.png").is_file() and (folder / "runs.csv").is_file()
    assert len(ran) >= 25
