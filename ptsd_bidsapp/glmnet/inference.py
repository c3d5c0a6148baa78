"""Inference on a cross-validated elastic net: nested CV, permutation test, bootstrap.

On top of ``cv.glmnet``: nested cross-validation (outer leave-one-out; inner ``cv.glmnet`` on the outer
training set picks λ_min; the outer subject is predicted at it), a permutation test of the
nested-CV R², and bootstrap selection frequencies. All randomness comes from
``numpy.random.SeedSequence(seed)`` spawned once per permutation / bootstrap, so the results do
not depend on how the work is split over processes (``n_jobs``).

The inner ``cv.glmnet`` is :mod:`ptsd_bidsapp.glmnet.cv`, the path fits
:mod:`ptsd_bidsapp.glmnet.solver`.
"""

from __future__ import annotations

import math
import os
import zlib

import numpy as np

from ptsd_bidsapp.glmnet.cv import _fold_ids, _interpolate_in_lambda, _kfold_cv_batch, _select_lambda
from ptsd_bidsapp.progress import Ticker
from ptsd_bidsapp.glmnet import compiled
from ptsd_bidsapp.glmnet.solver import (
    _BATCH_ELEMENTS,
    _fit_computed_paths,
    _fit_given_paths,
    _lambda_min_ratio,
    _penalty_factor,
    _prescale,
    resolve_solver,
)

__all__ = ["nested_cv", "permutation_test", "bootstrap_selection", "prediction_metrics", "sequential_p_value"]

#: Elements (permutations × training sets × subjects) of the weight matrices per K-fold permutation chunk.
_CHUNK_ELEMENTS = 8_000_000


def _spawn(seed: int, key: str, count: int) -> list[np.random.Generator]:
    """``count`` independent generators for task ``key`` (stable whatever the job split)."""
    ss = np.random.SeedSequence(entropy=int(seed), spawn_key=(zlib.crc32(key.encode()),))
    return [np.random.default_rng(child) for child in ss.spawn(count)]


def _nested_loo_predictions(x0, Y, pf, alpha, n_lambda, lambda_min_ratio, solver="auto"):
    """Nested leave-one-out predictions for each row of Y (Q, n).

    Outer fold i trains on all but i; its inner cv.glmnet's fold j trains on all but {i, j}.
    Since cv.glmnet fits each fold on its own computed λ path, that fit depends only on the
    training set, so one fit per unordered pair {i, j} serves both outer i (predicting j)
    and outer j (predicting i): n + n(n−1)/2 path fits per row of Y instead of n². The
    training sets do not depend on Y, so all rows share their Gram matrices (problems are
    ordered training set first, then row of Y).
    """
    Q, n = Y.shape
    p = x0.shape[1]
    eye = np.eye(n, dtype=bool)
    rows_q = np.arange(Q)
    gidx = np.repeat(np.arange(n), Q)
    outer = _fit_computed_paths(x0, (~eye).astype(float), gidx, Y, np.tile(rows_q, n), pf, alpha, n_lambda,
                                _lambda_min_ratio(n - 1, p, lambda_min_ratio), predict_rows=gidx[:, None],
                                solver=solver)
    iu, ju = np.triu_indices(n, 1)
    n_pairs = iu.size
    W_pair = np.ones((n_pairs, n))
    W_pair[np.arange(n_pairs), iu] = 0.0
    W_pair[np.arange(n_pairs), ju] = 0.0
    gidx = np.repeat(np.arange(n_pairs), Q)
    pairs = _fit_computed_paths(x0, W_pair, gidx, Y, np.tile(rows_q, n_pairs), pf, alpha, n_lambda,
                                _lambda_min_ratio(n - 2, p, lambda_min_ratio),
                                predict_rows=np.stack([iu, ju], axis=1)[gidx], solver=solver)
    pair_index = np.full((n, n), -1)
    pair_index[iu, ju] = np.arange(n_pairs)
    pair_index[ju, iu] = np.arange(n_pairs)
    if resolve_solver(solver) == "compiled":  # the same λ_min, one compiled loop without the large intermediates
        i_min = compiled.nested_loo_lambda_min(pairs["pred"], pairs["lam"], pairs["n_used"], outer["lam"],
                                               outer["n_used"], pair_index, Y)
    else:
        oi, oj = np.nonzero(~eye)  # outer i, inner held-out j (row-major: j ascending within i)
        slot = (oj > oi).astype(int)  # the pair fit {i, j} predicts iu in slot 0, ju in slot 1
        q = (pair_index[oi, oj][:, None] * Q + rows_q).ravel()  # (n(n−1)·Q,) pair problems
        o = (oi[:, None] * Q + rows_q).ravel()  # their outer problems
        own = pairs["pred"][q, np.repeat(slot, Q)]
        interp = _interpolate_in_lambda(own, pairs["lam"][q], pairs["n_used"][q], outer["lam"][o])
        err = (Y[np.tile(rows_q, oi.size), np.repeat(oj, Q)][:, None] - interp) ** 2
        cvm = err.reshape(n, n - 1, Q, -1).mean(axis=1).reshape(n * Q, -1)  # outer problem order
        i_min, _ = _select_lambda(cvm, np.zeros_like(cvm), outer["n_used"])
    pred = outer["pred"][np.arange(n * Q), 0, i_min].reshape(n, Q).T
    train_mean = (Y.sum(axis=1, keepdims=True) - Y) / (n - 1)
    return pred, train_mean


