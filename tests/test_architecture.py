"""The package's shape (``rollingdepth/`` as a whole): each option spelled in one module."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "rollingdepth"
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
CHECKPOINT = "prs-eth/rollingdepth-v1-0"


def _docstrings(tree: ast.AST) -> set[int]:
    """The string constants that are docstrings (documentation, not spellings the program uses)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def spellings(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Every option-like string (``--xxx``) and the default checkpoint id in the code of
    ``root``'s modules -> the modules that write it."""
    where: dict[str, set[str]] = defaultdict(set)
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                for name in OPTION.findall(node.value):
                    where[name].add(str(path.relative_to(root.parent)))
                if CHECKPOINT in node.value:
                    where[CHECKPOINT].add(str(path.relative_to(root.parent)))
    return where


def test_each_option_is_spelled_in_one_module():
    """An option's spelling (and the default checkpoint id) is written where it is declared;
    everything else asks for it (``rollingdepth.runtime.run_config.option_name`` and the like)."""
    repeated = {name: sorted(modules) for name, modules in spellings().items() if len(modules) > 1}
    assert not repeated, "\n".join(f"{name}: {', '.join(modules)}" for name, modules in sorted(repeated.items()))


def test_the_scan_sees_a_repeated_spelling(tmp_path):
    """The scan finds a literal written in two modules, in code and f-strings but not in docstrings."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "a.py").write_text('"""Mentions --only-in-docs."""\nFLAG = "--res"\n')
    (package / "b.py").write_text('def f(x):\n    """--only-in-docs too."""\n    return f"--res {x}; {CHECKPOINT!r}"\n'
                                  f'CHECKPOINT = "{CHECKPOINT}"\n')
    found = spellings(package)
    assert found["--res"] == {"pkg/a.py", "pkg/b.py"}
    assert "--only-in-docs" not in found and found[CHECKPOINT] == {"pkg/b.py"}
