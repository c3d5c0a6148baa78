"""The compiled (numba) path solver against the numpy solver, its Cholesky up/downdates, the option.

The numpy solver (``solver="numpy"``) is the reference: it is the one pinned against R glmnet in
``test_cv.py``. Both solve the same stationarity equations, by Cholesky here and by LU there,
so the coefficients differ by rounding only: 1e-10 on standardised data whose active-set systems
have condition numbers below ~1e4 leaves four orders of magnitude of headroom over 1e-16 × cond.
"""

import numpy as np
import pytest

from ptsd_bidsapp.glmnet import GlmnetCV, bootstrap_selection, compiled, nested_cv, permutation_test
from ptsd_bidsapp.glmnet import solver as glmnet_solver

pytestmark = pytest.mark.skipif(not compiled.AVAILABLE, reason="numba not installed")

#: Coefficient / prediction agreement between the two solvers (see the module docstring).
TOL = 1e-10


def _paths(X, y, alpha, solver, penalty_factor=None, lam=None):
    """Leave-one-out training-set paths of X, y (standardised coefficients, λ, n_used)."""
    n, p = X.shape
    x0, _, _ = glmnet_solver._prescale(X)
    pf = glmnet_solver._penalty_factor(penalty_factor, p)
    W = 1.0 - np.eye(n)
    gidx = np.arange(n)
    Y = y[None, :]
    yidx = np.zeros(n, dtype=int)
    if lam is None:
        return glmnet_solver._fit_computed_paths(x0, W, gidx, Y, yidx, pf, alpha, 100,
                                                 glmnet_solver._lambda_min_ratio(n - 1, p, None), solver=solver)
    lam = np.broadcast_to(lam, (n, lam.size)).copy()
    return glmnet_solver._fit_given_paths(x0, W, gidx, Y, yidx, pf, alpha, lam, np.full(n, lam.shape[1]),
                                          solver=solver)


def _compare(X, y, alpha, **kwargs):
    a = _paths(X, y, alpha, "numpy", **kwargs)
    b = _paths(X, y, alpha, "compiled", **kwargs)
    if "n_used" in a:
        np.testing.assert_array_equal(a["n_used"], b["n_used"])
        np.testing.assert_array_equal(a["lam"], b["lam"])
    np.testing.assert_allclose(b["beta"], a["beta"], rtol=0, atol=TOL)
    # the same support at every λ (a coefficient is exactly zero in both or in neither)
    np.testing.assert_array_equal(a["beta"] != 0, b["beta"] != 0)
    return a, b


def _design(n=21, p=8, seed=0, rho=0.6):
    rng = np.random.default_rng(seed)
    cov = rho ** np.abs(np.subtract.outer(np.arange(p), np.arange(p)))
    X = rng.multivariate_normal(np.zeros(p), cov, size=n)
    y = 1.5 * X[:, 0] - X[:, 3] + rng.normal(size=n)
    return X, y


@pytest.mark.parametrize("alpha", [0.5, 1.0, 0.01])
def test_compiled_paths_equal_numpy_paths(alpha):
    """Correlated design at n = 21: elastic net, lasso (α = 1, the factor carried over λs), α small."""
    X, y = _design()
    a, _ = _compare(X, y, alpha)
    assert (a["beta"] != 0).sum(axis=2).max() >= 5  # the paths do go deep into the active sets


def test_wide_design_and_unpenalised_and_constant_predictors():
    X, y = _design(n=15, p=30, seed=3)
    X[:, 7] = 2.0  # constant: never enters
    pf = np.ones(30)
    pf[[2, 5]] = 0.0  # unpenalised covariates: active from the start
    a, _ = _compare(X, y, 0.5, penalty_factor=pf)
    assert np.all(a["beta"][:, :, 7] == 0)
    used = np.arange(a["beta"].shape[1])[None, :] < a["n_used"][:, None]  # zeros beyond the early stop
    assert np.all(a["beta"][:, :, [2, 5]][used] != 0)


def test_all_zero_path_above_lambda_max():
    """Every λ above λ_max: all coefficients exactly zero in both solvers."""
    X, y = _design(seed=5)
    lam_max = glmnet_solver.glmnet_lambda_path(X, y, alpha=0.5)[0]
    a, b = _compare(X, y, 0.5, lam=lam_max * np.array([4.0, 2.0, 1.5]))
    assert not a["beta"].any() and not b["beta"].any()


def test_collinear_columns():
    """A duplicated and a scaled copy of predictors: the ridge part keeps the elastic net's system definite."""
    X, y = _design(seed=7)
    X = np.column_stack([X, X[:, 0], 3.0 * X[:, 3]])
    _compare(X, y, 0.5)


def test_nearly_collinear_columns_lasso():
    """Lasso with near-copies (correlation ≈ 0.99995): ill-conditioned active-set systems, same paths.

    (Exact copies make the lasso's active-set system singular: the numpy solver raises LinAlgError,
    and the compiled solver hands such problems to it, so both behave the same.)
    """
    X, y = _design(seed=7)
    rng = np.random.default_rng(1)
    X = np.column_stack([X, X[:, 0] + 0.01 * rng.normal(size=21), 3.0 * X[:, 3] + 0.03 * rng.normal(size=21)])
    _compare(X, y, 1.0)


