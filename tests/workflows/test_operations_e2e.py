"""fMRIPrep-style operations end to end (issue 15) on a small simulated trial with faces runs only.

One participant + group run with ``-t faces --notrack --resource-monitor --write-graph`` is shared;
each flag's test fails when the flag is ignored (its file is missing, its files are rewritten, its
crash count differs). The output dataset goes through bids-validator-deno.
"""

import contextlib
import io
import json
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from ptsd_bidsapp import errors
from ptsd_bidsapp.cli.run import main
from ptsd_bidsapp.simulate import simulate_trial

pytestmark = pytest.mark.slow

FAST = "elastic_net:\n  n_permutations: 20\n  n_bootstrap: 20\npeb:\n  n_permutations: 50\n"
SUBJECTS = ("01", "02", "03", "04", "05", "06")


def _main(argv):
    """Run the CLI, returning (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def faces_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("ops")
    bids = simulate_trial(base / "bids", n_subjects=6, seed=3, resolution=8.0, n_volumes=40, tasks=["faces"])
    config = base / "fast.yml"
    config.write_text(FAST)
    out, work = base / "out", base / "work"
    common = [bids, out, "-w", work, "--skip-bids-validation", "--config", config, "-t", "faces"]
    samples_before = set(Path.cwd().glob(".proc-*"))
    participant = _main([*common[:2], "participant", *common[2:], "--nprocs", "2", "--notrack",
                         "--resource-monitor", "--write-graph"])
    samples_in_cwd = set(Path.cwd().glob(".proc-*")) - samples_before
    group = _main([*common[:2], "group", *common[2:], "--nprocs", "2"])
    return {"bids": bids, "out": out, "work": work, "config": config, "participant": participant, "group": group,
            "common": common, "samples_in_cwd": samples_in_cwd}


def _features(out: Path) -> pd.DataFrame:
    return pd.concat([pd.read_csv(p, sep="\t") for p in sorted(out.glob("sub-*/ses-*/*_features.tsv"))])


def test_faces_only_dataset_runs_both_levels_with_task_id(faces_run):
    code, stdout, stderr = faces_run["participant"]
    assert code == errors.SUCCESS, stdout + stderr
    assert f"{len(SUBJECTS)}/{len(SUBJECTS)} subject(s) succeeded" in stdout
    features = _features(faces_run["out"])
    assert set(features["task"]) == {"faces"}          # no n/a rows of absent conflict/rest runs
    assert features["kind"].eq("dcm").any()            # the DCM's task was selected: it ran
    assert "measure pattern 'fc_rest_amygdala-*' skipped: task 'rest' not selected (--task-id faces)" in stderr
    code, stdout, stderr = faces_run["group"]
    assert code == errors.SUCCESS, stdout + stderr
    summary = json.loads((faces_run["out"] / "group" / "group_summary.json").read_text())
    skipped = " ".join(summary["Skipped"])
    assert "activation_conflict_conflictRegulation_*" in skipped and "fc_rest_vmpfc-*" in skipped
    assert summary["Models"]["all"]["Status"] == "fitted"
    assert all(m.startswith(("activation_faces", "gppi_faces")) for m in summary["Measures"])
    assert summary["DCM"]["Models"], summary["DCM"]


def test_console_shows_progress_and_real_report_paths_without_third_party_info(faces_run):
    code, stdout, stderr = faces_run["participant"]
    assert re.search(r"\[\d+/12 runs, \d+/12 sessions, \d+/6 subjects \| \d:\d\d:\d\d\] sub-0\d ", stderr)
    assert "[12/12 runs, 12/12 sessions, 6/6 subjects |" in stderr
    assert not re.search(r"(bidsschematools|matplotlib\S*|nipype\.\w+) INFO", stderr)
    for subject in SUBJECTS:
        assert f"    {faces_run['out'] / f'sub-{subject}.html'}\n" in stdout
    assert "sub-<label>" not in stdout
    _, stdout, stderr = faces_run["group"]
    assert "model all: permutation test: 20/20 done" in stderr
    assert "DCM PEB leave-one-out (all subjects): 6/6 done" in stderr
    assert f"group report written to {faces_run['out'] / 'group' / 'group_report.html'}" in stdout


def test_progress_lines_at_most_30_s_apart_in_the_run_log(faces_run):
    log = _run_log(faces_run, "participant")
    stamps = [datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f") for line in log.splitlines()
              if "ptsd_bidsapp.progress" in line or "to process with" in line
              or ", participant level: " in line or "indexing the inputs with pybids" in line
              or "subject(s) selected; collecting" in line]
    # 12 runs + 12 sessions + 6 subjects + 4 lines of the start (version, indexing, selection, graph)
    assert len(stamps) >= 34
    gaps = [(b - a).total_seconds() for a, b in zip(stamps, stamps[1:])]
    # 25 s heartbeat, checked every second; 4 s for a loaded machine's scheduling: within the 30 s promised
    assert max(gaps) <= 30.0, gaps


def _run_log(faces_run, level: str) -> str:
    logs = sorted((faces_run["out"] / "logs").glob(f"{level}-*.log"))
    assert logs, "no run log"
    return logs[0].read_text()


def test_run_log_has_command_line_versions_config_hash_and_warnings(faces_run):
    import hashlib

    log = _run_log(faces_run, "participant")
    assert f"command line: ptsd_bidsapp {faces_run['common'][0]} {faces_run['common'][1]} participant" in log
    assert re.search(r"software: python 3\.\d+\.\d+, ptsd_bidsapp \S+, .*nipype \S+, pybids \S+", log)
    saved = (faces_run["out"] / "ptsd_bidsapp_config.yml").read_text()
    assert f"configuration sha256: {hashlib.sha256(saved.encode()).hexdigest()}" in log
    assert "WARNING: task 'conflict' skipped" in log
    assert f"run log: {faces_run['out'] / 'logs'}" in faces_run["participant"][1]
    assert "group level: measure pattern" in _run_log(faces_run, "group") or "Skipped" in (
        faces_run["out"] / "group" / "group_summary.json").read_text()


def test_resource_monitor_table(faces_run):
    tables = sorted((faces_run["out"] / "logs").glob("resource_monitor-participant-*.tsv"))
    assert len(tables) == 1
    table = pd.read_csv(tables[0], sep="\t", na_values="n/a")
    runs = table[table["interface"] == "RunMeasures"]
    assert len(runs) == 12
    assert (runs["mem_peak_gb"] > 0).all() and (runs["duration_s"] > 0).all()   # measured, not placeholders
    # nipype's raw samples (.proc-* files) go to <work>/resource_monitor, not into the user's current folder
    assert not faces_run["samples_in_cwd"], sorted(faces_run["samples_in_cwd"])[:3]
    assert list((faces_run["work"] / "resource_monitor").glob(".proc-*"))


def test_write_graph(faces_run):
    dot = faces_run["work"] / "ptsd_bidsapp_wf" / "graph.dot"
    assert dot.is_file()
    assert "ds_sub_01" in dot.read_text() and "ses_pre_task_faces_run" in dot.read_text()


def test_boilerplate_of_the_run(faces_run):
    text = (faces_run["out"] / "logs" / "CITATION.md").read_text()
    assert "elastic_net.n_permutations: 20 (default 1000)" in text
    assert "Only the tasks faces were processed (--task-id)" in text
    assert "tasks.conflict:" in text          # a task removed from the configuration is a difference too
    assert (faces_run["out"] / "logs" / "CITATION.bib").read_text().count("@article{") == 10


def test_validator_on_the_outputs(faces_run):
    exe = shutil.which("bids-validator-deno") or str(Path(sys.executable).parent / "bids-validator-deno")
    proc = subprocess.run([exe, str(faces_run["out"]), "--json"], capture_output=True, text=True, check=False)
    issues = json.loads(proc.stdout)["issues"]["issues"]
    errors_ = [i for i in issues if i.get("severity") == "error"]
    warnings = [i for i in issues if i.get("severity") == "warning"]
    assert errors_ == [], errors_[:5]
    assert len(warnings) <= 5, [(w["code"], w.get("location")) for w in warnings]
    ignore = (faces_run["out"] / ".bidsignore").read_text().splitlines()
    entries = [line for line in ignore if line and not line.startswith("#")]
    assert "*_dseg.tsv" not in entries and "logs" not in entries
    for index, line in enumerate(ignore):           # every entry follows a comment saying why
        if line and not line.startswith("#"):
            assert any(ignore[j].startswith("# ") for j in range(index)), line
    description = json.loads((faces_run["out"] / "dataset_description.json").read_text())
    assert "Container" not in description["GeneratedBy"][0]          # this is a pip run


def _mtimes(root: Path, pattern: str) -> dict:
    return {p: p.stat().st_mtime_ns for p in root.glob(pattern) if p.is_file()}


def test_participant_reports_only_rebuilds_the_report_and_nothing_else(faces_run):
    out, work = faces_run["out"], faces_run["work"]
    report = out / "sub-01.html"
    before = report.read_text()
    report.unlink()
    outputs, cached = _mtimes(out, "sub-01/**/*"), _mtimes(work, "ptsd_bidsapp_wf/**/result_*.pklz")
    code, stdout, _ = _main([*faces_run["common"][:2], "participant", *faces_run["common"][2:],
                             "--participant-label", "01", "--reports-only"])
    assert code == errors.SUCCESS and str(report) in stdout
    assert report.read_text() == before
    assert _mtimes(out, "sub-01/**/*") == outputs      # no derivative rewritten (the sink would rewrite all)
    assert _mtimes(work, "ptsd_bidsapp_wf/**/result_*.pklz") == cached


def test_group_reports_only_rebuilds_the_report_and_nothing_else(faces_run):
    out = faces_run["out"]
    report = out / "group" / "group_report.html"
    before = report.read_text()
    report.unlink()
    results = _mtimes(out, "group/**/*")
    code, stdout, _ = _main([*faces_run["common"][:2], "group", *faces_run["common"][2:], "--reports-only"])
    assert code == errors.SUCCESS and str(report) in stdout
    assert report.read_text() == before          # the same report, rebuilt from the group results
    after = _mtimes(out, "group/**/*")
    after.pop(report)
    assert after == results        # nothing else rewritten (the group level rewrites group/ as a whole)


def test_clean_workdir_recomputes_from_scratch(faces_run, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(faces_run["work"], work, symlinks=True)
    marker = work / "ptsd_bidsapp_wf" / "left_over.txt"
    marker.write_text("from an earlier run\n")
    keep = work / "my_notes.txt"
    keep.write_text("not the app's\n")
    started = time.time()
    samples_before = set(Path.cwd().glob(".proc-*"))
    # --no-dcm --no-reports: the cleaning and the run nodes' recomputation are under test, not the DCM or the report
    code, stdout, _ = _main([faces_run["bids"], tmp_path / "out", "participant", "-w", work,
                             *faces_run["common"][4:], "--participant-label", "01", "--clean-workdir",
                             "--no-dcm", "--no-reports"])
    assert code == errors.SUCCESS, stdout
    # no --resource-monitor here: the fixture's monitored run (same process) must not leave it on
    assert set(Path.cwd().glob(".proc-*")) == samples_before
    assert all(p.stat().st_mtime < started for p in work.glob("resource_monitor/.proc-*"))
    assert not marker.exists() and keep.is_file()
    results = list(work.glob("ptsd_bidsapp_wf/sub_01_wf/ses_*_task_faces_run/result_*.pklz"))
    assert len(results) == 2 and all(r.stat().st_mtime >= started for r in results)   # recomputed, not cached


@pytest.mark.parametrize("stop", [True, False])
def test_stop_on_first_crash(faces_run, tmp_path, stop):
    """Both subjects' report paths are blocked by folders, so both sinks crash (Linear runs one node at a
    time, the run nodes are cached): with the flag the run stops at the first crash."""
    work = tmp_path / "work"
    shutil.copytree(faces_run["work"], work, symlinks=True)
    shutil.rmtree(work / "crashes", ignore_errors=True)
    out = tmp_path / "out"
    for subject in ("01", "02"):
        (out / f"sub-{subject}.html").mkdir(parents=True)
    code, stdout, _ = _main([faces_run["bids"], out, "participant", "-w", work, *faces_run["common"][4:],
                             "--participant-label", "01", "02", "--plugin", "Linear"]
                            + (["--stop-on-first-crash"] if stop else []))
    assert code == errors.FAILURE
    crashes = list((work / "crashes").glob("crash-*.txt"))
    assert len(crashes) == (1 if stop else 2), crashes
    assert ("stopped at the first crash" in stdout) is stop
    assert "crash file: " in stdout
