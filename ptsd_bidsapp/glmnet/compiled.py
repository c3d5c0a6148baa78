"""The exact active-set λ-path solver compiled with numba, one problem at a time.

Same algorithm, same decisions as the batched numpy solver in
:func:`ptsd_bidsapp.glmnet.solver._solve_path` (read its Notes first): at every λ, warm-started
from the previous λ's solution with the same linear extrapolation, primal active-set rounds
(all KKT violators at once for the first rounds, then one at a time; a step to the first zero
crossing when a coefficient would change sign) until the KKT conditions hold. What differs is
only how the work is done:

* each problem (a training set with one response) runs its whole path in a compiled loop, so
  the numpy overhead on tiny systems (gathers, batched LAPACK calls on k×k blocks, masks over
  the batch) disappears;
* the active-set system ``M = G_AA + λ(1 − α) diag(pf_A)`` is kept as a Cholesky factor
  ``M = R R'`` (R lower triangular): it is factored once per λ (its diagonal depends on λ;
  for the lasso, α = 1, it does not, and the factor carries over from λ to λ), a predictor
  that enters is appended (one triangular solve, O(k²); Golub & Van Loan 2013, §6.5.4) and one
  that leaves is deleted with Givens rotations (O(k²); ibid. §6.5.3), instead of a new
  factorisation. The reciprocals of the factor's diagonal are kept beside it (the substitutions
  multiply instead of divide), a new factorisation does the forward substitution of the
  right-hand side in the same pass, and a round that steps to a zero crossing (infeasible signs)
  skips the gradient and KKT check whose result the numpy solver discards then.

The active-set system is solved by Cholesky here and by LU (``numpy.linalg.solve``) in the numpy
solver, so the coefficients agree to rounding (well within 1e-10 on standardised data; the
tests compare both). A problem whose system is not numerically positive definite (exactly
collinear unpenalised or lasso predictors) or that would need the coordinate-descent safety net
is flagged in ``failed`` and the caller solves it with the numpy solver, which then gives
exactly what it always gave.

Compilation: ``cache=True`` writes the machine code next to this file, or where
``NUMBA_CACHE_DIR`` points (set it in a read-only install or container); when no location is
writable the functions are compiled in memory at first use of each process (≈ 1–2 s, see
``benchmarks/results/group.txt``). numba is optional: without it :data:`AVAILABLE` is False and
the numpy solver is used.
"""

from __future__ import annotations

import math

import numpy as np

try:  # optional accelerator (declared dependency; the numpy solver works without it)
    import numba
except ImportError:  # pragma: no cover - depends on the environment
    numba = None

__all__ = ["AVAILABLE", "nested_loo_lambda_min", "solve_paths"]

#: True when numba imported: :func:`solve_paths` is compiled.
AVAILABLE = numba is not None

#: A Cholesky pivot below this fraction of its diagonal entry counts as a singular system.
_PIVOT_RTOL = 1e-12


def _jit(function):
    """numba.njit with an on-disk cache when a cache location is writable, else in memory."""
    if numba is None:
        return function
    options = {"error_model": "numpy", "nogil": True}
    try:
        return numba.njit(cache=True, **options)(function)
    except RuntimeError:  # no writable cache location (read-only install, NUMBA_CACHE_DIR unset)
        return numba.njit(**options)(function)


# ---------------------------------------------------------------------------------------
# Cholesky factor of the active-set system, kept in the order the predictors entered
#
# ``R`` lower triangular (M = R R') with the reciprocals of its diagonal in ``rinv``, so that the
# substitutions multiply instead of divide; the inner loops are dot products along rows of R
# (contiguous memory, the running sum kept in a register).


