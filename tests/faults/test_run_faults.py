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
