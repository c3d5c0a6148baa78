"""Conventions of the participant measures, each pinned against an independent truth.

Every expected value here comes from an analytic identity, a published definition or an
invariant (a slice-time shift moves a regressor by exactly that much), never from the
function under test. Each test names the convention it pins; ``scripts/named_survivors.py``
mutates that convention in the code and checks that the test fails.
"""

import numpy as np
import pandas as pd
import pytest

from ptsd_bidsapp.measures.activation import task_design_matrix
from ptsd_bidsapp.measures.gppi import (MICROTIME_BINS, convolve_microtime, gppi_matrix, interaction_regressors,
                                        psychological_microtime)
from ptsd_bidsapp.measures.restfc import denoise_signals, fisher_z_connectivity
from ptsd_bidsapp.measures.voi import first_eigenvariate

pytestmark = pytest.mark.unit

T_R = 2.0
N_SCANS = 120
HRF_SCANS = 16          # SPM's canonical HRF spans 32 s = 16 scans at TR 2 s


def _block_events(shift=0.0):
    """Fearful/neutral 20 s blocks every 30 s, all well inside the run (onsets on the microtime grid)."""
    onsets = np.arange(20.0, N_SCANS * T_R - 40.0, 30.0)
    kinds = (["fearful", "neutral"] * len(onsets))[: len(onsets)]
    return pd.DataFrame({"onset": onsets + shift, "duration": 20.0, "trial_type": kinds})


def _neural(seed=0, n_bins=N_SCANS * MICROTIME_BINS):
    rng = np.random.default_rng(seed)
    x = np.convolve(rng.standard_normal(n_bins), np.hanning(64) / 32, mode="same")
    return x - x.mean()


def _spm_hrf_convolved_at_scan_start(x):
    """Independent of the module: SPM12's spm_hrf(TR/16) written with scipy (difference of gamma
    densities, shapes 6 and 16, ratio 1/6, 32 s long, normalised to sum 1; Friston et al. 1998),
    np.convolve, and the first microtime bin of every scan (fMRI_T0 = 1, slice_time_ref 0)."""
    from scipy.stats import gamma

    dt = T_R / MICROTIME_BINS
    t = np.arange(int(32 / dt) + 1) * dt
    hrf = gamma.pdf(t, 6) - gamma.pdf(t, 16) / 6
    return np.convolve(x, hrf / hrf.sum())[: x.size][::MICROTIME_BINS]


# ----------------------------------------------------------------------- slice-time reference
def test_microtime_sampling_at_half_tr_is_the_signal_shifted_by_half_a_scan():
    """Invariant: sampling the convolution at the bin of slice_time_ref = 0.5 equals sampling at
    bin 1 a signal advanced by fmri_t / 2 bins — exactly once the HRF's 32 s support (16 scans)
    no longer reaches the dropped first bins."""
    x = _neural(1)
    half = MICROTIME_BINS // 2
    advanced = np.r_[x[half:], np.zeros(half)]
    at_half = convolve_microtime(x, T_R, 0.5)
    at_start_of_advanced = convolve_microtime(advanced, T_R, 0.0)
    settled = slice(HRF_SCANS, None)
    np.testing.assert_allclose(at_half[settled], at_start_of_advanced[settled], rtol=0,
                               atol=1e-12 * np.abs(at_half).max())
    assert np.abs(at_half - convolve_microtime(x, T_R, 0.0)).max() > 0.05 * np.abs(at_half).max()


def test_gppi_interaction_moves_with_the_slice_time_reference():
    """Invariant: the interaction at slice_time_ref = 0.5 equals the interaction of the same
    neural signal and events both advanced by TR/2, at slice_time_ref = 0."""
    x = _neural(2)
    half = MICROTIME_BINS // 2
    advanced = np.r_[x[half:], np.zeros(half)]
    conditions = ["fearful", "neutral"]
    at_half = interaction_regressors(x, _block_events(), conditions, T_R, 0.5).to_numpy()
    shifted = interaction_regressors(advanced, _block_events(shift=-T_R / 2), conditions, T_R, 0.0).to_numpy()
    # equal after the HRF's support, up to the constant each regressor's mean removal leaves
    difference = (at_half - shifted)[HRF_SCANS:]
    assert np.ptp(difference, axis=0).max() < 1e-12
    assert np.ptp(at_half[HRF_SCANS:] - interaction_regressors(x, _block_events(), conditions, T_R, 0.0)
                  .to_numpy()[HRF_SCANS:], axis=0).min() > 0.01 * np.abs(at_half).max()


