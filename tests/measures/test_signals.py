"""ROI signals, ROI GLM, rest FC, eigenvariates, QC, features: ground-truth checks."""

import warnings

import numpy as np
import pandas as pd
import pytest

from ptsd_bidsapp.measures import MeasureError
from ptsd_bidsapp.measures.activation import fit_roi_glm, percent_signal_change, roi_mean_signals, task_design_matrix
from ptsd_bidsapp.measures.features import activation_features, features_table, pair_features
from ptsd_bidsapp.measures.qc import motion_qc
from ptsd_bidsapp.measures.restfc import denoise_signals, fisher_z_connectivity
from ptsd_bidsapp.measures.voi import first_eigenvariate


def test_roi_means_exact_and_nan_voxels(tmp_path):
    rng = np.random.default_rng(0)
    data = (100 + rng.standard_normal((6, 6, 6, 20))).astype(np.float32)
    labels = np.zeros((6, 6, 6), int)
    labels[:3] = 1
    labels[3:, :3] = 2
    data[0, 0, 0, 5] = np.nan
    with pytest.warns(UserWarning, match="NaN"):
        sig, nvox = roi_mean_signals(data, labels, [1, 2, 3])
    roi1 = data[labels == 1]
    expected = roi1[np.all(np.isfinite(roi1), 1)].mean(0)
    np.testing.assert_allclose(sig[:, 0], expected, rtol=1e-6)  # float32 data, float64 accumulation
    assert nvox.tolist() == [107, 54, 0] and np.isnan(sig[:, 2]).all()


def _canonical_regressors(events, conditions, n, t_r, slice_time_ref, dt=0.02):
    from scipy.stats import gamma

    t = np.arange(int(32 / dt) + 1) * dt
    hrf = gamma.pdf(t, 6) - gamma.pdf(t, 16) / 6
    hrf /= hrf.sum()
    grid = np.arange(int(round((n + 1) * t_r / dt))) * dt
    frames = np.round((np.arange(n) + slice_time_ref) * t_r / dt).astype(int)
    columns = []
    for condition in conditions:
        box = np.zeros(grid.size)
        for _, row in events[events["trial_type"] == condition].iterrows():
            box[(grid >= row["onset"]) & (grid < row["onset"] + row["duration"])] = 1.0
        columns.append(np.convolve(box, hrf)[: grid.size][frames])
    return np.column_stack(columns)


def test_roi_glm_recovers_planted_psc_effect():
    rng = np.random.default_rng(2)
    t_r, n = 2.0, 200
    onsets = np.arange(10, 380, 30.0)
    events = pd.DataFrame({"onset": onsets, "duration": 15.0,
                           "trial_type": (["fearful", "neutral"] * len(onsets))[: len(onsets)]})
    design = task_design_matrix(n, t_r, events, slice_time_ref=0.5)
    # planted with regressors made without the module: 0.02 s boxcars convolved with SPM's canonical
    # HRF (difference of gammas 6 and 16, ratio 1/6, sum 1) sampled at the frame times (k + 0.5) TR
    x = _canonical_regressors(events, ["fearful", "neutral"], n, t_r, slice_time_ref=0.5)
    raw = 1000 * (1 + 0.01 * (x @ [2.0, 1.0])[:, None] * [1, 0]) + rng.standard_normal((n, 2)) * 2
    psc = percent_signal_change(raw)
    table = fit_roi_glm(psc, design, {"fearfulMinusNeutral": "fearful - neutral"}, ["a", "b"])["fearfulMinusNeutral"]
    # planted: 2% vs 1% -> contrast 1.0 %; noise sd 0.2 % gives stderr ~0.05, tolerance 4 stderr
    assert table.loc[0, "effect_size"] == pytest.approx(1.0, abs=4 * table.loc[0, "stderr"])
    assert abs(table.loc[1, "t"]) < 4  # ROI without effect
    assert table.loc[0, "t"] > 10


def test_rest_fc_recovers_known_correlation():
    rng = np.random.default_rng(3)
    t_r, n, rho = 2.0, 600, 0.6
    latent = rng.standard_normal((n, 2))
    a = latent[:, 0]
    b = rho * latent[:, 0] + np.sqrt(1 - rho ** 2) * latent[:, 1]
    motion = rng.standard_normal(n)
    signals = np.column_stack([a + 3 * motion, b - 2 * motion, rng.standard_normal(n)])
    keep = np.setdiff1d(np.arange(n), np.arange(100, 110))
    clean = denoise_signals(signals, t_r, confounds=motion[:, None], sample_mask=keep, low_pass=None, high_pass=None)
    z = fisher_z_connectivity(clean, ["a", "b", "c"])
    # sd of Fisher z is 1/sqrt(n-3) ~ 0.041: 4 sd tolerance
    assert z.loc["a", "b"] == pytest.approx(np.arctanh(rho), abs=4 / np.sqrt(len(keep) - 3))
    assert abs(z.loc["a", "c"]) < 4 / np.sqrt(len(keep) - 3)
    assert clean.shape[0] == len(keep) and np.isnan(z.loc["a", "a"])


