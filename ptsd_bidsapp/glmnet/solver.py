"""Elastic-net path solver equivalent to R glmnet (gaussian family).

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
  log-spaced down to ``λ_max · lambda.min.ratio`` (1e-2 if n < p, else 1e-4); the path stops
  early (at least 5 λs) when the fraction of deviance explained changes by less than 1e-5
  relative or exceeds 0.999 (glmnet.control ``fdev``, ``devmax``).

How it is solved here (plain numpy, many problems at once): the standardised Gram matrix
and ``X'y`` of every problem (a fold, a permutation, a bootstrap sample — each one a weight
vector over subjects) are formed with one matrix product; then, λ by λ down the path and
warm-started from the previous λ, an active-set method finds the exact optimum: solve the
stationarity equations on the active set with the current signs,
``(G_AA + λ(1 − α) diag(pf_A)) β_A = c_A − λ α pf_A ∘ s_A``, drop coefficients whose sign
flipped, add predictors violating ``|c_j − G_j β| ≤ λ α pf_j``, repeat until the KKT
conditions hold (a batched coordinate-descent fallback catches the rare cycling case). The
solutions are exact to floating point, so agreement with glmnet is limited only by glmnet's
own convergence threshold. Tested against R glmnet 4.1.6 in ``tests/glmnet/test_cv.py``
(reference values from ``scripts/glmnet_reference.R``).

The same algorithm runs compiled, one problem at a time, in :mod:`ptsd_bidsapp.glmnet.compiled`
(option ``solver``, :func:`resolve_solver`; ``auto`` = compiled when numba is installed): same
decisions, the active-set system kept as a Cholesky factor with up/downdates, results equal to
the numpy solver's to rounding (``tests/glmnet/test_compiled.py``).

Cross-validation is :mod:`ptsd_bidsapp.glmnet.cv`, nested CV, permutations and the bootstrap
:mod:`ptsd_bidsapp.glmnet.inference`.

Over 500 lines because the batched active-set solver and the moments it works on are one
algorithm, read together.

Size (~510 lines): the path solver and its batched exact active-set core belong together
(the batched solver is the per-λ inner loop of the same algorithm).
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from ptsd_bidsapp.glmnet import compiled

__all__ = ["glmnet_lambda_path"]

#: glmnet.control() defaults that shape the computed λ path.
FDEV = 1e-5
DEVMAX = 0.999
MNLAM = 5

#: Relative tolerance of the KKT check for a predictor at the edge of entering.
_KKT_RTOL = 1e-10
_MAX_ACTIVE_SET_ROUNDS = 500
#: Active-set rounds that add every KKT violator at once before adding one at a time.
_PRIMAL_DUAL_ROUNDS = 10
#: Elements (B·p²) of the Gram stack handled per batch (memory bound: 8 bytes each, a few copies).
_BATCH_ELEMENTS = 3_000_000
#: Elements of the coefficient paths (B·L·p) or predictions along the paths (B·r·L) per batch.
_PATH_ELEMENTS = 8_000_000
#: Gram elements (T·p²) of the training sets kept for reuse by :func:`_cached_training_sets`.
_SETS_CACHE_ELEMENTS = 4_000_000


# ---------------------------------------------------------------------------------------
# batched standardised moments
#
# A *training set* is a weight vector over subjects (a fold, a bootstrap resample); a
# *problem* is a training set with one response vector (the observed y or a permutation of
# it). The standardised Gram matrix depends on the training set only, so the problems of
# the permutation test share the Gram matrices of their (fixed) leave-one-out training sets.


@dataclass
class _TrainingSets:
    """Weighted standardisation of the predictors, one row per training set."""

    w: np.ndarray  # (T, n) weights normalised to sum 1
    G: np.ndarray  # (T, p, p) standardised Gram matrix
    xm: np.ndarray  # (T, p) weighted means of the (pre-scaled) predictors
    xs: np.ndarray  # (T, p) weighted SDs (1/n)
    excluded: np.ndarray  # (T, p) bool: constant predictor in this training set (never enters)


@dataclass
class _Problems:
    """Problems (training set ``gidx[b]``, response row b) with their standardised ``X'y``."""

    sets: _TrainingSets
    gidx: np.ndarray  # (B,) training set of each problem
    c: np.ndarray  # (B, p) standardised x'y
    ym: np.ndarray  # (B,)
    ys: np.ndarray  # (B,)
    excluded: np.ndarray  # (B, p)
    blocks: tuple[int, int] | None  # (T, Q) when gidx == repeat(arange(T), Q): G·β as one matmul


