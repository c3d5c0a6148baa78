"""Run-level isolation (issue 14, item 9) on a small simulated trial.

sub-01: ses-pre rest BOLD is a 0-byte file; sub-02: ses-pre conflict events lack one configured
condition; sub-03: no post session (raw and fMRIPrep). Each subject's other runs/sessions are
computed and written; the gap is ``n/a`` with its reason in the features table, listed in the
status JSON, the printed summary and the subject report; exit 1 (two unusable runs). The group
level then runs with sub-03 having only its pre session: dropped from the change-based models
with the reason (the group's own handling, with other subjects unaffected, is
``tests/group/test_run_group.py::test_model_below_min_subjects_fails_alone_and_stale_files_go``).
"""

import json
import shutil

import pandas as pd
import pytest

from ptsd_bidsapp.cli.run import main

# participant and group levels through the command line: an end-to-end run (tier `slow`)
pytestmark = pytest.mark.slow

PARTICIPANT_CONFIG = "dcm:\n  enabled: false\n"  # the DCM adds time, not coverage, here


def _features(out, sub, ses):
    path = next((out / f"sub-{sub}" / f"ses-{ses}").glob("*_desc-measures_features.tsv"))
    return pd.read_csv(path, sep="\t", dtype={"value": str}, keep_default_na=False).set_index("measure")


@pytest.fixture(scope="module")
def isolated(trial, tmp_path_factory):
    base = tmp_path_factory.mktemp("isolation")
    bids = base / "bids"
    shutil.copytree(trial, bids)
    deriv = bids / "derivatives" / "fmriprep"
    zero = next((deriv / "sub-01" / "ses-pre" / "func").glob("*task-rest*_desc-preproc_bold.nii*"))
    zero.write_bytes(b"")
    events = next((bids / "sub-02" / "ses-pre" / "func").glob("*task-conflict*_events.tsv"))
    table = pd.read_csv(events, sep="\t", dtype=str, keep_default_na=False)
    table[table["trial_type"] != "iI"].to_csv(events, sep="\t", index=False)
    for root in (bids, deriv):
        shutil.rmtree(root / "sub-03" / "ses-post")
    config = base / "config.yml"
    config.write_text(PARTICIPANT_CONFIG)
    out = base / "out"
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main([str(bids), str(out), "participant", "-w", str(base / "work"), "--nprocs", "2",
                     "--skip-bids-validation", "--config", str(config), "--participant-label", "01", "02", "03"])
    return {"bids": bids, "out": out, "code": code, "printed": printed.getvalue(), "zero": zero,
            "events": events, "base": base}


def test_unusable_runs_exit_1_and_are_named_in_the_summary(isolated):
    assert isolated["code"] == 1
    printed = isolated["printed"]
    assert "FAILED sub-01" in printed and isolated["zero"].name in printed
    assert "FAILED sub-02" in printed and "iI" in printed
    assert "GAP sub-03: ses-post missing" in printed
    assert "FAILED sub-03" not in printed


def test_zero_byte_bold_is_na_with_reason_other_runs_written(isolated):
    out = isolated["out"]
    pre = _features(out, "01", "pre")
    rest = pre[pre.index.str.startswith("fc_rest_")]
    assert len(rest) == 15 and (rest["value"] == "n/a").all()
    assert rest["note"].str.contains(isolated["zero"].name).all() and not rest["qc_pass"].any()
    others = pre[~pre.index.str.startswith("fc_rest_")]
    assert len(others) and (others["value"] != "n/a").all()
    assert (_features(out, "01", "post")["value"] != "n/a").all()
    status = json.loads((out / "logs" / "sub-01_status.json").read_text())
    assert len(status["failed_runs"]) == 1 and isolated["zero"].name in status["failed_runs"][0]
    assert status["failed_run_keys"] == [{"session": "pre", "task": "rest", "run": None}]
    assert isolated["zero"].name in (out / "sub-01.html").read_text()


def test_missing_condition_is_na_with_reason_other_runs_written(isolated):
    out = isolated["out"]
    pre = _features(out, "02", "pre")
    conflict = pre[pre["task"] == "conflict"]
    assert len(conflict) and (conflict["value"] == "n/a").all()
    assert conflict["note"].str.contains("iI").all() and conflict["note"].str.contains(isolated["events"].name).all()
    assert (pre[pre["task"] != "conflict"]["value"] != "n/a").all()
    status = json.loads((out / "logs" / "sub-02_status.json").read_text())
    assert status["failed_run_keys"] == [{"session": "pre", "task": "conflict", "run": None}]
    assert isolated["events"].name in (out / "sub-02.html").read_text()


def test_missing_session_computes_the_other_and_reports_the_gap(isolated):
    out = isolated["out"]
    assert (_features(out, "03", "pre")["value"] != "n/a").all()
    assert not (out / "sub-03" / "ses-post").exists()
    status = json.loads((out / "logs" / "sub-03_status.json").read_text())
    assert status["failed_runs"] == [] and status["sessions"] == ["pre"]
    assert [m["session"] for m in status["missing_sessions"]] == ["post"]
    assert "ses-post missing" in (out / "sub-03.html").read_text()


def test_group_level_runs_with_a_one_session_subject(isolated, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(isolated["out"], out)
    config = tmp_path / "group.yml"
    config.write_text("elastic_net:\n  n_permutations: 9\n  n_bootstrap: 9\n  min_subjects: 3\n")
    code = main([str(isolated["bids"]), str(out), "group", "--skip-bids-validation", "--config", str(config),
                 "--seed", "1", "--nprocs", "1", "--no-dcm", "--no-reports"])
    summary = json.loads((out / "group" / "group_summary.json").read_text())
    assert summary["ExcludedSubjects"]["03"] == "no participant features for session post"
    assert code in (0, 65)  # 3 subjects: the models may lack usable subjects, but no crash
