"""Layering: no module imports from a layer above it (``cli`` at the top, ``errors`` at the bottom).

Every ``import`` / ``from … import`` of every module of the package is read with ``ast``
(also those inside functions, which run later but are dependencies all the same) and
checked against :data:`FORBIDDEN`. The test lists every violation at once.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "ptsd_bidsapp"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

#: Layer (first component under the package) -> layers it must not import.
#: ``*`` = every other part of the package.
FORBIDDEN: dict[str, set[str]] = {
    "errors": {"*"},
    "dcm": {"peb", "glmnet", "group", "workflows", "bids", "reports", "cli"},
    "peb": {"group", "workflows", "cli", "reports", "bids"},
    "glmnet": {"group", "workflows", "cli", "reports", "bids"},
    "measures": {"workflows", "group", "cli"},
    "group": {"workflows", "cli"},
    "workflows": {"group", "cli"},
}
#: ``cli`` is the top: nothing outside it imports it, except the ``python -m`` entry point.
TOP = "cli"
ENTRY_POINTS = {f"{PACKAGE}.__main__"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, name: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import of the package's own modules in ``source``.

    ``name`` is the module's dotted name. ``from ptsd_bidsapp import errors`` counts as
    importing ``ptsd_bidsapp.errors``; relative imports are resolved against the module's package.
    """
    package = name if is_package else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module == PACKAGE:  # from ptsd_bidsapp import errors, __version__
                found += [(node.lineno, f"{PACKAGE}.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, module))
    return [(line, module) for line, module in found if module == PACKAGE or module.startswith(PACKAGE + ".")]


def layer(module: str) -> str:
    """First component under the package (``ptsd_bidsapp.peb.fit`` -> ``peb``); '' for the root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def violations() -> list[str]:
    problems = []
    for path in sorted(ROOT.rglob("*.py")):
        source = module_name(path)
        src_layer = layer(source)
        forbidden = FORBIDDEN.get(src_layer, set())
        for line, target in imported_modules(path.read_text(), source, path.name == "__init__.py"):
            dst_layer = layer(target)
            if dst_layer == src_layer:
                continue
            where = f"{path.relative_to(ROOT.parent)}:{line}"
            if "*" in forbidden or dst_layer in forbidden:
                problems.append(f"{where}: {src_layer or PACKAGE} imports {target} ({dst_layer or 'package root'})")
            elif dst_layer == TOP and source not in ENTRY_POINTS:
                problems.append(f"{where}: {target} imported from below the top layer '{TOP}'")
    return problems


def test_layers_exist():
    """The rules name real parts of the package (a renamed layer must not silently pass)."""
    layers = {layer(module_name(p)) for p in ROOT.rglob("*.py")}
    named = set(FORBIDDEN) | {TOP} | {dst for dsts in FORBIDDEN.values() for dst in dsts if dst != "*"}
    assert named <= layers, f"rules name missing layers: {sorted(named - layers)}"


def test_no_module_imports_from_a_layer_above_it():
    problems = violations()
    assert not problems, f"{len(problems)} layering violation(s):\n  " + "\n  ".join(problems)


def test_the_checker_sees_imports_inside_functions_and_relative_imports():
    """The parser itself: nested and relative imports are resolved (guards against a vacuous pass)."""
    code = "import numpy\nfrom . import api\n\ndef f():\n    from ..group import run\n    from ptsd_bidsapp import cli\n"
    modules = {module for _, module in imported_modules(code, f"{PACKAGE}.dcm.probe")}
    assert modules == {f"{PACKAGE}.dcm", f"{PACKAGE}.group", f"{PACKAGE}.cli"}
    modules = {module for _, module in imported_modules("from .fit import x\n", f"{PACKAGE}.peb", is_package=True)}
    assert modules == {f"{PACKAGE}.peb.fit"}
    assert [layer(m) for m in sorted(modules)] == ["peb"]