def _nested_predictions(x0, Y, pf, alpha, n_lambda, lambda_min_ratio, outer_folds, inner_folds, rngs,
                        solver="auto"):
    """Outer-fold predictions for each row of Y (Q, n): an inner cv.glmnet picks λ_min.

    ``outer_folds``: fold id per subject (LOO = arange(n)); ``inner_folds``: None (LOO) or K,
    drawn with ``rngs[q]`` for the outer folds (in order) of row q. Returns predictions (Q, n)
    and the outer-training means of y (Q, n), the reference of the out-of-sample R².
    """
    Q, n = Y.shape
    n_outer = int(outer_folds.max()) + 1
    if inner_folds is None and n_outer == n:
        return _nested_loo_predictions(x0, Y, pf, alpha, n_lambda, lambda_min_ratio, solver)
    held = outer_folds[None, :] == np.arange(n_outer)[:, None]  # (n_outer, n)
    W = (~held).astype(float)
    gidx = np.repeat(np.arange(n_outer), Q)  # outer fold first, then row of Y
    yidx = np.tile(np.arange(Q), n_outer)
    inner_rngs = None if inner_folds is None else [rngs[q] for q in yidx]
    # each outer fit and each of its inner folds takes glmnet's default lambda.min.ratio from its
    # own training-set size (unless given), as cv.glmnet on the outer training set would
    full, _, _, i_min, _ = _kfold_cv_batch(x0, W, gidx, Y, yidx, pf, alpha, n_lambda, lambda_min_ratio,
                                           inner_folds, inner_rngs, with_sd=False, solver=solver)
    r_idx, subj = np.nonzero(held[gidx])
    z = (x0[subj] - full["xm"][r_idx]) / full["xs"][r_idx]
    beta = full["beta"][r_idx, i_min[r_idx]]
    pred = np.zeros((Q, n))
    train_mean = np.zeros((Q, n))
    pred[yidx[r_idx], subj] = full["ym"][r_idx] + full["ys"][r_idx] * np.einsum("ep,ep->e", beta, z)
    means = (Y[yidx] * W[gidx]).sum(axis=1) / W[gidx].sum(axis=1)
    train_mean[yidx[r_idx], subj] = means[r_idx]
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
              nested_max_loo=30, nested_k_folds=10, solver="auto") -> dict:
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
    pred, train_mean = _nested_predictions(x0, y[None, :], pf, alpha, n_lambda, lambda_min_ratio, outer, inner, rngs,
                                           solver)
    metrics = {k: float(v[0]) for k, v in prediction_metrics(y, pred, train_mean).items()}
    return {"predicted": pred[0], "observed": y, "train_mean": train_mean[0], "outer_folds": outer,
            "inner_folds": "loo" if inner is None else inner, **metrics}