@_jit
def _factor_forward(G, order, k, diag, rhs, R, rinv, z):
    """Factor ``G[order, order]`` (diagonal ``diag[order]``) and forward-substitute ``z = R⁻¹ rhs[order]`` in one pass.

    Row i of R and z[i] need only rows < i, so both come out row by row. Four entries of a row
    are computed together (four independent running sums, each in the same ascending order as
    one at a time: the same rounding, less waiting on the previous subtraction). False if singular.
    """
    for i in range(k):
        oi = order[i]
        j = 0
        while j + 3 < i:
            s0 = G[oi, order[j]]
            s1 = G[oi, order[j + 1]]
            s2 = G[oi, order[j + 2]]
            s3 = G[oi, order[j + 3]]
            for m in range(j):
                rim = R[i, m]
                s0 -= rim * R[j, m]
                s1 -= rim * R[j + 1, m]
                s2 -= rim * R[j + 2, m]
                s3 -= rim * R[j + 3, m]
            r0 = s0 * rinv[j]
            s1 -= r0 * R[j + 1, j]
            s2 -= r0 * R[j + 2, j]
            s3 -= r0 * R[j + 3, j]
            r1 = s1 * rinv[j + 1]
            s2 -= r1 * R[j + 2, j + 1]
            s3 -= r1 * R[j + 3, j + 1]
            r2 = s2 * rinv[j + 2]
            s3 -= r2 * R[j + 3, j + 2]
            R[i, j] = r0
            R[i, j + 1] = r1
            R[i, j + 2] = r2
            R[i, j + 3] = s3 * rinv[j + 3]
            j += 4
        while j < i:
            s0 = G[oi, order[j]]
            for m in range(j):
                s0 -= R[i, m] * R[j, m]
            R[i, j] = s0 * rinv[j]
            j += 1
        d = diag[oi]
        s = rhs[oi]
        for m in range(i):
            rim = R[i, m]
            d -= rim * rim
            s -= rim * z[m]
        if d <= _PIVOT_RTOL * diag[oi]:
            return False
        r = math.sqrt(d)
        R[i, i] = r
        rinv[i] = 1.0 / r
        z[i] = s * rinv[i]
    return True


@_jit
def _append(G, order, k, col, diag, R, rinv):
    """Add predictor ``col`` as row/column k of the factor (Golub & Van Loan §6.5.4); False if singular."""
    d = diag[col]
    for i in range(k):
        s = G[order[i], col]
        for m in range(i):
            s -= R[i, m] * R[k, m]
        R[k, i] = s * rinv[i]
        d -= R[k, i] * R[k, i]
    if d <= _PIVOT_RTOL * diag[col]:
        return False
    r = math.sqrt(d)
    R[k, k] = r
    rinv[k] = 1.0 / r
    order[k] = col
    return True


@_jit
def _delete(order, k, pos, R, rinv):
    """Remove row/column ``pos`` of the factor: shift the rows up, Givens rotations restore R (§6.5.3)."""
    for i in range(pos, k - 1):
        for m in range(i + 2):
            R[i, m] = R[i + 1, m]
        order[i] = order[i + 1]
    for j in range(pos, k - 1):
        a = R[j, j]
        b = R[j, j + 1]
        r = math.hypot(a, b)
        if r == 0.0:
            continue
        c = a / r
        s = b / r
        for i in range(j, k - 1):
            x = R[i, j]
            y = R[i, j + 1]
            R[i, j] = c * x + s * y
            R[i, j + 1] = -s * x + c * y
        R[j, j + 1] = 0.0
    for m in range(k):
        R[k - 1, m] = 0.0
    for j in range(pos, k - 1):
        rinv[j] = 1.0 / R[j, j]


@_jit
def _forward(R, rinv, order, k, rhs, z):
    """``z = R⁻¹ rhs[order]`` (forward substitution)."""
    for i in range(k):
        s = rhs[order[i]]
        for m in range(i):
            s -= R[i, m] * z[m]
        z[i] = s * rinv[i]


