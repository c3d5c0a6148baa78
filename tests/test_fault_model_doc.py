"""docs/fault_model.md names the test of every row, and every test it names exists.

The fault model is the closing note of issue 14 ("the fault-model table with the test for each
row"): a row without a test, or a renamed/removed test still cited, fails here. References are
``tests/<file>.py::<test>``; ``::<test>`` alone continues the file named before it in the row.
"""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "fault_model.md"
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)?::(\w+)")


def _table_rows() -> list[list[str]]:
    """Body rows of every table (header rows start with '| input', separators with '|---')."""
    rows = []
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("|") and not line.startswith(("| input", "|---")):
            rows.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
    return rows


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name.startswith("test")}


def test_every_row_names_an_existing_test():
    rows = _table_rows()
    assert len(rows) >= 30  # the tables were found
    missing, unnamed = [], []
    for row in rows:
        refs = REFERENCE.findall(row[-1])
        if not refs or refs[0][0] == "":
            unnamed.append(" | ".join(row[:2]))
            continue
        current = None
        for file, name in refs:
            current = file or current
            if name not in _test_names(ROOT / current):
                missing.append(f"{current}::{name}")
    assert unnamed == [], f"rows without a test: {unnamed}"
    assert missing == [], f"tests named in {DOC.name} that do not exist: {missing}"
