"""End-to-end participant level on the simulated trial (CLI -> nipype -> derivative dataset)."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ptsd_bidsapp import errors as exitcodes
from ptsd_bidsapp.cli.run import main
from tests.group.test_run_group import MODELS, _config_file, _group, _validator_errors
from tests.workflows.conftest import SESSIONS, tree_digest
from tests.workflows.conftest import features_table as _features

pytestmark = pytest.mark.slow


def test_every_subject_complete(participant_run):
    assert participant_run["code"] == 0
    out = participant_run["out"]
    for sub in ("01", "02", "03", "04"):
        html = (out / f"sub-{sub}.html").read_text()      # each subject's own report, both sessions
        assert f"<h1>sub-{sub} — PTSD fear-regulation circuit</h1>" in html
        assert 'id="ses-pre"' in html and 'id="ses-post"' in html and html.count('alt="DCM fit"') == 2
        for ses in SESSIONS:
            table = _features(out, sub, ses)
            kinds = set(table["kind"])
            assert {"activation", "gppi", "gppi_directed", "fc", "dcm"} <= kinds
            # 6 ROIs: 2 contrasts x 6 activations, 15 pairs sym, 30 directed, 15 rest pairs
            assert (table["kind"] == "activation").sum() == 12
            assert (table["kind"] == "gppi").sum() == 15
            assert (table["kind"] == "gppi_directed").sum() == 30
            assert (table["kind"] == "fc").sum() == 15
            assert table.loc[table["kind"] != "dcm", "value"].notna().mean() > 0.9
            dcm = list((out / f"sub-{sub}" / f"ses-{ses}" / "func").glob("*_task-faces_*_dcm.json"))
            assert len(dcm) == 1
            content = json.loads(dcm[0].read_text())
            assert content["region_names"] == ["amygdala", "vmpfc"]


def test_input_dataset_untouched_and_read_only_works(participant_run):
    assert tree_digest(participant_run["bids"]) == participant_run["before"]


def test_output_passes_bids_validator(participant_run):
    exe = shutil.which("bids-validator-deno") or str(Path(sys.executable).parent / "bids-validator-deno")
    proc = subprocess.run([exe, str(participant_run["out"]), "--json"], capture_output=True, text=True, check=False)
    report = json.loads(proc.stdout)
    errors = [i for i in report["issues"]["issues"] if i.get("severity") == "error"]
    assert errors == [], errors[:5]
    warnings = [(i["code"], i.get("location")) for i in report["issues"]["issues"] if i.get("severity") == "warning"]
    assert len(warnings) <= 5, warnings[:10]    # issue 15: was 126 undefined `coverage` columns + too few authors


def test_features_identical_to_direct_computation(participant_run, tmp_path):
    """The sink copies what the run nodes computed: recomputing one run gives the same rows."""
    from ptsd_bidsapp.atlas import atlas_files
    from ptsd_bidsapp.bids.inputs import collect_runs, make_layout
    from ptsd_bidsapp.config import load_config
    from ptsd_bidsapp.workflows.run_measures import compute_run_measures
    from dataclasses import asdict

    config = load_config(None)
    bids = participant_run["bids"]
    layout = make_layout(bids, bids / "derivatives" / "fmriprep", tmp_path / "work")
    run = [r for r in collect_runs(layout, "02", ["pre"], config["tasks"], config["space"]) if r.task == "conflict"][0]
    dseg, labels = atlas_files(config["atlas"])
    info = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(run).items()}
    summary = compute_run_measures(info, run.bold, run.mask, run.confounds, run.events, dseg, labels, config)
    ours = pd.DataFrame(summary["features"]).set_index("measure")["value"].astype(float)
    table = _features(participant_run["out"], "02", "pre").set_index("measure")["value"]
    assert ours.index.isin(table.index).all()
    pd.testing.assert_series_equal(ours.sort_index(), table.loc[ours.index].sort_index(), check_names=False,
                                   rtol=1e-6)


def test_interrupted_run_resumes_to_identical_outputs(participant_run, tmp_path):
    """Kill the participant level mid-way, run it again: the outputs equal an uninterrupted run.

    Two of the trial's four subjects (``--participant-label 01 02``): killed once one of their four
    sessions is summarised (a quarter of the way, as before with one quarter of eight), the resumed run
    must reproduce, byte for byte, every file the uninterrupted four-subject run (``participant_run``)
    wrote for them and every dataset-level file (the other two subjects' files aside): each kind of
    file the four-subject version compared, for half the subjects' computation.
    """
    bids = participant_run["bids"]
    out, work = tmp_path / "out", tmp_path / "work"
    selected = ["01", "02"]
    args = [str(bids), str(out), "participant", "-w", str(work), "--nprocs", "2", "--skip-bids-validation",
            "--seed", "3", "--participant-label", *selected]
    proc = subprocess.Popen([sys.executable, "-m", "ptsd_bidsapp", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        done = list(work.glob("ptsd_bidsapp_wf/sub_*_wf/ses_*_summary/result_*.pklz"))
        if len(done) >= 1:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    # interrupted mid-way: not every session of the selected subjects was summarised yet
    assert len(list(work.glob("ptsd_bidsapp_wf/sub_*_wf/ses_*_summary/result_*.pklz"))) < 2 * len(selected)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert main(args) == 0
    # the uninterrupted run's files but those of the subjects not selected (sub-03, sub-04)
    others = re.compile(r"(^|/)sub-(?!(?:%s)(?![0-9A-Za-z]))" % "|".join(selected))
    reference = {k: v for k, v in tree_digest(participant_run["out"]).items() if not others.search(k)}
    for sub in selected:   # the reference still holds each selected subject's outputs and report
        assert f"sub-{sub}.html" in reference and any(k.startswith(f"sub-{sub}/ses-post/") for k in reference)
    resumed = tree_digest(out)
    assert sorted(resumed) == sorted(reference)
    different = [k for k in reference if reference[k] != resumed[k]]
    assert different == []


def test_every_output_name_and_measure_id_is_built_by_its_contract(participant_run):
    """Every BIDS file name and measure id the participant level writes parses with its owner
    (bids.outputs / contracts) and rebuilds to the same string."""
    from ptsd_bidsapp.bids.outputs import bids_filename, parse_filename
    from ptsd_bidsapp.contracts import parse_measure_id

    out = participant_run["out"]
    names = [p.name for p in out.glob("sub-*/ses-*/**/*") if p.is_file()]
    assert len(names) > 20
    for name in names:
        entities, suffix, extension = parse_filename(name)
        assert bids_filename(entities, suffix, extension) == name
    measures = pd.concat([_features(out, sub, ses) for sub in ("01", "02") for ses in SESSIONS])["measure"]
    for measure in measures.unique():
        assert parse_measure_id(measure).id == measure


def test_group_only_config_edits_rerun_no_participant_node(participant_run, tmp_path):
    """Nodes get only the config sections they read: editing group keys reuses every cached
    participant result; editing a participant key recomputes (the control)."""
    work, out = tmp_path / "work", tmp_path / "out"
    shutil.copytree(participant_run["work"], work, symlinks=True)
    shutil.copytree(participant_run["out"], out, symlinks=True)

    def results():
        return {p: p.stat().st_mtime_ns for p in work.rglob("result_*.pklz")
                if "sub_01_wf" in str(p) and not p.parent.name.startswith(("ds_", "merge"))}

    before = results()
    assert len(before) >= 7  # 6 runs + 2 session nodes of sub-01
    group_edit = tmp_path / "group.yml"
    group_edit.write_text("peb:\n  pp_threshold: 0.99\nelastic_net:\n  n_permutations: 200\n"
                          "measures: [fc_rest_vmpfc-*]\n")
    args = [str(participant_run["bids"]), str(out), "participant", "-w", str(work),
            "--participant-label", "01", "--nprocs", "1", "--skip-bids-validation", "--no-reports"]
    assert main(args + ["--config", str(group_edit)]) == 0
    assert results() == before
    participant_edit = tmp_path / "participant.yml"
    participant_edit.write_text("motion_qc:\n  max_mean_fd: 0.6\n")
    assert main(args + ["--config", str(participant_edit)]) == 0
    after = results()
    assert any(after.get(p) != t for p, t in before.items()) or set(after) != set(before)


def _report_tables(html: str) -> list[list[list[str]]]:
    """Every <table> of an HTML page as rows of cell texts (tags stripped)."""
    tables = []
    for table in re.findall(r"<table>(.*?)</table>", html, re.S):
        rows = []
        for row in re.findall(r"<tr>(.*?)</tr>", table, re.S):
            rows.append([re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.S)])
        tables.append(rows)
    return tables


def _close(shown: str, value: float) -> bool:
    """A number printed with 3-6 significant digits equals ``value`` to its last printed digit."""
    digits = len(shown.replace("-", "").replace(".", "").lstrip("0")) or 1
    return abs(float(shown) - value) <= 0.51 * 10 ** (np.floor(np.log10(abs(value) or 1)) - digits + 1)


def test_subject_report_shows_every_section_and_the_written_numbers(participant_run):
    """sub-01.html: its sections, one QC row per run with the mean FD and % censored of the
    motion JSON, and per session the DCM free energy and variance explained of the DCM JSON."""
    out = participant_run["out"]
    html = (out / "sub-01.html").read_text()
    assert "<h1>sub-01 — PTSD fear-regulation circuit</h1>" in html
    for anchor in ("summary", "rois", "ses-pre", "ses-post", "connectivity", "dcm"):
        assert f'id="{anchor}"' in html, anchor
    assert html.count('alt="connectivity"') >= 1 and html.count('alt="DCM fit"') == 2
    qc_table = _report_tables(html)[0]
    assert qc_table[0] == ["session", "task", "volumes", "TR (s)", "mean FD (mm)", "% volumes censored", "QC"]
    rows = {(r[0], r[1]): r for r in qc_table[1:]}
    assert set(rows) == {(s, t) for s in SESSIONS for t in ("faces", "conflict", "rest")}
    for (ses, task), row in rows.items():
        motion = next((out / "sub-01" / f"ses-{ses}" / "func").glob(f"*task-{task}*_desc-confounds_motion.json"))
        meta = json.loads(motion.read_text())
        assert row[2] == "80" and float(row[3]) == 2.0
        assert _close(row[4], meta["MeanFramewiseDisplacement"]), (row, meta)
        assert _close(row[5], meta["PercentCensored"]) or float(row[5]) == meta["PercentCensored"] == 0
        assert (row[6] == "pass") == (not meta["Excluded"])
    for ses in SESSIONS:
        dcm = json.loads(next((out / "sub-01" / f"ses-{ses}" / "func").glob("*_dcm.json")).read_text())
        # the session's DCM heading states the explained variance; its table the free energy
        header = re.search(rf"<h3>Session {ses}: <span class=\"\w+\">(?:poor fit, )?([\d.e+-]+) % of variance "
                           r"explained</span></h3>", html)
        assert header and _close(header.group(1), dcm["explained_variance"]), header
        section = html[header.end():]
        free_energy = re.search(r"free energy \(log evidence bound, nats\)</td><td>([-\d.e+]+)</td>", section)
        assert free_energy and _close(free_energy.group(1), dcm["F"]), (free_energy, dcm["F"])
        shown = re.search(r"variance explained, all regions \(%\)</td><td><span class=\"\w+\">([\d.e+-]+)</span>",
                          section).group(1)
        assert _close(shown, dcm["explained_variance"])


def test_group_on_the_simulated_trial_fails_clearly_and_stays_valid_bids(participant_run, tmp_path, capsys):
    """The group level on the 4-subject trial's participant outputs (copied), one subject's post
    session removed: every model has < 5 subjects → exit 65, each model and the excluded subject named; the group
    files are written and the output dataset still passes bids-validator-deno.

    (In this file, not tests/group: under ``--dist loadfile`` each file that uses the session
    fixture ``participant_run`` builds it again on its own worker — 110 s of CPU.)"""
    assert participant_run["code"] == 0
    out = tmp_path / "out"
    shutil.copytree(participant_run["out"], out)
    next((out / "sub-04" / "ses-post").glob("*_desc-measures_features.tsv")).unlink()
    code = _group(participant_run["bids"], out, _config_file(tmp_path), 5, 2)
    assert code == exitcodes.DATAERR
    err = capsys.readouterr().err
    assert "no group model could be fitted" in err
    for name in MODELS:
        assert f"model '{name}'" in err
    assert "3 usable subject(s), fewer than elastic_net.min_subjects = 5" in err
    assert "sub-04 (no participant features for session post)" in err

    group = out / "group"
    changes = pd.read_csv(group / "changes.tsv", sep="\t", dtype={"subject": str})
    assert list(changes["subject"]) == ["01", "02", "03"]
    summary = json.loads((group / "group_summary.json").read_text())
    assert summary["ExcludedSubjects"] == {"04": "no participant features for session post"}
    assert {m["Status"] for m in summary["Models"].values()} == {"failed"}
    report = (group / "group_report.html").read_text()    # each model's failure and the exclusion, for the user
    assert report.count("fewer than elastic_net.min_subjects = 5") == len(MODELS)
    assert "no participant features for session post" in report
    assert _validator_errors(out) == []


def _run_node_runtimes(work: Path, subject: str) -> dict:
    """nipype's runtime record of each run node of ``subject`` (kept with the node's result)."""
    from nipype.pipeline.engine.utils import load_resultfile

    folder = work / "ptsd_bidsapp_wf" / f"sub_{subject}_wf"
    return {f.parent.name: load_resultfile(str(f)).runtime for f in folder.glob("ses_*_run/result_*.pklz")}


def test_omp_nthreads_and_low_mem_reach_the_worker_processes(participant_run, tmp_path):
    # default at --nprocs 2 (MultiProc, 24 run nodes): one BLAS thread per worker process
    runtimes = _run_node_runtimes(participant_run["work"], "01")
    assert len(runtimes) == 6
    assert {rt.thread_pools["blas"] for rt in runtimes.values()} == {1}
    assert not any(rt.low_mem for rt in runtimes.values())
    out, work = tmp_path / "out", tmp_path / "work"
    code = main([str(participant_run["bids"]), str(out), "participant", "-w", str(work), "--participant-label", "01",
                 "--nprocs", "2", "--omp-nthreads", "2", "--low-mem", "--skip-bids-validation", "--seed", "3",
                 "--no-reports"])   # the run nodes are under test here, not the report
    assert code == 0
    runtimes = _run_node_runtimes(work, "01")
    assert len(runtimes) == 6
    assert {rt.thread_pools["blas"] for rt in runtimes.values()} == {2}
    assert all(rt.low_mem for rt in runtimes.values())
    for ses in SESSIONS:  # same results with one volume per read and two threads
        pd.testing.assert_frame_equal(_features(out, "01", ses), _features(participant_run["out"], "01", ses))