@_jit
def _back(R, rinv, order, k, z, x):
    """``x[order] = R'⁻¹ z`` (back substitution, z overwritten); x zero elsewhere."""
    for i in range(k - 1, -1, -1):
        s = z[i]
        for m in range(i + 1, k):
            s -= R[m, i] * z[m]
        z[i] = s * rinv[i]
    x[:] = 0.0
    for i in range(k):
        x[order[i]] = z[i]


# ---------------------------------------------------------------------------------------
# one problem's path


@_jit
def _one_path(G, c, ex, lam_path, n_valid, l1w, l2w, unpen, early_stop, settings, z, beta_out, pred_out,
              keep_beta, predict):
    """Solve one problem along its λ path; returns (number of λs used, ok flag).

    ``settings``: KKT relative tolerance, maximum rounds per λ, primal–dual rounds, fdev, devmax,
    mnlam (the numpy solver's constants, passed so that they have one owner).
    """
    kkt_rtol, max_rounds, pd_rounds = settings[0], int(settings[1]), int(settings[2])
    fdev, devmax, mnlam = settings[3], settings[4], int(settings[5])
    p = c.size
    L = lam_path.size
    pen = ~unpen
    # the current point: active set A, signs s, coefficients cur (the numpy solver's active, sign, beta)
    A = np.zeros(p, dtype=np.bool_)
    for j in range(p):
        A[j] = unpen[j] and not ex[j]
    s = np.zeros(p)
    cur = np.zeros(p)
    # the solutions and gradients at the previous two λs (for the guess); buffers rotated, not copied
    beta_1 = np.zeros(p)
    beta_2 = np.zeros(p)
    grad = np.zeros(p)
    grad_1 = np.zeros(p)
    grad_2 = np.zeros(p)
    n_used = min(n_valid, L)
    rsq_prev = 0.0
    # work arrays
    b = np.zeros(p)
    new = np.zeros(p)
    rhs = np.zeros(p)
    diag = np.zeros(p)
    excess = np.zeros(p)
    R = np.zeros((p, p))
    rinv = np.zeros(p)
    work = np.zeros(p)
    order = np.zeros(p, dtype=np.int64)
    in_factor = np.zeros(p, dtype=np.bool_)
    n_factor = 0
    factor_lam = np.nan  # λ of the factor (NaN: none)
    lasso = True
    for j in range(p):
        if l2w[j] != 0.0:
            lasso = False
    k = 0
    rounds = 0
    one_at_a_time = False
    while k < n_used:
        lam = lam_path[k]
        guess = rounds == 0 and k >= 2  # extrapolate the last two solutions in λ
        rho = 0.0
        if guess:
            lam_1 = lam_path[k - 1]
            lam_2 = lam_path[k - 2]
            rho = (lam - lam_1) / (lam_1 - lam_2)
            if not math.isfinite(rho):
                rho = 0.0
        # the system on A at this λ: refactor when λ changed (its diagonal did), else up/downdate
        refactor = not (factor_lam == lam or (lasso and factor_lam == factor_lam))
        n_new = 0
        for j in range(p):
            if guess and pen[j]:
                if A[j]:
                    if (cur[j] + rho * (cur[j] - beta_2[j])) * s[j] < 0.0:  # leaves
                        A[j] = False
                        s[j] = 0.0
                        cur[j] = 0.0
                elif not ex[j]:
                    g_guess = grad_1[j] + rho * (grad_1[j] - grad_2[j])
                    if abs(g_guess) > lam * l1w[j]:  # enters
                        A[j] = True
                        s[j] = np.sign(g_guess)
            diag[j] = 1.0 + lam * l2w[j]  # the standardised Gram matrix has exactly 1 on its diagonal
            rhs[j] = c[j] - (lam * l1w[j]) * s[j]
            if refactor:
                in_factor[j] = A[j]
                if A[j]:
                    order[n_new] = j
                    n_new += 1
        if refactor:
            n_factor = n_new
            if not _factor_forward(G, order, n_factor, diag, rhs, R, rinv, work):
                return k, False
            factor_lam = lam
        else:
            pos = n_factor - 1
            while pos >= 0:
                if not A[order[pos]]:
                    in_factor[order[pos]] = False
                    _delete(order, n_factor, pos, R, rinv)
                    n_factor -= 1
                pos -= 1
            for j in range(p):
                if A[j] and not in_factor[j]:
                    if not _append(G, order, n_factor, j, diag, R, rinv):
                        return k, False
                    in_factor[j] = True
                    n_factor += 1
            _forward(R, rinv, order, n_factor, rhs, work)
        _back(R, rinv, order, n_factor, work, b)  # work holds R⁻¹ rhs (forward substitution) from either branch
        # one active-set round (the factor's members are the active set)
        infeasible = False
        for i in range(n_factor):
            j = order[i]
            if pen[j] and b[j] * s[j] <= 0.0:
                infeasible = True
                break
        if infeasible:
            # move from the current (sign-consistent) point towards b up to the first zero crossing
            t = np.inf
            for j in range(p):
                if A[j] and pen[j] and b[j] * s[j] <= 0.0:
                    tc = cur[j] / (cur[j] - b[j])
                    if tc < t or math.isnan(tc):
                        t = tc
            t = min(max(t, 0.0), 1.0) if not math.isnan(t) else t
            for j in range(p):
                new[j] = cur[j] + t * (b[j] - cur[j])
                wrong = A[j] and pen[j] and b[j] * s[j] <= 0.0
                hit = (A[j] and pen[j] and new[j] * s[j] <= 0.0)
                if wrong and cur[j] / (cur[j] - b[j]) <= t * (1 + 1e-12):
                    hit = True
                if hit:
                    new[j] = 0.0
                    A[j] = False
            if t <= 0.0:  # no progress: one violator at a time from now on, or this problem could cycle
                one_at_a_time = True
            # no predictor is added after a step (the numpy solver's KKT check is void then): next round
            for j in range(p):
                if not A[j]:
                    s[j] = 0.0
                cur[j] = new[j]
            if rounds + 1 >= max_rounds:  # the numpy solver's coordinate-descent safety net decides
                return k, False
            rounds += 1
            continue
        # gradient c − G b over the non-zero coefficients only (G is symmetric: row m = column m)
        for j in range(p):
            grad[j] = c[j]
        for m in range(p):
            g = b[m]
            if g != 0.0:
                for j in range(p):
                    grad[j] -= G[m, j] * g
        any_violated = False
        best = -1
        best_excess = -np.inf
        for j in range(p):
            if (not A[j]) and pen[j] and not ex[j]:
                e = abs(grad[j]) - lam * l1w[j] * (1.0 + kkt_rtol) - 1e-14
                if e > 0:
                    any_violated = True
            else:
                e = -np.inf
            excess[j] = e
            if e > best_excess or (best < 0 and e == best_excess):
                best_excess = e
                best = j
        if any_violated:
            all_at_once = rounds < pd_rounds and not one_at_a_time
            for j in range(p):
                if excess[j] > 0 and (all_at_once or j == best):
                    A[j] = True
                    s[j] = np.sign(grad[j])
                cur[j] = b[j]
            if rounds + 1 >= max_rounds:  # the numpy solver's coordinate-descent safety net decides
                return k, False
            rounds += 1
            continue
        # solved at this λ (b is feasible and satisfies the KKT conditions): record, glmnet's stopping rule, next λ
        beta_1, beta_2 = beta_2, beta_1
        grad, grad_1, grad_2 = grad_2, grad, grad_1
        rsq = 0.0
        acc = 0.0
        for j in range(p):
            bj = b[j]
            cur[j] = bj
            beta_1[j] = bj
            rsq += bj * c[j]
            acc += bj * grad_1[j]
        if keep_beta:
            for j in range(p):
                beta_out[k, j] = b[j]
        if predict:
            for r in range(z.shape[0]):
                acc_r = 0.0
                for j in range(p):
                    acc_r += z[r, j] * b[j]
                pred_out[r, k] = acc_r
        if early_stop:
            # fraction of deviance explained on the standardised scale (glmnet's rsq): 2 b'c − b'Gb = b'c + b'grad
            rsq += acc
            if k + 1 >= mnlam and (rsq - rsq_prev < fdev * rsq or rsq > devmax):
                n_used = k + 1
            rsq_prev = rsq
        k += 1
        rounds = 0
        one_at_a_time = False
    return n_used, True


