"""Elastic net equivalent to R glmnet (gaussian) and ``cv.glmnet(nfolds = n, grouped = FALSE)``.

What glmnet solves (Friedman, Hastie & Tibshirani 2010, J Stat Softw 33(1), eq. 1), for
``family = "gaussian"``, ``standardize = TRUE``, ``intercept = TRUE`` and uniform weights:

* every predictor is centred and divided by its SD with the **1/n** convention, and so is
  the outcome (glmnet standardises y too, then reports λ and coefficients back in the units
  of y; see ``?glmnet``, "standardize");
* on the standardised data it minimises
  ``1/(2n) ||y − Xβ||² + λ Σ_j pf_j [(1 − α)/2 β_j² + α |β_j|]``
  with the penalty factors rescaled to sum to the number of predictors (a factor of 0 leaves a
  predictor unpenalised);
* the λ sequence: ``λ_max = max_j |x_j' r| / (n pf_j max(α, 0.001))`` (r the residual after
  the unpenalised predictors, all on the standardised scale), then ``n_lambda`` values
  log-spaced down to ``λ_max · lambda.min.ratio`` (1e-4 if n > p, else 1e-2); the path stops
  early (at least 5 λs) when the fraction of deviance explained changes by less than 1e-5
  relative or exceeds 0.999 (glmnet.control ``fdev``, ``devmax``);
* ``cv.glmnet`` refits every fold on the full-data λ sequence (no early stop), predicts the
  left-out subject(s), and with ``grouped = FALSE`` (forced for leave-one-out) reports
  ``cvm`` = mean squared error over subjects, ``cvsd = sqrt(mean((e² − cvm)²) / (n − 1))``,
  ``λ_min`` = the largest λ with the minimum cvm and ``λ_1se`` = the largest λ whose cvm is
  within one cvsd of it.

How it is solved here (plain numpy, many problems at once): the standardised Gram matrix
and ``X'y`` of every problem (a fold, a permutation, a bootstrap sample — each one a weight
vector over subjects) are formed with one matrix product; then, λ by λ down the path and
warm-started from the previous λ, an active-set method finds the exact optimum: solve the
stationarity equations on the active set with the current signs,
``(G_AA + λ(1 − α) diag(pf_A)) β_A = c_A − λ α pf_A ∘ s_A``, drop coefficients whose sign
flipped, add predictors violating ``|c_j − G_j β| ≤ λ α pf_j``, repeat until the KKT
conditions hold (a batched coordinate-descent fallback catches the rare cycling case). The
solutions are exact to floating point, so agreement with glmnet is limited only by glmnet's
own convergence threshold. Tested against R glmnet 4.1.6 in ``tests/group/test_elasticnet.py``
(reference values from ``scripts/glmnet_reference.R``).

On top: nested cross-validation (outer leave-one-out; inner ``cv.glmnet`` on the outer
training set picks λ_min; the outer subject is predicted at it), a permutation test of the
nested-CV R², and bootstrap selection frequencies. All randomness comes from
``numpy.random.SeedSequence(seed)`` spawned once per permutation / bootstrap, so the results do
not depend on how the work is split over processes (``n_jobs``).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "GlmnetCV",
    "glmnet_lambda_path",
    "nested_cv",
    "permutation_test",
    "bootstrap_selection",
    "TooFewSubjectsError",
]

#: glmnet.control() defaults that shape the computed λ path.
FDEV = 1e-5
DEVMAX = 0.999
MNLAM = 5

#: Relative tolerance of the KKT check for a predictor at the edge of entering.
_KKT_RTOL = 1e-10
_MAX_ACTIVE_SET_ROUNDS = 500
#: Elements (B·p²) of the Gram stack handled per batch (memory bound: 8 bytes each, a few copies).
_BATCH_ELEMENTS = 3_000_000


class TooFewSubjectsError(ValueError):
    """A model has fewer usable subjects than the configured minimum."""


# ---------------------------------------------------------------------------------------
# batched standardised moments


@dataclass
class _Problems:
    """Standardised problems, one row per weight vector (a fold, a resample, a permutation)."""

    G: np.ndarray  # (B, p, p) standardised Gram (weights normalised to sum 1)
    c: np.ndarray  # (B, p) standardised x'y
    xm: np.ndarray  # (B, p) weighted means of the (pre-scaled) predictors
    xs: np.ndarray  # (B, p) weighted SDs (1/n)
    ym: np.ndarray  # (B,)
    ys: np.ndarray  # (B,)
    excluded: np.ndarray  # (B, p) bool: constant predictor in this problem (never enters)


def _moments(x0: np.ndarray, y: np.ndarray, w: np.ndarray) -> _Problems:
    """Weighted standardisation of ``x0`` (n, p) and ``y`` (B, n) under weights ``w`` (B, n)."""
    n, p = x0.shape
    w = w / w.sum(axis=1, keepdims=True)
    xm = w @ x0
    outer = (x0[:, :, None] * x0[:, None, :]).reshape(n, p * p)
    sxx = (w @ outer).reshape(-1, p, p) - xm[:, :, None] * xm[:, None, :]
    xv = np.clip(np.einsum("bjj->bj", sxx), 0.0, None)
    excluded = xv <= 1e-20
    xs = np.where(excluded, 1.0, np.sqrt(xv))
    ym = np.einsum("bi,bi->b", w, y)
    yc = y - ym[:, None]
    ys = np.sqrt(np.einsum("bi,bi->b", w, yc * yc))
    ys = np.where(ys > 0, ys, 1.0)
    sxy = (w * yc) @ x0
    G = sxx / (xs[:, :, None] * xs[:, None, :])
    c = sxy / (xs * ys[:, None])
    if excluded.any():
        G = np.where(excluded[:, :, None] | excluded[:, None, :], 0.0, G)
        c = np.where(excluded, 0.0, c)
    idx = np.arange(p)
    G[:, idx, idx] = 1.0  # exactly 1 on the standardised scale (and a placeholder for excluded predictors)
    return _Problems(G, c, xm, xs, ym, ys, excluded)


# ---------------------------------------------------------------------------------------
# the λ path solver


def _lambda_max_std(prob: _Problems, pf: np.ndarray, alpha: float) -> np.ndarray:
    """λ_max on the standardised scale (glmnet: after fitting the unpenalised predictors)."""
    unpen = pf <= 0
    g = prob.c.copy()
    if unpen.any():
        u = np.flatnonzero(unpen)
        G_uu = prob.G[:, u][:, :, u] + np.where(prob.excluded[:, u], 1.0, 0.0)[:, :, None] * np.eye(len(u))
        beta_u = np.linalg.solve(G_uu, prob.c[:, u][..., None])[..., 0]
        g = prob.c - np.einsum("bju,bu->bj", prob.G[:, :, u], beta_u)
    ratio = np.where(unpen[None, :] | prob.excluded, 0.0, np.abs(g) / np.where(unpen, 1.0, pf)[None, :])
    return ratio.max(axis=1) / max(alpha, 1e-3)


def _solve_on_active(G, gidx, rhs, A, l2):
    """Solve ``(G_AA + diag(l2_A)) x_A = rhs_A`` per problem (x = 0 off A).

    Problems are grouped by the size of their active set and each group is solved on its
    compressed k×k systems (LAPACK cost ∝ k³ instead of p³).
    """
    T, p = A.shape
    out = np.zeros((T, p))
    size = A.sum(axis=1)
    # large active sets: the masked p×p system (gathering a k×k block costs about as much as
    # solving it); small ones: compressed k×k systems grouped by k
    big = np.flatnonzero(size > p // 2)
    if big.size:
        Ab = A[big]
        M = G[gidx[big]] * (Ab[:, :, None] & Ab[:, None, :])
        diag = np.arange(p)
        M[:, diag, diag] = np.where(Ab, M[:, diag, diag] + l2[big], 1.0)
        out[big] = np.linalg.solve(M, np.where(Ab, rhs[big], 0.0)[..., None])[..., 0]
    small = np.flatnonzero((size <= p // 2) & (size > 0))
    if small.size:
        order = np.argsort(~A[small], axis=1, kind="stable")  # active predictors first
        for k in np.unique(size[small]):
            pick = np.flatnonzero(size[small] == k)
            rows = small[pick]
            cols = order[pick, :k]
            flat = (gidx[rows] * (p * p))[:, None, None] + cols[:, :, None] * p + cols[:, None, :]
            sub = np.take(G.reshape(-1), flat)
            diag = np.arange(k)
            sub[:, diag, diag] += np.take_along_axis(l2[rows], cols, axis=1)
            x = np.linalg.solve(sub, np.take_along_axis(rhs[rows], cols, axis=1)[..., None])[..., 0]
            out[rows[:, None], cols] = x
    return out


def _solve_active_set(G, gidx, c, beta, active, sign, l1, l2, unpen, excluded):
    """Exact elastic-net optimum at one λ for a stack of problems, warm-started.

    ``G[gidx[t]]`` is the Gram matrix of problem t; the other arguments are per problem.
    A primal active-set method for the strictly convex problem restricted to one orthant at
    a time (Lawson & Hanson 1974, ch. 23, applied to β = β⁺ − β⁻): solve the stationarity
    equations on the active set with its signs; if a coefficient would change sign, step to
    the first zero crossing and drop it; otherwise add the predictor that violates
    ``|c_j − G_j β| ≤ λ α pf_j`` most. The objective decreases at every step, so it cannot
    cycle. On the first round every violator is added at once (a primal–dual step, which is
    usually exact with warm starts on glmnet's fine λ grid).

    Returns (beta, active, sign, converged mask).
    """
    B, p = c.shape
    idx = np.arange(p)
    todo = np.arange(B)
    converged = np.zeros(B, dtype=bool)
    pen = ~unpen
    rounds = 0
    full_range = gidx.size == G.shape[0] and np.array_equal(gidx, np.arange(G.shape[0]))
    for _ in range(_MAX_ACTIVE_SET_ROUNDS):
        if todo.size == 0:
            break
        A = active[todo]
        s = sign[todo]
        cur = beta[todo]
        ct = c[todo]
        l1t = l1[todo]
        b = _solve_on_active(G, gidx[todo], np.where(A, ct - l1t * s, 0.0), A, l2[todo])
        wrong = A & pen & (b * s <= 0.0)
        infeasible = wrong.any(axis=1)
        if infeasible.any():
            # move from the current (sign-consistent) point towards b up to the first zero crossing
            with np.errstate(divide="ignore", invalid="ignore"):
                t_cross = np.where(wrong, cur / (cur - b), np.inf)
            t = np.where(infeasible, np.clip(np.min(t_cross, axis=1), 0.0, 1.0), 1.0)
            new = cur + t[:, None] * (b - cur)
            hit = (A & pen & (new * s <= 0.0)) | (wrong & (t_cross <= t[:, None] * (1 + 1e-12)))
            hit &= infeasible[:, None]
            new = np.where(hit, 0.0, new)
            A_new = A & ~hit
        else:
            new, A_new = b, A
        Gt = G if (full_range and todo.size == B) else G[gidx[todo]]
        grad = ct - np.einsum("bjk,bk->bj", Gt, new)
        excess = np.where(~A_new & pen & ~excluded[todo], np.abs(grad) - l1t * (1.0 + _KKT_RTOL) - 1e-14, -np.inf)
        violated = (excess > 0) & ~infeasible[:, None]
        if rounds < 3:  # primal-dual steps first; then one predictor at a time (no cycling)
            add = violated
        else:
            best = np.argmax(excess, axis=1)
            add = violated & (idx[None, :] == best[:, None])
        A_new = A_new | add
        s_new = np.where(add, np.sign(grad), np.where(A_new, s, 0.0))
        ok = ~infeasible & ~violated.any(axis=1)
        beta[todo] = new
        active[todo] = A_new
        sign[todo] = s_new
        converged[todo[ok]] = True
        todo = todo[~ok]
        rounds += 1
    if todo.size:
        Gt = G[gidx[todo]]
        beta[todo] = _coordinate_descent(Gt, c[todo], beta[todo], l1[todo], l2[todo], excluded[todo])
        active[todo] = (beta[todo] != 0) | unpen[None, :]
        sign[todo] = np.sign(beta[todo])
        converged[todo] = True
    return beta, active, sign, converged


def _coordinate_descent(G, c, beta, l1, l2, excluded, tol=1e-24, max_sweeps=20_000):
    """Batched cyclic coordinate descent (covariance updates, Friedman et al. 2010 eq. 5-8)."""
    beta = beta.copy()
    grad = c - np.einsum("bjk,bk->bj", G, beta)
    p = c.shape[1]
    for _ in range(max_sweeps):
        biggest = np.zeros(c.shape[0])
        for j in range(p):
            gjj = G[:, j, j]
            z = grad[:, j] + gjj * beta[:, j]
            new = np.sign(z) * np.maximum(np.abs(z) - l1[:, j], 0.0) / (gjj + l2[:, j])
            new = np.where(excluded[:, j], 0.0, new)
            delta = new - beta[:, j]
            if np.any(delta):
                grad -= G[:, :, j] * delta[:, None]
                beta[:, j] = new
                biggest = np.maximum(biggest, delta * delta)
        if biggest.max() < tol:
            break
    return beta


def _solve_path(prob: _Problems, lam_std: np.ndarray, pf: np.ndarray, alpha: float,
                n_valid: np.ndarray, early_stop: bool, zrows: np.ndarray | None = None, keep_beta: bool = True):
    """Solve every problem along its own standardised λ sequence.

    Parameters
    ----------
    lam_std : (B, L) λ on each problem's standardised scale (λ / ys).
    n_valid : (B,) number of leading λs to solve (shorter paths of early-stopped parents).
    early_stop : apply glmnet's fdev/devmax stopping rule (computed paths only).
    zrows : (B, r, p), optional
        Standardised predictor rows to predict along the path (standardised outcome units).

    Returns
    -------
    beta : (B, L, p) standardised coefficients (zeros beyond each problem's end), or None
    n_used : (B,) number of λs solved
    pred : (B, r, L) predictions of ``zrows`` (None without zrows)
    """
    B, L = lam_std.shape
    p = prob.c.shape[1]
    unpen = pf <= 0
    out = np.zeros((B, L, p)) if keep_beta else None
    pred = None if zrows is None else np.zeros((B, zrows.shape[1], L))
    beta = np.zeros((B, p))
    active = (np.broadcast_to(unpen, (B, p)) & ~prob.excluded).copy()
    sign = np.zeros((B, p))
    n_used = np.minimum(n_valid, L).astype(int).copy()
    alive = np.ones(B, dtype=bool)
    rsq_prev = np.zeros(B)
    l1w = alpha * pf
    l2w = (1.0 - alpha) * pf
    for k in range(L):
        run = np.flatnonzero(alive & (k < n_used))
        if run.size == 0:
            break
        lam = lam_std[run, k][:, None]
        c = prob.c[run]
        b, a, s, _ = _solve_active_set(prob.G, run, c, beta[run], active[run], sign[run], lam * l1w, lam * l2w,
                                       unpen, prob.excluded[run])
        beta[run], active[run], sign[run] = b, a, s
        if keep_beta:
            out[run, k] = b
        if zrows is not None:
            pred[run, :, k] = np.einsum("brp,bp->br", zrows[run], b)
        if early_stop:
            # fraction of deviance explained on the standardised scale (glmnet's rsq)
            Gb = np.einsum("bjk,bk->bj", prob.G[run] if run.size < B else prob.G, b)
            rsq = 2.0 * np.einsum("bj,bj->b", b, c) - np.einsum("bj,bj->b", b, Gb)
            if k + 1 >= MNLAM:
                stop = (rsq - rsq_prev[run] < FDEV * rsq) | (rsq > DEVMAX)
                n_used[run[stop]] = k + 1
                alive[run[stop]] = False
            rsq_prev[run] = rsq
    return out, n_used, pred


def _penalty_factor(pf, p: int) -> np.ndarray:
    pf = np.ones(p) if pf is None else np.asarray(pf, dtype=float).copy()
    if pf.shape != (p,) or np.any(pf < 0):
        raise ValueError(f"penalty_factor must be {p} non-negative numbers")
    if pf.sum() <= 0:
        raise ValueError("at least one predictor must be penalised")
    return pf * p / pf.sum()  # glmnet rescales the factors to sum to nvars


def _lambda_min_ratio(n: int, p: int, ratio) -> float:
    if ratio is not None:
        return float(ratio)
    return 1e-4 if n > p else 1e-2


def _batches(total: int, p: int):
    size = max(1, _BATCH_ELEMENTS // max(p * p, 1))
    for start in range(0, total, size):
        yield slice(start, min(total, start + size))


def _fit_computed_paths(x0, y, w, pf, alpha, n_lambda, ratio, predict_rows=None):
    """Full fits that compute their own λ path (glmnet with lambda = NULL), batched.

    ``predict_rows`` (B, r) optional subject indices to predict along each path; then the
    result has ``pred`` (B, r, L) in units of y and no ``beta``. Otherwise ``beta`` (B, L, p)
    holds the standardised coefficients. Always: ``lam`` (B, L) in units of y, ``n_used``
    and the moments ``xm, xs, ym, ys``.
    """
    B = y.shape[0]
    p = x0.shape[1]
    keys = ("lam", "n_used", "xm", "xs", "ym", "ys") + (("beta",) if predict_rows is None else ("pred",))
    results = {k: [] for k in keys}
    for sl in _batches(B, p):
        prob = _moments(x0, y[sl], w[sl])
        lam_max = _lambda_max_std(prob, pf, alpha)
        steps = np.arange(n_lambda)
        lam_std = lam_max[:, None] * np.exp(steps * math.log(ratio) / max(n_lambda - 1, 1))[None, :]
        zrows = None
        if predict_rows is not None:
            zrows = (x0[predict_rows[sl]] - prob.xm[:, None, :]) / prob.xs[:, None, :]
        beta, n_used, pred = _solve_path(prob, lam_std, pf, alpha, np.full(lam_std.shape[0], n_lambda), True,
                                         zrows=zrows, keep_beta=predict_rows is None)
        if predict_rows is None:
            results["beta"].append(beta)
        else:
            results["pred"].append(prob.ym[:, None, None] + prob.ys[:, None, None] * pred)
        results["lam"].append(lam_std * prob.ys[:, None])
        results["n_used"].append(n_used)
        for key in ("xm", "xs", "ym", "ys"):
            results[key].append(getattr(prob, key))
    return {k: np.concatenate(v) for k, v in results.items()}


def _fit_given_paths(x0, y, w, pf, alpha, lam, n_valid):
    """Fits on a supplied λ sequence (units of y), as glmnet(lambda = ...)."""
    B = y.shape[0]
    p = x0.shape[1]
    results = {k: [] for k in ("beta", "xm", "xs", "ym", "ys")}
    for sl in _batches(B, p):
        prob = _moments(x0, y[sl], w[sl])
        beta, _, _ = _solve_path(prob, lam[sl] / prob.ys[:, None], pf, alpha, n_valid[sl], False)
        results["beta"].append(beta)
        for key in ("xm", "xs", "ym", "ys"):
            results[key].append(getattr(prob, key))
    return {k: np.concatenate(v) for k, v in results.items()}


def _predict(fit: dict, rows: np.ndarray) -> np.ndarray:
    """Predictions (B, L) of each problem's fit for one pre-scaled predictor row per problem (B, p)."""
    z = (rows - fit["xm"]) / fit["xs"]
    return fit["ym"][:, None] + fit["ys"][:, None] * np.einsum("blp,bp->bl", fit["beta"], z)


# ---------------------------------------------------------------------------------------
# cross-validation


def _fold_ids(n: int, n_folds: int | None, rng: np.random.Generator | None) -> np.ndarray:
    """Fold of each subject: LOO (``None`` or n) or a seeded balanced K-fold split."""
    if n_folds is None or n_folds >= n:
        return np.arange(n)
    ids = np.arange(n) % n_folds
    return rng.permutation(ids) if rng is not None else ids


def _cv_batch(x0, Y, W, pf, alpha, n_lambda, ratio, fold_ids):
    """cv.glmnet for a stack of training sets (rows of W, responses Y), vectorised.

    ``fold_ids`` (B, n): the fold of each subject for problem b (-1 = not in that training set).
    Returns the full fits, cvm (B, L), cvsd, index of λ_min and λ_1se.
    """
    B, n = W.shape
    full = _fit_computed_paths(x0, Y, W, pf, alpha, n_lambda, ratio)
    L = full["lam"].shape[1]
    # one fold problem per (problem, fold), rows ordered by problem then fold
    n_folds = fold_ids.max(axis=1) + 1
    parent = np.repeat(np.arange(B), n_folds)
    fold = np.concatenate([np.arange(k) for k in n_folds])
    held = fold_ids[parent] == fold[:, None]  # (F, n)
    # cv.glmnet fits each fold on its own computed λ path (glmnet(lambda = NULL)) and predicts
    # at the full-data λs by linear interpolation of the coefficients in λ (predict.glmnet,
    # lambda.interp; λs outside the fold's path are clamped to its ends).
    size = held.sum(axis=1)
    r = int(size.max())
    order = np.argsort(~held, axis=1, kind="stable")[:, :r]  # held-out subjects first, padded
    fits = _fit_computed_paths(x0, Y[parent], W[parent] * ~held, pf, alpha, n_lambda, ratio, predict_rows=order)
    f_idx, slot = np.nonzero(np.arange(r)[None, :] < size[:, None])
    subj = order[f_idx, slot]
    own = fits["pred"][f_idx, slot]
    pred = _interpolate_in_lambda(own, fits["lam"][f_idx], fits["n_used"][f_idx], full["lam"][parent[f_idx]])
    err = (Y[parent[f_idx], subj][:, None] - pred) ** 2
    owner = parent[f_idx]
    count = np.bincount(owner, minlength=B).astype(float)
    cvm = np.zeros((B, L))
    np.add.at(cvm, owner, err)
    cvm /= count[:, None]
    dev = np.zeros((B, L))
    np.add.at(dev, owner, (err - cvm[owner]) ** 2)
    cvsd = np.sqrt(dev / count[:, None] / np.maximum(count - 1, 1)[:, None])
    i_min, i_1se = _select_lambda(cvm, cvsd, full["n_used"])
    return full, cvm, cvsd, i_min, i_1se


def _interpolate_in_lambda(values, lam, n_used, targets):
    """glmnet's lambda.interp: values (E, L) along each row's λ path, read at ``targets`` (E, T)."""
    E, L = values.shape
    rows = np.arange(E)[:, None]
    last = np.maximum(n_used - 1, 0)
    lam_first = lam[:, :1]
    lam_last = lam[np.arange(E), last][:, None]
    s = np.clip(targets, lam_last, lam_first)
    step = np.where(n_used > 1, np.log(lam[:, 1] / lam[:, 0]) if L > 1 else -1.0, -1.0)[:, None]
    k = np.floor(np.log(s / lam_first) / step + 1e-9).astype(int)
    left = np.clip(k, 0, last[:, None])
    right = np.minimum(left + 1, last[:, None])
    lam_l = lam[rows, left]
    lam_r = lam[rows, right]
    same = left == right
    frac = np.where(same, 1.0, (s - lam_r) / np.where(same, 1.0, lam_l - lam_r))
    return frac * values[rows, left] + (1.0 - frac) * values[rows, right]


def _select_lambda(cvm, cvsd, n_used):
    """cv.glmnet's getOptcv: largest λ at min cvm; largest λ with cvm ≤ cvm_min + cvsd_min."""
    B, L = cvm.shape
    valid = np.arange(L)[None, :] < n_used[:, None]
    masked = np.where(valid, cvm, np.inf)
    cmin = masked.min(axis=1)
    i_min = np.argmax(masked <= cmin[:, None], axis=1)  # λ decreasing: first index = largest λ
    semin = (cvm + cvsd)[np.arange(B), i_min]
    i_1se = np.argmax(masked <= semin[:, None], axis=1)
    return i_min, i_1se


def _loo_cv_batch(x0, Y, W, pf, alpha, n_lambda, ratio, n_folds=None, rngs=None):
    """_cv_batch with LOO (``n_folds`` None) or seeded K-fold folds over each problem's training subjects."""
    fold_ids = np.full(W.shape, -1)
    for b in range(W.shape[0]):
        members = np.flatnonzero(W[b] > 0)
        fold_ids[b, members] = _fold_ids(len(members), n_folds, None if rngs is None else rngs[b])
    return _cv_batch(x0, Y, W, pf, alpha, n_lambda, ratio, fold_ids)


# ---------------------------------------------------------------------------------------
# public API


def _prescale(X: np.ndarray):
    mean = X.mean(axis=0)
    sd = X.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    return (X - mean) / sd, mean, sd


def glmnet_lambda_path(X, y, alpha=0.5, n_lambda=100, lambda_min_ratio=None, penalty_factor=None) -> np.ndarray:
    """The λ sequence glmnet computes for ``X``, ``y`` (units of y, decreasing, early-stopped)."""
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    n, p = X.shape
    x0, _, _ = _prescale(X)
    pf = _penalty_factor(penalty_factor, p)
    full = _fit_computed_paths(x0, y[None, :], np.ones((1, n)), pf, alpha, n_lambda,
                               _lambda_min_ratio(n, p, lambda_min_ratio))
    return full["lam"][0, : full["n_used"][0]]


@dataclass
class GlmnetCV:
    """``cv.glmnet(x, y, alpha, nfolds = n, grouped = FALSE)`` for the gaussian family.

    Parameters
    ----------
    alpha : float
        Elastic-net mixing (1 lasso, 0 ridge).
    n_lambda : int
        Length of the λ path before glmnet's early stop.
    lambda_min_ratio : float or None
        Smallest λ as a fraction of λ_max; None = glmnet's default (1e-4 if n > p else 1e-2).
    penalty_factor : array-like or None
        Per-predictor penalty factors (0 = unpenalised), rescaled to sum to p as glmnet does.

    Attributes (after ``fit``)
    --------------------------
    lambdas_ : (L,) λ path in units of y
    cvm_, cvsd_ : (L,) leave-one-out mean squared error and its standard error
    lambda_min_, lambda_1se_, index_min_, index_1se_
    coef_path_ : (L, p) raw coefficients; intercept_path_ : (L,)
    coef_ : (p,) raw coefficients at λ_min; intercept_ : float
    coef_per_sd_ : (p,) coefficients at λ_min per SD of the predictor (1/n SD), units of y
    x_sd_ : (p,) predictor SDs (1/n)
    """

    alpha: float = 0.5
    n_lambda: int = 100
    lambda_min_ratio: float | None = None
    penalty_factor: object = None
    lambdas_: np.ndarray = field(default=None, init=False, repr=False)

    def fit(self, X, y) -> "GlmnetCV":
        X = np.asarray(X, dtype=float)
        y = np.asarray(y, dtype=float)
        n, p = X.shape
        if n < 3:
            raise TooFewSubjectsError(f"cv.glmnet needs at least 3 subjects (got {n})")
        x0, mean, sd = _prescale(X)
        pf = _penalty_factor(self.penalty_factor, p)
        ratio = _lambda_min_ratio(n, p, self.lambda_min_ratio)
        full, cvm, cvsd, i_min, i_1se = _loo_cv_batch(x0, y[None, :], np.ones((1, n)), pf, self.alpha,
                                                     self.n_lambda, ratio)
        L = int(full["n_used"][0])
        self.lambdas_ = full["lam"][0, :L]
        self.cvm_ = cvm[0, :L]
        self.cvsd_ = cvsd[0, :L]
        self.index_min_ = int(i_min[0])
        self.index_1se_ = int(i_1se[0])
        self.lambda_min_ = float(self.lambdas_[self.index_min_])
        self.lambda_1se_ = float(self.lambdas_[self.index_1se_])
        beta_std = full["beta"][0, :L]  # (L, p) standardised
        per_sd_fold = full["ys"][0] * beta_std / full["xs"][0]  # per unit of x0 (= per full-data SD)
        self.x_sd_ = sd
        self.x_mean_ = mean
        self.coef_per_sd_path_ = per_sd_fold
        self.coef_path_ = per_sd_fold / sd
        self.intercept_path_ = full["ym"][0] - per_sd_fold @ full["xm"][0] - self.coef_path_ @ mean
        self.coef_ = self.coef_path_[self.index_min_]
        self.coef_per_sd_ = per_sd_fold[self.index_min_]
        self.intercept_ = float(self.intercept_path_[self.index_min_])
        self.nzero_ = (beta_std != 0).sum(axis=1)
        self.n_, self.p_ = n, p
        return self

    def predict(self, X, index: int | None = None) -> np.ndarray:
        k = self.index_min_ if index is None else index
        return self.intercept_path_[k] + np.asarray(X, dtype=float) @ self.coef_path_[k]


def _spawn(seed: int, key: str, count: int) -> list[np.random.Generator]:
    """``count`` independent generators for task ``key`` (stable whatever the job split)."""
    ss = np.random.SeedSequence(entropy=int(seed), spawn_key=(zlib.crc32(key.encode()),))
    return [np.random.default_rng(child) for child in ss.spawn(count)]


def _nested_loo_predictions(x0, Y, pf, alpha, n_lambda, lambda_min_ratio):
    """Nested leave-one-out predictions for each row of Y (B, n).

    Outer fold i trains on all but i; its inner cv.glmnet's fold j trains on all but {i, j}.
    Since cv.glmnet fits each fold on its own computed λ path, that fit depends only on the
    training set, so one fit per unordered pair {i, j} serves both outer i (predicting j)
    and outer j (predicting i): n + n(n−1)/2 path fits per row of Y instead of n².
    """
    B, n = Y.shape
    p = x0.shape[1]
    eye = np.eye(n, dtype=bool)
    outer = _fit_computed_paths(x0, np.repeat(Y, n, axis=0), np.tile((~eye).astype(float), (B, 1)), pf, alpha,
                                n_lambda, _lambda_min_ratio(n - 1, p, lambda_min_ratio),
                                predict_rows=np.tile(np.arange(n), B)[:, None])
    iu, ju = np.triu_indices(n, 1)
    n_pairs = iu.size
    W_pair = np.ones((n_pairs, n))
    W_pair[np.arange(n_pairs), iu] = 0.0
    W_pair[np.arange(n_pairs), ju] = 0.0
    pairs = _fit_computed_paths(x0, np.repeat(Y, n_pairs, axis=0), np.tile(W_pair, (B, 1)), pf, alpha, n_lambda,
                                _lambda_min_ratio(n - 2, p, lambda_min_ratio),
                                predict_rows=np.tile(np.stack([iu, ju], axis=1), (B, 1)))
    pair_index = np.full((n, n), -1)
    pair_index[iu, ju] = np.arange(n_pairs)
    pair_index[ju, iu] = np.arange(n_pairs)
    oi, oj = np.nonzero(~eye)  # outer i, inner held-out j (row-major: j ascending within i)
    slot = (oj > oi).astype(int)  # the pair fit {i, j} predicts iu in slot 0, ju in slot 1
    b_idx = np.repeat(np.arange(B), oi.size)
    q = b_idx * n_pairs + np.tile(pair_index[oi, oj], B)
    o = b_idx * n + np.tile(oi, B)
    own = pairs["pred"][q, np.tile(slot, B)]
    interp = _interpolate_in_lambda(own, pairs["lam"][q], pairs["n_used"][q], outer["lam"][o])
    err = (Y[b_idx, np.tile(oj, B)][:, None] - interp) ** 2
    cvm = err.reshape(B * n, n - 1, -1).mean(axis=1)
    i_min, _ = _select_lambda(cvm, np.zeros_like(cvm), outer["n_used"])
    pred = outer["pred"][np.arange(B * n), 0, i_min].reshape(B, n)
    train_mean = (Y.sum(axis=1, keepdims=True) - Y) / (n - 1)
    return pred, train_mean


def _nested_predictions(x0, Y, pf, alpha, n_lambda, lambda_min_ratio, outer_folds, inner_folds, rngs):
    """Outer-fold predictions for each row of Y (B, n): an inner cv.glmnet picks λ_min.

    ``outer_folds``: fold id per subject (LOO = arange(n)); ``inner_folds``: None (LOO) or K,
    drawn with ``rngs[b]`` for the rows of permutation b. Returns predictions (B, n) and the
    outer-training means of y (B, n), the reference of the out-of-sample R².
    """
    B, n = Y.shape
    p = x0.shape[1]
    n_outer = int(outer_folds.max()) + 1
    if inner_folds is None and n_outer == n:
        return _nested_loo_predictions(x0, Y, pf, alpha, n_lambda, lambda_min_ratio)
    rows_b = np.repeat(np.arange(B), n_outer)
    held = outer_folds[None, :] == np.tile(np.arange(n_outer), B)[:, None]  # (R, n)
    W = (~held).astype(float)
    Yr = Y[rows_b]
    inner_rngs = None if inner_folds is None else [rngs[b] for b in rows_b]
    ratio = _lambda_min_ratio(int(W[0].sum()), p, lambda_min_ratio)
    full, _, _, i_min, _ = _loo_cv_batch(x0, Yr, W, pf, alpha, n_lambda, ratio, inner_folds, inner_rngs)
    r_idx, subj = np.nonzero(held)
    z = (x0[subj] - full["xm"][r_idx]) / full["xs"][r_idx]
    beta = full["beta"][r_idx, i_min[r_idx]]
    pred = np.zeros((B, n))
    train_mean = np.zeros((B, n))
    pred[rows_b[r_idx], subj] = full["ym"][r_idx] + full["ys"][r_idx] * np.einsum("ep,ep->e", beta, z)
    means = (Yr * W).sum(axis=1) / W.sum(axis=1)
    train_mean[rows_b[r_idx], subj] = means[r_idx]
    return pred, train_mean


def prediction_metrics(y, pred, train_mean) -> dict:
    """Out-of-sample R² (1 − SSE/SST, SST around the outer-training means), Pearson r, MAE."""
    y = np.asarray(y, dtype=float)
    sse = np.sum((y - pred) ** 2, axis=-1)
    sst = np.sum((y - train_mean) ** 2, axis=-1)
    yc = y - y.mean(axis=-1, keepdims=True)
    pc = pred - pred.mean(axis=-1, keepdims=True)
    denom = np.sqrt(np.sum(yc**2, axis=-1) * np.sum(pc**2, axis=-1))
    r = np.where(denom > 0, np.sum(yc * pc, axis=-1) / np.where(denom > 0, denom, 1.0), 0.0)
    return {"r2": 1.0 - sse / sst, "pearson_r": r, "mae": np.mean(np.abs(y - pred), axis=-1)}


def _outer_folds(n: int, max_loo: int, k: int, seed: int) -> tuple[np.ndarray, int | None]:
    """LOO outer folds (and LOO inner) up to ``max_loo`` subjects, else seeded K-fold both."""
    if n <= max_loo:
        return np.arange(n), None
    return _fold_ids(n, k, _spawn(seed, "outer-folds", 1)[0]), k


def nested_cv(X, y, alpha=0.5, n_lambda=100, lambda_min_ratio=None, penalty_factor=None, seed=0,
              nested_max_loo=100, nested_k_folds=10) -> dict:
    """Nested cross-validation of the whole cv.glmnet procedure.

    Outer leave-one-out (K-fold above ``nested_max_loo`` subjects); in each outer training set
    an inner ``cv.glmnet`` (LOO, or K-fold likewise) picks λ_min, and the left-out subject is
    predicted from the training-set fit at that λ. Returns predictions and metrics
    (:func:`prediction_metrics`).
    """
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    n, p = X.shape
    x0, _, _ = _prescale(X)
    pf = _penalty_factor(penalty_factor, p)
    outer, inner = _outer_folds(n, nested_max_loo, nested_k_folds, seed)
    rngs = _spawn(seed, "inner-folds", 1)
    pred, train_mean = _nested_predictions(x0, y[None, :], pf, alpha, n_lambda, lambda_min_ratio, outer, inner, rngs)
    metrics = {k: float(v[0]) for k, v in prediction_metrics(y, pred, train_mean).items()}
    return {"predicted": pred[0], "observed": y, "train_mean": train_mean[0], "outer_folds": outer,
            "inner_folds": "loo" if inner is None else inner, **metrics}


def _permutation_chunk(x0, y, pf, alpha, n_lambda, lambda_min_ratio, outer, inner, rngs):
    Y = np.stack([rng.permutation(y) for rng in rngs])
    # each permutation's generator also draws its inner K-fold splits (only used above nested_max_loo)
    pred, train_mean = _nested_predictions(x0, Y, pf, alpha, n_lambda, lambda_min_ratio, outer, inner, rngs)
    return prediction_metrics(Y, pred, train_mean)["r2"]


def permutation_test(X, y, observed_r2: float, n_permutations=1000, alpha=0.5, n_lambda=100,
                     lambda_min_ratio=None, penalty_factor=None, seed=0, n_jobs=1, nested_max_loo=100,
                     nested_k_folds=10, chunk_size=None) -> dict:
    """Permutation test of the nested-CV R²: permute y, rerun the whole nested CV.

    p = (1 + #{R²_perm ≥ R²_obs}) / (1 + P). Each permutation has its own generator spawned
    from ``seed``, so the null distribution is the same for any ``n_jobs`` / chunking.
    """
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    n, p = X.shape
    if n_permutations <= 0:
        return {"n_permutations": 0, "p_value": None, "null_r2": np.zeros(0)}
    x0, _, _ = _prescale(X)
    pf = _penalty_factor(penalty_factor, p)
    outer, inner = _outer_folds(n, nested_max_loo, nested_k_folds, seed)
    rngs = _spawn(seed, "permutations", n_permutations)
    n_problems = n + n * (n - 1) // 2 if inner is None else len(np.unique(outer)) * (1 + inner)
    if chunk_size is None:  # about one solver batch of path fits per chunk
        chunk_size = max(1, min(64, (_BATCH_ELEMENTS // max(p * p, 1)) // max(n_problems, 1)))
    chunks = [rngs[i:i + chunk_size] for i in range(0, n_permutations, chunk_size)]

    args = (x0, y, pf, alpha, n_lambda, lambda_min_ratio, outer, inner)
    if n_jobs == 1 or len(chunks) == 1:
        null = [_permutation_chunk(*args, chunk) for chunk in chunks]
    else:
        from joblib import Parallel, delayed

        null = Parallel(n_jobs=n_jobs)(delayed(_permutation_chunk)(*args, chunk) for chunk in chunks)
    null = np.concatenate(null)
    exceed = int(np.sum(null >= observed_r2 - 1e-12))
    return {"n_permutations": int(n_permutations), "p_value": (1 + exceed) / (1 + n_permutations),
            "null_r2": null}


def bootstrap_selection(X, y, lambdas, index_min: int, n_bootstrap=500, alpha=0.5, penalty_factor=None,
                        seed=0) -> dict:
    """Selection frequency of each predictor over bootstrap resamples at the full-data λ_min.

    Each resample (subjects drawn with replacement) is fitted along the full-data λ sequence
    down to λ_min (glmnet with those λs and the resample as case weights, which equals
    duplicating rows); a predictor is selected when its coefficient at λ_min is non-zero.
    """
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    n, p = X.shape
    if n_bootstrap <= 0:
        return {"n_bootstrap": 0, "frequency": np.full(p, np.nan)}
    x0, _, _ = _prescale(X)
    pf = _penalty_factor(penalty_factor, p)
    rngs = _spawn(seed, "bootstrap", n_bootstrap)
    W = np.stack([np.bincount(rng.integers(0, n, n), minlength=n).astype(float) for rng in rngs])
    lam = np.broadcast_to(np.asarray(lambdas, dtype=float)[: index_min + 1], (n_bootstrap, index_min + 1))
    fits = _fit_given_paths(x0, np.broadcast_to(y, (n_bootstrap, n)), W, pf, alpha, np.ascontiguousarray(lam),
                            np.full(n_bootstrap, index_min + 1))
    selected = fits["beta"][:, index_min, :] != 0
    return {"n_bootstrap": int(n_bootstrap), "frequency": selected.mean(axis=0)}
