"""``cv.glmnet(x, y, nfolds = n, grouped = FALSE)`` for the gaussian family.

As R glmnet (Friedman, Hastie & Tibshirani 2010, J Stat Softw 33(1)):

* ``cv.glmnet`` refits every fold with glmnet(lambda = NULL), so each fold computes its own λ
  path (its own λ_max and, unless the user gives one, its own lambda.min.ratio from the fold's
  number of subjects: 1e-2 if fewer than the predictors, else 1e-4), reads the fold's
  predictions of the left-out subject(s) at the full-data λs, and with ``grouped = FALSE`` (forced for leave-one-out) reports
  ``cvm`` = mean squared error over subjects, ``cvsd = sqrt(mean((e² − cvm)²) / (n − 1))``,
  ``λ_min`` = the largest λ with the minimum cvm and ``λ_1se`` = the largest λ whose cvm is
  within one cvsd of it.

The fold fits are the batched path solver of :mod:`ptsd_bidsapp.glmnet.solver`; leave-one-out
by default, seeded K-fold for the nested cross-validation of large samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ptsd_bidsapp.glmnet.solver import (
    _fit_computed_paths,
    _iter_computed_paths,
    _penalty_factor,
    _prescale,
    _training_set_ratios,
)

__all__ = ["GlmnetCV", "TooFewSubjectsError"]

#: Elements (folds × held-out subjects × λs) of the cross-validation errors handled at once.
_PREDICTION_ELEMENTS = 4_000_000


class TooFewSubjectsError(ValueError):
    """A model has fewer usable subjects than the configured minimum."""


def _fold_ids(n: int, n_folds: int | None, rng: np.random.Generator | None) -> np.ndarray:
    """Fold of each subject: LOO (``None`` or n) or a seeded balanced K-fold split."""
    if n_folds is None or n_folds >= n:
        return np.arange(n)
    ids = np.arange(n) % n_folds
    return rng.permutation(ids) if rng is not None else ids


def _cv_batch(x0, W, gidx, Y, yidx, pf, alpha, n_lambda, lambda_min_ratio, fold_ids, with_sd=True, solver="auto"):
    """cv.glmnet for a stack of problems (training set ``W[gidx[b]]``, response ``Y[yidx[b]]``).

    ``fold_ids`` (B, n): the fold of each subject for problem b (-1 = not in that training set).
    ``lambda_min_ratio``: the user's value for every fit, or None: glmnet's default from each
    fit's own number of subjects (the problem's training set, each fold's training set).
    Returns the full fits, cvm (B, L), cvsd (zeros unless ``with_sd``), index of λ_min and λ_1se.
    The fold fits are streamed in batches, so memory does not grow with the number of
    held-out subjects × λs.
    """
    B, n = fold_ids.shape
    p = x0.shape[1]
    full = _fit_computed_paths(x0, W, gidx, Y, yidx, pf, alpha, n_lambda,
                               _training_set_ratios(W, p, lambda_min_ratio)[gidx], solver=solver)
    L = full["lam"].shape[1]
    # one fold problem per (problem, fold), rows ordered by problem then fold
    n_folds = fold_ids.max(axis=1) + 1
    parent = np.repeat(np.arange(B), n_folds)
    fold = np.concatenate([np.arange(k) for k in n_folds])
    held = fold_ids[parent] == fold[:, None]  # (F, n)
    F = parent.size
    # held-out subjects of each fold, ascending, padded with subject 0 (discarded)
    f_idx, subj = np.nonzero(held)
    size = np.bincount(f_idx, minlength=F)
    first = np.concatenate([[0], np.cumsum(size)[:-1]])
    slot = np.arange(f_idx.size) - first[f_idx]
    r = int(size.max())
    order = np.zeros((F, r), dtype=int)
    order[f_idx, slot] = subj
    valid = np.arange(r)[None, :] < size[:, None]
    W_fold = W[gidx[parent]] * ~held
    cv_sum = np.zeros((B, L))
    errors = []
    # cv.glmnet fits each fold on its own computed λ path (glmnet(lambda = NULL)) and predicts
    # at the full-data λs by linear interpolation of the coefficients in λ (predict.glmnet,
    # lambda.interp; λs outside the fold's path are clamped to its ends). With one or two
    # held-out subjects (leave-one-out) the predictions are tracked along the path and
    # interpolated; with many (K-fold) the coefficients are interpolated, then predicted.
    along_path = r <= 2
    batches = _iter_computed_paths(x0, W_fold, np.arange(F), Y, yidx[parent], pf, alpha, n_lambda,
                                   _training_set_ratios(W_fold, p, lambda_min_ratio),
                                   predict_rows=order if along_path else None, solver=solver)
    step = max(1, _PREDICTION_ELEMENTS // (r * L))
    for sl, fits in batches:
        for start in range(0, sl.stop - sl.start, step):
            part = slice(start, min(sl.stop - sl.start, start + step))  # within the batch
            rows = slice(sl.start + part.start, sl.start + part.stop)  # fold problems
            owner = parent[rows]
            targets = full["lam"][owner]
            lam, n_used = fits["lam"][part], fits["n_used"][part]
            if along_path:
                pred = _interpolate_in_lambda(fits["pred"][part], lam, n_used, targets)
            else:
                beta = _interpolate_in_lambda(fits["beta"][part], lam, n_used, targets, axis=1)  # (f, L, p)
                z = (x0[order[rows]] - fits["xm"][part, None, :]) / fits["xs"][part, None, :]
                pred = (fits["ym"][part, None, None]
                        + fits["ys"][part, None, None] * np.matmul(z, beta.transpose(0, 2, 1)))
            err = (Y[yidx[owner][:, None], order[rows]][:, :, None] - pred) ** 2  # (f, r, L)
            if with_sd:
                ok = valid[rows]
                errors.append((owner[np.nonzero(ok)[0]], err[ok]))
            else:
                np.add.at(cv_sum, owner, np.where(valid[rows][:, :, None], err, 0.0).sum(axis=1))
    count = np.bincount(parent, weights=size, minlength=B)
    cvsd = np.zeros((B, L))
    if with_sd:
        owner = np.concatenate([o for o, _ in errors])
        err = np.concatenate([e for _, e in errors])
        np.add.at(cv_sum, owner, err)
        cvm = cv_sum / count[:, None]
        dev = np.zeros((B, L))
        np.add.at(dev, owner, (err - cvm[owner]) ** 2)
        cvsd = np.sqrt(dev / count[:, None] / np.maximum(count - 1, 1)[:, None])
    else:
        cvm = cv_sum / count[:, None]
    i_min, i_1se = _select_lambda(cvm, cvsd, full["n_used"])
    return full, cvm, cvsd, i_min, i_1se


def _interpolate_in_lambda(values, lam, n_used, targets, axis=-1):
    """glmnet's lambda.interp: ``values`` along each row's λ path (λ on ``axis``), read at ``targets`` (E, T).

    ``values`` is (E, L), (E, r, L) (several predictions per path) or, with ``axis=1``,
    (E, L, p) (coefficients).
    """
    E, L = lam.shape
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
    if values.ndim == 2:
        return frac * values[rows, left] + (1.0 - frac) * values[rows, right]
    if axis == 1:  # (E, L, p)
        left, right, frac = left[:, :, None], right[:, :, None], frac[:, :, None]
        return (frac * np.take_along_axis(values, left, axis=1)
                + (1.0 - frac) * np.take_along_axis(values, right, axis=1))
    # (E, r, L): the same weights for every row predicted along a path
    left, right, frac = left[:, None, :], right[:, None, :], frac[:, None, :]
    return frac * np.take_along_axis(values, left, axis=2) + (1.0 - frac) * np.take_along_axis(values, right, axis=2)


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


def _kfold_cv_batch(x0, W, gidx, Y, yidx, pf, alpha, n_lambda, lambda_min_ratio, n_folds=None, rngs=None,
                    with_sd=True, solver="auto"):
    """_cv_batch with LOO (``n_folds`` None) or seeded K-fold folds over each problem's training subjects.

    Problem b draws its folds with ``rngs[b]`` (problems in order, so a generator shared by
    several problems draws for them in that order).
    """
    B = gidx.size
    fold_ids = np.full((B, x0.shape[0]), -1)
    for b in range(B):
        members = np.flatnonzero(W[gidx[b]] > 0)
        fold_ids[b, members] = _fold_ids(len(members), n_folds, None if rngs is None else rngs[b])
    return _cv_batch(x0, W, gidx, Y, yidx, pf, alpha, n_lambda, lambda_min_ratio, fold_ids, with_sd=with_sd,
                     solver=solver)


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
        Smallest λ as a fraction of λ_max, for the full fit and every fold; None = glmnet's
        default from each fit's own number of subjects m (1e-2 if m < p else 1e-4): a fold
        can take 1e-2 while the full data take 1e-4, as in cv.glmnet.
    penalty_factor : array-like or None
        Per-predictor penalty factors (0 = unpenalised), rescaled to sum to p as glmnet does.
    solver : {"auto", "compiled", "numpy"}
        Path solver (:func:`ptsd_bidsapp.glmnet.solver.resolve_solver`); the same coefficients.

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
    solver: str = "auto"
    lambdas_: np.ndarray = field(default=None, init=False, repr=False)

    def fit(self, X, y) -> "GlmnetCV":
        X = np.asarray(X, dtype=float)
        y = np.asarray(y, dtype=float)
        n, p = X.shape
        if n < 3:
            raise TooFewSubjectsError(f"cv.glmnet needs at least 3 subjects (got {n})")
        x0, mean, sd = _prescale(X)
        pf = _penalty_factor(self.penalty_factor, p)
        one = np.zeros(1, dtype=int)
        full, cvm, cvsd, i_min, i_1se = _kfold_cv_batch(x0, np.ones((1, n)), one, y[None, :], one, pf, self.alpha,
                                                        self.n_lambda, self.lambda_min_ratio, solver=self.solver)
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