@_jit
def _solve_all(G, gidx, c, ex, lam_std, n_valid, l1w, l2w, unpen, early_stop, settings, zrows, beta_out, pred_out,
               keep_beta, predict, n_used, ok):
    for b in range(c.shape[0]):
        bo = beta_out[b] if keep_beta else beta_out[0]
        po = pred_out[b] if predict else pred_out[0]
        zb = zrows[b] if predict else zrows[0]
        n_used[b], ok[b] = _one_path(G[gidx[b]], c[b], ex[b], lam_std[b], n_valid[b], l1w, l2w, unpen, early_stop,
                                     settings, zb, bo, po, keep_beta, predict)


def solve_paths(G, gidx, c, excluded, lam_std, n_valid, pf, alpha, early_stop, settings, zrows=None,
                keep_beta=True):
    """Every problem's exact path (see the module docstring); the arguments of ``solver._solve_path``.

    Parameters
    ----------
    G : (T, p, p) standardised Gram matrices of the training sets; ``gidx`` (B,) the set of each problem.
    c : (B, p) standardised ``X'y``; ``excluded`` (B, p) constant predictors (never enter).
    lam_std : (B, L) λ on each problem's standardised scale; ``n_valid`` (B,) leading λs to solve.
    pf : (p,) rescaled penalty factors; ``alpha`` the elastic-net mixing.
    settings : (6,) KKT relative tolerance, maximum rounds per λ, primal–dual rounds, fdev, devmax, mnlam.
    zrows : (B, r, p), optional standardised rows to predict along the paths.

    Returns
    -------
    beta : (B, L, p) or None; n_used : (B,) int; pred : (B, r, L) or None;
    failed : (B,) bool — problems to solve with the numpy solver (their other outputs are not set).
    """
    B, L = lam_std.shape
    p = c.shape[1]
    predict = zrows is not None
    beta = np.zeros((B, L, p)) if keep_beta else np.zeros((1, L, p))
    pred = np.zeros((B, zrows.shape[1], L)) if predict else np.zeros((1, 1, L))
    z = np.ascontiguousarray(zrows, dtype=float) if predict else np.zeros((1, 1, p))
    n_used = np.zeros(B, dtype=np.int64)
    ok = np.zeros(B, dtype=np.bool_)
    _solve_all(np.ascontiguousarray(G, dtype=float), np.ascontiguousarray(gidx, dtype=np.int64),
               np.ascontiguousarray(c, dtype=float), np.ascontiguousarray(excluded, dtype=np.bool_),
               np.ascontiguousarray(lam_std, dtype=float), np.ascontiguousarray(n_valid, dtype=np.int64),
               alpha * pf, (1.0 - alpha) * pf, pf <= 0, bool(early_stop), np.asarray(settings, dtype=float), z, beta,
               pred, bool(keep_beta), predict, n_used, ok)
    return (beta if keep_beta else None), n_used, (pred if predict else None), ~ok


