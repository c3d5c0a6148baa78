"""Fault model, run scope: one damaged BOLD run gives a run error naming the file (the subject
is reported failed, its other runs are written) or a warned ``n/a`` — never a silent number."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ptsd_bidsapp.measures.confounds import load_run_confounds
from ptsd_bidsapp.measures.errors import MeasureError
from ptsd_bidsapp.config import load_config
from tests.faults.conftest import compute_run, copy_trial, run_inputs


@pytest.fixture()
def bids(tiny_trial, tmp_path):
    return copy_trial(tiny_trial, tmp_path / "bids")


def test_mask_on_another_grid_is_a_run_error(bids, tmp_path):
    """Same shape, affine shifted 40 mm: refused (was applied voxel for voxel without notice)."""
    run, info = run_inputs(bids, tmp_path / "work", "faces")
    mask = nib.load(str(run.mask))
    affine = mask.affine.copy()
    affine[:3, 3] += 40.0
    shifted = tmp_path / "shifted_mask.nii.gz"
    nib.save(nib.Nifti1Image(np.asanyarray(mask.dataobj), affine, mask.header), str(shifted))
    summary = compute_run(run, info, tmp_path / "node", mask=shifted)
    assert summary["error"] and "another grid" in summary["error"] and "40 mm" in summary["error"]
    assert str(shifted) in summary["error"]
    assert all(row["value"] == "n/a" for row in summary["features"])  # the run's measures: n/a, none computed


def _truncate_run(run, tmp_path, n):
    """Copy the run's BOLD and confounds (fMRIPrep names, one folder) keeping ``n`` volumes."""
    folder = tmp_path / "short"
    folder.mkdir()
    img = nib.load(str(run.bold))
    bold = folder / run.bold.name
    nib.save(img.slicer[..., :n], str(bold))
    conf = folder / run.confounds.name
    pd.read_csv(run.confounds, sep="\t", dtype=str).head(n).to_csv(conf, sep="\t", index=False)
    return bold, conf


@pytest.mark.parametrize("task", ["rest", "conflict"])
def test_three_volume_run_is_named_too_short(bids, tmp_path, task):
    """A 3-volume run: 'too short' with the minimum (was scipy's 'padlen 33' / a singular GLM)."""
    run, info = run_inputs(bids, tmp_path / "work", task)
    bold, conf = _truncate_run(run, tmp_path, 3)
    info["n_volumes"] = 3
    summary = compute_run(run, info, tmp_path / "node", bold=bold, confounds=conf)
    assert summary["error"] and "only 3 volume(s)" in summary["error"] and "too short to analyse" in summary["error"]
    assert "padlen" not in summary["error"]


def test_na_inside_confound_column_is_named(bids, tmp_path):
    """n/a in the middle of trans_x: the column and volume named (was 'SVD did not converge')."""
    run, _ = run_inputs(bids, tmp_path / "work", "conflict")
    table = pd.read_csv(run.confounds, sep="\t", dtype=str)
    table.loc[12, "trans_x"] = "n/a"
    table.to_csv(run.confounds, sep="\t", index=False)
    config = load_config(None)
    with pytest.raises(MeasureError) as err:
        load_run_confounds(run.bold, config["denoising"]["task_default"])
    assert "trans_x" in str(err.value) and "volume(s) 12" in str(err.value) and run.confounds.name in str(err.value)


def test_events_outside_the_scan_give_warned_na(bids, tmp_path):
    """Every 'cI' event after the end of the scan: the conflictRegulation contrast (iI - cI) is n/a
    with the reason in the note, the QC and a warning (was an activation of ~1e-7 with qc_pass)."""
    run, info = run_inputs(bids, tmp_path / "work", "conflict")
    events = pd.read_csv(run.events, sep="\t")
    events.loc[events["trial_type"] == "cI", "onset"] += 10000.0
    events.to_csv(run.events, sep="\t", index=False)
    summary = compute_run(run, info, tmp_path / "node")
    assert summary["error"] is None
    rows = [r for r in summary["features"] if r["measure"].startswith("activation_conflict_conflictRegulation_")]
    assert rows and all(r["value"] == "n/a" and r["qc_pass"] is False for r in rows)
    assert all("outside the scan" in r["note"] for r in rows)
    assert "cI" in summary["qc"]["events_outside_scan"]
    assert any("outside the scan" in w and "conflictRegulation" in w for w in summary["warnings"])


