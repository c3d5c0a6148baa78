"""load_confounds wrapper: config strategy, old fMRIPrep naming, clear error on a missing column."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ptsd_bidsapp.measures import MeasureError
from ptsd_bidsapp.measures.confounds import load_run_confounds

TASK = {"strategy": ["motion", "high_pass", "wm_csf"], "motion": "derivatives", "wm_csf": "basic", "scrub": 0,
        "fd_threshold": 0.5, "std_dvars_threshold": None}
REST = {"strategy": ["motion", "high_pass", "wm_csf", "scrub"], "motion": "full", "wm_csf": "basic", "scrub": 5,
        "fd_threshold": 0.5, "std_dvars_threshold": None, "low_pass": 0.08, "high_pass": 0.01}


def _dataset(tmp_path, suffix="_desc-confounds_timeseries.tsv", drop=(), n=60, spikes=()):
    prefix = "sub-01_ses-pre_task-faces"
    bold = tmp_path / f"{prefix}_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((2, 2, 2, n), np.float32), np.eye(4)), bold)
    rng = np.random.default_rng(0)
    cols = {}
    for base in ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z", "white_matter", "csf"]:
        x = rng.standard_normal(n)
        cols[base] = x
        cols[base + "_derivative1"] = np.r_[np.nan, np.diff(x)]
        cols[base + "_power2"] = x ** 2
        cols[base + "_derivative1_power2"] = np.r_[np.nan, np.diff(x) ** 2]
    for k in range(3):
        cols[f"cosine{k:02d}"] = np.cos(np.pi * (np.arange(n) + 0.5) * (k + 1) / n)
    fd = np.full(n, 0.1)
    fd[0] = np.nan
    fd[list(spikes)] = 1.0
    cols["framewise_displacement"] = fd
    cols["std_dvars"] = np.r_[np.nan, np.ones(n - 1)]
    table = pd.DataFrame(cols).drop(columns=list(drop))
    tsv = tmp_path / f"{prefix}{suffix}"
    table.to_csv(tsv, sep="\t", index=False, na_rep="n/a")
    return bold, tsv


@pytest.mark.parametrize("suffix", ["_desc-confounds_timeseries.tsv", "_desc-confounds_regressors.tsv"])
def test_task_strategy_columns(tmp_path, suffix):
    bold, _ = _dataset(tmp_path, suffix)
    confounds, sample_mask = load_run_confounds(bold, TASK)
    # 12 motion (6 + derivatives), 3 cosines, wm + csf; no censoring for task
    assert confounds.shape == (60, 17) and sample_mask is None
    assert {"cosine00", "trans_x_derivative1", "csf"} <= set(confounds.columns)


def test_rest_scrub_sample_mask(tmp_path):
    bold, _ = _dataset(tmp_path, spikes=(30,))
    confounds, sample_mask = load_run_confounds(bold, REST)
    assert confounds.shape[1] == 24 + 3 + 2
    assert 30 not in sample_mask and len(sample_mask) < 60


@pytest.mark.parametrize("column", ["csf", "trans_x_derivative1", "cosine00"])
def test_missing_column_names_file_and_column(tmp_path, column):
    drop = [c for c in ["cosine00", "cosine01", "cosine02"]] if column == "cosine00" else [column]
    bold, tsv = _dataset(tmp_path, drop=drop)
    with pytest.raises(MeasureError) as err:
        load_run_confounds(bold, TASK)
    assert tsv.name in str(err.value) and column.rstrip("0") in str(err.value)


def test_missing_file(tmp_path):
    bold, tsv = _dataset(tmp_path)
    tsv.unlink()
    with pytest.raises(MeasureError, match="no confounds TSV"):
        load_run_confounds(bold, TASK)