def _training_sets(x0: np.ndarray, w: np.ndarray) -> _TrainingSets:
    """Weighted standardisation of ``x0`` (n, p) under the weight rows ``w`` (T, n)."""
    n, p = x0.shape
    w = w / w.sum(axis=1, keepdims=True)
    xm = w @ x0
    outer = (x0[:, :, None] * x0[:, None, :]).reshape(n, p * p)
    sxx = (w @ outer).reshape(-1, p, p) - xm[:, :, None] * xm[:, None, :]
    xv = np.clip(np.einsum("bjj->bj", sxx), 0.0, None)
    excluded = xv <= 1e-20
    xs = np.where(excluded, 1.0, np.sqrt(xv))
    G = sxx / (xs[:, :, None] * xs[:, None, :])
    if excluded.any():
        G = np.where(excluded[:, :, None] | excluded[:, None, :], 0.0, G)
    idx = np.arange(p)
    G[:, idx, idx] = 1.0  # exactly 1 on the standardised scale (and a placeholder for excluded predictors)
    return _TrainingSets(w, G, xm, xs, excluded)


_sets_cache: OrderedDict[bytes, _TrainingSets] = OrderedDict()


def _cached_training_sets(x0: np.ndarray, w: np.ndarray) -> _TrainingSets:
    """:func:`_training_sets`, reused when the same ``x0`` and weight rows come again.

    The permutation test's chunks refit the same leave-one-out training sets with other
    responses; their Gram matrices are computed once per process. The key is a digest of
    the arrays' shapes and bytes, so a hit returns what the computation would (the result
    is read, never written, by the callers). At most ``_SETS_CACHE_ELEMENTS`` Gram elements
    are kept, oldest dropped first.
    """
    x0 = np.ascontiguousarray(x0, dtype=float)
    w = np.ascontiguousarray(w, dtype=float)
    digest = hashlib.blake2b(repr((x0.shape, w.shape)).encode(), digest_size=32)
    digest.update(x0.tobytes())
    digest.update(w.tobytes())
    key = digest.digest()
    sets = _sets_cache.get(key)
    if sets is not None:
        _sets_cache.move_to_end(key)
        return sets
    sets = _training_sets(x0, w)
    if sets.G.size <= _SETS_CACHE_ELEMENTS:
        _sets_cache[key] = sets
        while sum(s.G.size for s in _sets_cache.values()) > _SETS_CACHE_ELEMENTS:
            _sets_cache.popitem(last=False)
    return sets


def _blocks(gidx: np.ndarray) -> tuple[int, int] | None:
    """(T, Q) when ``gidx`` is ``repeat(arange(T), Q)``, else None."""
    T = int(gidx[-1]) + 1 if gidx.size else 0
    if T == 0 or gidx.size % T:
        return None
    Q = gidx.size // T
    return (T, Q) if np.array_equal(gidx, np.repeat(np.arange(T), Q)) else None


def _problems(x0: np.ndarray, sets: _TrainingSets, gidx: np.ndarray, Y: np.ndarray) -> _Problems:
    """Standardised ``X'y`` of response rows ``Y`` (B, n) on training sets ``gidx`` (B,)."""
    w = sets.w[gidx]
    ym = np.einsum("bi,bi->b", w, Y)
    yc = Y - ym[:, None]
    ys = np.sqrt(np.einsum("bi,bi->b", w, yc * yc))
    ys = np.where(ys > 0, ys, 1.0)
    sxy = (w * yc) @ x0
    excluded = sets.excluded[gidx]
    c = sxy / (sets.xs[gidx] * ys[:, None])
    if excluded.any():
        c = np.where(excluded, 0.0, c)
    return _Problems(sets, gidx, c, ym, ys, excluded, _blocks(gidx))