def _permutation_chunk(x0, y, pf, alpha, n_lambda, lambda_min_ratio, outer, inner, solver, rngs):
    Y = np.stack([rng.permutation(y) for rng in rngs])
    # each permutation's generator also draws its inner K-fold splits (only used above nested_max_loo)
    pred, train_mean = _nested_predictions(x0, Y, pf, alpha, n_lambda, lambda_min_ratio, outer, inner, rngs, solver)
    return prediction_metrics(Y, pred, train_mean)["r2"]


def _permutation_chunk_size(n: int, p: int, n_outer: int, inner: int | None) -> int:
    """Permutations per chunk: a few solver batches of path fits, memory bounded for large n."""
    if inner is None:  # LOO: the n + n(n−1)/2 training sets are shared by the chunk's permutations
        per_permutation = n + n * (n - 1) // 2
        return int(np.clip(4 * (_BATCH_ELEMENTS // max(p * p, 1)) // per_permutation, 1, 64))
    # K-fold: every inner fold of every permutation is its own training set; a (fold, subject)
    # weight matrix is held per chunk
    per_permutation = n_outer * (1 + inner) * n
    return int(np.clip(_CHUNK_ELEMENTS // per_permutation, 1, 64))


def sequential_p_value(null: np.ndarray, observed: float, h: int | None, n_max: int) -> tuple[float, int]:
    """Monte Carlo p-value of ``observed`` from null statistics in their drawn order; (p, number used).

    ``h`` None: the fixed-size test, p = (1 + G) / (1 + P) with G = #{null ≥ observed} over all
    P = ``n_max`` statistics. ``h`` an integer: Besag & Clifford (1991, Biometrika 78:301,
    "Sequential Monte Carlo p-values"): stop at the L-th statistic, the first at which h of
    them reach the observed, p = h / L; if fewer than h of the ``n_max`` reach it,
    p = (1 + G) / (1 + n_max) as the fixed-size test. Both are valid (under the null,
    P(p ≤ a) ≤ a); ``null`` may hold more statistics than the sequential test uses (it reads
    them in order, so the result does not depend on how many were computed ahead).
    """
    null = np.asarray(null, dtype=float)
    reached = null >= observed - 1e-12  # ties (and rounding of equal R²) count as reaching it
    if h is not None:
        hits = np.flatnonzero(reached)
        if hits.size >= h and hits[h - 1] < n_max:
            used = int(hits[h - 1]) + 1
            return h / used, used
    if null.size < n_max:
        raise ValueError(f"{null.size} null statistics for a test of {n_max}")
    return (1 + int(np.sum(reached[:n_max]))) / (1 + n_max), int(n_max)


def permutation_test(X, y, observed_r2: float, n_permutations=1000, alpha=0.5, n_lambda=100,
                     lambda_min_ratio=None, penalty_factor=None, seed=0, n_jobs=1, nested_max_loo=30,
                     nested_k_folds=10, chunk_size=None, solver="auto", sequential_h=None,
                     progress: str | None = None) -> dict:
    """Permutation test of the nested-CV R²: permute y, rerun the whole nested CV.

    ``progress`` names the step in the progress lines (:class:`ptsd_bidsapp.progress.Ticker`,
    one at most every 10 s).

    p = (1 + #{R²_perm ≥ R²_obs}) / (1 + P). Each permutation has its own generator spawned
    from ``seed``, so the null distribution is the same for any ``n_jobs`` / chunking.

    ``sequential_h`` (None = off): Besag & Clifford's sequential test
    (:func:`sequential_p_value`): permutations are run in their seeded order, chunk by chunk,
    until h null R² reach the observed (p = h / L after L permutations) or all P are run (the
    same p as the fixed-size test). A model far from significance stops after ~h / p
    permutations; one with p < h / P runs all of them. ``null_r2`` then holds the L used.
    """
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    n, p = X.shape
    if n_permutations <= 0:
        return {"n_permutations": 0, "p_value": None, "null_r2": np.zeros(0), "n_permutations_max": 0,
                "sequential_h": sequential_h}
    if sequential_h is not None and int(sequential_h) < 1:
        raise ValueError(f"sequential_h must be a positive integer or None (got {sequential_h!r})")
    x0, _, _ = _prescale(X)
    pf = _penalty_factor(penalty_factor, p)
    outer, inner = _outer_folds(n, nested_max_loo, nested_k_folds, seed)
    rngs = _spawn(seed, "permutations", n_permutations)
    workers = 1 if n_jobs == 1 else (n_jobs if n_jobs > 0 else (os.cpu_count() or 1))
    if chunk_size is None:
        chunk_size = _permutation_chunk_size(n, p, int(outer.max()) + 1, inner)
        if workers > 1:  # at least a few chunks per process (load balance)
            chunk_size = max(1, min(chunk_size, math.ceil(n_permutations / (4 * workers))))
        if sequential_h is not None:  # stop soon after the h-th reaching statistic
            chunk_size = max(1, min(chunk_size, 2 * int(sequential_h)))
    chunks = [rngs[i:i + chunk_size] for i in range(0, n_permutations, chunk_size)]

    args = (x0, y, pf, alpha, n_lambda, lambda_min_ratio, outer, inner, solver)
    # chunks run in waves (one per process); the sequential test stops after the wave in which
    # the h-th null R² reaching the observed appears
    wave = len(chunks) if sequential_h is None else workers
    ticker = Ticker(progress or "permutation test", n_permutations)
    null = []
    parallel = None
    for first in range(0, len(chunks), wave):
        todo = chunks[first:first + wave]
        if workers == 1 or len(todo) == 1:
            finished = (_permutation_chunk(*args, chunk) for chunk in todo)
        else:
            from joblib import Parallel, delayed

            # results come back in submission order whatever the process that computed them
            parallel = parallel or Parallel(n_jobs=n_jobs, return_as="generator")
            finished = parallel(delayed(_permutation_chunk)(*args, chunk) for chunk in todo)
        for values in finished:
            null.append(values)
            ticker.update(sum(len(v) for v in null))
        if sequential_h is not None and np.sum(np.concatenate(null) >= observed_r2 - 1e-12) >= int(sequential_h):
            break
    null = np.concatenate(null)
    h = None if sequential_h is None else int(sequential_h)
    p_value, used = sequential_p_value(null, observed_r2, h, n_permutations)
    return {"n_permutations": used, "p_value": p_value, "null_r2": null[:used],
            "n_permutations_max": int(n_permutations), "sequential_h": h}


def bootstrap_selection(X, y, lambdas, index_min: int, n_bootstrap=500, alpha=0.5, penalty_factor=None,
                        seed=0, solver="auto") -> dict:
    """Selection frequency of each predictor over bootstrap resamples at the full-data λ_min.

    Each resample (subjects drawn with replacement) is fitted along the full-data λ sequence
    down to λ_min (glmnet with those λs and the resample as case weights, which equals
    duplicating rows); a predictor is selected when its coefficient at λ_min is non-zero.

    Returns
    -------
    dict
        ``n_bootstrap``; ``frequency`` (p,) selection frequency; ``beta_per_sd``
        (n_bootstrap, p) each resample's coefficients at λ_min per full-data SD of the
        predictor (units of y), from which the reports take percentile intervals.
    """
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    n, p = X.shape
    if n_bootstrap <= 0:
        return {"n_bootstrap": 0, "frequency": np.full(p, np.nan), "beta_per_sd": np.empty((0, p))}
    x0, _, _ = _prescale(X)
    pf = _penalty_factor(penalty_factor, p)
    rngs = _spawn(seed, "bootstrap", n_bootstrap)
    W = np.stack([np.bincount(rng.integers(0, n, n), minlength=n).astype(float) for rng in rngs])
    lam = np.broadcast_to(np.asarray(lambdas, dtype=float)[: index_min + 1], (n_bootstrap, index_min + 1))
    fits = _fit_given_paths(x0, W, np.arange(n_bootstrap), y[None, :], np.zeros(n_bootstrap, dtype=int), pf, alpha,
                            np.ascontiguousarray(lam), np.full(n_bootstrap, index_min + 1), solver=solver)
    at_min = fits["beta"][:, index_min, :]
    selected = at_min != 0
    # per full-data SD of each predictor, units of y (as GlmnetCV.coef_per_sd_)
    per_sd = fits["ys"][:, None] * at_min / fits["xs"]
    return {"n_bootstrap": int(n_bootstrap), "frequency": selected.mean(axis=0), "beta_per_sd": per_sd}
