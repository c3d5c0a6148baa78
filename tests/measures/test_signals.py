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
