"""compute_run_measures on one simulated run: bad data are named and stay local to the run."""

import shutil
from dataclasses import asdict
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ptsd_bidsapp.atlas import atlas_files, load_atlas, resample_atlas_to
from ptsd_bidsapp.bids.inputs import collect_runs, make_layout
from ptsd_bidsapp.config import load_config
from ptsd_bidsapp.workflows.run_measures import compute_run_measures

CONFIG = load_config(None)


def _run(trial, tmp_path, task, sub="01", ses="pre"):
    layout = make_layout(trial, trial / "derivatives" / "fmriprep", tmp_path / "work")
    run = [r for r in collect_runs(layout, sub, [ses], CONFIG["tasks"], CONFIG["space"]) if r.task == task][0]
    return run


def _copy_run(run, tmp_path):
    """Copy BOLD, mask and confounds of a run to tmp_path keeping fMRIPrep names (load_confounds needs them)."""
    folder = tmp_path / "func"
    folder.mkdir()
    paths = {}
    for key in ("bold", "mask", "confounds"):
        src = getattr(run, key)
        paths[key] = folder / src.name
        shutil.copy(src, paths[key])
    confounds_json = run.confounds.with_suffix(".json")
    if confounds_json.exists():
        shutil.copy(confounds_json, folder / confounds_json.name)
    return paths


def _measure(run, tmp_path, **paths):
    dseg, labels = atlas_files(CONFIG["atlas"])
    info = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(run).items()}
    files = {"bold": run.bold, "mask": run.mask, "confounds": run.confounds, **paths}
    return compute_run_measures(info, files["bold"], files["mask"], files["confounds"], run.events, dseg, labels,
                                CONFIG)


def test_healthy_run_returns_every_file_and_writes_none(trial, tmp_path, monkeypatch):
    run = _run(trial, tmp_path, "faces")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    summary = _measure(run, tmp_path)
    assert summary["error"] is None
    names = [d.name for d in summary["outputs"]]
    for suffix in ("_dseg.nii.gz", "_dseg.tsv", "_motion.tsv", "_timeseries.tsv",
                   "desc-eigenvariate_timeseries.tsv", "desc-fearfulMinusNeutral_activation.tsv",
                   "desc-fearfulMinusNeutral_relmat.tsv", "desc-fearfulMinusNeutralDirected_relmat.tsv"):
        assert any(n.endswith(suffix) for n in names), suffix
    assert any(d.name.endswith("_dseg.nii.gz") and d.sidecar for d in summary["outputs"])  # the _dseg.json
    assert list(cwd.iterdir()) == []


@pytest.mark.parametrize("task", ["faces", "rest"])
def test_streamed_read_gives_the_outputs_of_the_whole_array_read(trial, tmp_path, monkeypatch, task):
    """ROI-streaming read vs the former read (nibabel's whole 4D array as float32, then data[labels == k]):
    every table and feature is identical (same float32 voxel values in the same order, same arithmetic)."""
    from ptsd_bidsapp.measures import bold_stream

    run = _run(trial, tmp_path, task)
    streamed = _measure(run, tmp_path)
    calls = []

    def whole_array(path, voxels, low_mem=False, accelerate=True, mean_image=False):
        calls.append(path)
        data = np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)
        return (data[voxels], data.mean(axis=3)) if mean_image else data[voxels]

    monkeypatch.setattr(bold_stream, "read_bold_voxels", whole_array)
    reference = _measure(run, tmp_path)
    assert calls == [run.bold] and streamed["error"] is None and reference["error"] is None
    tables = {d.name: d.content for d in reference["outputs"] if isinstance(d.content, pd.DataFrame)}
    assert any(name.endswith("desc-eigenvariate_timeseries.tsv") for name in tables)
    for derivative in streamed["outputs"]:
        if isinstance(derivative.content, pd.DataFrame):
            pd.testing.assert_frame_equal(derivative.content, tables[derivative.name], check_exact=True)
    assert pd.DataFrame(streamed["features"]).equals(pd.DataFrame(reference["features"]))


def test_low_mem_run_gives_identical_results(trial, tmp_path, monkeypatch):
    from ptsd_bidsapp.measures import bold_stream

    run = _run(trial, tmp_path, "conflict")
    blocks = []
    real = bold_stream.volumes_per_block
    monkeypatch.setattr(bold_stream, "volumes_per_block", lambda *a, **k: blocks.append(real(*a, **k)) or blocks[-1])
    dseg, labels = atlas_files(CONFIG["atlas"])
    info = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(run).items()}
    results = [compute_run_measures(info, run.bold, run.mask, run.confounds, run.events, dseg, labels, CONFIG,
                                    low_mem=low_mem) for low_mem in (False, True)]
    assert blocks == [run.n_volumes, 1]  # the whole small run in one read; then one volume per read
    assert pd.DataFrame(results[0]["features"]).equals(pd.DataFrame(results[1]["features"]))


