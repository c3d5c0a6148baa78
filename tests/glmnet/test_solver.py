"""Elastic-net path solver: closed forms, KKT conditions, unpenalised predictors, λ_max."""

import numpy as np
import pytest

from ptsd_bidsapp.glmnet import GlmnetCV, glmnet_lambda_path


# ---------------------------------------------------------------------------------------
# analytic cases
#
# glmnet (gaussian, standardize = TRUE) centres y and every x, divides the x's by their 1/n SD
# and y by its 1/n SD s_y, and on that scale minimises
#     1/(2n) ||ỹ − Z b||² + λ̃ Σ_j pf_j [(1 − α)/2 b_j² + α |b_j|],   λ̃ = λ / s_y,
# then reports the coefficient per SD of x_j as s_y b_j. With Z'Z/n = I (an orthonormal
# standardised design) the problem separates: b_j = S(z_j, λ̃ α pf_j) / (1 + λ̃ (1 − α) pf_j),
# z_j = Z_j'ỹ/n, S the soft-threshold (Friedman, Hastie & Tibshirani 2010, eq. 6).


def _orthonormal_design(n=16, p=5, seed=0):
    """Columns of a Hadamard matrix (±1, centred, 1/n SD 1, orthogonal), then rescaled and
    shifted so that only glmnet's standardisation makes them orthonormal again."""
    from scipy.linalg import hadamard

    H = hadamard(n).astype(float)[:, 1 : p + 1]
    scale = np.array([1.0, 2.0, 0.5, 3.0, 1.5])[:p]
    shift = np.array([1.0, -2.0, 0.0, 5.0, 3.0])[:p]
    X = H * scale + shift
    rng = np.random.default_rng(seed)
    y = 4.0 + X @ np.array([1.0, 0.5, -2.0, 0.0, 0.1])[:p] + rng.normal(size=n)
    return X, y


def _soft_threshold(z, t):
    return np.sign(z) * np.maximum(np.abs(z) - t, 0.0)


def _standardise(X, y):
    Z = (X - X.mean(axis=0)) / X.std(axis=0)
    return Z, (y - y.mean()) / y.std(), y.std()


