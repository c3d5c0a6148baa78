"""The compiled path solver called directly, against truth that does not come from it (unit tier).

``compiled.solve_paths`` is called on standardised moments (G, c) built here, and every test
checks that it solved the problems itself (``failed`` all False): a wrong compiled solver must
not hide behind the numpy fallback that ``solver._solve_path`` would run. The truths:

* an orthogonal design (G = I): the elastic-net solution is soft-thresholding in closed form,
  β_j = S(c_j, λ α pf_j) / (1 + λ (1 − α) pf_j) (Friedman, Hastie & Tibshirani 2010, eq. 6),
  β_j = c_j for an unpenalised predictor;
* glmnet's stopping rule written out (fraction of deviance explained 2β'c − β'Gβ, ``fdev``,
  ``devmax``, at least ``mnlam`` λs: glmnet.control);
* an independent coordinate descent written here, on correlated designs whose paths drop and
  re-add predictors;
* R glmnet 4.1.6's coefficient paths and early stop (tests/data/glmnet, scripts/glmnet_reference.R).

The tests are small (p ≤ 13, ≤ 100 λs) because the mutation run executes this module as plain
Python (scripts/mutation.sh); there each takes well under a second, compiled a few ms.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ptsd_bidsapp.glmnet import compiled

pytestmark = [pytest.mark.unit, pytest.mark.skipif(not compiled.AVAILABLE, reason="numba not installed")]

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "glmnet"

#: glmnet.control(): KKT tolerance, rounds per λ, all-at-once rounds, fdev, devmax, mnlam.
GLMNET = (1e-10, 500, 10, 1e-5, 0.999, 5)


def _solve(G, c, lam, pf, alpha, excluded=None, early_stop=False, settings=GLMNET, zrows=None, keep_beta=True,
           n_valid=None):
    """One Gram matrix shared by the problems (rows of c), λ (B, L) on the standardised scale."""
    c = np.atleast_2d(c)
    B, p = c.shape
    lam = np.broadcast_to(np.asarray(lam, dtype=float), (B, np.shape(lam)[-1])).copy()
    excluded = np.zeros((B, p), dtype=bool) if excluded is None else np.broadcast_to(excluded, (B, p))
    n_valid = np.full(B, lam.shape[1]) if n_valid is None else np.asarray(n_valid)
    return compiled.solve_paths(np.asarray(G, dtype=float)[None], np.zeros(B, dtype=int), c, excluded, lam,
                                n_valid, np.asarray(pf, dtype=float), alpha, early_stop, settings, zrows=zrows,
                                keep_beta=keep_beta)


def _soft_threshold_solution(c, lam, pf, alpha):
    """Closed-form elastic net for G = I: (L, p) for one row c."""
    lam = np.asarray(lam)[:, None]
    shrunk = np.sign(c) * np.maximum(np.abs(c) - lam * alpha * pf, 0.0)
    return shrunk / (1.0 + lam * (1.0 - alpha) * pf)


def _coordinate_descent(G, c, lam, pf, alpha, start=None, tol=1e-30, max_sweeps=200_000):
    """Independent reference: minimise ½β'Gβ − c'β + λ Σ pf_j (α|β_j| + (1 − α)/2 β_j²) cyclically
    (from ``start``, e.g. the previous λ's solution) until no coordinate moves by more than 1e-15."""
    p = c.size
    beta = np.zeros(p) if start is None else start.copy()
    for _ in range(max_sweeps):
        biggest = 0.0
        for j in range(p):
            z = c[j] - G[j] @ beta + G[j, j] * beta[j]
            new = np.sign(z) * max(abs(z) - lam * alpha * pf[j], 0.0) / (G[j, j] + lam * (1 - alpha) * pf[j])
            biggest = max(biggest, (new - beta[j]) ** 2)
            beta[j] = new
        if biggest < tol:
            break
    return beta


def _moments(X, y):
    """Standardised Gram matrix and X'y (1/n SDs), as glmnet standardises, and the SDs."""
    n = len(y)
    sx, sy = X.std(axis=0), y.std()
    Z = (X - X.mean(axis=0)) / sx
    r = (y - y.mean()) / sy
    G = Z.T @ Z / n
    G[np.diag_indices_from(G)] = 1.0  # exactly 1, as the solver assumes (the diagonal it builds itself)
    return G, Z.T @ r / n, sx, sy


# ---------------------------------------------------------------------------------------
# orthogonal design: soft-thresholding in closed form


@pytest.mark.parametrize("alpha, pf", [(1.0, None), (0.5, None), (0.1, None), (0.5, [2.0] * 5)])
def test_orthogonal_design_is_soft_thresholding(alpha, pf):
    """G = I, unequal penalty factors, one unpenalised predictor, three problems (rows of c); and
    every (1 − α) pf_j = 1 (an elastic net whose ridge weights are all 1 is not a lasso: the
    system's diagonal 1 + λ changes with λ).

    The solver's Cholesky factor of a diagonal system is exact, so the only error is the
    rounding of a division and a square root: 1e-14.
    """
    pf = np.array([1.0, 0.5, 2.0, 0.0, 1.5]) if pf is None else np.asarray(pf)
    c = np.array([[0.8, -0.5, 0.3, 0.2, -0.05],
                  [-0.2, 0.9, -0.7, -0.4, 0.6],
                  [0.05, 0.1, 0.45, 0.0, -0.33]])
    lam = np.geomspace(2.0, 1e-3, 25) / alpha  # from above every λ_max to nearly unpenalised
    beta, n_used, pred, failed = _solve(np.eye(5), c, lam, pf, alpha)
    assert not failed.any()
    assert n_used.tolist() == [25, 25, 25]
    assert pred is None
    for b in range(3):
        expected = _soft_threshold_solution(c[b], lam, pf, alpha)
        np.testing.assert_allclose(beta[b], expected, rtol=0, atol=1e-14)
        np.testing.assert_array_equal(beta[b] != 0, expected != 0)  # exactly zero off the support
    # the path starts above every λ_max (only the unpenalised β_3 = c_3 non-zero) and ends with
    # every predictor whose c is non-zero in the model
    np.testing.assert_array_equal(beta[:, 0] != 0, (pf == 0) & (c != 0))
    np.testing.assert_array_equal(beta[:, -1] != 0, c != 0)


def test_orthogonal_design_with_excluded_predictors_and_predictions():
    """Excluded (constant) predictors never enter, whatever their c; predictions are z'β at every λ."""
    pf = np.ones(4)
    c = np.array([[0.6, -0.4, 0.9, 0.25], [0.3, 0.7, -0.2, -0.5]])
    excluded = np.array([[False, False, True, False], [True, False, False, False]])
    lam = np.geomspace(1.5, 0.01, 12)
    z = np.random.default_rng(0).normal(size=(2, 3, 4))
    beta, n_used, pred, failed = _solve(np.eye(4), c, lam, pf, 0.5, excluded=excluded, zrows=z)
    assert not failed.any()
    for b in range(2):
        expected = _soft_threshold_solution(np.where(excluded[b], 0.0, c[b]), lam, pf, 0.5)
        np.testing.assert_allclose(beta[b], expected, rtol=0, atol=1e-14)
        assert not beta[b][:, excluded[b]].any()
        np.testing.assert_allclose(pred[b], z[b] @ expected.T, rtol=0, atol=1e-14)
    # predictions without keeping the coefficient paths: the same numbers
    none, n_used2, pred2, failed2 = _solve(np.eye(4), c, lam, pf, 0.5, excluded=excluded, zrows=z, keep_beta=False)
    assert none is None and not failed2.any()
    np.testing.assert_array_equal(n_used2, n_used)
    np.testing.assert_allclose(pred2, pred, rtol=0, atol=1e-15)


def test_only_the_leading_valid_lambdas_are_solved():
    """``n_valid``: the first n_valid[b] λs of problem b; zeros after them."""
    c = np.array([[0.6, -0.4, 0.3], [0.2, 0.5, -0.7]])
    lam = np.geomspace(1.0, 0.01, 10)
    beta, n_used, _, failed = _solve(np.eye(3), c, lam, np.ones(3), 1.0, n_valid=[4, 12])
    assert not failed.any() and n_used.tolist() == [4, 10]  # more valid λs than given: all 10 solved
    np.testing.assert_allclose(beta[0, :4], _soft_threshold_solution(c[0], lam[:4], np.ones(3), 1.0), atol=1e-14)
    assert not beta[0, 4:].any()
    np.testing.assert_allclose(beta[1], _soft_threshold_solution(c[1], lam, np.ones(3), 1.0), atol=1e-14)


# ---------------------------------------------------------------------------------------
# glmnet's stopping rule


def _glmnet_stop(beta, G, c, fdev, devmax, mnlam):
    """Number of λs glmnet keeps: stop after the first λ k (k + 1 ≥ mnlam) whose deviance
    explained rsq = 2β'c − β'Gβ changed by less than fdev·rsq or exceeds devmax."""
    previous = 0.0
    for k, b in enumerate(beta):
        rsq = 2 * b @ c - b @ G @ b
        if k + 1 >= mnlam and (rsq - previous < fdev * rsq or rsq > devmax):
            return k + 1
        previous = rsq
    return len(beta)


@pytest.mark.parametrize("case", ["devmax", "fdev", "mnlam", "mnlam1", "none"])
def test_early_stop_is_glmnets_rule(case):
    """G = I: rsq_k = Σ_j (2 β_j c_j − β_j²) from the closed-form path; the stop written out."""
    pf = np.ones(3)
    lam = np.geomspace(1.0, 1e-4, 30)
    settings = list(GLMNET)
    if case == "devmax":  # Σ c² = 0.9994: rsq passes devmax = 0.999 near the end of the path
        c = np.array([0.8, -0.5, np.sqrt(0.9994 - 0.89)])
    elif case == "fdev":  # a flat end of the path: rsq stops changing (λ repeated)
        c = np.array([0.5, -0.3, 0.2])
        lam = np.r_[np.geomspace(1.0, 0.05, 12), np.full(18, 0.05)]
    elif case == "mnlam":  # a path flat from the start: the stop waits for mnlam = 7 λs
        c = np.array([0.5, -0.3, 0.2])
        lam = np.full(30, 0.05)
        settings[5] = 7
    elif case == "mnlam1":  # the rule may fire from the first λ on: rsq is compared with 0 there
        c = np.array([0.5, -0.3, 0.2])
        lam = np.r_[0.4, np.full(29, 0.4)]
        settings[5] = 1
    else:  # small c, fdev = 0, devmax above 1: the rule never fires
        c = np.array([0.3, -0.2, 0.1])
        settings[3], settings[4] = 0.0, 2.0
    beta, n_used, _, failed = _solve(np.eye(3), c, lam, pf, 0.5, early_stop=True, settings=tuple(settings))
    assert not failed.any()
    path = _soft_threshold_solution(c, lam, pf, 0.5)
    expected = _glmnet_stop(path, np.eye(3), c, settings[3], settings[4], int(settings[5]))
    assert n_used[0] == expected
    assert {"devmax": 3 < expected < 30, "fdev": 12 < expected < 30, "mnlam": expected == 7,
            "mnlam1": expected == 2, "none": expected == 30}[case]
    np.testing.assert_allclose(beta[0, :expected], path[:expected], atol=1e-14)
    assert not beta[0, expected:].any()
    # without early_stop every λ is solved
    _, all_used, _, _ = _solve(np.eye(3), c, lam, pf, 0.5, early_stop=False, settings=tuple(settings))
    assert all_used[0] == 30


# ---------------------------------------------------------------------------------------
# correlated designs against an independent coordinate descent


def _correlated(n=40, p=6, seed=0, rho=0.85):
    rng = np.random.default_rng(seed)
    cov = rho ** np.abs(np.subtract.outer(np.arange(p), np.arange(p)))
    X = rng.multivariate_normal(np.zeros(p), cov, size=n)
    y = 2.0 * X[:, 0] - 1.6 * X[:, 1] + 0.8 * X[:, 3] + rng.normal(size=n)
    return X, y


@pytest.mark.parametrize("alpha, pf", [(1.0, None), (0.5, None), (0.3, [1.0, 0.0, 1.0, 2.0, 1.0, 0.5])])
def test_correlated_paths_equal_coordinate_descent(alpha, pf):
    """Lasso (the factor carried from λ to λ), elastic net, unpenalised + unequal factors.

    The design (ρ = 0.85 between neighbours, opposite-signed effects of x0 and x1) makes the
    paths drop predictors that entered earlier (checked), so the zero-crossing step is
    exercised. Tolerance 1e-9: the reference stops when no coordinate moves by more than 1e-15,
    and the systems' condition numbers (< 1e3 here) amplify that at most to ~1e-12.
    """
    X, y = _correlated()
    G, c, _, _ = _moments(X, y)
    p = c.size
    pf = np.ones(p) if pf is None else np.asarray(pf) * p / np.sum(pf)
    pen = pf > 0
    # λ_max after the unpenalised predictors (glmnet): their least-squares fit, then max |grad| / (α pf)
    u = ~pen
    grad = c.copy()
    if u.any():
        grad = c - G[:, u] @ np.linalg.solve(G[np.ix_(u, u)], c[u])
    lam_max = np.max(np.abs(grad[pen]) / pf[pen]) / alpha
    lam = lam_max * np.geomspace(1.0, 1e-3, 30)
    beta, n_used, _, failed = _solve(G, c, lam, pf, alpha)
    assert not failed.any() and n_used[0] == 30
    expected = np.zeros((lam.size, p))
    for k, l in enumerate(lam):
        expected[k] = _coordinate_descent(G, c, l, pf, alpha, start=expected[k - 1] if k else None)
    np.testing.assert_allclose(beta[0], expected, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(beta[0] != 0, np.abs(expected) > 1e-12)
    assert not beta[0, 0, pen].any()  # λ_max: only the unpenalised are non-zero
    dropped = (beta[0, :-1] != 0) & (beta[0, 1:] == 0) & pen
    assert dropped.any()  # a predictor leaves the active set along the path


def test_simultaneous_entries_need_the_all_at_once_rounds():
    """Four predictors entering between two λs (G = I): with all-at-once rounds the λ takes two
    active-set rounds; one at a time it would take five, so a budget of two rounds per λ fails
    exactly when the all-at-once rounds are switched off (``failed``: the numpy solver's turn)."""
    c = np.array([0.51, -0.52, 0.53, -0.54, 0.1])
    lam = np.array([1.0, 0.3, 0.2])
    two_rounds = (1e-10, 2, 10, 1e-5, 0.999, 5)
    beta, _, _, failed = _solve(np.eye(5), c, lam, np.ones(5), 1.0, settings=two_rounds)
    assert not failed.any()
    np.testing.assert_allclose(beta[0], _soft_threshold_solution(c, lam, np.ones(5), 1.0), atol=1e-15)
    _, _, _, failed = _solve(np.eye(5), c, lam, np.ones(5), 1.0, settings=(1e-10, 2, 0, 1e-5, 0.999, 5))
    assert failed.all()
    _, _, _, failed = _solve(np.eye(5), c, lam, np.ones(5), 1.0, settings=(1e-10, 5, 0, 1e-5, 0.999, 5))
    assert not failed.any()  # one at a time: four additions and the final check, five rounds
    _, _, _, failed = _solve(np.eye(5), c, lam, np.ones(5), 1.0, settings=(1e-10, 1, 10, 1e-5, 0.999, 5))
    assert failed.all()  # one round per λ cannot both add and confirm


@pytest.mark.parametrize("direction", ["decreasing", "increasing"])
def test_linear_extrapolation_guesses_entries_and_exits(direction):
    """G = I, lasso: β_j(λ) = c_j − λ sign(c_j) is linear in λ and an inactive gradient is c_j, so
    the guess at λ_k extrapolated from the solutions at λ_{k−1}, λ_{k−2} is the exact active set
    (predictors enter down the path, leave up it) and one active-set round per λ suffices from
    the third λ on (the first two have no guess).

    Down the path: a budget of one round per λ, no predictor entering at the first two λs, the
    first entering at the third (the first guess), unequal penalty factors (thresholds λ pf_j).
    Up the path: every predictor enters at the first λ (two rounds: add all, confirm), so the
    budget is two rounds; two predictors leave together at λ = 0.45, which without the guess
    takes three rounds (step to the first zero crossing, then to the second, then confirm).
    """
    lam = np.linspace(0.9, 0.05, 18)  # no |c_j| equals a λ: no predictor exactly at its threshold
    if direction == "decreasing":
        c = np.array([0.82, -0.42, 0.31, -0.23, 0.12])
        pf = np.array([1.0, 2.0, 0.5, 1.0, 1.0])  # thresholds 0.82, 0.21, 0.62, 0.23, 0.12
        budget = 1
    else:
        c = np.array([0.55, -0.42, 0.41, -0.2, 0.12])
        pf = np.ones(5)
        lam = lam[::-1].copy()
        budget = 2
    settings = (1e-10, budget, 10, 1e-5, 0.999, 5)
    beta, n_used, _, failed = _solve(np.eye(5), c, lam, pf, 1.0, settings=settings)
    assert not failed.any() and n_used[0] == 18
    expected = _soft_threshold_solution(c, lam, pf, 1.0)
    np.testing.assert_allclose(beta[0], expected, rtol=0, atol=1e-14)
    support = (expected != 0).sum(axis=1)
    if direction == "decreasing":
        assert support[0] == support[1] == 0 and support[2] == 1 and support[-1] == 5
    else:
        assert support[0] == 5 and set(support.tolist()) == {5, 4, 3, 1, 0}  # 3 -> 1: two leave at once


def test_kkt_tolerance_keeps_a_predictor_at_the_edge_out():
    """|c_j| = λ α pf_j (1 + 1e-11): inside the 1e-10 relative KKT tolerance, so the predictor stays
    out (β exactly 0); at 1 + 1e-8 it enters."""
    lam = np.array([2.0, 1.0])
    inside = np.array([0.5 * (1 + 1e-11), 0.1])
    beta, _, _, failed = _solve(np.eye(2), inside, lam, np.ones(2), 0.5)
    assert not failed.any() and not beta[0, 1].any()
    outside = np.array([0.5 * (1 + 1e-8), 0.1])
    beta, _, _, _ = _solve(np.eye(2), outside, lam, np.ones(2), 0.5)
    assert beta[0, 1, 0] == pytest.approx(0.5e-8 / 1.5, rel=1e-6)  # S(c, 0.5) / (1 + 0.5)


# ---------------------------------------------------------------------------------------
# R glmnet


@pytest.mark.parametrize("name", ["basic", "penaltyfactor", "wide"])
def test_paths_and_early_stop_equal_r_glmnet(name):
    """glmnet(x, y, alpha = 0.5) on the reference cases: R's λs (continued to 100 log-spaced
    values as glmnet generates them) solved directly; the path stops where R's stopped, and the
    raw coefficients agree within R's convergence: measured at λ_min 2.5e-7, 5.6e-7, 1.6e-7 of
    the largest coefficient (basic, penaltyfactor, wide), bound 3e-6 as in test_cv.py; along
    R's whole path (case basic) 1.7e-6, bound 1e-5 as in test_cv.py."""
    data = pd.read_csv(REFERENCE / f"case-{name}_data.tsv", sep="\t")
    y = data.pop("y").to_numpy()
    X = data.to_numpy()
    n, p = X.shape
    summary = pd.read_csv(REFERENCE / f"case-{name}_summary.tsv", sep="\t").set_index("key")["value"]
    r_lam = pd.read_csv(REFERENCE / f"case-{name}_path.tsv", sep="\t")["lambda"].to_numpy()
    pf = np.ones(p)
    if name == "penaltyfactor":
        pf[-1] = 0.0
    pf = pf * p / pf.sum()  # glmnet rescales the factors to sum to p
    G, c, sx, sy = _moments(X, y)
    ratio = 1e-2 if n < p else 1e-4
    lam = r_lam[0] * ratio ** (np.arange(100) / 99)
    np.testing.assert_allclose(lam[: r_lam.size], r_lam, rtol=1e-10)  # R's path is this sequence, cut early
    beta, n_used, _, failed = _solve(G, c, lam / sy, pf, float(summary["alpha"]), early_stop=True)
    assert not failed.any()
    assert n_used[0] == int(summary["n_lambda"]) == r_lam.size
    raw = sy * beta[0, : r_lam.size] / sx  # per unit of x
    coef = pd.read_csv(REFERENCE / f"case-{name}_coef.tsv", sep="\t")["coef_lambda_min"].to_numpy()[1:]
    k = int(summary["index_min"]) - 1
    np.testing.assert_allclose(raw[k], coef, rtol=0, atol=3e-6 * np.abs(coef).max())
    np.testing.assert_array_equal(raw[k] != 0, coef != 0)
    if name == "basic":
        r_beta = pd.read_csv(REFERENCE / "case-basic_betapath.tsv", sep="\t").set_index("term").to_numpy().T
        np.testing.assert_allclose(raw, r_beta, rtol=0, atol=1e-5 * np.abs(r_beta).max())


# ---------------------------------------------------------------------------------------
# the inner cross-validation of the nested LOO: ties and NaN


def _pairs(n):
    iu, ju = np.triu_indices(n, 1)
    index = np.full((n, n), -1)
    index[iu, ju] = np.arange(iu.size)
    index[ju, iu] = np.arange(iu.size)
    return index, iu.size


def test_nested_loo_lambda_min_ties_and_nan():
    """Predictions constant along λ: every λ ties, λ_min is the first (largest) λ — cv.glmnet's
    ``which(cvm == min(cvm))[1]``-style choice; a NaN outcome makes the outer fits that use it
    NaN at every λ: λ_min is the first λ too (numpy's min of a NaN array is NaN); the others
    are unaffected."""
    n, L = 4, 6
    index, P = _pairs(n)
    lam = np.geomspace(1.0, 0.01, L)
    pair_lam = np.tile(lam, (P, 1))
    outer_lam = np.tile(lam, (n, 1))
    flat = np.ones((P, 2, L))
    Y = np.array([[1.0, 2.0, 3.0, 4.0]])
    got = compiled.nested_loo_lambda_min(flat, pair_lam, np.full(P, L), outer_lam, np.full(n, L), index, Y)
    assert got.tolist() == [0, 0, 0, 0] and got.dtype.kind == "i"  # indices, not floats
    # predictions improving down the path for every pair: λ_min the last used λ of each outer fit
    improving = np.zeros((P, 2, L))
    iu, ju = np.triu_indices(n, 1)
    for pair in range(P):
        for slot, subject in enumerate((iu[pair], ju[pair])):
            improving[pair, slot] = Y[0, subject] * (1 - lam)  # error Y·λ, smallest at the last λ
    outer_used = np.array([6, 4, 5, 3])
    got = compiled.nested_loo_lambda_min(improving, pair_lam, np.full(P, L), outer_lam, outer_used, index, Y)
    assert got.tolist() == (outer_used - 1).tolist()
    Y_nan = np.array([[1.0, np.nan, 3.0, 4.0]])
    got = compiled.nested_loo_lambda_min(improving, pair_lam, np.full(P, L), outer_lam, outer_used, index, Y_nan)
    assert got.tolist() == [0, 3, 0, 0]  # subject 1's own outer fit does not use its outcome


def test_nested_loo_lambda_min_with_two_point_fold_paths():
    """Fold paths of two λs (a fold path stopped early) a decade apart, outer λs between them:
    lambda.interp is linear in λ between the two points (np.interp), e.g. at λ = 0.2 on [1, 0.1]
    the weight of the first point is (0.2 − 0.1) / 0.9, not that of the nearer point in log λ."""
    rng = np.random.default_rng(9)
    n, L = 5, 4
    index, P = _pairs(n)
    pair_lam = np.zeros((P, L))
    pair_lam[:, :2] = [1.0, 0.1]
    pair_pred = rng.normal(size=(P, 2, L))
    outer_lam = np.tile([1.0, 0.5, 0.2, 0.12], (n, 1))
    Y = rng.normal(size=(1, n))
    got = compiled.nested_loo_lambda_min(pair_pred, pair_lam, np.full(P, 2), outer_lam, np.full(n, L), index, Y)
    for i in range(n):
        err = []
        for j in range(n):
            if j != i:
                pred = pair_pred[index[i, j], int(j > i), :2]
                err.append((Y[0, j] - np.interp(outer_lam[i], [0.1, 1.0], pred[::-1])) ** 2)
        cvm = np.mean(err, axis=0)
        assert got[i] == np.flatnonzero(cvm <= cvm.min() + 1e-12)[0]


def test_lasso_path_where_the_first_predictor_leaves_and_returns():
    """x0 correlated 0.7 with x1 and x2 (uncorrelated), c = G (−0.3, 1, 1)/2: x0 enters first, leaves
    when x1 and x2 are in (its least-squares coefficient is negative) and re-enters with the other
    sign. For the lasso the Cholesky factor is carried from λ to λ, so the exit removes the factor's
    first row (Givens rotations, where every row of R has norm exactly 1). Reference: the
    independent coordinate descent (1e-9, as in the correlated tests; condition number of G ≈ 200)."""
    G = np.array([[1.0, 0.7, 0.7], [0.7, 1.0, 0.0], [0.7, 0.0, 1.0]])
    c = G @ np.array([-0.3, 1.0, 1.0]) * 0.5
    pf = np.ones(3)
    lam = np.max(np.abs(c)) * np.geomspace(1.0, 1e-3, 40)
    beta, n_used, _, failed = _solve(G, c, lam, pf, 1.0)
    assert not failed.any() and n_used[0] == 40
    expected = np.zeros((40, 3))
    for k, l in enumerate(lam):
        expected[k] = _coordinate_descent(G, c, l, pf, 1.0, start=expected[k - 1] if k else None)
    np.testing.assert_allclose(beta[0], expected, rtol=0, atol=1e-9)
    support = expected != 0
    first_out = np.flatnonzero(support[:, 1:].all(axis=1) & ~support[:, 0])
    assert support[1, 0] and not support[1, 1:].any() and first_out.size  # x0 first; later out with x1, x2 in
    assert support[-1].all() and np.sign(expected[-1, 0]) != np.sign(expected[1, 0])  # back, other sign


def _reference_lambda_min(pair_pred, pair_lam, pair_n_used, outer_lam, outer_n_used, index, Y):
    """cv.glmnet's inner loop written out with numpy, one outer fit at a time: each inner fold's
    predictions interpolated linearly in λ (np.interp) at the outer fit's λs, clamped to the fold's
    used path; cvm the mean squared error over the n − 1 folds; λ_min the first λ at the minimum."""
    n, Q = index.shape[0], Y.shape[0]
    result = np.zeros(n * Q, dtype=int)
    for i in range(n):
        for q in range(Q):
            o = i * Q + q
            errors = []
            for j in range(n):
                if j == i:
                    continue
                b = int(index[i, j]) * Q + q
                m = int(pair_n_used[b])
                lam, pred = pair_lam[b, :m], pair_pred[b, int(j > i), :m]
                s = np.clip(outer_lam[o], lam[-1], lam[0])
                errors.append((Y[q, j] - np.interp(s, lam[::-1], pred[::-1])) ** 2)
            cvm = np.mean(errors, axis=0)[: int(outer_n_used[o])]
            result[o] = np.flatnonzero(cvm == cvm.min())[0]
    return result


def _shared_grid_case(n, L, Q=1, seed=0):
    """Every fold path and outer fit on the same λ grid (interpolation exact at the grid points)."""
    index, P = _pairs(n)
    lam = np.geomspace(1.0, 0.01, L)
    return index, P, np.tile(lam, (P * Q, 1)), np.tile(lam, (n * Q, 1)), np.random.default_rng(seed)


def test_nested_loo_lambda_min_resolves_tiny_errors():
    """Predictions within 1e-9 of the outcomes: the mean squared errors (~1e-18, 1e-20, 9e-20 at the
    three λs) are compared as they are, λ_min the second λ — not drowned by adding them to an
    offset of order 1, where they would all round to the same number (λ_min then the first λ)."""
    n, L = 5, 3
    index, P, pair_lam, outer_lam, rng = _shared_grid_case(n, L)
    Y = rng.normal(size=(1, n))
    iu, ju = np.triu_indices(n, 1)
    pair_pred = np.zeros((P, 2, L))
    for pair in range(P):
        for slot, subject in enumerate((iu[pair], ju[pair])):
            pair_pred[pair, slot] = Y[0, subject] + np.array([1e-9, 1e-10, 3e-10])
    args = (pair_pred, pair_lam, np.full(P, L), outer_lam, np.full(n, L), index, Y)
    got = compiled.nested_loo_lambda_min(*args)
    assert got.tolist() == [1] * n == _reference_lambda_min(*args).tolist()


def test_nested_loo_lambda_min_with_two_lambdas_only():
    """L = 2 (fold paths and outer fits of two λs), fold path [1, 0.1], outer λs [1, 0.2]: at λ = 0.2
    the prediction is the linear interpolation, weight (0.2 − 0.1)/0.9 on the first point. Every
    prediction misses its outcome by +1 at λ = 1 and by −1.1 at λ = 0.1, so the interpolated miss at
    0.2 is 1/9 − 1.1·8/9 ≈ −0.87: λ_min = 0.2 (index 1); taking the fold's last point there instead
    (miss −1.1, worse than +1) would give index 0."""
    n, L = 4, 2
    index, P = _pairs(n)
    pair_lam = np.tile([1.0, 0.1], (P, 1))
    outer_lam = np.tile([1.0, 0.2], (n, 1))
    Y = np.array([[0.3, -1.2, 2.0, 0.7]])
    iu, ju = np.triu_indices(n, 1)
    pair_pred = np.zeros((P, 2, L))
    for pair in range(P):
        for slot, subject in enumerate((iu[pair], ju[pair])):
            pair_pred[pair, slot] = Y[0, subject] + np.array([1.0, -1.1])
    args = (pair_pred, pair_lam, np.full(P, L), outer_lam, np.full(n, L), index, Y)
    got = compiled.nested_loo_lambda_min(*args)
    assert got.tolist() == [1] * n == _reference_lambda_min(*args).tolist()


def test_nested_loo_lambda_min_with_one_lambda_fold_paths():
    """Fold paths that stopped after one λ (the rest of their row zero): that λ's prediction at every
    outer λ, so cvm is the same at every λ and λ_min is the first."""
    n, L = 4, 3
    index, P = _pairs(n)
    pair_lam = np.zeros((P, L))
    pair_lam[:, 0] = 0.5
    pair_pred = np.random.default_rng(3).normal(size=(P, 2, L))
    outer_lam = np.tile([1.0, 0.5, 0.1], (n, 1))
    Y = np.array([[0.3, -1.2, 2.0, 0.7]])
    args = (pair_pred, pair_lam, np.full(P, 1), outer_lam, np.full(n, L), index, Y)
    got = compiled.nested_loo_lambda_min(*args)
    assert got.tolist() == [0] * n == _reference_lambda_min(*args).tolist()


def test_nested_loo_lambda_min_with_two_subjects():
    """n = 2: each outer fit has a single inner fold (the other subject); its error falls along the
    path, so λ_min is the last λ."""
    n, L = 2, 4
    index, P, pair_lam, outer_lam, _ = _shared_grid_case(n, L)
    Y = np.array([[1.0, -2.0]])
    pair_pred = np.zeros((P, 2, L))
    pair_pred[0, 0] = Y[0, 0] + np.array([0.8, 0.4, 0.2, 0.1])
    pair_pred[0, 1] = Y[0, 1] - np.array([0.9, 0.5, 0.3, 0.05])
    args = (pair_pred, pair_lam, np.full(P, L), outer_lam, np.full(n, L), index, Y)
    got = compiled.nested_loo_lambda_min(*args)
    assert got.tolist() == [3, 3] == _reference_lambda_min(*args).tolist()


def test_nested_loo_lambda_min_converts_index_arrays():
    """Counts and the pair index given as integer-valued floats (e.g. read back from a table) are
    converted to integers: the same λ_min as the reference (two response rows, random predictions)."""
    n, L, Q = 5, 6, 2
    index, P, pair_lam, outer_lam, rng = _shared_grid_case(n, L, Q=Q, seed=4)
    outer_lam = outer_lam * np.repeat(rng.uniform(0.5, 1.5, n * Q), L).reshape(n * Q, L)  # between grid points
    pair_pred = rng.normal(size=(P * Q, 2, L))
    Y = rng.normal(size=(Q, n))
    pair_used = rng.integers(2, L + 1, P * Q)
    outer_used = rng.integers(1, L + 1, n * Q)
    expected = _reference_lambda_min(pair_pred, pair_lam, pair_used, outer_lam, outer_used, index, Y)
    got = compiled.nested_loo_lambda_min(pair_pred, pair_lam, pair_used.astype(float), outer_lam,
                                         outer_used.astype(float), index.astype(float), Y)
    assert got.dtype.kind == "i"
    np.testing.assert_array_equal(got, expected)
    assert len(set(expected.tolist())) > 1  # not all at one index


def test_exact_guess_on_a_correlated_path_needs_one_round_per_lambda():
    """The lasso path of the previous test (a predictor enters, leaves and returns with the other sign),
    40 λs from above λ_max. The solutions (independent coordinate descent) and gradients at
    λ_{k−2}, λ_{k−1} extrapolated linearly to λ_k (the solver's guess, written out here) predict
    the exact signed support at every λ_k, k ≥ 2, and the first two λs have none: so the solver
    needs one active-set round per λ. With a budget of one round it must not fail, and its path
    is the reference's (1e-9, as above). A guess that extrapolates wrongly (other weights, signs,
    λs) adds rounds at the λs where the support changes, and the budget of one fails there."""
    G = np.array([[1.0, 0.7, 0.7], [0.7, 1.0, 0.0], [0.7, 0.0, 1.0]])
    c = G @ np.array([-0.3, 1.0, 1.0]) * 0.5
    pf = np.ones(3)
    L, alpha = 40, 1.0
    lam = np.max(np.abs(c)) * np.geomspace(1.3, 1e-3, L)
    ref = np.zeros((L, 3))
    for k, l in enumerate(lam):
        ref[k] = _coordinate_descent(G, c, l, pf, alpha, start=ref[k - 1] if k else None)
    grad = c - ref @ G
    sign = np.sign(ref)
    assert not sign[:2].any() and len({tuple(x) for x in sign}) == 5  # 0, +00, +++, 0++, −++
    for k in range(2, L):
        rho = (lam[k] - lam[k - 1]) / (lam[k - 1] - lam[k - 2])
        guess = sign[k - 1].copy()
        stays = (ref[k - 1] + rho * (ref[k - 1] - ref[k - 2])) * sign[k - 1] > 0
        guess[(sign[k - 1] != 0) & ~stays] = 0
        g = grad[k - 1] + rho * (grad[k - 1] - grad[k - 2])
        enters = (sign[k - 1] == 0) & (np.abs(g) > lam[k] * alpha)
        guess[enters] = np.sign(g[enters])
        np.testing.assert_array_equal(guess, sign[k])
    beta, n_used, _, failed = _solve(G, c, lam, pf, alpha, settings=(1e-10, 1, 10, 1e-5, 0.999, 5))
    assert not failed.any() and n_used[0] == L
    np.testing.assert_allclose(beta[0], ref, rtol=0, atol=1e-9)


@pytest.mark.parametrize("case", ["one_at_a_time", "together", "three"])
def test_exits_without_a_guess_step_to_each_zero_crossing(case):
    """G = I, lasso, the path going up from λ = 0.1 to 0.5 (the second λ has no guess): β_j = c_j − λ s_j
    for |c_j| > λ, so the predictors with 0.1 < |c_j| < 0.5 must leave. The first round (all four
    active) gives them the wrong sign; the solver steps from the current point towards that solution
    to the first zero crossing, t_j = (|c_j| − 0.1) / 0.4, and drops the predictors that cross there.
    "one_at_a_time": |c| = 0.3 and 0.2 cross at t = 0.5 and 0.25, one per round: three rounds (two
    steps, then the feasible solve that passes the KKT check), so a budget of 3 succeeds and 2 fails.
    "together": both |c| = 0.3 cross at t = 0.5 in one step: two rounds, budget 2 succeeds, 1 fails.
    "three": |c| = 0.3, 0.2, 0.15 cross at t = 0.5, 0.25, 0.125: four rounds (three steps in a row)."""
    c, rounds = {"one_at_a_time": ([0.8, -0.6, 0.3, -0.2, 0.05], 3), "together": ([0.8, -0.6, 0.3, -0.3, 0.05], 2),
                 "three": ([0.8, 0.15, 0.3, -0.2, 0.05], 4)}[case]
    c = np.array(c)
    lam = np.array([0.1, 0.5])
    beta, _, _, failed = _solve(np.eye(5), c, lam, np.ones(5), 1.0, settings=(1e-10, rounds, 10, 1e-5, 0.999, 5))
    assert not failed.any()
    np.testing.assert_allclose(beta[0], _soft_threshold_solution(c, lam, np.ones(5), 1.0), rtol=0, atol=1e-15)
    _, _, _, failed = _solve(np.eye(5), c, lam, np.ones(5), 1.0, settings=(1e-10, rounds - 1, 10, 1e-5, 0.999, 5))
    assert failed.all()


def test_gradient_uses_a_coefficient_equal_to_one():
    """Two predictors correlated 0.5, c = (1.25, 0.6), lasso at λ = 0.25: with x0 alone β0 = 1.25 − 0.25 = 1
    exactly, and x1's gradient 0.6 − 0.5·1 = 0.1 < λ keeps it out (KKT holds: the solution is (1, 0)).
    Both enter in the first (all-at-once) round, x1 with the wrong sign, so it is stepped out and the
    check of x1's gradient runs with β0 exactly 1."""
    G = np.array([[1.0, 0.5], [0.5, 1.0]])
    c = np.array([1.25, 0.6])
    beta, _, _, failed = _solve(G, c, np.array([2.0, 0.25]), np.ones(2), 1.0)
    assert not failed.any()
    np.testing.assert_array_equal(beta[0], [[0.0, 0.0], [1.0, 0.0]])


def test_one_violator_at_a_time_counts_every_round():
    """The four simultaneous entries of test_simultaneous_entries_need_the_all_at_once_rounds with the
    all-at-once rounds switched off take five rounds: a budget of four fails, five succeeds."""
    c = np.array([0.51, -0.52, 0.53, -0.54, 0.1])
    lam = np.array([1.0, 0.3, 0.2])
    _, _, _, failed = _solve(np.eye(5), c, lam, np.ones(5), 1.0, settings=(1e-10, 4, 0, 1e-5, 0.999, 5))
    assert failed.all()
    beta, _, _, failed = _solve(np.eye(5), c, lam, np.ones(5), 1.0, settings=(1e-10, 5, 0, 1e-5, 0.999, 5))
    assert not failed.any()
    np.testing.assert_allclose(beta[0], _soft_threshold_solution(c, lam, np.ones(5), 1.0), rtol=0, atol=1e-15)


def test_solve_paths_defaults_and_index_types():
    """By default the coefficient paths are returned; the problem-to-Gram index may come as integer-valued
    floats (it is converted). Two Gram matrices, both I (the point here is the index's type), problems
    mapped to sets 1 and 0; G = I: soft-thresholding in closed form."""
    G = np.stack([np.eye(3), np.eye(3)])
    c = np.array([[0.6, -0.4, 0.3], [0.2, 0.5, -0.7]])
    lam = np.tile(np.geomspace(1.0, 0.05, 8), (2, 1))
    pf = np.ones(3)
    beta, n_used, pred, failed = compiled.solve_paths(G, np.array([1.0, 0.0]), c, np.zeros((2, 3), dtype=bool), lam,
                                                      np.array([8, 8]), pf, 1.0, False, GLMNET)
    assert beta is not None and pred is None and not failed.any()
    for b in range(2):
        np.testing.assert_allclose(beta[b], _soft_threshold_solution(c[b], lam[b], pf, 1.0), rtol=0, atol=1e-15)


def test_a_step_drops_only_the_crossing_predictor_while_others_grow():
    """The correlated lasso of the tests above from λ = 0.02 (signs + + +) straight to 0.005 (0 + +: x0
    has left; coordinate-descent reference): the first round at 0.005 gives x0 the wrong sign while x1
    and x2 grow (0.04 → 0.39), so the step to x0's zero crossing must drop x0 alone, and the next round
    is the solution: two rounds (a budget of 2 succeeds, 1 fails). λ = 0.02 itself takes two rounds
    from zero (add all three, confirm)."""
    G = np.array([[1.0, 0.7, 0.7], [0.7, 1.0, 0.0], [0.7, 0.0, 1.0]])
    c = G @ np.array([-0.3, 1.0, 1.0]) * 0.5
    lam = np.array([0.02, 0.005])
    ref = np.array([_coordinate_descent(G, c, l, np.ones(3), 1.0) for l in lam])
    assert (np.sign(ref) == [[1, 1, 1], [0, 1, 1]]).all() and (ref[1, 1:] > ref[0, 1:]).all()
    beta, _, _, failed = _solve(G, c, lam, np.ones(3), 1.0, settings=(1e-10, 2, 10, 1e-5, 0.999, 5))
    assert not failed.any()
    np.testing.assert_allclose(beta[0], ref, rtol=0, atol=1e-9)  # as the correlated tests above
    _, _, _, failed = _solve(G, c, lam, np.ones(3), 1.0, settings=(1e-10, 1, 10, 1e-5, 0.999, 5))
    assert failed.all()


def test_entries_after_a_step_are_still_added_all_at_once():
    """The previous case with two more predictors, uncorrelated with the others, whose |c| (0.015, 0.012)
    lies between the two λs: at 0.005 the first round steps x0 out (t > 0: progress), the second solves
    on x1, x2 and finds x3 and x4 violating, which enter together (the all-at-once rounds stay on after a
    step that made progress), and the third is the solution: three rounds (budget 3 succeeds, 2 fails);
    adding them one at a time would take four."""
    G = np.eye(5)
    G[:3, :3] = [[1.0, 0.7, 0.7], [0.7, 1.0, 0.0], [0.7, 0.0, 1.0]]
    c = np.r_[G[:3, :3] @ np.array([-0.3, 1.0, 1.0]) * 0.5, 0.015, -0.012]
    lam = np.array([0.02, 0.005])
    ref = np.array([_coordinate_descent(G, c, l, np.ones(5), 1.0) for l in lam])
    assert (np.sign(ref) == [[1, 1, 1, 0, 0], [0, 1, 1, 1, -1]]).all()
    beta, _, _, failed = _solve(G, c, lam, np.ones(5), 1.0, settings=(1e-10, 3, 10, 1e-5, 0.999, 5))
    assert not failed.any()
    np.testing.assert_allclose(beta[0], ref, rtol=0, atol=1e-9)  # as the correlated tests above
    _, _, _, failed = _solve(G, c, lam, np.ones(5), 1.0, settings=(1e-10, 2, 10, 1e-5, 0.999, 5))
    assert failed.all()