def _gram_dot(prob: _Problems, rows: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """``G β`` for the problems ``rows`` (β given for those rows)."""
    B, p = prob.c.shape
    if prob.blocks is not None and rows.size * 8 >= B:
        # one batched matmul over the training sets (G is symmetric: β'G = (Gβ)')
        T, Q = prob.blocks
        full = np.zeros((B, p))
        full[rows] = beta
        return np.matmul(full.reshape(T, Q, p), prob.sets.G).reshape(B, p)[rows]
    return np.einsum("bjk,bk->bj", prob.sets.G[prob.gidx[rows]], beta)


# ---------------------------------------------------------------------------------------
# the λ path solver


def _lambda_max_std(prob: _Problems, pf: np.ndarray, alpha: float) -> np.ndarray:
    """λ_max on the standardised scale (glmnet: after fitting the unpenalised predictors)."""
    unpen = pf <= 0
    g = prob.c.copy()
    if unpen.any():
        u = np.flatnonzero(unpen)
        G = prob.sets.G[prob.gidx]
        G_uu = G[:, u][:, :, u] + np.where(prob.excluded[:, u], 1.0, 0.0)[:, :, None] * np.eye(len(u))
        beta_u = np.linalg.solve(G_uu, prob.c[:, u][..., None])[..., 0]
        g = prob.c - np.einsum("bju,bu->bj", G[:, :, u], beta_u)
    ratio = np.where(unpen[None, :] | prob.excluded, 0.0, np.abs(g) / np.where(unpen, 1.0, pf)[None, :])
    return ratio.max(axis=1) / max(alpha, 1e-3)


class _SystemCache:
    """The compressed Gram block ``G_AA`` of the active set last solved, per problem.

    Along a path the active set changes at a minority of λs, so most solves reuse the block
    (a contiguous copy) instead of gathering it from the Gram matrix again.
    """

    def __init__(self, prob: _Problems):
        B, p = prob.c.shape
        self.G = prob.sets.G
        self.gidx = prob.gidx
        self.block = np.zeros((B, p, p))
        self.cols = np.zeros((B, p), dtype=np.intp)
        self.active = np.zeros((B, p), dtype=bool)
        self.valid = np.zeros(B, dtype=bool)

    def blocks(self, rows: np.ndarray, A: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(cols, G_AA) for problems ``rows`` whose active sets ``A`` all have k members."""
        miss = ~(self.valid[rows] & (self.active[rows] == A).all(axis=1))
        if miss.any():
            new_rows = rows[miss]
            cols = np.nonzero(A[miss])[1].reshape(new_rows.size, k)  # active predictors, ascending
            self.block[new_rows, :k, :k] = self.G[self.gidx[new_rows][:, None, None], cols[:, :, None],
                                                  cols[:, None, :]]
            self.cols[new_rows, :k] = cols
            self.active[new_rows] = A[miss]
            self.valid[new_rows] = True
        return self.cols[rows, :k], self.block[rows, :k, :k]


def _solve_on_active(cache: _SystemCache, rows, c, sign, lam, l1w, l2w, A):
    """Solve ``(G_AA + λ diag(l2w_A)) x_A = c_A − λ l1w_A ∘ sign_A`` for problems ``rows`` (x = 0 off A).

    ``lam`` (n,) is each problem's λ. Problems are grouped by the size k of their active set;
    each group is solved on its compressed k×k systems (LAPACK cost ∝ k³, one batched call
    per k).
    """
    n, p = A.shape
    out = np.zeros((n, p))
    size = A.sum(axis=1)
    by_size = np.argsort(size, kind="stable")
    counts = np.bincount(size, minlength=p + 1)
    start = counts[0]
    for k in np.flatnonzero(counts[1:]) + 1:
        local = by_size[start:start + counts[k]]
        start += counts[k]
        cols, sub = cache.blocks(rows[local], A[local], k)
        lam_k = lam[local, None]
        # the standardised Gram matrix has exactly 1 on its diagonal
        sub.reshape(local.size, k * k)[:, :: k + 1] = 1.0 + lam_k * l2w[cols]
        rhs = np.take_along_axis(c[local], cols, axis=1) - (lam_k * l1w[cols]) * np.take_along_axis(sign[local], cols,
                                                                                                     axis=1)
        out[local[:, None], cols] = np.linalg.solve(sub, rhs[..., None])[..., 0]
    return out


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


SOLVERS = ("auto", "compiled", "numpy")


def resolve_solver(solver: str) -> str:
    """The path solver that runs for option ``solver``: ``compiled`` (numba) or ``numpy``.

    ``auto`` is ``compiled`` when numba is installed, else ``numpy``; ``compiled`` without numba
    is an error (ValueError naming the missing package).
    """
    if solver not in SOLVERS:
        raise ValueError(f"elastic_net.solver must be one of {', '.join(SOLVERS)} (got {solver!r})")
    if solver == "numpy" or (solver == "auto" and not compiled.AVAILABLE):
        return "numpy"
    if not compiled.AVAILABLE:
        raise ValueError("elastic_net.solver: compiled needs the numba package (pip install numba), "
                         "or set it to numpy or auto")
    return "compiled"


def _solve_path(prob: _Problems, lam_std: np.ndarray, pf: np.ndarray, alpha: float,
                n_valid: np.ndarray, early_stop: bool, zrows: np.ndarray | None = None, keep_beta: bool = True,
                solver: str = "auto"):
    """Solve every problem along its own standardised λ sequence (exact optimum at every λ).

    ``solver`` (:func:`resolve_solver`): the compiled per-problem solver
    (:mod:`ptsd_bidsapp.glmnet.compiled`, same algorithm and decisions, Cholesky up/downdates of
    the active-set system) or the batched numpy solver (:func:`_solve_path_numpy`); problems the
    compiled solver flags (singular active-set system, coordinate-descent safety net) are solved
    by the numpy solver. Same returns as :func:`_solve_path_numpy`.
    """
    if resolve_solver(solver) == "numpy":
        return _solve_path_numpy(prob, lam_std, pf, alpha, n_valid, early_stop, zrows, keep_beta)
    settings = (_KKT_RTOL, _MAX_ACTIVE_SET_ROUNDS, _PRIMAL_DUAL_ROUNDS, FDEV, DEVMAX, MNLAM)
    beta, n_used, pred, failed = compiled.solve_paths(prob.sets.G, prob.gidx, prob.c, prob.excluded, lam_std,
                                                      np.minimum(n_valid, lam_std.shape[1]), pf, alpha, early_stop,
                                                      settings, zrows=zrows, keep_beta=keep_beta)
    if failed.any():
        f = np.flatnonzero(failed)
        sub = _Problems(prob.sets, prob.gidx[f], prob.c[f], prob.ym[f], prob.ys[f], prob.excluded[f], None)
        beta_f, n_used[f], pred_f = _solve_path_numpy(sub, lam_std[f], pf, alpha, n_valid[f], early_stop,
                                                      None if zrows is None else zrows[f], keep_beta)
        if keep_beta:
            beta[f] = beta_f
        if zrows is not None:
            pred[f] = pred_f
    return beta, n_used, pred


def _solve_path_numpy(prob: _Problems, lam_std: np.ndarray, pf: np.ndarray, alpha: float,
                      n_valid: np.ndarray, early_stop: bool, zrows: np.ndarray | None = None, keep_beta: bool = True):
    """Solve every problem along its own standardised λ sequence, batched numpy (exact optimum at every λ).

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

    Notes
    -----
    At each λ a primal active-set method finds the exact optimum, warm-started from the
    previous λ (Lawson & Hanson 1974, ch. 23, applied to β = β⁺ − β⁻): solve the
    stationarity equations on the active set with its signs,
    ``(G_AA + λ(1 − α) diag(pf_A)) β_A = c_A − λ α pf_A ∘ s_A``; if a coefficient would change
    sign, step to the first zero crossing and drop it; otherwise add the predictors that
    violate ``|c_j − G_j β| ≤ λ α pf_j`` — all at once in the first rounds (a primal–dual step),
    then one at a time, which decreases the objective at every step and cannot cycle. The
    optimum is unique and so are its support and signs, so the coefficients come from the
    solve on that final active set whatever the starting guess; the guess at a new λ
    extrapolates the last two solutions linearly in λ (predictors whose gradient crosses
    ``λ α pf_j`` enter, coefficients that cross zero leave), which saves most second rounds.

    The problems advance independently: every sweep does one active-set round for each
    unfinished problem at its own current λ, so a problem that needs extra rounds delays no
    other (the work per problem, and its result, do not depend on the batch).
    """
    B, L = lam_std.shape
    p = prob.c.shape[1]
    unpen = pf <= 0
    pen = ~unpen
    idx = np.arange(p)
    out = np.zeros((B, L, p)) if keep_beta else None
    pred = None if zrows is None else np.zeros((B, zrows.shape[1], L))
    beta = np.zeros((B, p))
    active = (np.broadcast_to(unpen, (B, p)) & ~prob.excluded).copy()
    sign = np.zeros((B, p))
    # the solutions (and gradients c − Gβ) at the previous two λs, for the guess
    beta_1, beta_2, grad_1, grad_2 = (np.zeros((B, p)) for _ in range(4))
    n_used = np.minimum(n_valid, L).astype(int).copy()
    at = np.zeros(B, dtype=int)  # index of the λ each problem is solving
    rounds = np.zeros(B, dtype=int)  # active-set rounds spent at that λ
    one_at_a_time = np.zeros(B, dtype=bool)
    rsq_prev = np.zeros(B)
    l1w = alpha * pf
    l2w = (1.0 - alpha) * pf
    cache = _SystemCache(prob)
    while True:
        rows = np.flatnonzero(at < n_used)
        if rows.size == 0:
            break
        sel = slice(None) if rows.size == B else rows  # views while every problem runs
        k = at[sel]
        lam = lam_std[rows, k][:, None]
        c = prob.c[sel]
        ex = prob.excluded[sel]
        l1 = lam * l1w
        l2 = lam * l2w
        A, s, cur = active[sel], sign[sel], beta[sel]
        guess = (rounds[sel] == 0) & (k >= 2)
        if guess.any():
            lam_1 = lam_std[rows, np.maximum(k - 1, 0)]
            lam_2 = lam_std[rows, np.maximum(k - 2, 0)]
            with np.errstate(divide="ignore", invalid="ignore"):
                rho = (lam[:, 0] - lam_1) / (lam_1 - lam_2)
            rho = np.where(guess & np.isfinite(rho), rho, 0.0)[:, None]
            g_guess = grad_1[sel] + rho * (grad_1[sel] - grad_2[sel])
            b_guess = cur + rho * (cur - beta_2[sel])
            enter = guess[:, None] & ~A & pen & ~ex & (np.abs(g_guess) > l1)
            leave = guess[:, None] & A & pen & (b_guess * s < 0.0)
            A = (A | enter) & ~leave
            s = np.where(enter, np.sign(g_guess), np.where(leave, 0.0, s))
            cur = np.where(leave, 0.0, cur)
        # one active-set round
        b = _solve_on_active(cache, rows, c, s, lam[:, 0], l1w, l2w, A)
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
            # no progress (a predictor just added came out with the wrong sign): add one violator
            # at a time from now on, or this problem could cycle
            one_at_a_time[rows[infeasible & (t <= 0.0)]] = True
        else:
            new, A_new = b, A
        grad = c - _gram_dot(prob, rows, new)
        excess = np.where(~A_new & pen & ~ex, np.abs(grad) - l1 * (1.0 + _KKT_RTOL) - 1e-14, -np.inf)
        violated = (excess > 0) & ~infeasible[:, None]
        all_at_once = (rounds[sel] < _PRIMAL_DUAL_ROUNDS) & ~one_at_a_time[sel]
        if not all_at_once.all():
            best = idx[None, :] == np.argmax(excess, axis=1)[:, None]
            violated_add = np.where(all_at_once[:, None], violated, violated & best)
        else:
            violated_add = violated
        A_new = A_new | violated_add
        s_new = np.where(violated_add, np.sign(grad), np.where(A_new, s, 0.0))
        ok = ~infeasible & ~violated.any(axis=1)
        beta[sel] = new
        active[sel] = A_new
        sign[sel] = s_new
        stuck = ~ok & (rounds[sel] + 1 >= _MAX_ACTIVE_SET_ROUNDS)
        if stuck.any():  # safety net, not expected: batched coordinate descent
            sr = rows[stuck]
            G = prob.sets.G[prob.gidx[sr]]
            beta[sr] = _coordinate_descent(G, c[stuck], beta[sr], l1[stuck], l2[stuck], ex[stuck])
            active[sr] = (beta[sr] != 0) | unpen[None, :]
            sign[sr] = np.sign(beta[sr])
            new[stuck] = beta[sr]
            grad[stuck] = c[stuck] - np.einsum("bjk,bk->bj", G, beta[sr])
            ok |= stuck
        rounds[rows[~ok]] += 1
        if not ok.any():
            continue
        # problems solved at their λ: record, check glmnet's stopping rule, move to the next λ
        done, kd, bd, gd = rows[ok], k[ok], new[ok], grad[ok]
        if keep_beta:
            out[done, kd] = bd
        if zrows is not None:
            pred[done, :, kd] = np.einsum("brp,bp->br", zrows[done], bd)
        if early_stop:
            # fraction of deviance explained on the standardised scale (glmnet's rsq):
            # 2 b'c − b'Gb, with Gb = c − grad
            cd = c[ok]
            rsq = np.einsum("bj,bj->b", bd, cd) + np.einsum("bj,bj->b", bd, gd)
            stop = (kd + 1 >= MNLAM) & ((rsq - rsq_prev[done] < FDEV * rsq) | (rsq > DEVMAX))
            n_used[done[stop]] = kd[stop] + 1
            rsq_prev[done] = rsq
        beta_2[done] = beta_1[done]
        beta_1[done] = bd
        grad_2[done] = grad_1[done]
        grad_1[done] = gd
        at[done] += 1
        rounds[done] = 0
        one_at_a_time[done] = False
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
    return 1e-2 if n < p else 1e-4  # glmnet: lambda.min.ratio = ifelse(nobs < nvars, 1e-2, 1e-4)


def _training_set_ratios(W: np.ndarray, p: int, ratio) -> np.ndarray:
    """lambda.min.ratio of each training set (rows of the weights ``W``), as glmnet computes it.

    A given ``ratio`` applies to every training set. The default follows each training set's own
    number of subjects (weight > 0), because cv.glmnet calls glmnet on every fold's rows with
    lambda = NULL, so each fold's path takes ``ifelse(nobs < nvars, 1e-2, 1e-4)`` from the
    fold's nobs (glmnet 4.x ``cv.glmnet.raw``), not from the full data's.
    """
    nobs = np.count_nonzero(np.asarray(W) > 0, axis=1)
    sizes, inverse = np.unique(nobs, return_inverse=True)
    return np.array([_lambda_min_ratio(int(m), p, ratio) for m in sizes])[inverse.reshape(-1)]


def _batches(gidx: np.ndarray, size: int):
    """Slices of at most ``size`` problems; whole training-set blocks when ``gidx`` has them."""
    blocks = _blocks(gidx)
    if blocks is not None:
        size = max(1, size // blocks[1]) * blocks[1]
    size = max(1, size)
    for start in range(0, gidx.size, size):
        yield slice(start, min(gidx.size, start + size))


def _batch_problems(x0, W, gidx, Y, yidx, sl) -> _Problems:
    """The problems of slice ``sl``: training sets ``W[gidx]`` with responses ``Y[yidx]``."""
    needed, local = np.unique(gidx[sl], return_inverse=True)
    return _problems(x0, _cached_training_sets(x0, W[needed]), local.reshape(-1), Y[yidx[sl]])


def _iter_computed_paths(x0, W, gidx, Y, yidx, pf, alpha, n_lambda, ratio, predict_rows=None, solver="auto"):
    """Full fits that compute their own λ path (glmnet with lambda = NULL), in batches.

    Problem b is training set ``W[gidx[b]]`` (weights over subjects) with response
    ``Y[yidx[b]]``; its path ends at λ_max · ``ratio`` (a number for every problem, or one per
    problem, (B,): :func:`_training_set_ratios`). Yields (slice, result) per batch. ``predict_rows`` (B, r) optional subject
    indices to predict along each path; then the result has ``pred`` (b, r, L) in units of y
    and no ``beta``. Otherwise ``beta`` (b, L, p) holds the standardised coefficients. Always:
    ``lam`` (b, L) in units of y, ``n_used`` and the moments ``xm, xs, ym, ys``. Batches hold at
    most ``_PATH_ELEMENTS`` coefficients or predictions.
    """
    p = x0.shape[1]
    size = _BATCH_ELEMENTS // max(p * p, 1)
    if predict_rows is None:  # coefficient paths (B, L, p)
        size = min(size, _PATH_ELEMENTS // max(n_lambda * p, 1))
    else:  # predictions along the paths (B, r, L)
        size = min(size, _PATH_ELEMENTS // max(predict_rows.shape[1] * n_lambda, 1))
    steps = np.arange(n_lambda)
    ratios, which = np.unique(np.broadcast_to(np.asarray(ratio, dtype=float), gidx.shape), return_inverse=True)
    # the log-spaced steps of each distinct ratio (math.log: the same numbers as a single ratio gave)
    spacing = np.stack([np.exp(steps * math.log(r) / max(n_lambda - 1, 1)) for r in ratios])
    which = which.reshape(-1)
    for sl in _batches(gidx, size):
        prob = _batch_problems(x0, W, gidx, Y, yidx, sl)
        lam_max = _lambda_max_std(prob, pf, alpha)
        lam_std = lam_max[:, None] * spacing[which[sl]]
        xm, xs = prob.sets.xm[prob.gidx], prob.sets.xs[prob.gidx]
        zrows = None
        if predict_rows is not None:
            zrows = (x0[predict_rows[sl]] - xm[:, None, :]) / xs[:, None, :]
        beta, n_used, pred = _solve_path(prob, lam_std, pf, alpha, np.full(lam_std.shape[0], n_lambda), True,
                                         zrows=zrows, keep_beta=predict_rows is None, solver=solver)
        result = {"lam": lam_std * prob.ys[:, None], "n_used": n_used, "xm": xm, "xs": xs, "ym": prob.ym,
                  "ys": prob.ys}
        if predict_rows is None:
            result["beta"] = beta
        else:
            result["pred"] = prob.ym[:, None, None] + prob.ys[:, None, None] * pred
        yield sl, result


def _concatenate(batches) -> dict:
    parts = [result for _, result in batches]
    return {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}


def _fit_computed_paths(x0, W, gidx, Y, yidx, pf, alpha, n_lambda, ratio, predict_rows=None, solver="auto") -> dict:
    """:func:`_iter_computed_paths`, all batches concatenated."""
    return _concatenate(_iter_computed_paths(x0, W, gidx, Y, yidx, pf, alpha, n_lambda, ratio, predict_rows, solver))


def _fit_given_paths(x0, W, gidx, Y, yidx, pf, alpha, lam, n_valid, solver="auto"):
    """Fits on a supplied λ sequence (units of y), as glmnet(lambda = ...)."""
    p = x0.shape[1]
    results = {k: [] for k in ("beta", "xm", "xs", "ym", "ys")}
    for sl in _batches(gidx, _BATCH_ELEMENTS // max(p * p, 1)):
        prob = _batch_problems(x0, W, gidx, Y, yidx, sl)
        beta, _, _ = _solve_path(prob, lam[sl] / prob.ys[:, None], pf, alpha, n_valid[sl], False, solver=solver)
        results["beta"].append(beta)
        results["xm"].append(prob.sets.xm[prob.gidx])
        results["xs"].append(prob.sets.xs[prob.gidx])
        results["ym"].append(prob.ym)
        results["ys"].append(prob.ys)
    return {k: np.concatenate(v) for k, v in results.items()}


# ---------------------------------------------------------------------------------------
# the full-data λ path


def _prescale(X: np.ndarray):
    mean = X.mean(axis=0)
    sd = X.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    return (X - mean) / sd, mean, sd


def glmnet_lambda_path(X, y, alpha=0.5, n_lambda=100, lambda_min_ratio=None, penalty_factor=None,
                       solver="auto") -> np.ndarray:
    """The λ sequence glmnet computes for ``X``, ``y`` (units of y, decreasing, early-stopped)."""
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    n, p = X.shape
    x0, _, _ = _prescale(X)
    pf = _penalty_factor(penalty_factor, p)
    full = _fit_computed_paths(x0, np.ones((1, n)), np.zeros(1, dtype=int), y[None, :], np.zeros(1, dtype=int), pf,
                               alpha, n_lambda, _lambda_min_ratio(n, p, lambda_min_ratio), solver=solver)
    return full["lam"][0, : full["n_used"][0]]