def test_eigenvariate_recovers_planted_component():
    rng = np.random.default_rng(4)
    t, v = 150, 80
    comp = np.sin(np.arange(t) / 5.0)
    conf = rng.standard_normal((t, 2))
    loadings = 1 + 0.2 * rng.standard_normal(v)
    voxels = comp[:, None] * loadings + conf @ rng.standard_normal((2, v)) * 3 + 0.3 * rng.standard_normal((t, v))
    ev = first_eigenvariate(voxels, conf)
    assert np.corrcoef(ev, comp)[0, 1] > 0.99  # positive sign (loadings positive)
    # SPM scaling u1 sqrt(s1/v): for a rank-one signal this is ~ comp * rms(loadings)
    scale = np.std(ev) / np.std(comp)
    assert scale == pytest.approx(np.sqrt(np.mean(loadings ** 2)), rel=0.05)


def test_motion_qc_flags():
    conf = pd.DataFrame({"framewise_displacement": [np.nan, 0.1, 0.2, 0.9, 1.2, 0.1, 0.1, 0.1, 0.1, 0.1]})
    qc = motion_qc(conf, {"fd_threshold": 0.5, "max_mean_fd": 0.5, "max_percent_censored": 10.0})
    assert qc["mean_fd"] == pytest.approx(2.9 / 10) and qc["percent_censored"] == pytest.approx(20.0)
    assert qc["excluded"] and len(qc["reasons"]) == 1
    with pytest.raises(MeasureError, match="framewise_displacement"):
        motion_qc(pd.DataFrame({"x": [1.0]}), {"fd_threshold": 0.5, "max_mean_fd": 0.5, "max_percent_censored": 10})


def test_features_rows_contract():
    table = pd.DataFrame({"roi": ["dacc", "amygdala"], "effect_size": [0.5, 0.2]})
    rows = activation_features(table, "faces", "fearfulMinusNeutral", low_coverage=["amygdala"])
    m = pd.DataFrame([[np.nan, 0.3], [0.3, np.nan]], index=["vmpfc", "amygdala"], columns=["vmpfc", "amygdala"])
    rows += pair_features(m, "faces", "gppi", "fearfulMinusNeutral")
    df = features_table(rows)
    assert list(df.columns) == ["measure", "value", "task", "kind", "qc_pass", "note"]
    assert df.measure.tolist() == ["activation_faces_fearfulMinusNeutral_dacc",
                                   "activation_faces_fearfulMinusNeutral_amygdala",
                                   "gppi_faces_fearfulMinusNeutral_vmpfc-amygdala"]
    assert df.value.tolist() == [0.5, "n/a", 0.3] and df.qc_pass.tolist() == [True, False, True]
    assert "coverage" in df.note[1]


def test_percent_signal_change_is_about_each_roi_mean_and_silent_for_empty_rois():
    """100 (y - m) / m with m the column's own mean: 90/110/100 (m = 100) and 900/1100/1000 (m = 1000)
    both give -10/+10/0 %; a zero-mean (0/0 or x/0) or all-n/a ROI is n/a, without a numpy warning."""
    signals = np.array([[90.0, 900.0, 0.0, np.nan, 1.0], [110.0, 1100.0, 0.0, np.nan, -1.0],
                        [100.0, 1000.0, 0.0, np.nan, 0.0]])          # last column: mean 0, x / 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        psc = percent_signal_change(signals)
    np.testing.assert_allclose(psc[:, :2], [[-10.0, -10.0], [10.0, 10.0], [0.0, 0.0]], atol=1e-12)
    assert np.isnan(psc[:, 2:]).all()


