"""gPPI: deconvolution and interaction recovery on synthetic signals with known truth."""

import numpy as np
import pandas as pd
import pytest

from ptsd_bidsapp.measures.gppi import MICROTIME_BINS, dct_basis, deconvolve_seed, gppi_matrix

T_R = 2.0
N = 200


def _smooth_neural(rng, n_scans):
    # neural signal: slow random process (low-pass white noise at microtime), the kind the DCT basis spans
    white = rng.standard_normal(n_scans * MICROTIME_BINS)
    kernel = np.hanning(4 * MICROTIME_BINS)  # ~8 s smoothing
    x = np.convolve(white, kernel / kernel.sum(), mode="same")
    return (x - x.mean()) / x.std()


def test_dct_basis_orthonormal():
    b = dct_basis(64, 64)
    np.testing.assert_allclose(b.T @ b, np.eye(64), atol=1e-10)


def test_deconvolution_recovers_neural_signal():
    rng = np.random.default_rng(0)
    neural = _smooth_neural(rng, N)
    bold = _hrf_sampled(neural, 0.0)          # made without the module (below)
    snr = 4.0  # SNR = std(BOLD signal) / std(noise)
    noisy = bold + rng.standard_normal(N) * bold.std() / snr
    est = deconvolve_seed(noisy, T_R, precision=1.0)
    # compare at scan resolution on the scale the HRF leaves identifiable (TR bins averaged)
    r = np.corrcoef(est.reshape(N, MICROTIME_BINS).mean(1), neural.reshape(N, MICROTIME_BINS).mean(1))[0, 1]
    print(f"deconvolution correlation at SNR {snr}: {r:.3f}")
    assert r > 0.9


def _block_events(n_scans):
    rows, t, k = [], 10.0, 0
    while t + 20 < n_scans * T_R:
        rows.append({"onset": t, "duration": 20.0, "trial_type": ["fearful", "neutral"][k % 2]})
        t += 30.0
        k += 1
    return pd.DataFrame(rows)


# The simulated data are made without the module under test: boxcars on the microtime grid,
# SPM's canonical HRF (difference of gammas, shapes 6 and 16, ratio 1/6, sum 1; Friston et al.
# 1998) convolved with numpy and sampled at the slice-time reference bin of every scan.
def _boxcar(events, condition, n_scans):
    dt = T_R / MICROTIME_BINS
    x = np.zeros(n_scans * MICROTIME_BINS)
    for _, row in events[events["trial_type"] == condition].iterrows():
        x[int(round(row["onset"] / dt)):int(round((row["onset"] + row["duration"]) / dt))] = 1.0
    return x


def _hrf_sampled(x, slice_time_ref):
    from scipy.stats import gamma

    dt = T_R / MICROTIME_BINS
    t = np.arange(int(32 / dt) + 1) * dt
    hrf = gamma.pdf(t, 6) - gamma.pdf(t, 16) / 6
    full = np.convolve(x, hrf / hrf.sum())[: x.size]
    return full[np.arange(x.size // MICROTIME_BINS) * MICROTIME_BINS + int(round(slice_time_ref * MICROTIME_BINS))]


def _simulate(rng, coupling_fearful, coupling_neutral, n_scans=N, noise=0.5, slice_time_ref=0.0):
    events = _block_events(n_scans)
    seed_neural = _smooth_neural(rng, n_scans)
    psy_f = _boxcar(events, "fearful", n_scans)
    psy_n = _boxcar(events, "neutral", n_scans)
    target_neural = (0.5 * psy_f + 0.3 * psy_n + 0.3 * seed_neural
                     + (coupling_fearful * psy_f + coupling_neutral * psy_n) * seed_neural)
    seed = _hrf_sampled(seed_neural, slice_time_ref) + noise * rng.standard_normal(n_scans)
    target = _hrf_sampled(target_neural, slice_time_ref) + noise * rng.standard_normal(n_scans)
    other = 0.3 * rng.standard_normal(n_scans)
    task = pd.DataFrame({"fearful": _hrf_sampled(psy_f, slice_time_ref),
                         "neutral": _hrf_sampled(psy_n, slice_time_ref)})
    return np.column_stack([seed, target, other]), events, task


@pytest.mark.parametrize("slice_time_ref", [0.0, 0.5])
@pytest.mark.parametrize("coupling", [1.0, 0.5])
def test_interaction_recovers_coupling_change(coupling, slice_time_ref):
    """Data sampled at the slice-time reference (0 or half a TR), analysed with that reference."""
    results = []
    for rep in range(3):
        rng = np.random.default_rng(10 + rep)
        signals, events, task = _simulate(rng, coupling, 0.0, slice_time_ref=slice_time_ref)
        directed, sym = gppi_matrix(signals, ["seed", "target", "other"], task, events, ["fearful", "neutral"],
                                    "fearful - neutral", T_R, seeds=["seed"], slice_time_ref=slice_time_ref)
        results.append(directed.loc["seed", "target"])
        assert np.isnan(directed.loc["target", "seed"])  # non-seed rows stay n/a
        assert np.isnan(sym.loc["seed", "target"]) or sym.loc["seed", "target"] == pytest.approx(
            (directed.loc["seed", "target"] + directed.loc["target", "seed"]) / 2)
    # planted coupling change > 0 must come out positive in every replicate
    assert min(results) > 0


def test_interaction_magnitude_ordering_and_null():
    def estimate(coupling, seed):
        signals, events, task = _simulate(np.random.default_rng(seed), coupling, 0.0)
        d, _ = gppi_matrix(signals, ["seed", "target", "other"], task, events, ["fearful", "neutral"],
                           "fearful - neutral", T_R, seeds=["seed"])
        return d.loc["seed", "target"], d.loc["seed", "other"]
    big = np.mean([estimate(1.0, s)[0] for s in range(20, 24)])
    small = np.mean([estimate(0.3, s)[0] for s in range(20, 24)])
    null = [estimate(0.0, s) for s in range(20, 24)]
    print(f"gPPI fearful-neutral: coupling 1.0 -> {big:.3f}, 0.3 -> {small:.3f}, 0 -> "
          f"{np.mean([n[0] for n in null]):.3f}")
    assert big > small > abs(np.mean([n[0] for n in null]))
    # null: unrelated ROI and zero coupling give estimates well below the planted effect
    assert abs(np.mean([n[1] for n in null])) < 0.3 * big
    assert abs(np.mean([n[0] for n in null])) < 0.3 * big


@pytest.mark.unit
def test_condition_named_like_an_internal_column_changes_nothing():
    # a trial_type may be called "seed" or "nuis0": the seed and nuisance regressors must stay in the
    # design (they were dropped as duplicate columns), so renaming the conditions changes no number
    rng = np.random.default_rng(5)
    signals, events, task = _simulate(rng, 1.0, 0.0)
    confounds = rng.standard_normal((N, 2))
    plain, _ = gppi_matrix(signals, ["s", "t", "o"], task, events, ["fearful", "neutral"], "fearful - neutral", T_R,
                           confounds=confounds, seeds=["s"])
    rename = {"fearful": "seed", "neutral": "nuis0"}
    clashing, _ = gppi_matrix(signals, ["s", "t", "o"], task.rename(columns=rename),
                              events.replace({"trial_type": rename}), ["seed", "nuis0"], "seed - nuis0", T_R,
                              confounds=confounds, seeds=["s"])
    np.testing.assert_allclose(clashing.to_numpy(), plain.to_numpy(), rtol=1e-12, atol=0, equal_nan=True)