@pytest.mark.parametrize("alpha", [1.0, 0.5, 0.0])
def test_orthonormal_design_has_the_closed_form(alpha):
    """Lasso = soft-thresholding, ridge = uniform shrinkage, elastic net = both, at every λ of the path."""
    X, y = _orthonormal_design()
    n = len(y)
    Z, yt, sy = _standardise(X, y)
    assert np.allclose(Z.T @ Z / n, np.eye(X.shape[1]))  # the premise of the closed form
    z = Z.T @ yt / n
    cv = GlmnetCV(alpha=alpha).fit(X, y)
    lam_t = cv.lambdas_[:, None] / sy
    expected_std = _soft_threshold(z[None, :], lam_t * alpha) / (1.0 + lam_t * (1.0 - alpha))
    np.testing.assert_allclose(cv.coef_per_sd_path_, sy * expected_std, rtol=1e-10, atol=1e-12)
    # raw coefficients per unit of x and the intercept follow from the 1/n SDs and the means
    np.testing.assert_allclose(cv.coef_path_, sy * expected_std / X.std(axis=0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(cv.intercept_path_, y.mean() - cv.coef_path_ @ X.mean(axis=0), rtol=1e-10)
    # λ_max: the first coefficient just enters (glmnet floors α at 0.001 for the ridge path)
    assert cv.lambdas_[0] == pytest.approx(sy * np.abs(z).max() / max(alpha, 1e-3), rel=1e-12)
    # the fitted values at λ_min are what predict() returns
    np.testing.assert_allclose(cv.predict(X), cv.intercept_ + X @ cv.coef_, rtol=1e-12)


def test_kkt_conditions_hold_on_a_wide_correlated_design():
    """p > n, correlated predictors, mixed penalty factors: every solution on the path satisfies the
    elastic-net stationarity conditions of the objective above (exact optimum, not approximate)."""
    rng = np.random.default_rng(3)
    n, p = 15, 25
    latent = rng.normal(size=(n, 3))
    X = latent @ rng.normal(size=(3, p)) + 0.5 * rng.normal(size=(n, p)) + rng.uniform(-3, 3, size=p)
    y = X[:, 0] - 2 * X[:, 1] + rng.normal(size=n)
    pf = np.ones(p)
    pf[2] = 0.0
    pf[3:6] = 2.0
    alpha = 0.7
    cv = GlmnetCV(alpha=alpha, penalty_factor=pf).fit(X, y)
    Z, yt, sy = _standardise(X, y)
    pf_scaled = pf * p / pf.sum()  # glmnet rescales penalty factors to sum to p
    assert len(cv.lambdas_) >= 5
    for k, lam in enumerate(cv.lambdas_):
        b = cv.coef_per_sd_path_[k] / sy
        grad = Z.T @ (yt - Z @ b) / n
        lam_t = lam / sy
        active = b != 0
        expected = lam_t * pf_scaled * (alpha * np.sign(b) + (1 - alpha) * b)
        np.testing.assert_allclose(grad[active], expected[active], atol=1e-9, err_msg=f"λ index {k}")
        assert np.all(np.abs(grad[~active]) <= lam_t * alpha * pf_scaled[~active] + 1e-9), f"λ index {k}"
        assert b[2] != 0  # the unpenalised predictor is always in


def test_unpenalised_covariate_is_the_ols_effect_at_large_lambda():
    """penalty factor 0: at λ_max every penalised coefficient is 0 and the covariate's coefficient
    is the OLS slope of y on it (its effect with nothing else in the model); it stays in all along."""
    rng = np.random.default_rng(5)
    n = 40
    covariate = rng.normal(size=n)
    x1 = 0.6 * covariate + rng.normal(size=n)
    x2 = rng.normal(size=n)
    X = np.column_stack([x1, x2, covariate])
    y = 1.0 + 0.8 * x1 + 3.0 * covariate + rng.normal(size=n)
    pf = np.array([1.0, 1.0, 0.0])
    cv = GlmnetCV(alpha=0.5, penalty_factor=pf).fit(X, y)
    slope = np.polyfit(covariate, y, 1)[0]
    assert np.all(cv.coef_path_[0, :2] == 0)
    assert cv.coef_path_[0, 2] == pytest.approx(slope, rel=1e-10)
    assert np.all(cv.coef_path_[:, 2] != 0)
    # λ_max is computed after the unpenalised covariate: max_j |z_j'r| / (n α pf_j), r the residual
    Z = (X - X.mean(axis=0)) / X.std(axis=0)
    resid = y - np.polyval(np.polyfit(covariate, y, 1), covariate)
    pf_scaled = pf * 3 / pf.sum()
    assert cv.lambdas_[0] == pytest.approx(np.max(np.abs(Z[:, :2].T @ resid) / (n * 0.5 * pf_scaled[:2])), rel=1e-10)


@pytest.mark.parametrize("penalty_factor", [None, [1.0, 1.0, 1.0, 0.0, 1.0, 2.0]])
def test_lambda_max_is_the_smallest_lambda_with_every_penalised_coefficient_zero(penalty_factor):
    """At λ_max nothing penalised enters; 0.1% below it the strongest predictor does."""
    rng = np.random.default_rng(8)
    X = rng.normal(size=(12, 6))
    y = X @ np.array([0.0, 1.0, 0.0, 0.5, 0.0, 0.3]) + rng.normal(size=12)
    pen = np.ones(6, dtype=bool) if penalty_factor is None else np.asarray(penalty_factor) > 0
    # 5 λs (glmnet's minimum before the early stop may apply) spanning λ_max .. 0.999 λ_max
    cv = GlmnetCV(alpha=0.5, n_lambda=5, lambda_min_ratio=0.999, penalty_factor=penalty_factor).fit(X, y)
    assert np.all(cv.coef_path_[0, pen] == 0)
    assert np.count_nonzero(cv.coef_path_[-1, pen]) >= 1
    assert cv.lambdas_[-1] == pytest.approx(0.999 * cv.lambdas_[0])
    path = glmnet_lambda_path(X, y, alpha=0.5, penalty_factor=penalty_factor)
    assert path[0] == pytest.approx(cv.lambdas_[0], rel=1e-12)
