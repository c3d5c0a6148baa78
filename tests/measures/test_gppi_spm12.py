"""gPPI against SPM12 r7771 ``spm_peb_ppi`` (reference outputs made under Octave by
``scripts/spm12_reference/ppi/make_ppi_reference.m``, stored in ``tests/data/spm12/ppi``)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ptsd_bidsapp.measures import gppi
from ptsd_bidsapp.measures.errors import MeasureError

DATA = Path(__file__).resolve().parents[1] / "data" / "spm12" / "ppi"
META = json.loads((DATA / "cases.json").read_text())
CASES = {case["name"]: case for case in META["cases"]}
CONDITIONS = ["fearful", "neutral"]


def _load(case):
    inputs = pd.read_csv(DATA / case["inputs"])
    outputs = pd.read_csv(DATA / case["outputs"])
    xn = pd.read_csv(DATA / case["xn"])["xn"].to_numpy()
    events = pd.DataFrame(case["events"])
    confounds = inputs[[c for c in inputs.columns if c.startswith("x0_")]].to_numpy()[:, 1:]  # x0_1 = intercept
    return inputs["seed"].to_numpy(), confounds, events, outputs, xn


def _spm_hrf(dt):
    """SPM12 spm_hrf(dt) written out (Friston et al. 1998): gamma densities of shapes 6 and 16
    (scale 1 s, ratio 1/6) at t = 0, dt, ..., 32 s, normalised to sum 1."""
    from scipy.stats import gamma

    t = np.arange(int(np.floor(32.0 / dt)) + 1) * dt
    hrf = gamma.pdf(t, 6) - gamma.pdf(t, 16) / 6
    return hrf / hrf.sum()


def _r(a, b):
    return float(np.corrcoef(np.asarray(a, float), np.asarray(b, float))[0, 1])


def test_reference_is_spm12_r7771():
    assert META["spm_release"].startswith("Version 7771 (SPM12)")
    assert any("spm_peb_ppi.m 6556" in i for i in META["spm_ids"])
    assert any("spm_PEB.m 7654" in i for i in META["spm_ids"])
    settings = {(c["tr"], c["fmri_t"], c["fmri_t0"]) for c in CASES.values()}
    assert {0.8, 2.0, 2.5} <= {s[0] for s in settings}
    assert {16, 24} <= {s[1] for s in settings} and {1, 8} <= {s[2] for s in settings}


@pytest.mark.parametrize("name", sorted(CASES))
def test_default_method_equals_spm_peb_ppi(name):
    """Default method: PPI.ppi (per condition), PPI.xn and PPI.P as SPM12 at every TR / fMRI_T / fMRI_T0."""
    case = CASES[name]
    seed, confounds, events, ref, xn_ref = _load(case)
    tr, t, t0 = case["tr"], case["fmri_t"], case["fmri_t0"]
    xn = gppi.deconvolve_seed(seed, tr, confounds, fmri_t=t, fmri_t0=t0)
    ppi = gppi.interaction_regressors(xn, events, CONDITIONS, tr, fmri_t=t, fmri_t0=t0)
    rs = {c: _r(ppi[f"ppi_{c}"], ref[f"ppi_{c}"]) for c in CONDITIONS}
    print(f"{name}: r(PPI.ppi) " + ", ".join(f"{c} {r:.10f} (1 - r = {1 - r:.1e})" for c, r in rs.items()))
    assert min(rs.values()) > 0.99
    # not only correlated: equal values (reference stored with 8-10 significant digits; measured
    # agreement at most 1.5e-7 sd over the 14 cases, so 1e-6 sd; SPM's 1e-6 covariance jitter doubled
    # moves xn by 2.9e-6 sd)
    for c in CONDITIONS:
        np.testing.assert_allclose(ppi[f"ppi_{c}"], ref[f"ppi_{c}"], atol=1e-6 * ref[f"ppi_{c}"].std())
    np.testing.assert_allclose(xn, xn_ref, atol=1e-6 * xn_ref.std())
    for c in CONDITIONS:  # PPI.P: psychological variable (spm_get_ons conventions) convolved, sampled at T0
        psy = gppi.psychological_microtime(events, c, seed.size, tr, method="spm", fmri_t=t)
        p = gppi.convolve_microtime(psy - psy.mean(), tr, fmri_t=t, fmri_t0=t0, method="spm")
        np.testing.assert_allclose(p, ref[f"P_{c}"], atol=1e-6 * max(ref[f"P_{c}"].std(), 1e-12))
    x0 = np.column_stack([np.ones(seed.size), confounds])  # PPI.Y: seed with confounds removed
    np.testing.assert_allclose(seed - x0 @ np.linalg.lstsq(x0, seed, rcond=None)[0], ref["Y"], atol=1e-6)


def test_slice_reference_option_changes_the_regressor():
    """The earlier variant is a different regressor (r < 0.999 vs SPM on every case with T0 > 1)."""
    worst = {}
    for name, case in CASES.items():
        seed, confounds, events, ref, _ = _load(case)
        kw = dict(fmri_t=case["fmri_t"], fmri_t0=case["fmri_t0"])
        xn = gppi.deconvolve_seed(seed, case["tr"], confounds, method="slice_reference", **kw)
        ppi = gppi.interaction_regressors(xn, events, CONDITIONS, case["tr"], method="slice_reference", **kw)
        worst[name] = min(_r(ppi[f"ppi_{c}"], ref[f"ppi_{c}"]) for c in CONDITIONS)
        assert not np.allclose(ppi["ppi_fearful"] - ppi["ppi_fearful"].mean(), ref["ppi_fearful"], atol=1e-3)
    print("slice_reference vs SPM, min r over conditions: "
          + ", ".join(f"{k} {v:.4f}" for k, v in sorted(worst.items())))
    assert all(r < 0.999 for n, r in worst.items() if CASES[n]["fmri_t0"] > 1)


def test_method_reaches_gppi_matrix_and_bad_method_raises():
    case = CASES["tr2p0_t16_T08"]
    seed, confounds, events, _, _ = _load(case)
    rng = np.random.default_rng(0)
    target = 0.5 * seed + rng.standard_normal(seed.size)
    signals = np.column_stack([seed - seed.mean(), target])
    task = pd.DataFrame(rng.standard_normal((seed.size, 2)), columns=CONDITIONS)
    results = {m: gppi.gppi_matrix(signals, ["s", "t"], task, events, CONDITIONS, "fearful - neutral", 2.0,
                                   seeds=["s"], method=m, fmri_t0=8)[0].loc["s", "t"] for m in gppi.METHODS}
    assert np.isfinite(list(results.values())).all()
    assert results["spm"] != pytest.approx(results["slice_reference"], rel=1e-6)
    with pytest.raises(MeasureError):
        gppi.deconvolve_seed(seed, 2.0, method="SPM")


def test_noise_variance_is_known_not_estimated():
    """spm_PEB treats spm_peb_ppi's non-cell covariances (P{1}.C = I/4, P{2}.C = Q) as known: no
    hyperparameter is estimated. SPM's own outputs show it: with the seed x10 (same draws) PPI.ppi is
    exactly 10x (the posterior mean is linear in the data); a noise variance estimated from the
    data would grow with it (x100) and smooth the estimate differently."""
    base, scaled = CASES["tr2p0_t16_T08"], CASES["tr2p0_t16_scale10_T08"]
    seed1, conf1, events, ref1, _ = _load(base)
    seed10, conf10, _, ref10, _ = _load(scaled)
    np.testing.assert_allclose(seed10, 10 * seed1, rtol=1e-8)
    np.testing.assert_allclose(conf10, conf1)
    for c in CONDITIONS:
        np.testing.assert_allclose(ref10[f"ppi_{c}"], 10 * ref1[f"ppi_{c}"], atol=1e-6 * ref10[f"ppi_{c}"].std())
    xn = gppi.deconvolve_seed(seed10, 2.0, conf10, fmri_t0=8)
    np.testing.assert_allclose(gppi.interaction_regressors(xn, events, CONDITIONS, 2.0, fmri_t0=8)["ppi_fearful"],
                               ref10["ppi_fearful"], atol=1e-6 * ref10["ppi_fearful"].std())
    # had the variance followed the data (x100), the regressor would not be SPM's
    xn_var = gppi.deconvolve_seed(seed10, 2.0, conf10, precision=0.25 * 100, fmri_t0=8)
    ppi_var = gppi.interaction_regressors(xn_var, events, CONDITIONS, 2.0, fmri_t0=8)["ppi_fearful"]
    assert _r(ppi_var, ref10["ppi_fearful"]) < 0.99
    # an explicit precision equal to SPM's 1/4 is the default; another value changes the estimate
    default = gppi.deconvolve_seed(seed1, 2.0, conf1)
    assert np.allclose(gppi.deconvolve_seed(seed1, 2.0, conf1, precision=0.25), default)
    assert not np.allclose(gppi.deconvolve_seed(seed1, 2.0, conf1, precision=1.0), default)


def test_reference_bin_mapping():
    assert gppi.reference_bin(16, None, 0.0) == 1
    assert gppi.reference_bin(16, None, 0.5) == 9            # bin at 0.5 TR: (9 - 1) * TR / 16
    assert gppi.reference_bin(24, None, 0.5) == 13
    assert gppi.reference_bin(16, None, 1.0) == 16           # clamped to the last bin
    assert gppi.reference_bin(16, 8, 0.5) == 8               # explicit fMRI_T0 wins
    for bad in (0, 17, 2.5):
        with pytest.raises(MeasureError):
            gppi.reference_bin(16, bad)
    with pytest.raises(MeasureError):
        gppi.reference_bin(0)


def test_fmri_t_and_t0_handling():
    case = CASES["tr2p5_t24_T01"]
    seed, confounds, events, _, _ = _load(case)
    xn16 = gppi.deconvolve_seed(seed, 2.5, confounds, fmri_t=16)
    xn24 = gppi.deconvolve_seed(seed, 2.5, confounds, fmri_t=24)
    assert xn16.size == seed.size * 16 and xn24.size == seed.size * 24
    # spm: the basis sits at bin 0 whatever fMRI_T0 (only the interaction moves)
    np.testing.assert_array_equal(gppi.deconvolve_seed(seed, 2.5, confounds, fmri_t=24, fmri_t0=20), xn24)
    np.testing.assert_array_equal(gppi.deconvolve_seed(seed, 2.5, confounds, fmri_t=24, slice_time_ref=0.7), xn24)
    # slice_reference: the basis follows the reference bin
    a = gppi.deconvolve_seed(seed, 2.5, confounds, method="slice_reference", fmri_t=24, fmri_t0=1)
    b = gppi.deconvolve_seed(seed, 2.5, confounds, method="slice_reference", fmri_t=24, fmri_t0=12)
    assert not np.allclose(a, b)
    # T0 samples the microtime convolution (T0 - 1) bins after the scan start
    micro = np.zeros(seed.size * 24)
    micro[24 * 10] = 1.0  # impulse at the start of scan 10
    hrf = _spm_hrf(2.5 / 24)        # written here, not the module's spm_canonical_hrf
    for t0 in (1, 8, 24):
        sampled = gppi.convolve_microtime(micro, 2.5, fmri_t=24, fmri_t0=t0, method="spm")
        assert sampled[12] == pytest.approx(hrf[2 * 24 + t0 - 1])
    # slice_time_ref fraction -> the same bin as the explicit T0
    np.testing.assert_array_equal(gppi.convolve_microtime(micro, 2.5, 0.5, fmri_t=24, method="spm"),
                                  gppi.convolve_microtime(micro, 2.5, fmri_t=24, fmri_t0=13, method="spm"))
    with pytest.raises(MeasureError):
        gppi.deconvolve_seed(seed, 2.5, fmri_t=0)


def test_spm_hrf_and_stimulus_conventions():
    hrf = gppi.spm_canonical_hrf(2.0 / 16)
    assert hrf.size == 257 and hrf.sum() == pytest.approx(1.0) and hrf[0] == 0.0
    np.testing.assert_allclose(hrf, _spm_hrf(2.0 / 16), rtol=1e-12, atol=1e-15)
    assert np.argmax(hrf) * 2.0 / 16 == pytest.approx(5.0, abs=0.2)  # peak near 5 s
    events = pd.DataFrame({"onset": [1.0, 1.0, 10.0], "duration": [2.0, 2.0, 0.0], "trial_type": ["a", "a", "b"]})
    a = gppi.psychological_microtime(events, "a", 10, 2.0, method="spm")
    dt = 2.0 / 16
    assert a[8] == 2.0 and a[8 + 16] == 2.0 and a[8 + 17] == 0.0 and a[7] == 0.0  # inclusive end, overlaps add
    b = gppi.psychological_microtime(events, "b", 10, 2.0, method="spm")
    assert b[80] == pytest.approx(1 / dt) and b.sum() == pytest.approx(1 / dt)      # zero duration: height 1/dt
    old = gppi.psychological_microtime(events, "a", 10, 2.0, method="slice_reference")  # earlier convention
    assert old.max() == 1.0 and old[8:24].all() and old[24] == 0.0


def _ols_effect(y, x, c):
    beta = np.linalg.lstsq(x, y, rcond=None)[0]
    return c @ beta


@pytest.mark.unit
def test_gppi_matrix_is_the_ols_contrast_on_spm12_regressors():
    """gppi_matrix (noise_model 'ols') = the textbook OLS contrast of the target on
    [task, seed, PPI.ppi of SPM12 per condition, 1, confounds] with c = ppi_fearful - ppi_neutral,
    the interaction columns taken from SPM12's outputs (not from the module); a non-seed row, the
    diagonal and an ROI with a NaN are n/a; the symmetric matrix is (directed + directed') / 2."""
    case = CASES["tr2p0_t16_T08"]
    seed, confounds, events, ref, _ = _load(case)
    n = seed.size
    rng = np.random.default_rng(3)
    task = pd.DataFrame(rng.standard_normal((n, 2)), columns=CONDITIONS)
    ppi_ref = ref[["ppi_fearful", "ppi_neutral"]].to_numpy()
    x = np.column_stack([task.to_numpy(), seed, ppi_ref, np.ones(n), confounds])
    targets = x @ rng.standard_normal((x.shape[1], 2)) + rng.standard_normal((n, 2))
    bad = rng.standard_normal(n)
    bad[7] = np.nan
    signals = np.column_stack([seed, targets[:, 0], bad, targets[:, 1]])
    names = ["s", "t1", "bad", "t2"]
    directed, symmetric = gppi.gppi_matrix(signals, names, task, events, CONDITIONS, "fearful - neutral",
                                           case["tr"], confounds=confounds, seeds=["s"], noise_model="ols",
                                           fmri_t=case["fmri_t"], fmri_t0=case["fmri_t0"])
    c = np.zeros(x.shape[1])
    c[3], c[4] = 1.0, -1.0
    expected = _ols_effect(targets, x, c)
    np.testing.assert_allclose(directed.loc["s", ["t1", "t2"]].to_numpy(float), expected,
                               atol=1e-4 * np.abs(expected).max())
    assert directed.columns.tolist() == names and directed.index.tolist() == names
    assert directed.drop(index="s").isna().all().all() and np.isnan(directed.loc["s", ["s", "bad"]]).all()
    d = directed.to_numpy(float)
    np.testing.assert_array_equal(symmetric.to_numpy(float), (d + d.T) / 2)
    # every ROI a seed: both directions estimated, the symmetric value their mean, n/a kept for "bad"
    both, sym = gppi.gppi_matrix(signals[:, :2], ["s", "t1"], task, events, CONDITIONS, "fearful - neutral",
                                 case["tr"], confounds=confounds, noise_model="ols", fmri_t0=case["fmri_t0"])
    assert np.isfinite(both.loc["s", "t1"]) and np.isfinite(both.loc["t1", "s"])
    assert both.loc["s", "t1"] == pytest.approx(expected[0], abs=1e-4 * abs(expected[0]))
    assert sym.loc["s", "t1"] == pytest.approx((both.loc["s", "t1"] + both.loc["t1", "s"]) / 2, rel=1e-12)
    assert sym.loc["t1", "s"] == sym.loc["s", "t1"] and np.isnan(sym.loc["s", "s"])


@pytest.mark.unit
def test_ppi_expression_replaces_whole_condition_names_only():
    assert gppi._ppi_expression("fearful - fear", ["fear", "fearful"]) == "ppi_fearful - ppi_fear"
    assert gppi._ppi_expression("fear - fearful", ["fearful", "fear"]) == "ppi_fear - ppi_fearful"
    assert gppi._ppi_expression("2*neutral-fear_x", ["neutral", "fear"]) == "2*ppi_neutral-fear_x"


@pytest.mark.unit
def test_gppi_argument_checks_and_messages():
    """The limits of each setting, and the message naming it."""
    assert gppi.reference_bin() == 1 and gppi.reference_bin(24) == 1   # default slice_time_ref 0: bin 1
    assert gppi.reference_bin(1, None, 0.7) == 1                   # fMRI_T = 1: one bin per scan
    assert gppi.reference_bin(16, 1) == 1 and gppi.reference_bin(16, 16) == 16   # both ends allowed
    assert gppi.reference_bin(16, None, -0.3) == 1                 # clamped to the first bin
    assert gppi.reference_bin(16, None, 0.03) == 1 and gppi.reference_bin(16, None, 0.04) == 2   # 0.5 bin rounds up
    assert gppi.reference_bin(16, 16.0) == 16 and isinstance(gppi.reference_bin(16, 16.0), int)
    with pytest.raises(MeasureError) as err:
        gppi.reference_bin(2.5)
    assert str(err.value) == "fmri_t (microtime bins per TR) must be a positive integer (got 2.5)"
    with pytest.raises(MeasureError) as err:
        gppi.reference_bin(16, 0)
    assert str(err.value) == "fmri_t0 must be an integer within 1..fmri_t=16 (got 0)"
    with pytest.raises(MeasureError, match=r"^fmri_t0 must be an integer within 1\.\.fmri_t=16 \(got 8\.5\)$"):
        gppi.reference_bin(16, 8.5)
    with pytest.raises(MeasureError) as err:
        gppi.convolve_microtime(np.zeros(32), 2.0, method="spm12")
    assert str(err.value) == "gPPI method must be one of spm, slice_reference (got 'spm12')"
    with pytest.raises(MeasureError) as err:
        gppi.deconvolve_seed(np.ones((10, 2)), 2.0)
    assert str(err.value) == "seed signal must be a finite 1-D array"
    with pytest.raises(MeasureError, match="^seed signal must be a finite 1-D array$"):
        gppi.deconvolve_seed(np.r_[np.ones(9), np.inf], 2.0)
    for bad in (0.0, -1.0):
        with pytest.raises(MeasureError) as err:
            gppi.deconvolve_seed(np.sin(np.arange(10.0)), 2.0, precision=bad)
        assert str(err.value) == f"deconvolution precision must be > 0 (got {bad!r})"
    assert gppi.convolve_microtime(np.zeros((32, 0)), 2.0).shape == (2, 0)     # no column: nothing to convolve


@pytest.mark.unit
def test_stimulus_functions_by_hand():
    """Microtime stimulus functions written out bin by bin (2 scans, TR 2 s, fMRI_T 4: dt = 0.5 s, 8 bins).

    spm (spm_get_ons): bins round(on/dt) .. round(on/dt) + round(dur/dt) inclusive, MATLAB rounding
    (halves away from zero), clipped to the run, overlaps add. slice_reference: bins round(on/dt) ..
    round((on + dur)/dt) - 1, at least one bin, height 1, no adding."""
    ev = pd.DataFrame({"onset": [-1.0, 3.0, 10.0, 0.25, 0.25], "duration": [1.0, 5.0, 1.0, 0.5, 0.0],
                       "trial_type": ["a", "a", "a", "b", "c"]})
    spm = lambda c: gppi.psychological_microtime(ev, c, 2, 2.0, fmri_t=4).tolist()
    # a: -1 s -> bins -2..0 (0 kept); 3 s for 5 s -> bins 6..16 (6, 7 kept); 10 s -> after the run
    assert spm("a") == [1, 0, 0, 0, 0, 0, 1, 1]
    assert spm("b") == [0, 1, 1, 0, 0, 0, 0, 0]        # 0.25 / 0.5 = 0.5 -> 1 (MATLAB), dur 1 bin -> 1..2
    assert spm("c") == [0, 2, 0, 0, 0, 0, 0, 0]        # zero duration: one bin of height 1/dt = 2
    assert spm("none") == [0] * 8
    old = lambda c: gppi.psychological_microtime(ev, c, 2, 2.0, fmri_t=4, method="slice_reference").tolist()
    assert old("a") == [0, 0, 0, 0, 0, 0, 1, 1]        # -1..0 s -> bins -2..-1: outside; 3..8 s -> 6..15
    assert old("b") == [1, 1, 0, 0, 0, 0, 0, 0]        # Python rounds 0.5 to 0 (even): bins 0..1
    assert old("c") == [1, 0, 0, 0, 0, 0, 0, 0]        # zero duration: one bin, height 1
    edges = pd.DataFrame({"onset": [-3.0, 4.5, 3.0], "duration": [1.0, 0.5, 1.0], "trial_type": ["early", "after", "tail"]})
    edge = lambda c: gppi.psychological_microtime(edges, c, 2, 2.0, fmri_t=4).tolist()
    assert edge("early") == [0] * 8                    # bins -6..-3: wholly before the run
    assert edge("after") == [0] * 8                    # starts at bin 9, one past the run's end bin
    assert edge("tail") == [0, 0, 0, 0, 0, 0, 1, 1]    # bins 6..8: its end step falls past the run
    overlap = pd.DataFrame({"onset": [1.0, 1.5], "duration": [1.0, 1.0], "trial_type": ["x", "x"]})
    assert gppi.psychological_microtime(overlap, "x", 2, 2.0, fmri_t=4).tolist() == [0, 0, 1, 2, 2, 1, 0, 0]
    assert gppi.psychological_microtime(overlap, "x", 2, 2.0, fmri_t=4,
                                        method="slice_reference").tolist() == [0, 0, 1, 1, 1, 0, 0, 0]


@pytest.mark.unit
def test_slice_reference_hrf_is_nilearns_spm_hrf_at_the_reference_bin():
    """slice_reference convolves with nilearn's spm_hrf(TR, oversampling=fMRI_T) (the reference
    implementation) and samples bin fMRI_T0 of every scan."""
    from nilearn.glm.first_level.hemodynamic_models import spm_hrf

    rng = np.random.default_rng(4)
    x = rng.standard_normal(30 * 16)
    hrf = spm_hrf(2.0, oversampling=16)
    full = np.convolve(x, hrf)[: x.size]
    for t0 in (1, 9):
        got = gppi.convolve_microtime(x, 2.0, fmri_t=16, fmri_t0=t0, method="slice_reference")
        np.testing.assert_allclose(got, full[np.arange(30) * 16 + t0 - 1], atol=1e-12)
    two = gppi.convolve_microtime(np.column_stack([x, 2 * x]), 2.0, fmri_t=16, fmri_t0=9, method="slice_reference")
    np.testing.assert_allclose(two, np.column_stack([full, 2 * full])[np.arange(30) * 16 + 8], atol=1e-12)


def _eq2_neural(y, t_r, confounds, precision, fmri_t, t0, pad=128):
    """Module docstring eq. (2), written out with scipy's orthonormal DCT-II (= spm_dctmtx) and
    nilearn's spm_hrf: H = (DCT of N fMRI_T + 128 bins, N columns) convolved, sampled at bin fMRI_T0
    of every scan after the 128 padding bins; R = I - X0 pinv(X0) with X0 = [1, confounds];
    b = (H'RH + lambda I)^-1 H'R y, lambda = precision trace(H'RH) / N; xn = DCT[128:] b, mean removed.
    Returns (xn, DCT basis)."""
    from nilearn.glm.first_level.hemodynamic_models import spm_hrf
    from scipy.fft import dct

    n = y.size
    m = n * fmri_t + pad
    xb = dct(np.eye(m), type=2, norm="ortho")[:, :n]        # row i = samples of the delta at i: basis[i, k]
    h = np.stack([np.convolve(xb[:, k], spm_hrf(t_r, oversampling=fmri_t))[:m] for k in range(n)], axis=1)
    h = h[pad + np.arange(n) * fmri_t + t0 - 1]
    x0 = np.ones((n, 1)) if confounds is None else np.column_stack([np.ones(n), confounds])
    r = np.eye(n) - x0 @ np.linalg.pinv(x0)
    lam = precision * np.trace(h.T @ r @ h) / n
    b = np.linalg.solve(h.T @ r @ h + lam * np.eye(n), h.T @ r @ y)
    xn = xb[pad:] @ b
    return xn - xn.mean(), xb, h


@pytest.mark.unit
def test_slice_reference_deconvolution_is_the_ridge_estimate_of_eq_2():
    n, fmri_t, t0, t_r = 24, 8, 5, 2.0
    rng = np.random.default_rng(12)
    y = np.sin(np.arange(n) / 3.0) + 0.3 * rng.standard_normal(n)
    conf = rng.standard_normal((n, 2))
    for confounds, precision in ((None, None), (conf, 0.3)):
        expected, xb, _ = _eq2_neural(y, t_r, confounds, 1.0 if precision is None else precision, fmri_t, t0)
        got = gppi.deconvolve_seed(y, t_r, confounds, precision, method="slice_reference", fmri_t=fmri_t, fmri_t0=t0)
        np.testing.assert_allclose(got, expected, atol=1e-9 * np.abs(expected).max())
    np.testing.assert_allclose(gppi.dct_basis(n * fmri_t + 128, n), xb, atol=1e-12)
    # defaults: slice_time_ref 0 = reference bin 1, for the neural estimate and for H
    at_bin_1, _, h1 = _eq2_neural(y, t_r, None, 1.0, fmri_t, 1)
    np.testing.assert_allclose(gppi.deconvolve_seed(y, t_r, method="slice_reference", fmri_t=fmri_t), at_bin_1,
                               atol=1e-9 * np.abs(at_bin_1).max())
    np.testing.assert_allclose(gppi.deconvolution_design(n, t_r, method="slice_reference", fmri_t=fmri_t)[1], h1,
                               atol=1e-12)


@pytest.mark.unit
def test_slice_reference_gppi_matrix_written_out():
    """The whole slice_reference gPPI written without the module: eq. (2) neural signal, boxcars
    (bins round(on/dt) .. round((on + dur)/dt) - 1, height 1) mean-centred times it, nilearn's spm_hrf,
    sampled at the bin of slice_time_ref 0.5 with fMRI_T 8 (round(0.5 * 8) + 1 = 5), no mean removal;
    then the OLS contrast of each target on [task, seed, ppi_fearful, ppi_neutral, 1, confounds].
    A NaN ROI before the seed is skipped, not the end of the loop."""
    from nilearn.glm.first_level.hemodynamic_models import spm_hrf

    n, fmri_t, t_r, precision = 40, 8, 2.0, 0.3
    dt = t_r / fmri_t
    rng = np.random.default_rng(21)
    seed = np.convolve(rng.standard_normal(n), np.ones(3) / 3, mode="same")
    conf = rng.standard_normal((n, 1))
    events = pd.DataFrame({"onset": [4.0, 20.0, 36.0, 52.0, 66.0], "duration": [8.0, 8.0, 6.0, 8.0, 4.0],
                           "trial_type": ["fearful", "neutral", "fearful", "neutral", "fearful"]})
    task = pd.DataFrame(rng.standard_normal((n, 2)), columns=CONDITIONS)
    xn, _, _ = _eq2_neural(seed, t_r, conf, precision, fmri_t, 5)
    hrf = spm_hrf(t_r, oversampling=fmri_t)
    ppi = []
    for c in CONDITIONS:
        psy = np.zeros(n * fmri_t)
        for _, row in events[events.trial_type == c].iterrows():
            psy[int(round(row.onset / dt)):int(round((row.onset + row.duration) / dt))] = 1.0
        ppi.append(np.convolve((psy - psy.mean()) * xn, hrf)[: n * fmri_t][np.arange(n) * fmri_t + 4])
    # the interaction terms themselves (slice_reference keeps their mean)
    got = gppi.interaction_regressors(xn, events, CONDITIONS, t_r, 0.5, method="slice_reference", fmri_t=fmri_t)
    np.testing.assert_allclose(got.to_numpy(), np.column_stack(ppi), atol=1e-12)
    assert abs(got["ppi_fearful"].mean()) > 1e-3
    x = np.column_stack([task.to_numpy(), seed, np.column_stack(ppi), np.ones(n), conf])
    targets = x @ rng.standard_normal((x.shape[1], 2)) + 0.5 * rng.standard_normal((n, 2))
    bad = np.full(n, np.nan)
    directed, _ = gppi.gppi_matrix(np.column_stack([bad, seed, targets]), ["bad", "s", "t1", "t2"], task, events,
                                   CONDITIONS, "fearful - neutral", t_r, confounds=conf, seeds=["bad", "s"],
                                   precision=precision, slice_time_ref=0.5, noise_model="ols",
                                   method="slice_reference", fmri_t=fmri_t)
    expected = _ols_effect(targets, x, np.r_[0, 0, 0, 1.0, -1.0, 0, 0])
    np.testing.assert_allclose(directed.loc["s", ["t1", "t2"]].to_numpy(float), expected,
                               atol=1e-8 * np.abs(expected).max())


@pytest.mark.unit
@pytest.mark.parametrize("name", ["tr2p0_t16_T01", "tr0p8_t24_T08"])
def test_gppi_matrix_defaults_and_fmri_t_reach_the_regressors(name):
    """SPM12 case T01 with gppi_matrix's defaults (slice_time_ref 0 = bin 1, fMRI_T 16, SPM's noise
    variance 1/4) and case fMRI_T 24 / T0 8 given explicitly: the OLS contrast on SPM12's PPI.ppi."""
    case = CASES[name]
    seed, confounds, events, ref, _ = _load(case)
    n = seed.size
    rng = np.random.default_rng(5)
    task = pd.DataFrame(rng.standard_normal((n, 2)), columns=CONDITIONS)
    x = np.column_stack([task.to_numpy(), seed, ref[["ppi_fearful", "ppi_neutral"]].to_numpy(), np.ones(n), confounds])
    target = x @ rng.standard_normal(x.shape[1]) + rng.standard_normal(n)
    kwargs = {} if case["fmri_t0"] == 1 else dict(fmri_t=case["fmri_t"], fmri_t0=case["fmri_t0"])
    assert case["fmri_t"] == 16 or kwargs
    directed, _ = gppi.gppi_matrix(np.column_stack([seed, target]), ["s", "t"], task, events, CONDITIONS,
                                   "fearful - neutral", case["tr"], confounds=confounds, seeds=["s"],
                                   noise_model="ols", **kwargs)
    expected = _ols_effect(target, x, np.r_[0, 0, 0, 1.0, -1.0, 0, np.zeros(confounds.shape[1])])
    assert directed.loc["s", "t"] == pytest.approx(expected, abs=1e-4 * abs(expected))
    if not kwargs:   # SPM's 1/4 is the default; another noise variance reaches the deconvolution
        again = gppi.gppi_matrix(np.column_stack([seed, target]), ["s", "t"], task, events, CONDITIONS,
                                 "fearful - neutral", case["tr"], confounds=confounds, seeds=["s"],
                                 noise_model="ols", precision=4.0)[0].loc["s", "t"]
        assert abs(again - expected) > 1e-3 * abs(expected)


@pytest.mark.unit
def test_spm_deconvolution_without_confounds_is_eq_1():
    """Module docstring eq. (1) written out (scipy's DCT-II, SPM's spm_hrf from scipy gamma densities,
    H sampled at microtime bin 0 of every scan after the 128 padding bins) for a seed with no
    confounds: X = [H, 1], Cp = blkdiag((N / tr(H'H) + 1e-6 + e^-16) I, 1e6 + 1e-6 + e^-16),
    sigma2 = 1/4 + 1e-6 + e^-16, spm_inv's tolerance eps(e^16) (p + 1) on the posterior precision;
    xn = DCT[128:] b, mean removed. The intercept is one column (its prior variance 1e6, not 2e6)."""
    from scipy.fft import dct
    from scipy.stats import gamma

    n, fmri_t, t_r, pad = 30, 16, 2.0, 128
    rng = np.random.default_rng(13)
    y = 100.0 + np.convolve(rng.standard_normal(n), np.ones(4) / 4, mode="same")
    dt = t_r / fmri_t
    t = np.arange(int(np.floor(32 / dt)) + 1) * dt
    hrf = gamma.pdf(t, 6) - gamma.pdf(t, 16) / 6
    hrf /= hrf.sum()
    m = n * fmri_t + pad
    xb = dct(np.eye(m), type=2, norm="ortho")[:, :n]
    h = np.stack([np.convolve(xb[:, k], hrf)[:m] for k in range(n)], axis=1)[pad + np.arange(n) * fmri_t]
    extra = 1e-6 + np.exp(-16)
    x = np.column_stack([h, np.ones(n)])
    prior = np.r_[np.full(n, 1 / (n / np.trace(h.T @ h) + extra)), 1 / (1e6 + extra)]
    noise = 0.25 + extra
    precision = x.T @ x / noise + np.diag(prior + np.spacing(np.exp(16)) * (n + 2))
    xn = xb[pad:] @ np.linalg.solve(precision, x.T @ y / noise)[:n]
    expected = xn - xn.mean()
    # measured agreement 2.4e-13 sd; spm_PEB's e^-16 subtracted instead of added to Cov(b) moves xn by 3.2e-9 sd
    np.testing.assert_allclose(gppi.deconvolve_seed(y, t_r), expected, rtol=0, atol=1e-10 * expected.std())
