"""Elastic-net path solver: closed forms, KKT conditions, unpenalised predictors, λ_max."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ptsd_bidsapp.glmnet import GlmnetCV, compiled, glmnet_lambda_path

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "glmnet"

pytestmark = pytest.mark.unit


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


#: Both path solvers answer to the same analytic truth (``auto`` = ``compiled`` when numba is installed).
SOLVERS = ["numpy", "compiled"] if compiled.AVAILABLE else ["numpy"]


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("alpha", [1.0, 0.5, 0.0])
def test_orthonormal_design_has_the_closed_form(alpha, solver):
    """Lasso = soft-thresholding, ridge = uniform shrinkage, elastic net = both, at every λ of the path."""
    X, y = _orthonormal_design()
    n = len(y)
    Z, yt, sy = _standardise(X, y)
    assert np.allclose(Z.T @ Z / n, np.eye(X.shape[1]))  # the premise of the closed form
    z = Z.T @ yt / n
    cv = GlmnetCV(alpha=alpha, solver=solver).fit(X, y)
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


@pytest.mark.parametrize("solver", SOLVERS)
def test_kkt_conditions_hold_on_a_wide_correlated_design(solver):
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
    cv = GlmnetCV(alpha=alpha, penalty_factor=pf, solver=solver).fit(X, y)
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


@pytest.mark.parametrize("solver", SOLVERS)
def test_unpenalised_covariate_is_the_ols_effect_at_large_lambda(solver):
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
    cv = GlmnetCV(alpha=0.5, penalty_factor=pf, solver=solver).fit(X, y)
    slope = np.polyfit(covariate, y, 1)[0]
    assert np.all(cv.coef_path_[0, :2] == 0)
    assert cv.coef_path_[0, 2] == pytest.approx(slope, rel=1e-10)
    assert np.all(cv.coef_path_[:, 2] != 0)
    # λ_max is computed after the unpenalised covariate: max_j |z_j'r| / (n α pf_j), r the residual
    Z = (X - X.mean(axis=0)) / X.std(axis=0)
    resid = y - np.polyval(np.polyfit(covariate, y, 1), covariate)
    pf_scaled = pf * 3 / pf.sum()
    assert cv.lambdas_[0] == pytest.approx(np.max(np.abs(Z[:, :2].T @ resid) / (n * 0.5 * pf_scaled[:2])), rel=1e-10)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("penalty_factor", [None, [1.0, 1.0, 1.0, 0.0, 1.0, 2.0]])
def test_lambda_max_is_the_smallest_lambda_with_every_penalised_coefficient_zero(penalty_factor, solver):
    """At λ_max nothing penalised enters; 0.1% below it the strongest predictor does."""
    rng = np.random.default_rng(8)
    X = rng.normal(size=(12, 6))
    y = X @ np.array([0.0, 1.0, 0.0, 0.5, 0.0, 0.3]) + rng.normal(size=12)
    pen = np.ones(6, dtype=bool) if penalty_factor is None else np.asarray(penalty_factor) > 0
    # 5 λs (glmnet's minimum before the early stop may apply) spanning λ_max .. 0.999 λ_max
    cv = GlmnetCV(alpha=0.5, n_lambda=5, lambda_min_ratio=0.999, penalty_factor=penalty_factor,
                  solver=solver).fit(X, y)
    assert np.all(cv.coef_path_[0, pen] == 0)
    assert np.count_nonzero(cv.coef_path_[-1, pen]) >= 1
    assert cv.lambdas_[-1] == pytest.approx(0.999 * cv.lambdas_[0])
    path = glmnet_lambda_path(X, y, alpha=0.5, penalty_factor=penalty_factor, solver=solver)
    assert path[0] == pytest.approx(cv.lambdas_[0], rel=1e-12)


# ---------------------------------------------------------------------------------------
# the λ path against R glmnet, and its settings


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("name", ["basic", "penaltyfactor", "wide"])
def test_default_lambda_path_is_r_glmnets(name, solver):
    """glmnet_lambda_path with its defaults (α = 0.5, 100 λs, lambda.min.ratio 1e-2 if n < p
    else 1e-4, glmnet's early stop) is the λ sequence R glmnet 4.1.6 computed for the same data
    with nlambda = 100 and α = 0.5 (tests/data/glmnet, scripts/glmnet_reference.R): the
    'wide' case (p > n) has the 1e-2 ratio and runs all 100 λs, the others have the 1e-4 ratio
    and stop early."""
    data = pd.read_csv(REFERENCE / f"case-{name}_data.tsv", sep="\t")
    y = data.pop("y").to_numpy()
    X = data.to_numpy()
    pf = None
    if name == "penaltyfactor":
        pf = np.ones(X.shape[1])
        pf[-1] = 0.0
    r_path = pd.read_csv(REFERENCE / f"case-{name}_path.tsv", sep="\t")["lambda"].to_numpy()
    assert (len(r_path) < 100) == (name != "wide")  # R's early stop, where it applies
    path = glmnet_lambda_path(X, y, penalty_factor=pf, solver=solver)
    assert len(path) == len(r_path)
    np.testing.assert_allclose(path, r_path, rtol=1e-10)


def test_lambda_path_spacing_follows_n_lambda_and_lambda_min_ratio():
    """λ_k = λ_max · ratio^(k / (n_lambda − 1)): 5 λs from λ_max down to exactly ratio · λ_max
    (ratio 0.9: the fraction of deviance explained still changes by more than 1e-5 per step)."""
    rng = np.random.default_rng(2)
    X = rng.normal(size=(30, 4))
    y = X @ np.array([1.0, -0.5, 0.0, 0.2]) + rng.normal(size=30)
    path = glmnet_lambda_path(X, y, alpha=0.5, n_lambda=5, lambda_min_ratio=0.9)
    np.testing.assert_allclose(path, path[0] * 0.9 ** (np.arange(5) / 4), rtol=1e-12)
    two = glmnet_lambda_path(X, y, alpha=0.5, n_lambda=2, lambda_min_ratio=0.9)
    np.testing.assert_allclose(two, [path[0], 0.9 * path[0]], rtol=1e-12)


def test_predictor_constant_in_one_training_fold_is_left_out_of_that_fold():
    """A 0/1 predictor set for one subject only is constant in the leave-one-out fold without that
    subject; glmnet leaves such a predictor out of that fold's fit (it cannot be standardised),
    so every cross-validation error stays finite and the full-data path still satisfies the KKT
    conditions (the predictor is not constant there)."""
    rng = np.random.default_rng(6)
    n = 14
    X = rng.normal(size=(n, 3))
    dummy = np.zeros(n)
    dummy[4] = 1.0
    X = np.column_stack([X, dummy])
    y = X[:, 0] + 2.0 * dummy + rng.normal(size=n)
    for solver in SOLVERS:
        cv = GlmnetCV(alpha=0.5, solver=solver).fit(X, y)
        assert np.all(np.isfinite(cv.cvm_)) and np.all(np.isfinite(cv.cvsd_))
        Z, yt, sy = _standardise(X, y)
        for k, lam in enumerate(cv.lambdas_):
            b = cv.coef_per_sd_path_[k] / sy
            grad = Z.T @ (yt - Z @ b) / n
            lam_t = lam / sy
            active = b != 0
            expected = lam_t * (0.5 * np.sign(b) + 0.5 * b)
            np.testing.assert_allclose(grad[active], expected[active], atol=1e-9)
            assert np.all(np.abs(grad[~active]) <= lam_t * 0.5 + 1e-9)


def test_units_of_y_scale_lambda_and_coefficients_only():
    """glmnet standardises y as well (1/n SD), so the elastic net (whose ridge term alone would not
    scale with y) is equivariant in the units of y: y × 0.01 gives λ and coefficients × 0.01 and
    cross-validation errors × 1e-4, the selected λ unchanged (the outcome SDs here are ~2 and ~0.02)."""
    rng = np.random.default_rng(11)
    X = rng.normal(size=(18, 5))
    y = X @ np.array([1.5, -1.0, 0.0, 0.5, 0.0]) + rng.normal(size=18)
    assert y.std() > 1 > 0.01 * y.std()
    a = GlmnetCV(alpha=0.5).fit(X, y)
    b = GlmnetCV(alpha=0.5).fit(X, 0.01 * y)
    np.testing.assert_allclose(b.lambdas_, 0.01 * a.lambdas_, rtol=1e-10)
    np.testing.assert_allclose(b.coef_path_, 0.01 * a.coef_path_, rtol=1e-8, atol=1e-14)
    np.testing.assert_allclose(b.cvm_, 1e-4 * a.cvm_, rtol=1e-8)
    assert b.index_min_ == a.index_min_


def test_lambda_max_after_two_unpenalised_covariates_one_constant_in_a_fold():
    """Two unpenalised covariates: λ_max = max_j |z_j'r| / (n α pf_j) over the penalised predictors,
    r the OLS residual of y on both covariates (an intercept too). One covariate marks a single
    subject, so it is constant in that subject's leave-one-out fold and left out of that fold's
    fit: every cross-validation error stays finite."""
    rng = np.random.default_rng(9)
    n = 16
    covariate = rng.normal(size=n)
    marker = np.zeros(n)
    marker[3] = 1.0
    X = np.column_stack([rng.normal(size=(n, 3)), covariate, marker])
    y = X[:, 0] + 2.0 * covariate + 3.0 * marker + rng.normal(size=n)
    pf = np.array([1.0, 1.0, 1.0, 0.0, 0.0])
    for solver in SOLVERS:
        cv = GlmnetCV(alpha=0.5, penalty_factor=pf, solver=solver).fit(X, y)
        design = np.column_stack([np.ones(n), covariate, marker])
        resid = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
        Z = (X - X.mean(axis=0)) / X.std(axis=0)
        pf_scaled = pf * 5 / pf.sum()
        expected = np.max(np.abs(Z[:, :3].T @ resid) / (n * 0.5 * pf_scaled[:3]))
        assert cv.lambdas_[0] == pytest.approx(expected, rel=1e-10)
        assert np.all(np.isfinite(cv.cvm_)) and np.all(np.isfinite(cv.cvsd_))


def test_solver_option_chooses_the_path_solver(monkeypatch):
    """``numpy`` never calls the compiled solver, ``compiled`` does, ``auto`` does when numba is
    installed; without numba ``auto`` falls back to numpy and ``compiled`` is refused."""
    from ptsd_bidsapp.glmnet import solver as glmnet_solver

    rng = np.random.default_rng(1)
    X = rng.normal(size=(10, 3))
    y = X[:, 0] + rng.normal(size=10)
    calls = []
    real = compiled.solve_paths

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(compiled, "solve_paths", spy)
    assert glmnet_solver.resolve_solver("numpy") == "numpy"
    GlmnetCV(solver="numpy").fit(X, y)
    glmnet_lambda_path(X, y, solver="numpy")
    assert calls == []
    if compiled.AVAILABLE:
        assert glmnet_solver.resolve_solver("compiled") == "compiled"
        assert glmnet_solver.resolve_solver("auto") == "compiled"
        GlmnetCV(solver="compiled").fit(X, y)
        assert calls
        calls.clear()
        GlmnetCV(solver="auto").fit(X, y)
        assert calls
    monkeypatch.setattr(compiled, "AVAILABLE", False)
    assert glmnet_solver.resolve_solver("auto") == "numpy"
    with pytest.raises(ValueError, match="numba"):
        glmnet_solver.resolve_solver("compiled")
    with pytest.raises(ValueError, match="must be one of auto, compiled, numpy"):
        glmnet_solver.resolve_solver("fortran")


@pytest.mark.parametrize("gidx, expected", [
    ([0, 0, 1, 1, 2, 2], (3, 2)),      # repeat(arange(3), 2): the Gram products batch per training set
    ([0, 1, 2, 3], (4, 1)),
    ([0], (1, 1)),
    ([0, 1, 0, 1], None),              # tile, not repeat
    ([0, 0, 1], None),                 # unequal blocks
    ([1, 1], None),                    # does not start at training set 0
    ([], None),
])
def test_training_set_blocks_are_recognised_only_when_exact(gidx, expected):
    """``_blocks`` (T, Q) exactly when the problems are Q consecutive rows per training set
    0 … T−1 (then G·β is one batched matmul); any other layout must take the general path."""
    from ptsd_bidsapp.glmnet.solver import _blocks

    assert _blocks(np.asarray(gidx, dtype=int)) == expected


def test_default_lambda_min_ratio_is_glmnets_rule_at_n_equal_p():
    """glmnet's default ``lambda.min.ratio = ifelse(nobs < nvars, 1e-2, 1e-4)``: n = p is not
    'fewer observations than variables', so the path runs down to 1e-4 · λ_max (n < p: 1e-2)."""
    from ptsd_bidsapp.glmnet.solver import _lambda_min_ratio

    assert _lambda_min_ratio(6, 6, None) == 1e-4
    assert _lambda_min_ratio(5, 6, None) == 1e-2
    assert _lambda_min_ratio(7, 6, None) == 1e-4
    assert _lambda_min_ratio(7, 6, 0.3) == 0.3


def test_penalty_factors_are_rescaled_and_validated():
    """glmnet rescales the penalty factors to sum to the number of predictors, so factors × 0.1
    (summing to less than 1) give the same path; a negative factor, a wrong length or no penalised
    predictor at all is refused."""
    rng = np.random.default_rng(4)
    X = rng.normal(size=(15, 3))
    y = X @ np.array([1.0, 0.5, 0.0]) + rng.normal(size=15)
    pf = np.array([1.0, 2.0, 0.0])
    a = GlmnetCV(penalty_factor=pf).fit(X, y)
    b = GlmnetCV(penalty_factor=0.1 * pf).fit(X, y)
    np.testing.assert_allclose(b.lambdas_, a.lambdas_, rtol=1e-12)
    np.testing.assert_allclose(b.coef_path_, a.coef_path_, rtol=1e-10, atol=1e-14)
    for bad in ([1.0, -1.0, 1.0], [1.0, 1.0], [0.0, 0.0, 0.0]):
        with pytest.raises(ValueError, match="penalty_factor must be 3 non-negative|at least one predictor"):
            GlmnetCV(penalty_factor=bad).fit(X, y)


@pytest.mark.parametrize("gidx, size, expected", [
    (np.arange(3), 1, [(0, 1), (1, 2), (2, 3)]),
    (np.array([0, 1, 0, 1]), 3, [(0, 3), (3, 4)]),                       # no blocks: plain slices
    (np.repeat(np.arange(3), 2), 3, [(0, 2), (2, 4), (4, 6)]),           # whole blocks of 2 only
    (np.repeat(np.arange(3), 2), 5, [(0, 4), (4, 6)]),
    (np.repeat(np.arange(2), 3), 2, [(0, 3), (3, 6)]),                   # a block larger than size
])
def test_batches_never_split_a_training_set_block(gidx, size, expected):
    """``_batches``: slices of at most ``size`` problems covering every problem once, in order;
    when the problems come in blocks per training set, whole blocks (at least one per batch)."""
    from ptsd_bidsapp.glmnet.solver import _batches

    assert [(s.start, s.stop) for s in _batches(gidx, size)] == expected


def test_constant_predictor_never_enters_and_changes_nothing_else():
    """A predictor constant over all subjects cannot be standardised: glmnet gives it coefficient 0
    at every λ, and the fit of the other predictors is the fit without it."""
    rng = np.random.default_rng(13)
    X = rng.normal(size=(12, 3))
    y = X[:, 0] - X[:, 2] + rng.normal(size=12)
    with_constant = np.column_stack([X[:, :1], np.full(12, 7.0), X[:, 1:]])
    a = GlmnetCV(alpha=0.5).fit(X, y)
    b = GlmnetCV(alpha=0.5).fit(with_constant, y)
    assert np.all(b.coef_path_[:, 1] == 0)
    np.testing.assert_allclose(b.lambdas_, a.lambdas_, rtol=1e-12)
    np.testing.assert_allclose(np.delete(b.coef_path_, 1, axis=1), a.coef_path_, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(b.cvm_, a.cvm_, rtol=1e-10)


def test_constant_outcome_has_nothing_to_explain():
    """y constant: the least-squares loss is 0 at β = 0 and any β ≠ 0 only adds penalty, so every
    coefficient is 0 at every λ, the intercept is the constant and the cross-validation error is 0
    (R glmnet refuses such a y; here a bootstrap resample or a fold could be constant)."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(8, 3))
    cv = GlmnetCV().fit(X, np.full(8, 2.5))
    assert np.all(cv.coef_path_ == 0)
    np.testing.assert_allclose(cv.intercept_path_, 2.5, rtol=1e-15)
    np.testing.assert_allclose(cv.cvm_, 0.0, atol=1e-24)


def test_training_sets_are_reused_only_for_the_same_design_and_weights(monkeypatch):
    from ptsd_bidsapp.glmnet import solver as solver_module

    monkeypatch.setattr(solver_module, "_sets_cache", type(solver_module._sets_cache)())
    rng = np.random.default_rng(3)
    x0 = rng.standard_normal((9, 4))
    w = (~np.eye(9, dtype=bool)).astype(float)
    first = solver_module._cached_training_sets(x0, w)
    fresh = solver_module._training_sets(x0, w)
    for name in ("w", "G", "xm", "xs", "excluded"):  # a hit must be what the computation gives
        np.testing.assert_array_equal(getattr(first, name), getattr(fresh, name))
    assert solver_module._cached_training_sets(x0.copy(), w.copy()) is first
    w2 = w.copy()
    w2[0, 1] = 2.0  # another weighting of the same subjects: its own Gram matrices
    other = solver_module._cached_training_sets(x0, w2)
    assert other is not first
    assert not np.array_equal(other.G, first.G)
    x1 = x0.copy()
    x1[0, 0] += 1e-9  # one changed value of the design
    assert solver_module._cached_training_sets(x1, w) is not first
    # the memory bound: entries beyond _SETS_CACHE_ELEMENTS Gram elements are dropped, oldest first
    monkeypatch.setattr(solver_module, "_SETS_CACHE_ELEMENTS", 2 * first.G.size)
    solver_module._cached_training_sets(x0 + 1.0, w)
    assert sum(s.G.size for s in solver_module._sets_cache.values()) <= 2 * first.G.size
    assert solver_module._cached_training_sets(x0 + 1.0, w) is not None
    assert all(s is not first for s in solver_module._sets_cache.values())