def test_gppi_matrix_samples_the_interaction_at_the_slice_time_reference():
    """gppi_matrix(slice_time_ref = 0.5) is the model whose reference bin is 0.5 TR (fMRI_T0 = 9 of
    16), not the one at the scan start."""
    rng = np.random.default_rng(3)
    events = _block_events()
    seed = convolve_microtime(_neural(4), T_R) + 0.1 * rng.standard_normal(N_SCANS)
    target = 0.5 * seed + rng.standard_normal(N_SCANS)
    signals = np.column_stack([seed, target])
    task = task_design_matrix(N_SCANS, T_R, events, slice_time_ref=0.5)[["fearful", "neutral"]]
    args = (signals, ["s", "t"], task, events, ["fearful", "neutral"], "fearful - neutral", T_R)
    at_half = gppi_matrix(*args, seeds=["s"], slice_time_ref=0.5)[0].loc["s", "t"]
    at_bin9 = gppi_matrix(*args, seeds=["s"], fmri_t0=9)[0].loc["s", "t"]
    at_start = gppi_matrix(*args, seeds=["s"], slice_time_ref=0.0)[0].loc["s", "t"]
    assert at_half == pytest.approx(at_bin9, rel=1e-12)
    assert abs(at_half - at_start) > 1e-3 * abs(at_half)


def test_psychological_term_is_mean_centred_before_the_product():
    """gPPI / spm_peb_ppi multiply the mean-centred psychological variable by the neural signal:
    with a constant neural signal the microtime product sums to zero, so its convolution (HRF sums
    to 1) equals the convolution of psy - mean(psy) exactly (before the output's mean removal)."""
    events = _block_events()
    psy = psychological_microtime(events, "fearful", N_SCANS, T_R)
    ones = np.ones(N_SCANS * MICROTIME_BINS)
    got = interaction_regressors(ones, events, ["fearful"], T_R)["ppi_fearful"].to_numpy()
    centred = psy - psy.mean()
    expected = _spm_hrf_convolved_at_scan_start(centred)
    expected = expected - expected.mean()        # the spm method removes the regressor's mean
    np.testing.assert_allclose(got, expected, atol=1e-12)
    # without centring the product would carry mean(psy) x the seed's own (constant) signal
    uncentred = _spm_hrf_convolved_at_scan_start(psy)
    assert np.abs(got - (uncentred - uncentred.mean())).max() > 0.01


# --------------------------------------------------------------------------------- GLM timing
def test_glm_frame_times_follow_the_slice_time_reference():
    """Invariant: a design at slice_time_ref = 0.5 equals the design at 0 with every onset
    moved TR/2 earlier (nilearn samples the convolved regressor at the frame times)."""
    events = _block_events()
    at_half = task_design_matrix(N_SCANS, T_R, events, slice_time_ref=0.5)[["fearful", "neutral"]]
    shifted = task_design_matrix(N_SCANS, T_R, _block_events(shift=-T_R / 2))[["fearful", "neutral"]]
    # nilearn convolves on a grid oversampled 50x (0.04 s) starting at the first frame time, so
    # onsets snap to it: the two designs differ by at most slope x 0.04 s (measured 1.5e-3),
    # against >= 0.05 when the frame times ignore the slice-time reference (a 1 s shift)
    np.testing.assert_allclose(at_half.to_numpy(), shifted.to_numpy(), atol=5e-3)
    at_zero = task_design_matrix(N_SCANS, T_R, events)[["fearful", "neutral"]]
    assert np.abs(at_half.to_numpy() - at_zero.to_numpy()).max() > 0.05
    np.testing.assert_allclose(at_half.index.to_numpy(), (np.arange(N_SCANS) + 0.5) * T_R)


