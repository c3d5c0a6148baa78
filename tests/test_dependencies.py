"""Declared dependencies = imported dependencies (a ``deptry``-style check).

The top-level third-party imports of every module of the package (read with ``ast``,
including imports inside functions and ``try`` blocks) must be exactly the distributions
of ``install_requires`` in ``setup.cfg``, mapped to their import names.
"""

from __future__ import annotations

import ast
import configparser
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "ptsd_bidsapp"

#: Distribution name -> import name where they differ.
IMPORT_NAMES = {
    "scikit-learn": "sklearn",
    "pyyaml": "yaml",
    "pybids": "bids",
}


def declared_imports() -> dict[str, str]:
    """Import name -> requirement line, from ``install_requires``."""
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    requirements = [line.strip() for line in config["options"]["install_requires"].splitlines() if line.strip()]
    declared = {}
    for requirement in requirements:
        distribution = re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower()
        declared[IMPORT_NAMES.get(distribution, distribution.replace("-", "_"))] = requirement
    return declared


def imported_third_party() -> dict[str, list[str]]:
    """Top-level third-party import name -> files importing it (stdlib and the package excluded)."""
    found: dict[str, list[str]] = {}
    for path in sorted((REPO / PACKAGE).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top == PACKAGE or top in sys.stdlib_module_names or top == "__future__":
                    continue
                found.setdefault(top, [])
                where = str(path.relative_to(REPO))
                if where not in found[top]:
                    found[top].append(where)
    return found


def test_declared_dependencies_are_the_imported_ones():
    declared = declared_imports()
    imported = imported_third_party()
    undeclared = {name: files for name, files in imported.items() if name not in declared}
    unused = sorted(requirement for name, requirement in declared.items() if name not in imported)
    assert not undeclared and not unused, (
        f"imported but not in install_requires: {undeclared}; in install_requires but never imported: {unused}"
    )


def test_the_mapping_reads_setup_cfg():
    """Guards against a vacuous pass: the core requirements are parsed and mapped."""
    declared = declared_imports()
    assert {"numpy", "scipy", "yaml", "bids"} <= set(declared)