# ---------------------------------------------------------------------------------------
# nested leave-one-out: the inner cv.glmnet's λ_min of every outer fit


@_jit
def _nested_loo_lambda_min(pair_pred, pair_lam, pair_n_used, outer_lam, outer_n_used, pair_index, Y, i_min):
    n = pair_index.shape[0]
    Q = Y.shape[0]
    L = outer_lam.shape[1]
    cvm = np.zeros(L)
    for i in range(n):
        for q in range(Q):
            o = i * Q + q
            cvm[:] = 0.0
            for j in range(n):
                if j == i:
                    continue
                b = pair_index[i, j] * Q + q
                slot = 1 if j > i else 0  # the pair {i, j} predicts its smaller subject in slot 0
                last = max(pair_n_used[b] - 1, 0)
                lam_first = pair_lam[b, 0]
                lam_last = pair_lam[b, last]
                step = -1.0
                if pair_n_used[b] > 1 and L > 1:
                    step = math.log(pair_lam[b, 1] / pair_lam[b, 0])
                y = Y[q, j]
                for t in range(L):
                    s = min(max(outer_lam[o, t], lam_last), lam_first)
                    left = int(math.floor(math.log(s / lam_first) / step + 1e-9))
                    left = min(max(left, 0), last)
                    right = min(left + 1, last)
                    if left == right:
                        frac = 1.0
                    else:
                        lam_r = pair_lam[b, right]
                        frac = (s - lam_r) / (pair_lam[b, left] - lam_r)
                    e = y - (frac * pair_pred[b, slot, left] + (1.0 - frac) * pair_pred[b, slot, right])
                    cvm[t] += e * e
            best = np.inf
            for t in range(outer_n_used[o]):
                cvm[t] = cvm[t] / (n - 1)
                if cvm[t] < best or math.isnan(cvm[t]):  # a NaN minimum (numpy's min): λ_min = the first λ
                    best = cvm[t]
            i_min[o] = 0
            for t in range(outer_n_used[o]):
                if cvm[t] <= best:
                    i_min[o] = t
                    break