# ------------------------------------------------------------------------------ task-free FC
def _orthogonal_pair(n, rho, nuisance, seed):
    """Two series with sample correlation exactly ``rho``, orthogonal to the columns of ``nuisance``."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(np.column_stack([nuisance, rng.standard_normal((n, 2))]))
    u, v = q[:, -2], q[:, -1]                  # orthonormal, orthogonal to the nuisance span
    return u, rho * u + np.sqrt(1 - rho ** 2) * v


def test_rest_fc_is_fisher_z_of_the_exact_correlation_after_detrending():
    """Signals = an exactly known correlation (r = 0.6) + motion + a linear trend: confound
    regression and linear detrending remove both exactly, so the value is arctanh(0.6) =
    0.6931 (r and z differ by 0.093) to rounding; without detrending the shared trend would
    dominate (r -> ~1)."""
    n, rho = 300, 0.6
    rng = np.random.default_rng(5)
    motion = rng.standard_normal(n)
    trend = np.linspace(-1.0, 1.0, n)
    a, b = _orthogonal_pair(n, rho, np.column_stack([np.ones(n), trend, motion]), seed=6)
    signals = np.column_stack([a + 3 * motion + 10 * trend, b - 2 * motion + 10 * trend])
    clean = denoise_signals(signals, T_R, confounds=motion[:, None], low_pass=None, high_pass=None)
    z = fisher_z_connectivity(clean, ["a", "b"])
    assert z.loc["a", "b"] == pytest.approx(np.arctanh(rho), abs=1e-8)
    assert z.loc["a", "b"] == pytest.approx(0.6931471805599453, abs=1e-8)


def test_fisher_z_of_known_correlations():
    """arctanh on exact correlations r = -0.9, 0, 0.3 (z = -1.4722, 0, 0.3095); diagonal n/a."""
    n = 200
    rng = np.random.default_rng(7)
    q, _ = np.linalg.qr(np.column_stack([np.ones(n), rng.standard_normal((n, 3))]))
    u, v, w = q[:, 1], q[:, 2], q[:, 3]
    x = np.column_stack([u, -0.9 * u + np.sqrt(1 - 0.81) * v, w, 0.3 * w + np.sqrt(1 - 0.09) * v])
    z = fisher_z_connectivity(x, ["a", "b", "c", "d"])
    assert z.loc["a", "b"] == pytest.approx(-1.4722194895832204, abs=1e-10)
    assert z.loc["a", "c"] == pytest.approx(0.0, abs=1e-10)
    assert z.loc["c", "d"] == pytest.approx(0.30951960420311175, abs=1e-10)
    assert np.isnan(np.diag(z.to_numpy())).all()


# ------------------------------------------------------------------------------- eigenvariate
@pytest.mark.parametrize("n_voxels", [30, 400])   # both branches: y'y (t > v) and y y' (t <= v)
def test_eigenvariate_sign_follows_the_roi_mean(n_voxels):
    """spm_regions: ``d = sign(sum(v)); u = u*d`` — the eigenvariate correlates positively with
    the ROI's mean signal whatever sign the eigen-solver returns, for the data and its negation."""
    t = 100
    signs = []
    for seed in range(12):
        rng = np.random.default_rng(seed)
        comp = rng.standard_normal(t)
        loadings = 1.0 + 0.3 * rng.standard_normal(n_voxels)
        voxels = comp[:, None] * loadings + 0.5 * rng.standard_normal((t, n_voxels))
        for data in (voxels, -voxels):
            ev = first_eigenvariate(data)
            signs.append(np.sign(np.corrcoef(ev, data.mean(axis=1))[0, 1]))
    assert signs == [1.0] * len(signs)


def test_rest_fc_default_band_pass_is_0_01_to_0_08_hz():
    """README: 0.01-0.08 Hz band-pass by default. Two ROIs whose in-band parts are orthogonal
    (sine and cosine at 0.03 Hz, whole cycles) but which share a 0.2 Hz and a 0.004 Hz component:
    the default band removes both shared parts (z ~ 0); without it they dominate."""
    t = np.arange(300) * T_R                      # 600 s: 18 cycles at 0.03 Hz
    in_a, in_b = np.sin(2 * np.pi * 0.03 * t), np.cos(2 * np.pi * 0.03 * t)
    shared = 2.0 * np.sin(2 * np.pi * 0.2 * t) + 3.0 * np.sin(2 * np.pi * 0.004 * t + 0.3)
    signals = np.column_stack([in_a + shared, in_b + shared])
    z_default = fisher_z_connectivity(denoise_signals(signals, T_R), ["a", "b"]).loc["a", "b"]
    z_high_only = fisher_z_connectivity(denoise_signals(signals, T_R, low_pass=None), ["a", "b"]).loc["a", "b"]
    z_low_only = fisher_z_connectivity(denoise_signals(signals, T_R, high_pass=None), ["a", "b"]).loc["a", "b"]
    assert abs(z_default) < 0.1                   # filter edges leave a little of the shared parts
    assert z_high_only > 0.5 and z_low_only > 0.5