def test_design_carries_the_confounds_and_the_glm_table_has_the_documented_columns():
    """Confound columns enter the design unchanged (named as given); the GLM table per contrast has
    the columns roi, effect_size, stderr, t (README outputs) in ROI order, n/a for an all-n/a ROI or run."""
    rng = np.random.default_rng(5)
    n, t_r = 60, 2.0
    events = pd.DataFrame({"onset": [10.0, 50.0, 90.0], "duration": 10.0,
                           "trial_type": ["fearful", "neutral", "fearful"]})
    confounds = pd.DataFrame({"trans_x": rng.standard_normal(n), "csf": rng.standard_normal(n)})
    design = task_design_matrix(n, t_r, events, confounds=confounds)
    np.testing.assert_array_equal(design["trans_x"].to_numpy(), confounds["trans_x"].to_numpy())
    np.testing.assert_array_equal(design["csf"].to_numpy(), confounds["csf"].to_numpy())
    signals = rng.standard_normal((n, 3))
    signals[:, 1] = np.nan
    table = fit_roi_glm(signals, design, {"fearfulMinusNeutral": "fearful - neutral"}, ["dacc", "amygdala", "vmpfc"])
    out = table["fearfulMinusNeutral"]
    assert list(out.columns) == ["roi", "effect_size", "stderr", "t"]
    assert out["roi"].tolist() == ["dacc", "amygdala", "vmpfc"]
    assert out.loc[1, ["effect_size", "stderr", "t"]].isna().all() and out.loc[[0, 2], "t"].notna().all()
    empty = fit_roi_glm(np.full((n, 2), np.nan), design, {"c": "fearful - neutral"}, ["dacc", "vmpfc"])["c"]
    assert list(empty.columns) == ["roi", "effect_size", "stderr", "t"]
    assert empty[["effect_size", "stderr", "t"]].isna().all().all()


def test_default_design_is_spm_canonical_hrf_without_drift_terms():
    """README: conditions convolved with SPM's canonical HRF, no drift regressors (fMRIPrep's cosines
    enter as confounds), an intercept. The columns are written out independently (0.02 s boxcars and
    the difference of gammas 6 and 16); nilearn's own grid (0.04 s) leaves at most 5e-3 between the
    two, where the Glover HRF (nilearn's default) differs by 0.5."""
    t_r, n = 2.0, 100
    events = pd.DataFrame({"onset": [10.0, 40.0, 90.0, 130.0], "duration": 15.0,
                           "trial_type": ["fearful", "neutral", "fearful", "neutral"]})
    design = task_design_matrix(n, t_r, events)
    assert design.columns.tolist() == ["fearful", "neutral", "constant"]
    expected = _canonical_regressors(events, ["fearful", "neutral"], n, t_r, slice_time_ref=0.0)
    np.testing.assert_allclose(design[["fearful", "neutral"]].to_numpy(), expected, atol=0.02)
    np.testing.assert_array_equal(design["constant"].to_numpy(), np.ones(n))
    np.testing.assert_allclose(design.index.to_numpy(), np.arange(n) * t_r)


def _ols_reference(y, x, c):
    """Textbook OLS contrast: beta = pinv(X) y, sigma2 = RSS / (n - rank X), var = sigma2 c'(X'X)^-1 c."""
    beta = np.linalg.pinv(x) @ y
    resid = y - x @ beta
    sigma2 = (resid ** 2).sum(axis=0) / (x.shape[0] - np.linalg.matrix_rank(x))
    var = sigma2 * (c @ np.linalg.pinv(x.T @ x) @ c)
    return c @ beta, np.sqrt(var), (c @ beta) / np.sqrt(var)


@pytest.mark.unit
def test_roi_glm_equals_the_textbook_ols_contrast_and_censoring_drops_the_volumes():
    """With noise_model='ols' the table is the textbook OLS contrast (effect c'b, stderr
    sqrt(sigma2 c'(X'X)^-1 c), t their ratio) in ROI order; with a sample_mask it is the same on the
    kept volumes only; an integer-valued input gives the same numbers as its float copy."""
    rng = np.random.default_rng(11)
    n = 40
    x = np.column_stack([rng.standard_normal(n), rng.standard_normal(n), np.ones(n)])
    design = pd.DataFrame(x, columns=["fearful", "neutral", "constant"])
    y = np.round(x @ [[3.0, -1.0], [1.0, 2.0], [5.0, 0.0]] + rng.standard_normal((n, 2)) * 2)
    c = np.array([1.0, -1.0, 0.0])
    for mask in (None, np.setdiff1d(np.arange(n), [3, 4, 5, 17, 30])):
        rows = np.arange(n) if mask is None else mask
        effect, stderr, t = _ols_reference(y[rows], x[rows], c)
        for signals in (y, y.astype(int)):
            out = fit_roi_glm(signals, design, {"fn": "fearful - neutral"}, ["r1", "r2"], noise_model="ols",
                              sample_mask=mask)["fn"]
            np.testing.assert_allclose(out["effect_size"].to_numpy(float), effect, rtol=1e-10)
            np.testing.assert_allclose(out["stderr"].to_numpy(float), stderr, rtol=1e-10)
            np.testing.assert_allclose(out["t"].to_numpy(float), t, rtol=1e-10)
    # the default AR(1) model differs from OLS once the residuals are autocorrelated
    ar = np.zeros((n, 2))
    e = rng.standard_normal((n, 2))
    for i in range(n):
        ar[i] = 0.8 * ar[i - 1] + e[i] if i else e[i]
    y_ar = x @ [[3.0, -1.0], [1.0, 2.0], [5.0, 0.0]] + 3 * ar
    default = fit_roi_glm(y_ar, design, {"fn": "fearful - neutral"}, ["r1", "r2"])["fn"]
    ols = _ols_reference(y_ar, x, c)
    assert np.abs(default["stderr"].to_numpy(float) - ols[1]).max() > 0.01