def test_singular_problems_are_flagged_for_the_numpy_solver():
    """Exactly collinear unpenalised predictors: the Cholesky factor breaks down, the problem is flagged."""
    X, y = _design(seed=8)
    X = np.column_stack([X, X[:, 1]])
    pf = np.ones(X.shape[1])
    pf[[1, -1]] = 0.0
    x0, _, _ = glmnet_solver._prescale(X)
    prob = glmnet_solver._batch_problems(x0, np.ones((1, 21)), np.zeros(1, dtype=int), y[None, :],
                                         np.zeros(1, dtype=int), slice(None))
    lam = np.geomspace(1.0, 1e-3, 20)[None, :]
    settings = (1e-10, 500, 10, 1e-5, 0.999, 5)
    _, _, _, failed = compiled.solve_paths(prob.sets.G, prob.gidx, prob.c, prob.excluded, lam, np.array([20]),
                                           glmnet_solver._penalty_factor(pf, X.shape[1]), 0.5, True, settings)
    assert failed.tolist() == [True]


def test_predictions_along_the_path_and_inference_equal_numpy():
    """Nested LOO predictions, the permutation null (p exactly) and bootstrap frequencies, n = 21."""
    X, y = _design(seed=11)
    kw = {"alpha": 0.5, "seed": 3}
    nested = {s: nested_cv(X, y, solver=s, **kw) for s in ("numpy", "compiled")}
    np.testing.assert_allclose(nested["compiled"]["predicted"], nested["numpy"]["predicted"], rtol=0, atol=TOL)
    perm = {s: permutation_test(X, y, nested["numpy"]["r2"], n_permutations=12, solver=s, **kw)
            for s in ("numpy", "compiled")}
    np.testing.assert_allclose(perm["compiled"]["null_r2"], perm["numpy"]["null_r2"], rtol=0, atol=TOL)
    assert perm["compiled"]["p_value"] == perm["numpy"]["p_value"]
    cv = GlmnetCV(alpha=0.5, solver="numpy").fit(X, y)
    cv_c = GlmnetCV(alpha=0.5, solver="compiled").fit(X, y)
    np.testing.assert_allclose(cv_c.coef_path_, cv.coef_path_, rtol=0, atol=TOL)
    assert cv_c.index_min_ == cv.index_min_
    boot = {s: bootstrap_selection(X, y, cv.lambdas_, cv.index_min_, n_bootstrap=30, solver=s, **kw)
            for s in ("numpy", "compiled")}
    np.testing.assert_array_equal(boot["compiled"]["frequency"], boot["numpy"]["frequency"])


def test_nested_loo_lambda_min_is_the_inner_cv_minimum():
    """The compiled inner-CV step of the nested LOO: λ_min from pair-fit predictions interpolated in λ.

    Reference written independently: glmnet's lambda.interp is linear interpolation in λ between
    a fold's path points, clamped at its ends (``np.interp`` on the increasing λs); cvm the mean
    squared error over the n − 1 inner folds; λ_min the first (largest) λ at the minimum over
    the outer fit's used λs.
    """
    rng = np.random.default_rng(4)
    n, Q, L = 6, 3, 12
    iu, ju = np.triu_indices(n, 1)
    P = iu.size
    pair_index = np.full((n, n), -1)
    pair_index[iu, ju] = np.arange(P)
    pair_index[ju, iu] = np.arange(P)
    ratio = 0.3  # coarse λ steps: linear and log-λ interpolation pick different λ_min (4 of 18 here)
    pair_lam = rng.uniform(0.5, 2.0, size=(P * Q, 1)) * ratio ** np.arange(L)
    pair_n_used = rng.integers(1, L + 1, size=P * Q)
    pair_n_used[0] = L
    pair_pred = rng.normal(size=(P * Q, 2, L))
    outer_lam = rng.uniform(0.5, 2.0, size=(n * Q, 1)) * ratio ** np.arange(L)
    outer_n_used = rng.integers(2, L + 1, size=n * Q)
    Y = rng.normal(size=(Q, n))
    got = compiled.nested_loo_lambda_min(pair_pred, pair_lam, pair_n_used, outer_lam, outer_n_used, pair_index, Y)
    for i in range(n):
        for q in range(Q):
            o = i * Q + q
            err = []
            for j in range(n):
                if j == i:
                    continue
                b = pair_index[i, j] * Q + q
                m = pair_n_used[b]
                lam, pred = pair_lam[b, :m][::-1], pair_pred[b, int(j > i), :m][::-1]
                err.append((Y[q, j] - np.interp(outer_lam[o], lam, pred)) ** 2)
            cvm = np.mean(err, axis=0)[: outer_n_used[o]]
            assert got[o] == np.flatnonzero(cvm <= cvm.min() + 1e-12)[0]