def test_trial_types_no_condition_uses_are_warned(bids, tmp_path):
    """An events file with trial_type 'cue': named in a warning (was silently ignored); the
    configured unmodelled 'first' trial is not."""
    run, info = run_inputs(bids, tmp_path / "work", "conflict")
    events = pd.read_csv(run.events, sep="\t")
    extra = events.head(2).assign(trial_type="cue")
    pd.concat([events, extra]).sort_values("onset").to_csv(run.events, sep="\t", index=False)
    summary = compute_run(run, info, tmp_path / "node")
    assert summary["error"] is None
    warned = [w for w in summary["warnings"] if "match no configured condition" in w]
    assert len(warned) == 1 and "'cue' (2 events)" in warned[0] and "'first'" not in warned[0]


#: the default DCM's free parameters, read off the default config by hand: a all ones (A, 4), the
#: fearful modulation of both between-region connections (B, 2), faces driving the amygdala (C, 1)
DEFAULT_DCM_IDS = {"dcm_faces_A_amygdala-amygdala", "dcm_faces_A_amygdala-vmpfc", "dcm_faces_A_vmpfc-amygdala",
                   "dcm_faces_A_vmpfc-vmpfc", "dcm_faces_B_fearful_amygdala-vmpfc",
                   "dcm_faces_B_fearful_vmpfc-amygdala", "dcm_faces_C_faces_amygdala"}


def test_faces_events_outside_the_scan_give_warned_na_for_activation_gppi_and_dcm(bids, tmp_path):
    """Every 'fearful' block after the end of the scan: the faces contrast, its gPPI (symmetrised and
    directed) and the session DCM (its 'fearful' input would be all zeros, so B and C stay at their
    priors yet looked like estimates) are n/a with the reason and a warning; no DCM file is written."""
    from ptsd_bidsapp.workflows.run_measures import compute_session_measures

    run, info = run_inputs(bids, tmp_path / "work", "faces")
    intact = compute_run(run, info, tmp_path / "intact")
    assert intact["error"] is None
    events = pd.read_csv(run.events, sep="\t")
    events.loc[events["trial_type"] == "fearful", "onset"] += 10000.0
    events.to_csv(run.events, sep="\t", index=False)
    summary = compute_run(run, info, tmp_path / "node")
    assert summary["error"] is None
    faces = [r for r in summary["features"] if r["task"] == "faces"]
    # the same measures as the intact run, each n/a with the reason
    assert sorted(r["measure"] for r in faces) == sorted(r["measure"] for r in intact["features"])
    assert {r["kind"] for r in faces} == {"activation", "gppi", "gppi_directed"}
    assert all(r["value"] == "n/a" and r["qc_pass"] is False and "outside the scan" in r["note"] for r in faces)

    session = compute_session_measures([summary], load_config(None), {"subject": "01", "session": "pre"})
    dcm = [r for r in session["features_table"].content.to_dict("records") if r["kind"] == "dcm"]
    assert {r["measure"] for r in dcm} == DEFAULT_DCM_IDS
    assert all(r["value"] == "n/a" and r["qc_pass"] is False for r in dcm)
    assert all("'fearful' event(s) lie outside the scan" in r["note"] and "not fitted" in r["note"] for r in dcm)
    assert session["dcm"] is None and session["outputs"] == []
    warned = [w for w in session["warnings"] if "DCM of sub-01 ses-pre not fitted" in w]
    assert len(warned) == 1 and run.events.name in warned[0] and "fearful" in warned[0]


def test_failed_dcm_run_gives_dcm_measures_na_with_the_reason(bids, tmp_path):
    """The faces run unusable: the session DCM's measures are n/a naming the run's error (they were
    absent from the features table, with only a warning)."""
    from ptsd_bidsapp.atlas import ROI_LABELS
    from ptsd_bidsapp.workflows.run_measures import compute_session_measures, failed_run_result

    config = load_config(None)
    info = {"subject": "01", "session": "pre", "task": "faces", "run": None}
    failed = failed_run_result(info, "sub-01 ses-pre task-faces: BOLD x.nii.gz is empty", config, list(ROI_LABELS))
    session = compute_session_measures([failed], config, {"subject": "01", "session": "pre"})
    dcm = [r for r in session["features_table"].content.to_dict("records") if r["kind"] == "dcm"]
    assert {r["measure"] for r in dcm} == DEFAULT_DCM_IDS
    assert all(r["value"] == "n/a" and "BOLD x.nii.gz is empty" in r["note"] for r in dcm)
    assert any("DCM for sub-01 ses-pre failed" in w for w in session["warnings"])
