"""mlplab uses only the public APIs of the libraries it builds on, and patches none of them: a
fork of the template survives the next minor release of each.

Read from the source (every module of ``src/``): no import of a private module or name of
those libraries, no access to a private attribute that isn't mlplab's own (``obj._x`` where
``_x`` is not defined anywhere in mlplab; ``getattr(obj, "_x")``; ``obj.__dict__["_x"]``), no
assignment to an attribute of something imported from them. And at run time: importing every
mlplab module changes no attribute of any module of those libraries loaded before.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

LIBRARIES = ("hydra", "omegaconf", "optuna", "lightning", "torch", "wandb", "submitit")
SOURCES = sorted((ROOT / "src").rglob("*.py"))


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _library(module: str | None) -> bool:
    return module is not None and module.split(".")[0] in LIBRARIES


def _own_names() -> set[str]:
    """Every name mlplab itself defines: functions, classes, assigned names and attributes,
    arguments. An ``obj._x`` with ``_x`` among them is mlplab's own business."""
    names: set[str] = set()
    for path in SOURCES:
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store):
                if isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
                    names.add(node.slice.value)  # obj.__dict__["_x"] = ...: its own
    return names


def _violations(path: Path, own: set[str]) -> list[str]:
    tree = _tree(path)
    imported: set[str] = set()  # names bound to a library module or one of its objects
    found = []

    def where(node: ast.AST) -> str:
        return f"{path.relative_to(ROOT)}:{node.lineno}"

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _library(alias.name):
                    imported.add((alias.asname or alias.name).split(".")[0])
                    if any(_is_private(part) for part in alias.name.split(".")):
                        found.append(f"{where(node)} imports {alias.name}")
        elif isinstance(node, ast.ImportFrom) and _library(node.module):
            if any(_is_private(part) for part in node.module.split(".")):
                found.append(f"{where(node)} imports from {node.module}")
            for alias in node.names:
                imported.add(alias.asname or alias.name)
                if _is_private(alias.name):
                    found.append(f"{where(node)} imports {alias.name} from {node.module}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr) and node.attr not in own:
            found.append(f"{where(node)} reads .{node.attr}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            args = node.args[1:2]
            if node.func.id in ("getattr", "hasattr", "setattr", "delattr") and args:
                name = args[0].value if isinstance(args[0], ast.Constant) else None
                if isinstance(name, str) and _is_private(name) and name not in own:
                    found.append(f"{where(node)} {node.func.id}(..., {name!r})")
                if node.func.id in ("setattr", "delattr") and _root(node.args[0]) in imported:
                    found.append(f"{where(node)} {node.func.id} on {_root(node.args[0])}")
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute):
            key = node.slice.value if isinstance(node.slice, ast.Constant) else None
            private = isinstance(key, str) and _is_private(key) and key not in own
            if node.value.attr == "__dict__" and private:
                found.append(f"{where(node)} reads __dict__[{key!r}]")
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            for part in target.elts if isinstance(target, ast.Tuple) else [target]:
                if isinstance(part, ast.Attribute) and _root(part) in imported:
                    found.append(f"{where(node)} assigns {ast.unparse(part)}")
    return found


def _root(node: ast.AST) -> str | None:
    while isinstance(node, ast.Attribute | ast.Subscript | ast.Call):
        node = node.value if not isinstance(node, ast.Call) else node.func
    return node.id if isinstance(node, ast.Name) else None


def test_no_private_names_and_no_patches_in_the_source():
    own = _own_names()
    found = [v for path in SOURCES for v in _violations(path, own)]
    assert found == [], "\n".join(found)


def test_the_check_finds_what_it_looks_for(tmp_path, monkeypatch):
    """The checker itself: each kind of use it refuses, in a module of its own."""
    bad = tmp_path / "src" / "bad.py"
    bad.parent.mkdir()
    bad.write_text(
        "import omegaconf.base\n"
        "from hydra._internal.utils import get_args_parser\n"
        "from omegaconf import _utils\n"
        "from torch import nn\n"
        "x = object()\n"
        "x._content\n"
        "getattr(x, '_cached_frozen_trial')\n"
        "x.__dict__['_val']\n"
        "omegaconf.base.parse = len\n"
        "nn.Module.forward = len\n"
        "setattr(omegaconf, 'x', 1)\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    found = _violations(bad, own=set())
    assert len(found) == 8, found
    for text in ("hydra._internal", "_utils", "._content", "_cached_frozen_trial", "'_val'"):
        assert any(text in v for v in found), text
    assert any("assigns omegaconf.base.parse" in v for v in found)
    assert any("assigns nn.Module.forward" in v for v in found)
    assert any("setattr on omegaconf" in v for v in found)


CHECK = """
import importlib, pkgutil, sys, types
LIBRARIES = {libraries!r}
for name in LIBRARIES:
    importlib.import_module(name)
import omegaconf.base, hydra.core.config_store, lightning.pytorch, optuna.storages  # noqa
def state():
    out = {{}}
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] in LIBRARIES and isinstance(module, types.ModuleType):
            out[name] = {{k: id(v) for k, v in vars(module).items()}}
    return out
before = state()
import mlplab
for info in pkgutil.walk_packages(mlplab.__path__, "mlplab."):
    if not info.name.endswith("__main__"):  # running it is not importing it
        importlib.import_module(info.name)
after = state()
changed = []
for name, attrs in before.items():
    for key, value in after[name].items():
        if key in attrs and attrs[key] != value:
            changed.append(f"{{name}}.{{key}}")
        elif key not in attrs and not isinstance(getattr(sys.modules[name], key), types.ModuleType):
            changed.append(f"{{name}}.{{key}} (added)")
print("\\n".join(changed))
"""


@pytest.mark.slow
def test_importing_mlplab_changes_no_library_module():
    code = CHECK.format(libraries=LIBRARIES)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "", done.stdout