def test_kfold_nested_cv_equal_numpy():
    """Above nested_max_loo: seeded K-fold outer and inner folds, coefficients interpolated in λ."""
    X, y = _design(n=24, seed=13)
    kw = {"seed": 5, "nested_max_loo": 10, "nested_k_folds": 4}
    a, b = (nested_cv(X, y, solver=s, **kw) for s in ("numpy", "compiled"))
    np.testing.assert_allclose(b["predicted"], a["predicted"], rtol=0, atol=TOL)


# ---------------------------------------------------------------------------------------
# the Cholesky factor kept under appends and deletions


def test_cholesky_appends_and_deletes_keep_the_factor_of_the_active_system():
    """After a sequence of appends and deletions, R R' is the active-set matrix in the factor's order."""
    rng = np.random.default_rng(0)
    p = 9
    Z = rng.normal(size=(30, p))
    G = np.corrcoef(Z, rowvar=False)
    diag = 1.0 + 0.3 * rng.uniform(size=p)
    R = np.zeros((p, p))
    rinv = np.zeros(p)
    order = np.zeros(p, dtype=np.int64)
    k = 0
    members = []
    for step, col in enumerate([4, 0, 7, 2, 8, 1, 5]):
        assert compiled._append(G, order, k, col, diag, R, rinv)
        k += 1
        members.append(col)
        if step in (2, 4, 5):  # delete the second, then the first, then the last member
            pos = {2: 1, 4: 0, 5: k - 1}[step]
            compiled._delete(order, k, pos, R, rinv)
            k -= 1
            del members[pos]
        assert order[:k].tolist() == members
        M = G[np.ix_(members, members)].copy()
        M[np.diag_indices(k)] = diag[members]
        Rk = R[:k, :k]
        assert np.all(np.triu(Rk, 1) == 0)
        np.testing.assert_allclose(Rk @ Rk.T, M, rtol=0, atol=1e-13)
        np.testing.assert_allclose(rinv[:k] * np.diag(Rk), 1.0, rtol=1e-15)  # the reciprocals follow the rotations
    rhs = rng.normal(size=p)
    x = np.zeros(p)
    z = np.zeros(p)
    compiled._forward(R, rinv, order, k, rhs, z)
    compiled._back(R, rinv, order, k, z, x)
    np.testing.assert_allclose(x[members], np.linalg.solve(M, rhs[members]), rtol=0, atol=1e-12)
    assert not np.any(np.delete(x, members))


def test_factor_forward_is_the_cholesky_factor_and_the_forward_substitution():
    """One pass: R of the active block in the given order (numpy's Cholesky) and z = R⁻¹ rhs (numpy's solve)."""
    rng = np.random.default_rng(2)
    p = 8
    G = np.corrcoef(rng.normal(size=(25, p)), rowvar=False)
    diag = 1.0 + 0.5 * rng.uniform(size=p)
    order = np.array([6, 1, 3, 0, 7, 0, 0, 0], dtype=np.int64)
    k = 5
    members = order[:k].tolist()
    rhs = rng.normal(size=p)
    R, rinv, z = np.zeros((p, p)), np.zeros(p), np.zeros(p)
    assert compiled._factor_forward(G, order, k, diag, rhs, R, rinv, z)
    M = G[np.ix_(members, members)].copy()
    M[np.diag_indices(k)] = diag[members]
    L = np.linalg.cholesky(M)
    np.testing.assert_allclose(R[:k, :k], L, rtol=0, atol=1e-14)
    np.testing.assert_allclose(rinv[:k], 1.0 / np.diag(L), rtol=1e-14)
    np.testing.assert_allclose(z[:k], np.linalg.solve(L, rhs[members]), rtol=0, atol=1e-13)
    G2 = G.copy()
    G2[1, 3] = G2[3, 1] = np.sqrt(diag[1] * diag[3])  # predictors 1 and 3 perfectly correlated: singular
    assert not compiled._factor_forward(G2, order, k, diag, rhs, R, rinv, z)


def test_append_refuses_a_column_that_makes_the_system_singular():
    G = np.array([[1.0, 1.0], [1.0, 1.0]])  # two identical standardised predictors
    R = np.zeros((2, 2))
    rinv = np.zeros(2)
    order = np.zeros(2, dtype=np.int64)
    diag = np.ones(2)
    assert compiled._append(G, order, 0, 0, diag, R, rinv)
    assert not compiled._append(G, order, 1, 1, diag, R, rinv)


# ---------------------------------------------------------------------------------------
# the option


def test_solver_option_is_validated(monkeypatch):
    with pytest.raises(ValueError, match="elastic_net.solver must be one of auto, compiled, numpy"):
        glmnet_solver.resolve_solver("fortran")
    assert glmnet_solver.resolve_solver("auto") == "compiled"
    monkeypatch.setattr(compiled, "AVAILABLE", False)
    assert glmnet_solver.resolve_solver("auto") == "numpy"
    with pytest.raises(ValueError, match="needs the numba package"):
        glmnet_solver.resolve_solver("compiled")
