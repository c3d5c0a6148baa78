"""Bootstrap selection frequencies against an independent elastic net (coordinate descent written
here from Friedman, Hastie & Tibshirani 2010, eq. 5), fitted on each resample's duplicated rows
at the full-data λ_min."""

import numpy as np
import pytest

from ptsd_bidsapp.glmnet import GlmnetCV, bootstrap_selection
from ptsd_bidsapp.glmnet.inference import _spawn

pytestmark = pytest.mark.unit


def _elastic_net_cd(X, y, lam, alpha, sweeps=100_000, tol=1e-15):
    """glmnet gaussian, standardize = TRUE: on Z (1/n SD 1) and ỹ = y/s_y (centred) minimise
    1/(2n)||ỹ − Z b||² + (λ/s_y) Σ [(1 − α)/2 b_j² + α |b_j|] by cyclic coordinate descent."""
    n, p = X.shape
    sd = X.std(axis=0)
    Z = (X - X.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    s_y = y.std()
    r = (y - y.mean()) / s_y
    lam_std = lam / s_y
    b = np.zeros(p)
    for _ in range(sweeps):
        change = 0.0
        for j in range(p):
            if sd[j] == 0:
                continue
            z = Z[:, j] @ r / n + b[j]
            new = np.sign(z) * max(abs(z) - lam_std * alpha, 0.0) / (1.0 + lam_std * (1.0 - alpha))
            if new != b[j]:
                r -= Z[:, j] * (new - b[j])
                change = max(change, abs(new - b[j]))
                b[j] = new
        if change < tol:
            break
    return b


def test_selection_frequency_is_read_at_lambda_min():
    """Each resample's selected set at the full-data λ_min equals the independent fit's non-zero
    set (reading the path 5 λs earlier selects fewer predictors)."""
    rng = np.random.default_rng(12)
    n, p, alpha = 24, 8, 0.5
    X = rng.normal(size=(n, p))
    y = 1.5 * X[:, 0] + 0.8 * X[:, 1] + 0.4 * X[:, 2] + rng.normal(size=n)
    cv = GlmnetCV(alpha=alpha).fit(X, y)
    assert cv.index_min_ >= 5
    n_boot, seed = 25, 3
    got = bootstrap_selection(X, y, cv.lambdas_, cv.index_min_, n_bootstrap=n_boot, alpha=alpha, seed=seed)
    selected = np.zeros((n_boot, p), dtype=bool)
    for b, boot_rng in enumerate(_spawn(seed, "bootstrap", n_boot)):
        rows = boot_rng.integers(0, n, n)            # the resample drawn by bootstrap_selection
        coef = _elastic_net_cd(X[rows], y[rows], cv.lambda_min_, alpha)
        selected[b] = coef != 0
    np.testing.assert_array_equal(got["frequency"], selected.mean(axis=0))
    assert 0 < got["frequency"].sum() < p             # neither empty nor every predictor


def test_bootstrap_coefficients_are_per_full_data_sd():
    """Each resample's coefficients at λ_min (the report's bootstrap intervals) equal the independent
    fit's, converted per full-data SD of the predictor: raw coefficient (s_y b_j / SD_j of the
    resample) × full-data SD_j. Predictors on different scales so that per unit ≠ per SD."""
    rng = np.random.default_rng(5)
    n, p, alpha = 24, 5, 0.5
    X = rng.normal(size=(n, p)) * np.array([5.0, 0.2, 1.0, 3.0, 1.0])
    y = 0.6 * X[:, 0] + 4.0 * X[:, 1] + rng.normal(size=n)
    cv = GlmnetCV(alpha=alpha).fit(X, y)
    n_boot, seed = 12, 9
    got = bootstrap_selection(X, y, cv.lambdas_, cv.index_min_, n_bootstrap=n_boot, alpha=alpha, seed=seed)
    assert got["beta_per_sd"].shape == (n_boot, p)
    expected = np.zeros((n_boot, p))
    for b, boot_rng in enumerate(_spawn(seed, "bootstrap", n_boot)):
        rows = boot_rng.integers(0, n, n)
        Xb, yb = X[rows], y[rows]
        coef = _elastic_net_cd(Xb, yb, cv.lambda_min_, alpha)
        expected[b] = yb.std() * coef / Xb.std(axis=0) * X.std(axis=0)
    np.testing.assert_allclose(got["beta_per_sd"], expected, rtol=1e-6, atol=1e-9)
    # the planted x0 (0.6 per unit, SD 5: 3 per SD) is read per SD, not per unit (0.6)
    assert expected[:, 0].mean() > 1.5
