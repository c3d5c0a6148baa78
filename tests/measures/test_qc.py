"""Run-level QC and input checks (``measures/qc.py``), each against its documented rule."""

import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ptsd_bidsapp.measures import MeasureError
from ptsd_bidsapp.measures.qc import (GRID_TOLERANCE_MM, MIN_BANDPASS_VOLUMES, check_run_length, check_same_grid,
                                      conditions_outside_scan, motion_qc)

pytestmark = pytest.mark.unit

CONFIG = {"fd_threshold": 0.5, "max_mean_fd": 0.5, "max_percent_censored": 10.0}


def test_motion_qc_values_by_hand():
    """FD (first volume n/a = 0): 0, 0.1, 0.5, 0.9, 0.2 mm -> mean 1.7 / 5 = 0.34 mm, max 0.9 mm; only
    0.9 is above the 0.5 mm threshold (0.5 is not: 'FD > threshold'): 1 of 5 = 20 % censored."""
    conf = pd.DataFrame({"framewise_displacement": ["n/a", 0.1, 0.5, 0.9, 0.2]})
    qc = motion_qc(conf, CONFIG)
    assert qc["mean_fd"] == pytest.approx(0.34, abs=1e-12) and qc["max_fd"] == pytest.approx(0.9)
    assert (qc["n_volumes"], qc["n_censored"]) == (5, 1) and qc["percent_censored"] == pytest.approx(20.0)
    assert qc["censored"].tolist() == [False, False, False, True, False]
    assert qc["excluded"] is True
    assert qc["reasons"] == ["20.0% volumes with FD > 0.5 mm (limit 10.0%)"]
    assert isinstance(qc["n_volumes"], int) and isinstance(qc["n_censored"], int)
    assert isinstance(qc["percent_censored"], float) and isinstance(qc["max_fd"], float)


def test_motion_qc_limits_are_strict_and_each_gives_its_reason():
    """A run exactly at a limit is kept ('>' in README: mean FD > max_mean_fd, percent > max);
    above both it is excluded with both reasons, in that order."""
    at_limits = pd.DataFrame({"framewise_displacement": [0.0] + [0.5] * 8 + [0.5]})   # mean 0.45
    qc = motion_qc(at_limits, {"fd_threshold": 0.5, "max_mean_fd": 0.45, "max_percent_censored": 0.0})
    assert qc["mean_fd"] == pytest.approx(0.45) and qc["n_censored"] == 0
    assert qc["excluded"] is False and qc["reasons"] == []
    ten_percent = pd.DataFrame({"framewise_displacement": [0.0] * 9 + [0.6]})
    qc = motion_qc(ten_percent, {"fd_threshold": 0.5, "max_mean_fd": 0.06, "max_percent_censored": 10.0})
    assert qc["percent_censored"] == pytest.approx(10.0) and qc["excluded"] is False
    bad = pd.DataFrame({"framewise_displacement": [np.nan, 2.0, 2.0, 0.1]})
    qc = motion_qc(bad, CONFIG)
    assert qc["reasons"] == ["mean FD 1.025 mm > 0.5 mm", "50.0% volumes with FD > 0.5 mm (limit 10.0%)"]
    assert qc["excluded"] is True


def test_motion_qc_of_an_empty_table_and_a_missing_column():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        qc = motion_qc(pd.DataFrame({"framewise_displacement": pd.Series([], dtype=float)}), CONFIG)
    assert np.isnan(qc["mean_fd"]) and np.isnan(qc["max_fd"])
    assert (qc["n_volumes"], qc["n_censored"], qc["percent_censored"], qc["excluded"]) == (0, 0, 0.0, False)
    one = motion_qc(pd.DataFrame({"framewise_displacement": [0.9]}), CONFIG)       # 1 of 1 volume: 100 %
    assert one["percent_censored"] == pytest.approx(100.0) and one["n_censored"] == 1
    with pytest.raises(MeasureError) as err:
        motion_qc(pd.DataFrame({"x": [1.0]}), CONFIG, source="sub-01_desc-confounds_timeseries.tsv")
    assert str(err.value) == ("sub-01_desc-confounds_timeseries.tsv: column 'framewise_displacement' missing; "
                              "motion QC impossible")
    with pytest.raises(MeasureError, match="^confounds: column"):
        motion_qc(pd.DataFrame({"x": [1.0]}), CONFIG)


def test_min_bandpass_volumes_is_what_nilearns_filter_needs():
    """Reference: nilearn's own band-pass (0.01-0.08 Hz, TR 2 s) refuses 33 volumes and takes 34."""
    from nilearn import signal

    assert MIN_BANDPASS_VOLUMES == 34
    kwargs = dict(t_r=2.0, low_pass=0.08, high_pass=0.01, detrend=True, standardize=None)
    with pytest.raises(ValueError):
        signal.clean(np.random.default_rng(0).standard_normal((MIN_BANDPASS_VOLUMES - 1, 2)), **kwargs)
    signal.clean(np.random.default_rng(0).standard_normal((MIN_BANDPASS_VOLUMES, 2)), **kwargs)