@pytest.mark.unit
def test_roi_means_refuse_another_grid_and_accumulate_in_float64():
    """A label grid that is not the BOLD grid is refused, naming the file; the ROI mean of float32 data
    is accumulated in float64 (float32 would lose the 1s next to 2**24: (2**24 + 2) / 3 exactly) and
    the voxel counts are integers; a clean ROI raises no warning."""
    data = np.zeros((3, 1, 1, 2), np.float32)
    data[:, 0, 0, 0] = [2.0 ** 24, 1.0, 1.0]
    data[:, 0, 0, 1] = 7.0
    labels = np.ones((3, 1, 1), int)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sig, nvox = roi_mean_signals(data, labels, [1])
    assert sig.dtype == np.float64 and sig[:, 0].tolist() == [(2.0 ** 24 + 2) / 3, 7.0]
    assert nvox.dtype.kind == "i" and nvox.tolist() == [3]
    for bad in (np.ones((3, 1), int), np.ones((3, 1, 2), int), np.ones((2, 1, 1), int)):
        with pytest.raises(MeasureError) as err:
            roi_mean_signals(data, bad, [1], source="sub-01_bold.nii.gz")
        assert str(err.value) == (f"sub-01_bold.nii.gz: label grid {bad.shape} differs from BOLD grid "
                                  f"{data.shape[:-1]}")
    with pytest.raises(MeasureError, match=r"^BOLD: label grid"):
        roi_mean_signals(data, np.ones((2, 1, 1), int), [1])


@pytest.mark.unit
def test_roi_mean_warnings_name_the_file_the_roi_and_the_dropped_voxels():
    """The log says which ROI of which file lost how many voxels, or has none left."""
    data = np.ones((4, 3), np.float32)
    data[0, 1] = np.nan
    data[1, 2] = np.inf
    labels = np.array([5, 5, 5, 6])
    data[3, 0] = np.nan
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sig, nvox = roi_mean_signals(data, labels, [5, 6], source="run-1")
    assert [str(w.message) for w in caught] == ["run-1: ROI 5: 2 voxels with NaN/inf dropped",
                                                "run-1: ROI 6: 1 voxels with NaN/inf dropped",
                                                "run-1: ROI 6 has no usable voxel; its signal is n/a"]
    assert all(w.category is UserWarning for w in caught)
    assert nvox.tolist() == [1, 0] and sig[:, 0].tolist() == [1.0, 1.0, 1.0] and np.isnan(sig[:, 1]).all()


@pytest.mark.unit
def test_percent_signal_change_of_small_and_negative_means():
    """Only a zero mean is n/a: a column of mean 0.5 gives -20/+20/0 % and one of mean -2 gives
    100 (y - m) / m = +50/-50/0 % (the sign of m is kept)."""
    signals = np.array([[0.4, -3.0], [0.6, -1.0], [0.5, -2.0]])
    np.testing.assert_allclose(percent_signal_change(signals), [[-20.0, 50.0], [20.0, -50.0], [0.0, 0.0]],
                               atol=1e-12)


@pytest.mark.unit
def test_design_drift_model_is_passed_to_nilearn():
    """drift_model='cosine' adds the DCT high-pass set of a 100 s cut-off (0.01 Hz), as SPM's
    spm_filter: fix(2 N TR / 100 + 1) = 5 DCT columns for 100 scans at TR 2 s, the constant one
    apart, i.e. 4 cosines sqrt(2/n) cos(pi k (i + 1/2) / n), k = 1..4."""
    n, t_r = 100, 2.0
    events = pd.DataFrame({"onset": [10.0, 60.0], "duration": 10.0, "trial_type": ["fearful", "neutral"]})
    design = task_design_matrix(n, t_r, events, drift_model="cosine")
    assert design.columns.tolist() == ["fearful", "neutral", "drift_1", "drift_2", "drift_3", "drift_4",
                                      "constant"]
    i = np.arange(n)
    for k in (1, 2, 3, 4):
        np.testing.assert_allclose(design[f"drift_{k}"].to_numpy(), np.sqrt(2.0 / n) * np.cos(np.pi * k * (i + 0.5) / n),
                                   atol=1e-12)
