"""Code versions of workflow steps, derived from what their modules import (never listed by hand).

A rule's code version is the hash of its stage module and of every ``weightspace`` module that
module imports, directly or through others, at module level or inside a function (a lazy
import is code the step may run). Given to the rule as a param, an edit to any of them reruns
the step and nothing else: Snakemake tracks the scripts itself, not the library they call.
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def _module_file(name: str, root: Path = PACKAGE) -> Path | None:
    """``a.b`` (relative to the package) as its file: a/b.py or a/b/__init__.py."""
    base = root.joinpath(*name.split(".")) if name else root
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path, root: Path, package: list[str] | None) -> set[str]:
    """The package modules one file imports (names relative to the package, dotted);
    ``package``: the file's own package inside ``root`` (relative imports), None for a file
    outside it (a workflow script: absolute imports only). Each file is parsed once per
    version (cached on its path, size and mtime): the workflow asks for every rule at parse time."""
    st = path.stat()
    return set(_parsed_imports(path, root, None if package is None else tuple(package), st.st_size, st.st_mtime_ns))


@cache
def _parsed_imports(path: Path, root: Path, package: tuple[str, ...] | None, size: int, mtime_ns: int) -> frozenset[str]:
    package = None if package is None else list(package)
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level and package is not None:  # from . import x / from .x import y / from ..core import z
                mod = package[: len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            elif not node.level and node.module and node.module.split(".")[0] == root.name:
                mod = node.module.split(".")[1:]
            else:
                continue
            found.add(".".join(mod))
            found.update(".".join(mod + [alias.name]) for alias in node.names)  # `from . import hosvd`
        elif isinstance(node, ast.Import):
            found.update(".".join(a.name.split(".")[1:]) for a in node.names if a.name.split(".")[0] == root.name)
    # package __init__ files hold docstrings only: not counted (editing a docstring list of
    # modules must not rerun every step)
    return frozenset(m for m in found if (f := _module_file(m, root)) is not None and f.name != "__init__.py")


@cache
def closure(*modules: str, root: Path = PACKAGE) -> tuple[str, ...]:
    """Every package module reached from ``modules`` by imports (themselves included), sorted.
    Module names are relative to the package, dotted or with slashes (``core/sharing``)."""
    todo = [m.replace("/", ".") for m in modules]
    seen: set[str] = set()
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        path = _module_file(m, root)
        if path is None:
            raise ValueError(f"no module {m!r} in {root}")
        seen.add(m)
        todo.extend(_imports(path, root, list(path.relative_to(root).parent.parts)) - seen)
    return tuple(sorted(seen))


def code_version(*modules: str, root: Path = PACKAGE) -> str:
    """16 hex digits of the hash of the files of ``closure(*modules)`` (names and contents)."""
    h = hashlib.sha1()
    for m in closure(*modules, root=root):
        h.update(m.encode() + b"\0" + _module_file(m, root).read_bytes())
    return h.hexdigest()[:16]


def script_modules(script: str | Path, root: Path = PACKAGE) -> tuple[str, ...]:
    """The package modules a workflow script imports (``from weightspace.x import …``,
    ``from weightspace import x``, ``import weightspace.x``)."""
    return tuple(sorted(_imports(Path(script), root, None)))


def script_version(script: str | Path, root: Path = PACKAGE) -> str:
    """The code version of a workflow script's step: ``code_version`` of what it imports."""
    return code_version(*script_modules(script, root), root=root)
