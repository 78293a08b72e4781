"""No module of genq reaches into another's private names.

A name with a leading underscore is a promise that only its own module uses it; code in
another module that reads ``client._portal`` or imports ``_helper`` breaks silently when
that module changes. This scans ``src/genq`` with ``ast``: an attribute ``obj._name``
(``obj`` not ``self``/``cls``) or an import of ``_name`` is allowed only where the same
module defines ``_name`` (as a function, class, method, assignment or attribute), so
objects of a module's own classes may still touch each other's internals.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "genq"
# Private names of Python and of libraries, not of a genq module.
EXTERNAL = {
    "_replace", "_asdict", "_fields", "_make",  # namedtuple / urllib's SplitResult
    "_exit",  # os._exit
    "_current_frames",  # sys._current_frames: the loop watchdog samples the loop's stack
}


def private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def defined_here(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    # __slots__ entries name attributes too
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets):
            for elt in ast.walk(node.value):
                if isinstance(elt, ast.Constant) and isinstance(elt.value, str):
                    names.add(elt.value)
    return names


def violations(path: Path, root: Path = SRC.parent) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    own = defined_here(tree) | EXTERNAL
    where = path.relative_to(root)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and private(node.attr) and node.attr not in own:
            if not (isinstance(node.value, ast.Name) and node.value.id in {"self", "cls"}):
                found.append(f"{where}:{node.lineno}: .{node.attr}")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("genq"):
            found += [f"{where}:{node.lineno}: import {alias.name} from {node.module}"
                      for alias in node.names if private(alias.name)]
    return found


def test_no_module_uses_another_modules_private_names() -> None:
    found = [v for path in sorted(SRC.rglob("*.py")) for v in violations(path)]
    assert found == [], "private names used across modules:\n" + "\n".join(found)


def test_the_scan_finds_what_it_looks_for(tmp_path: Path) -> None:
    # The check itself must be able to fail: a reach into another object's private
    # attribute and an import of a private name are reported; the module's own are not.
    path = tmp_path / "sample.py"
    path.write_text("from genq.client import _hidden\n\n"
                    "class Own:\n    def __init__(self):\n        self._mine = 1\n\n"
                    "def f(client, other: Own):\n    return client._portal, other._mine\n")
    assert violations(path, tmp_path) == ["sample.py:1: import _hidden from genq.client",
                                          "sample.py:8: ._portal"]