def test_run_length_limits_and_messages():
    check_run_length(34, 5, True, "rest.nii.gz")          # both minimums met exactly
    check_run_length(7, 5, False, "task.nii.gz")          # 5 regressors + 2 residual dof
    check_run_length(20, 5, False, "task.nii.gz")         # no band-pass: 34 does not apply
    with pytest.raises(MeasureError) as err:
        check_run_length(33, 5, True, "rest.nii.gz")
    assert str(err.value) == ("rest.nii.gz has only 33 volume(s): too short to analyse (the band-pass filter of "
                              "task-free connectivity needs at least 34)")
    with pytest.raises(MeasureError) as err:
        check_run_length(6, 5, False, "task.nii.gz")
    assert str(err.value) == ("task.nii.gz has only 6 volume(s): too short to analyse (5 regressors (confounds, "
                              "conditions, intercept) need at least 7)")
    with pytest.raises(MeasureError, match="need at least 42"):
        check_run_length(41, 40, True, "rest.nii.gz")


def test_conditions_outside_the_scan():
    """The scan covers [0, n TR) s: an event counts if it ends after 0 and starts before the end;
    a zero or n/a duration counts only by its onset."""
    events = pd.DataFrame({"onset": [5.0, 100.0, -10.0, -10.0, 200.0, 250.0, 19.9],
                           "duration": [2.0, 5.0, 10.0, 10.5, 1.0, np.nan, 0.0],
                           "trial_type": ["in", "after", "before", "straddles", "late", "late", "edge"]})
    out = conditions_outside_scan(events, 10, 2.0)          # scan: 0-20 s
    assert out == {"after": "all 1 'after' event(s) lie outside the scan (0-20 s; onsets 100-100 s)",
                   "before": "all 1 'before' event(s) lie outside the scan (0-20 s; onsets -10--10 s)",
                   "late": "all 2 'late' event(s) lie outside the scan (0-20 s; onsets 200-250 s)"}
    assert list(out) == ["after", "before", "late"]          # sorted by condition
    reordered = conditions_outside_scan(events.iloc[::-1], 10, 2.0)   # 'late' first in the table
    assert list(reordered) == ["after", "before", "late"]
    na_before = pd.DataFrame({"onset": [-0.5], "duration": [np.nan], "trial_type": ["na"]})
    assert list(conditions_outside_scan(na_before, 10, 2.0)) == ["na"]   # n/a duration = 0 s: ends at -0.5 s
    assert conditions_outside_scan(events[events.trial_type.isin(["in", "edge", "straddles"])], 10, 2.0) == {}
    at_end = pd.DataFrame({"onset": [20.0], "duration": [1.0], "trial_type": ["x"]})
    assert list(conditions_outside_scan(at_end, 10, 2.0)) == ["x"]       # starts at the end: outside
    assert conditions_outside_scan(at_end, 11, 2.0) == {}


def _img(shape=(4, 5, 6), affine=None):
    return nib.Nifti1Image(np.zeros(shape, np.uint8), np.eye(4) if affine is None else affine)


def test_mask_on_another_grid_is_refused():
    bold = _img((4, 5, 6, 3))
    check_same_grid(_img(), bold, "mask.nii.gz", "bold.nii.gz")
    check_same_grid(_img((4, 5, 6, 1)), bold, "mask.nii.gz", "bold.nii.gz")   # a one-volume 4-D mask: same grid
    shifted = np.eye(4)
    shifted[0, 3] = GRID_TOLERANCE_MM                       # within the header rounding tolerance
    check_same_grid(_img(affine=shifted), bold, "mask.nii.gz", "bold.nii.gz")
    assert GRID_TOLERANCE_MM == 0.01
    with pytest.raises(MeasureError) as err:
        check_same_grid(_img((4, 5, 7)), bold, "mask.nii.gz", "bold.nii.gz")
    assert str(err.value) == ("brain mask mask.nii.gz grid (4, 5, 7) differs from BOLD bold.nii.gz (4, 5, 6): "
                              "the mask must be on the BOLD grid (as fMRIPrep writes it)")
    shifted[1, 3] = -2.5
    with pytest.raises(MeasureError) as err:
        check_same_grid(_img(affine=shifted), bold, "mask.nii.gz", "bold.nii.gz")
    assert str(err.value) == ("brain mask mask.nii.gz is on another grid than BOLD bold.nii.gz: same shape "
                              "(4, 5, 6) but the affines differ by up to 2.5 mm (tolerance 0.01 mm); the mask "
                              "is applied voxel for voxel, so it must be on the BOLD grid (as fMRIPrep writes "
                              "it): check that the two files belong together")