def test_roi_outside_brain_mask_is_na_with_warning(trial, tmp_path):
    run = _run(trial, tmp_path, "faces")
    paths = _copy_run(run, tmp_path)
    mask = nib.load(paths["mask"])
    data = np.asanyarray(mask.dataobj).copy()
    grid = resample_atlas_to(mask, load_atlas())
    data[grid.data() == grid.indices[grid.names.index("amygdala")]] = 0  # amygdala outside the brain mask
    nib.save(nib.Nifti1Image(data, mask.affine, mask.header), paths["mask"])
    summary = _measure(run, tmp_path, mask=paths["mask"])
    assert summary["error"] is None
    assert any("amygdala" in w and "coverage" in w for w in summary["warnings"])
    rows = pd.DataFrame(summary["features"]).set_index("measure")
    assert rows.loc["activation_faces_fearfulMinusNeutral_amygdala", "value"] == "n/a"
    assert "coverage" in rows.loc["activation_faces_fearfulMinusNeutral_amygdala", "note"]
    assert rows.loc["activation_faces_fearfulMinusNeutral_dacc", "value"] != "n/a"
    assert rows.loc["gppi_faces_fearfulMinusNeutral_vmpfc-amygdala", "value"] == "n/a"


def test_all_zero_run_is_an_error_naming_the_file(trial, tmp_path):
    run = _run(trial, tmp_path, "conflict")
    paths = _copy_run(run, tmp_path)
    img = nib.load(paths["bold"])
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.int16), img.affine, img.header), paths["bold"])
    summary = _measure(run, tmp_path, bold=paths["bold"])
    assert paths["bold"].name in summary["error"] and "all zeros" in summary["error"]
    rows = pd.DataFrame(summary["features"])
    assert len(rows) and (rows["value"] == "n/a").all() and not rows["qc_pass"].any()
    assert (rows["note"] == summary["error"]).all()
    assert "activation_conflict_conflictRegulation_dacc" in set(rows["measure"])


def test_missing_confound_column_is_an_error_naming_file_and_column(trial, tmp_path):
    run = _run(trial, tmp_path, "conflict")
    paths = _copy_run(run, tmp_path)
    table = pd.read_csv(paths["confounds"], sep="\t")
    table.drop(columns=["white_matter"]).to_csv(paths["confounds"], sep="\t", index=False, na_rep="n/a")
    summary = _measure(run, tmp_path, bold=paths["bold"], mask=paths["mask"], confounds=paths["confounds"])
    assert summary["error"] is not None
    assert paths["confounds"].name in summary["error"] and "white_matter" in summary["error"]


def test_nan_voxels_are_dropped_with_a_warning(trial, tmp_path):
    run = _run(trial, tmp_path, "rest")
    paths = _copy_run(run, tmp_path)
    img = nib.load(paths["bold"])
    data = img.get_fdata(dtype=np.float32)
    grid = resample_atlas_to(img, load_atlas())
    roi = grid.data() == grid.indices[grid.names.index("dacc")]
    first = np.argwhere(roi)[0]
    data[tuple(first)] = np.nan
    nib.save(nib.Nifti1Image(data, img.affine), paths["bold"])
    summary = _measure(run, tmp_path, bold=paths["bold"], mask=paths["mask"], confounds=paths["confounds"])
    assert summary["error"] is None
    assert any("NaN" in w for w in summary["warnings"])
    rows = pd.DataFrame(summary["features"]).set_index("measure")
    assert rows.loc["fc_rest_dacc-racc", "value"] != "n/a"


def test_motion_excluded_run_is_flagged_not_dropped(trial, tmp_path):
    run = _run(trial, tmp_path, "faces")
    strict = dict(CONFIG, motion_qc={"fd_threshold": 0.0, "max_mean_fd": 0.0, "max_percent_censored": 0.0})
    dseg, labels = atlas_files(CONFIG["atlas"])
    info = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(run).items()}
    summary = compute_run_measures(info, run.bold, run.mask, run.confounds, run.events, dseg, labels, strict)
    assert summary["qc"]["excluded"] is True
    assert summary["features"] and not any(row["qc_pass"] for row in summary["features"])