def test_fisher_z_leaves_nan_and_constant_rois_out():
    """ROIs with a NaN or a constant signal get n/a rows and columns; the others are unaffected."""
    n = 100
    rng = np.random.default_rng(8)
    q, _ = np.linalg.qr(np.column_stack([np.ones(n), rng.standard_normal((n, 2))]))
    u, v = q[:, 1], q[:, 2]
    nan_roi = rng.standard_normal(n)
    nan_roi[5] = np.nan
    x = np.column_stack([u, nan_roi, 0.5 * u + np.sqrt(0.75) * v, np.full(n, 3.0)])
    z = fisher_z_connectivity(x, ["a", "nan", "b", "flat"])
    assert z.loc["a", "b"] == pytest.approx(np.arctanh(0.5), abs=1e-10)
    for bad in ("nan", "flat"):
        assert z.loc[bad].isna().all() and z[bad].isna().all()
    assert fisher_z_connectivity(x[:, [0, 1]], ["a", "nan"]).isna().all().all()   # fewer than 2 usable


def test_fisher_z_of_identical_signals_is_finite():
    """r = ±1 (an ROI duplicated or negated) is clipped to 1 - 1e-12 before arctanh: z = ±14.16,
    not infinite."""
    u = np.sin(np.arange(50) / 3.0)
    z = fisher_z_connectivity(np.column_stack([u, u, -u]), ["a", "same", "negated"])
    assert z.loc["a", "same"] == pytest.approx(np.arctanh(1 - 1e-12), rel=1e-3)
    assert z.loc["a", "negated"] == pytest.approx(-np.arctanh(1 - 1e-12), rel=1e-3)


def test_rest_fc_band_pass_is_in_hz_of_the_run_tr():
    """The band is in Hz, so the run's TR must reach the filter: at TR 0.5 s a 0.04 Hz sine (in the
    0.01-0.08 Hz band, 20 whole cycles) passes with its amplitude and a 0.2 Hz sine is removed; read at
    nilearn's default TR of 2.5 s they would be 0.008 and 0.04 Hz and swap roles."""
    t = np.arange(1000) * 0.5
    in_band, above = np.sin(2 * np.pi * 0.04 * t), np.sin(2 * np.pi * 0.2 * t)
    clean = denoise_signals(np.column_stack([in_band, above]), 0.5)
    assert clean[:, 0].std() / in_band.std() == pytest.approx(1.0, abs=0.05)
    assert clean[:, 1].std() / above.std() < 0.15


def test_denoised_signals_stay_in_data_units():
    """Without band-pass or confounds, cleaning is linear detrending only (nilearn's z-scoring is
    off): the output is the input minus its least-squares line (numpy polyfit), in data units."""
    rng = np.random.default_rng(9)
    t = np.arange(80, dtype=float)
    x = np.column_stack([50 + 0.3 * t + 4 * rng.standard_normal(80), -2 - 0.1 * t + rng.standard_normal(80)])
    expected = np.column_stack([x[:, j] - np.polyval(np.polyfit(t, x[:, j], 1), t) for j in range(2)])
    np.testing.assert_allclose(denoise_signals(x, T_R, low_pass=None, high_pass=None), expected, atol=1e-10)


