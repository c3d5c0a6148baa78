"""The DCM's AR(1) noise model (DCMSpec ``noise_ar1``, config ``dcm.noise: ar1``).

Truths used: the AR(1) correlation matrix ``R_ij = rho^|i-j|`` and the Prais-Winsten
transform ``W`` satisfy ``W' W R = (1 - rho^2) I`` (so ``W`` whitens AR(1) noise), and
``log|W| = log sqrt(1 - rho^2)`` (lower bidiagonal). The equality of the whitened inversion
with real SPM12 (precision components ``Y.Q``) is in ``test_spm12_reference.py``
(case ``block2ar1``).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import toeplitz

from ptsd_bidsapp.dcm import estimate_dcm, simulate_dcm
from ptsd_bidsapp.dcm.inversion import _whitener
from ptsd_bidsapp.dcm.participant import AR1_LIMIT, residual_ar1
from tests.dcm.dcm_fixtures import faces_spec

PARAMS = {"A": [[-0.1, -0.3], [0.4, 0.0]], "B": {"fearful": [[0.0, 0.0], [0.3, 0.0]]}, "C": [[0.5, 0.0], [0.0, 0.0]],
          "transit": [0.0, 0.0], "decay": 0.0, "epsilon": 0.0}


def _dense(rho, v):
    whiten, log_det = _whitener(np.asarray(rho, dtype=float), v)
    return whiten(np.eye(len(rho) * v)), log_det


@pytest.mark.parametrize("rho", [0.0, 0.3, 0.75, -0.4])
def test_prais_winsten_whitens_the_ar1_correlation(rho):
    v = 40
    W, log_det = _dense([rho], v)
    R = toeplitz(rho ** np.arange(v))
    np.testing.assert_allclose(W.T @ W @ R, (1 - rho ** 2) * np.eye(v), atol=1e-12)
    assert log_det == pytest.approx(np.linalg.slogdet(W)[1], abs=1e-12)
    assert log_det == pytest.approx(0.5 * np.log(1 - rho ** 2), abs=1e-12)


def test_whitening_acts_on_each_region_block_separately():
    v, rho = 30, [0.6, 0.2]
    W, log_det = _dense(rho, v)
    for i, r in enumerate(rho):
        block = W[i * v:(i + 1) * v, i * v:(i + 1) * v]
        np.testing.assert_allclose(block.T @ block @ toeplitz(r ** np.arange(v)), (1 - r ** 2) * np.eye(v),
                                   atol=1e-12)
    assert np.all(W[:v, v:] == 0) and np.all(W[v:, :v] == 0)
    assert log_det == pytest.approx(0.5 * (np.log(1 - 0.36) + np.log(1 - 0.04)), abs=1e-12)
    # the columns of a matrix are whitened alike (the Jacobian)
    whiten, _ = _whitener(np.asarray(rho), v)
    x = np.random.default_rng(0).normal(size=(2 * v, 3))
    np.testing.assert_allclose(whiten(x), W @ x, atol=1e-12)


def test_residual_ar1_recovers_a_known_coefficient_and_is_clipped():
    rng = np.random.default_rng(3)
    n, rho = 5000, np.array([0.5, -0.3])
    e = np.zeros((n, 2))
    w = rng.normal(size=(n, 2))
    for t in range(1, n):
        e[t] = rho * e[t - 1] + w[t]
    # standard error of the lag-1 estimate sqrt((1 - rho^2) / n) <= 0.0142: 4 SE
    np.testing.assert_allclose(residual_ar1(e), rho, atol=0.057)
    trend = np.cumsum(rng.normal(size=(n, 1)), axis=0)        # random walk: lag-1 r -> 1
    assert residual_ar1(trend)[0] == AR1_LIMIT
    assert residual_ar1(np.zeros((10, 1)))[0] == 0.0


def test_zero_ar1_is_the_white_noise_model_exactly():
    spec = faces_spec(n_scans=120)
    y = simulate_dcm(spec, PARAMS)[0] + np.random.default_rng(1).normal(0, 0.05, (120, 2))
    white = estimate_dcm(faces_spec(y=y, n_scans=120))
    zero = estimate_dcm(faces_spec(y=y, n_scans=120, noise_ar1=[0.0, 0.0]))
    np.testing.assert_array_equal(zero.Ep_vector, white.Ep_vector)
    assert zero.F == white.F


def test_ar1_noise_model_rejects_non_stationary_coefficients():
    with pytest.raises(ValueError, match="noise_ar1"):
        faces_spec(n_scans=50, noise_ar1=[1.0, 0.2])


@pytest.mark.slow
def test_whitening_makes_posteriors_honest_under_ar1_noise():
    """Over 16 replications with AR(1) noise (rho 0.7), the spread of the B estimate around the
    truth exceeds its white-noise posterior SD several-fold; with the AR(1) model the ratio
    moves towards 1 (the posterior no longer claims the information of independent scans)."""
    rng = np.random.default_rng(7)
    v, rho, sd = 150, 0.7, 0.08
    clean = simulate_dcm(faces_spec(n_scans=v), PARAMS)[0]
    idx = faces_spec(n_scans=v).parameter_names().index("B_fearful_amygdala-vmpfc")
    err, post = {"white": [], "ar1": []}, {"white": [], "ar1": []}
    for _ in range(16):
        w = rng.normal(0, sd * np.sqrt(1 - rho ** 2), (v, 2))
        e = np.zeros((v, 2))
        e[0] = rng.normal(0, sd, 2)
        for t in range(1, v):
            e[t] = rho * e[t - 1] + w[t]
        y = clean + e
        for model, ar in (("white", None), ("ar1", [rho, rho])):
            res = estimate_dcm(faces_spec(y=y, n_scans=v, noise_ar1=ar, hC=1.0))
            err[model].append(res.Ep_vector[idx] - 0.3)
            post[model].append(np.sqrt(res.Cp[idx, idx]))
    ratio = {m: np.sqrt(np.mean(np.square(err[m]))) / np.median(post[m]) for m in err}
    assert ratio["white"] > 1.5, ratio
    assert abs(np.log(ratio["ar1"])) < abs(np.log(ratio["white"])), ratio
