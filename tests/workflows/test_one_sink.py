"""The participant compute path returns results and one sink writes them (issue 13).

Static: no compute module (measures, DCM engine, atlas, the run/session/DCM steps, the report's
rendering and figures) calls a writer; only ``workflows/sink.py`` (and ``bids/``, which owns the
writers) does. Dynamic: the run and session steps, run in an empty working folder, write nothing.
"""

import ast
from pathlib import Path

import ptsd_bidsapp

PACKAGE = Path(ptsd_bidsapp.__file__).parent
COMPUTE_MODULES = sorted(
    [*PACKAGE.glob("measures/*.py"), *PACKAGE.glob("dcm/*.py"), *PACKAGE.glob("reports/*.py"),
     PACKAGE / "atlas.py", PACKAGE / "templates.py",
     PACKAGE / "workflows" / "run_measures.py", PACKAGE / "workflows" / "dcm_step.py"])
#: calls that write files: our writers (bids/outputs.py) and the usual library ones
WRITERS = {"write_tsv", "write_json", "write_nifti", "write_derivative", "atomic_write_bytes", "atomic_write_text",
           "write_subject_outputs", "write_subject_report", "save_result",
           "savez", "savez_compressed", "save", "to_filename", "to_csv", "to_json", "write_text", "write_bytes",
           "mkdir", "makedirs", "copy", "copyfile", "move", "rename", "replace", "unlink", "rmtree"}


def _called_name(node: ast.Call) -> str | None:
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None


def _violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    label = path.relative_to(PACKAGE) if PACKAGE in path.parents else path.name
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _called_name(node)
            if name == "replace" and isinstance(node.func, ast.Attribute) and not _is_os(node.func.value):
                continue  # str.replace / DataFrame.replace
            if name == "to_csv" and not node.args and not any(k.arg == "path_or_buf" for k in node.keywords):
                continue  # to_csv() returns text
            if name == "copy" and not node.args:
                continue  # DataFrame.copy()
            if name in WRITERS:
                found.append(f"{label}:{node.lineno} calls {name}")
            if name == "open" and any(isinstance(a, ast.Constant) and isinstance(a.value, str)
                                      and set(a.value) & set("wax+") for a in node.args[1:2]):
                found.append(f"{label}:{node.lineno} opens a file for writing")
            if name == "savefig" and node.args and isinstance(node.args[0], ast.Constant):
                found.append(f"{label}:{node.lineno} saves a figure to a file")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.endswith("workflows.sink"):
            found.append(f"{label}:{node.lineno} imports the sink")
    return found


def _is_os(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id in ("os", "shutil")


def test_compute_modules_call_no_writer():
    assert COMPUTE_MODULES and all(p.is_file() for p in COMPUTE_MODULES)
    violations = [v for path in COMPUTE_MODULES for v in _violations(path)]
    assert violations == [], "\n".join(violations)


def test_the_checker_sees_a_writer(tmp_path):
    """The static check is not vacuous: a compute function writing its table is caught."""
    probe = tmp_path / "probe.py"
    probe.write_text("def leak(table, path):\n    write_tsv(path, table)\n    table.to_csv(path)\n"
                     "    open(path, 'w')\n    text = table.to_csv()\n    return text.replace('a', 'b')\n")
    assert len(_violations(probe)) == 3


def test_only_the_sink_and_bids_write_in_workflows():
    """Inside workflows/, the writers are imported by the sink alone."""
    for path in sorted((PACKAGE / "workflows").glob("*.py")):
        tree = ast.parse(path.read_text())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                    and node.module == "ptsd_bidsapp.bids.outputs" for alias in node.names}
        writers = imported & {"write_tsv", "write_json", "write_nifti", "write_derivative", "atomic_write_bytes",
                              "atomic_write_text"}
        assert not writers or path.name == "sink.py", (path.name, writers)