def test_fisher_z_of_nan_and_constant_rois_raises_no_numpy_warning():
    """n/a ROIs (a NaN or a constant signal) are left out before the correlation, so the log gets no
    numpy 'invalid value' warning (a constant column inside corrcoef would divide 0 by 0)."""
    import warnings

    n = 60
    rng = np.random.default_rng(10)
    nan_roi = rng.standard_normal(n)
    nan_roi[3] = np.nan
    x = np.column_stack([rng.standard_normal(n), nan_roi, rng.standard_normal(n), np.full(n, 3.0)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        z = fisher_z_connectivity(x, ["a", "nan", "b", "flat"])
    assert z.loc[["nan", "flat"]].isna().all().all() and np.isfinite(z.loc["a", "b"])


def _svd_eigenvariate(y, confounds=None):
    """Independent of the module: spm_regions written with numpy's SVD of the adjusted data y (t x v):
    Y = u1 s1 / sqrt(v) (s1 the first singular value, s1^2 the first eigenvalue of y y'), signed so
    that the loadings v1 sum positive."""
    t = y.shape[0]
    x0 = np.ones((t, 1)) if confounds is None else np.column_stack([np.ones(t), confounds])
    y = y - x0 @ np.linalg.pinv(x0) @ y
    u, s, vt = np.linalg.svd(y, full_matrices=False)
    return u[:, 0] * np.sign(vt[0].sum()) * s[0] / np.sqrt(y.shape[1])


@pytest.mark.parametrize("n_voxels", [20, 60, 300])   # v < t, v = t (y y' branch), v > t
def test_eigenvariate_equals_the_svd_of_the_adjusted_data(n_voxels):
    """spm_regions: the confound-adjusted, mean-corrected data's first left singular vector scaled by
    s1 / sqrt(v), whichever Gram matrix is decomposed; voxels with a NaN are dropped first."""
    t = 60
    rng = np.random.default_rng(n_voxels)
    conf = rng.standard_normal((t, 2))
    y = (np.sin(np.arange(t) / 4.0)[:, None] * (1 + 0.3 * rng.standard_normal(n_voxels))
         + conf @ rng.standard_normal((2, n_voxels)) + 0.5 * rng.standard_normal((t, n_voxels)) + 7.0)
    np.testing.assert_allclose(first_eigenvariate(y, conf), _svd_eigenvariate(y, conf), atol=1e-10)
    np.testing.assert_allclose(first_eigenvariate(y), _svd_eigenvariate(y), atol=1e-10)
    with_nan = np.column_stack([y, np.where(np.arange(t) == 4, np.nan, 1.0)[:, None] * y[:, :1]])
    np.testing.assert_allclose(first_eigenvariate(with_nan, conf), _svd_eigenvariate(y, conf), atol=1e-10)
    np.testing.assert_allclose(first_eigenvariate(y.astype(np.float32)),
                               _svd_eigenvariate(y.astype(np.float32).astype(float)), atol=1e-8)


def test_eigenvariate_of_loadings_summing_to_zero_keeps_its_scale():
    """Two voxels a and -a: the loadings (1, -1)/sqrt(2) sum to zero, so spm_regions' sign(sum(v)) is 0;
    the eigenvariate keeps its magnitude |a - mean(a)| (s1 = 2 |a|^2, v = 2) with either sign."""
    a = np.array([1.0, -2.0, 0.5, 3.0, -1.5, 4.0, -2.5, 0.0])
    a_c = a - a.mean()
    ev = first_eigenvariate(np.column_stack([a, -a]))
    np.testing.assert_allclose(np.abs(ev), np.abs(a_c), atol=1e-12)
    assert np.allclose(ev, a_c, atol=1e-12) or np.allclose(ev, -a_c, atol=1e-12)


def test_eigenvariate_of_an_roi_without_finite_voxel_is_refused():
    from ptsd_bidsapp.measures import MeasureError

    with pytest.raises(MeasureError, match="^ROI has no finite voxel: no eigenvariate$"):
        first_eigenvariate(np.full((10, 3), np.nan))


def test_eigenvariate_of_a_single_small_voxel_is_the_voxel_mean_corrected():
    """One voxel (t > v branch; s1 = |y|^2 < 1 here): u1 = y / |y|, loading |y| > 0, so the eigenvariate
    u1 sqrt(s1 / 1) is the mean-corrected voxel itself, at its own (small) scale."""
    import warnings

    y = 1e-3 * np.array([2.0, -1.0, 0.5, 3.0, -2.5, 1.0]) + 0.25
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # nor any warning (numpy deprecations included)
        ev = first_eigenvariate(y[:, None])
    np.testing.assert_allclose(ev, y - y.mean(), atol=1e-15)


def test_microtime_convolution_defaults_to_the_first_bin_of_each_scan():
    """Defaults (slice_time_ref 0, fMRI_T 16, method spm): SPM12's spm_hrf written with scipy,
    sampled at the first microtime bin of every scan."""
    x = _neural(3)
    np.testing.assert_allclose(convolve_microtime(x, T_R), _spm_hrf_convolved_at_scan_start(x), atol=1e-12)