def nested_loo_lambda_min(pair_pred, pair_lam, pair_n_used, outer_lam, outer_n_used, pair_index, Y):
    """Index of λ_min of each outer fit of the nested leave-one-out CV (cv.glmnet's inner loop).

    The same quantities as ``inference._nested_loo_predictions``' numpy code, one loop with no
    (n(n−1)Q, L) intermediates: outer fit i (response row q) has the inner folds {i, j}, j ≠ i;
    pair fit {i, j} predicts subject j along its own λ path; the predictions are interpolated
    in λ at the outer fit's λs (glmnet's ``lambda.interp``, λs outside the fold's path clamped to
    its ends); cvm = mean squared error over the n − 1 inner folds; λ_min = the largest λ at the
    minimum cvm among the outer fit's used λs (cv.glmnet's ``getOptcv``).

    Parameters
    ----------
    pair_pred : (P·Q, 2, L) predictions (units of y) of the pair fits, problem ``pair·Q + q``; slot 0
        predicts the pair's smaller subject index, slot 1 the larger.
    pair_lam : (P·Q, L) λ (units of y); ``pair_n_used`` (P·Q,) λs used.
    outer_lam : (n·Q, L) λ of the outer fits, problem ``i·Q + q``; ``outer_n_used`` (n·Q,).
    pair_index : (n, n) the pair of subjects {i, j}; ``Y`` (Q, n) the response rows.

    Returns
    -------
    (n·Q,) int index of λ_min of each outer fit.
    """
    i_min = np.zeros(outer_lam.shape[0], dtype=np.int64)
    _nested_loo_lambda_min(np.ascontiguousarray(pair_pred, dtype=float), np.ascontiguousarray(pair_lam, dtype=float),
                           np.ascontiguousarray(pair_n_used, dtype=np.int64),
                           np.ascontiguousarray(outer_lam, dtype=float),
                           np.ascontiguousarray(outer_n_used, dtype=np.int64),
                           np.ascontiguousarray(pair_index, dtype=np.int64), np.ascontiguousarray(Y, dtype=float),
                           i_min)
    return i_min
