"""Leave-one-out prediction of a covariate from DCM parameters.

SPM12 r7771 ``spm_dcm_loo`` ($Id 7120) with ``spm_dcm_ppd`` ($Id 6737): for each subject a
PEB (:func:`ptsd_bidsapp.peb.fit.fit_peb`) is fitted to the others, and the left-out
subject's covariate is inferred by a single-subject PEB whose "group effects" are that
subject's design row, with the training PEB's group effects as the design and its
random-effects covariance as the second-level covariance (Zeidman et al. 2019, "A guide
to group effective connectivity analysis, part 2", NeuroImage 200:12, sec. 2.7; Friston
et al. 2016, NeuroImage 128:413). Our own implementation.

Difference from SPM (documented): ``spm_dcm_peb`` resets its projection to the identity
for a single subject after projecting the subject's posterior on the singular vectors of
the prior covariance (``spm_svd``, sorted by variance), while the training group effects
stay in the original order; the two orders differ whenever the selected parameters'
prior variances are not already in descending order (e.g. fields A and B together: the
subject's B parameters are then compared with the group's A effects). Here the subject and
the group effects are kept in one order, which equals SPM whenever SPM's orders agree (e.g.
field B alone); ``spm_parameter_order=True`` reproduces SPM's mix-up (checked against
r7771 with fields A and B).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ptsd_bidsapp.peb.fit import (
    PEBResult,
    _as_list_of_arrays,
    _inv,
    _PEBObjective,
    _variational_laplace,
    fit_peb,
    principal_basis,
    select_parameters,
)
from ptsd_bidsapp.peb.reduce import _prepare_subject
from ptsd_bidsapp.progress import Ticker

__all__ = ["LOOResult", "loo_predict", "predict_design"]


@dataclass
class LOOResult:
    """Leave-one-out posterior predictive of one covariate (``spm_dcm_loo``).

    Attributes
    ----------
    predicted, predicted_sd : ndarray, (Ns,)
        Posterior mean and SD of the left-out subject's covariate (``qE``, ``sqrt(qC)``).
    observed : ndarray, (Ns,)
    r : float
        Out-of-sample Pearson correlation of predicted with observed.
    p : float
        One-sided p-value of a positive slope of predicted on observed
        (t-test with Ns − 2 df, as ``spm_dcm_loo``).
    df : int
    covariate : str
    subject_names : list of str
    levels : ndarray, optional
        Unique values of the covariate (``spm_dcm_ppd``'s classes).
    probabilities : ndarray, optional
        (levels × Ns) posterior probability of each level for each left-out subject
        (``spm_dcm_loo``'s ``Q``).
    """

    predicted: np.ndarray
    predicted_sd: np.ndarray
    observed: np.ndarray
    r: float
    p: float
    df: int
    covariate: str
    subject_names: list
    levels: np.ndarray | None = field(default=None, repr=False)
    probabilities: np.ndarray | None = field(default=None, repr=False)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame({"subject": self.subject_names, "observed": self.observed,
                             "predicted": self.predicted, "predicted_sd": self.predicted_sd})


def predict_design(peb: PEBResult, qE, qC, pE, pC, x, target: int, train_column, n_refits: int = 4,
                   spm_parameter_order: bool = False):
    """Posterior of one design entry of a new subject from its parameter posterior (``spm_dcm_ppd``).

    A single-subject PEB (no hyperparameters, no posterior shrinkage) of the subject's
    posterior ``N(qE, qC)`` (prior ``N(pE, pC)``; all over ``peb.param_names``) with the
    subject's parameters ``θ = W b + ε``, ``W = peb.Ep``, ``ε ~ N(0, peb.Ce)``, and the design
    row ``b`` as the unknowns: prior ``b ~ N(x with x[target] = 0, diag(v + 1))`` with
    ``v = 4·var(train_column)`` at ``target`` and 0 elsewhere. It is refitted ``n_refits``
    times, each time with the prior mean of ``b[target]`` set to the last posterior mean
    and the prior variances ``v + e^{−i}`` (i = 1, 2, …), as ``spm_dcm_ppd``.

    With ``spm_parameter_order`` the subject's posterior is put in the order of the singular
    vectors of its prior covariance (descending variance) while ``W`` and ``Ce`` keep the
    original order, as r7771 ``spm_dcm_peb`` does for a single subject (module docstring).

    Returns
    -------
    mean, var : float
        Posterior of ``b[target]`` from the last fit.
    prior_mean, prior_var : float
        Its prior in the last fit.
    """
    qE, pE = np.asarray(qE, dtype=float).ravel(), np.asarray(pE, dtype=float).ravel()
    qC, pC = np.atleast_2d(np.asarray(qC, dtype=float)), np.atleast_2d(np.asarray(pC, dtype=float))
    U = principal_basis(pC)
    subject = _prepare_subject(U.T @ qE, U.T @ qC @ U, U.T @ pE, U.T @ pC @ U)
    W = U.T @ peb.Ep
    pQ = _inv(U.T @ peb.Ce @ U)
    if spm_parameter_order:
        values, vectors = np.linalg.eigh(pC) if np.any(pC - np.diag(np.diag(pC))) else (np.diag(pC), np.eye(len(pC)))
        order = np.argsort(-values, kind="stable")
        V = vectors[:, order][:, : U.shape[1]]
        subject = _prepare_subject(V.T @ qE, V.T @ qC @ V, V.T @ pE, V.T @ pC @ V)
        W = peb.Ep
        pQ = _inv(peb.Ce)
    n_x = W.shape[1]
    v = np.zeros(n_x)
    v[target] = 4.0 * float(np.var(np.asarray(train_column, dtype=float), ddof=1))
    bE = np.asarray(x, dtype=float).ravel().copy()
    bE[target] = 0.0
    bC = v + 1.0
    empty = np.zeros(0)
    for i in range(1, n_refits + 1):
        objective = _PEBObjective([subject], [W], np.zeros(1), pQ, [], bE, np.diag(1.0 / bC), empty, np.zeros((0, 0)))
        last, b, _, _, _ = _variational_laplace(objective, bE.copy(), empty)
        mean, var = float(b[target]), float(_inv(-last["dFdbb"])[target, target])
        prior_mean, prior_var = float(bE[target]), float(bC[target])
        bE = bE.copy()
        bE[target] = mean
        bC = v + np.exp(-i)
    return mean, var, prior_mean, prior_var


def _level_probabilities(mean, var, prior_mean, prior_var, levels):
    """Softmax over levels of the evidence for fixing the covariate at each level.

    The limit of ``spm_log_evidence(qE, qC, pE, pC, level, 0)`` (a point-mass reduced prior):
    ``ln N(level; qE, qC) − ln N(level; pE, pC)`` (Savage–Dickey).
    """
    F = stats.norm.logpdf(levels, mean, np.sqrt(var)) - stats.norm.logpdf(levels, prior_mean, np.sqrt(prior_var))
    F = np.exp(F - F.max())
    return F / F.sum()


def loo_predict(
    Ep_list: Sequence[np.ndarray],
    Cp_list: Sequence[np.ndarray],
    pE,
    pC,
    X: np.ndarray,
    param_names: Sequence[str],
    covariate_names: Sequence[str] | None = None,
    *,
    target: int = 1,
    select: Sequence[int] | None = None,
    subject_names: Sequence[str] | None = None,
    spm_parameter_order: bool = False,
    progress: str | None = None,
    **peb_options,
) -> LOOResult:
    """Leave-one-out prediction of a covariate from DCM parameters (``spm_dcm_loo`` r7120).

    For each subject, a PEB is fitted to the other subjects (design ``X`` without that row,
    ``peb_options`` passed to :func:`fit_peb`); the left-out subject's value of column
    ``target`` is then inferred by :func:`predict_design` (``spm_dcm_ppd``): the other design
    entries of the left-out subject enter as prior means with prior variance 1 (then
    e^{−i}), the target with prior mean 0 (then its last estimate) and variance
    4 × the training column's variance (+ 1, then + e^{−i}). ``spm_parameter_order``: see
    :func:`predict_design` (off by default). ``progress`` names the step in the progress lines
    (:class:`ptsd_bidsapp.progress.Ticker`: one at most every 10 s, and at the end).

    Returns
    -------
    LOOResult
        Out-of-sample predictive means/SDs, Pearson r with the observed values, the
        one-sided p-value of a positive slope (``spm_ancova`` T with Ns − 2 df) and the
        posterior probabilities of the covariate's levels.
    """
    X = np.atleast_2d(np.asarray(X, dtype=float))
    n_subjects = X.shape[0]
    pE_list = _as_list_of_arrays(pE, n_subjects, "vec")
    pC_list = _as_list_of_arrays(pC, n_subjects)
    if select is None:
        select = select_parameters(list(param_names), fields=None, prior_variance=np.diag(pC_list[0]))
    select = list(select)
    idx = np.ix_(select, select)
    levels = np.unique(X[:, target])
    predicted = np.zeros(n_subjects)
    predicted_var = np.zeros(n_subjects)
    probabilities = np.zeros((levels.size, n_subjects))
    ticker = Ticker(progress or "PEB leave-one-out", n_subjects)
    for i in range(n_subjects):
        train = [j for j in range(n_subjects) if j != i]
        peb = fit_peb([Ep_list[j] for j in train], [Cp_list[j] for j in train], [pE_list[j] for j in train],
                      [pC_list[j] for j in train], X[train], param_names, covariate_names, select=select,
                      **peb_options)
        mean, var, prior_mean, prior_var = predict_design(
            peb,
            np.asarray(Ep_list[i], dtype=float).ravel()[select],
            np.asarray(Cp_list[i], dtype=float)[idx],
            pE_list[i].ravel()[select],
            pC_list[i][idx],
            X[i],
            target,
            X[train, target],
            spm_parameter_order=spm_parameter_order,
        )
        predicted[i], predicted_var[i] = mean, var
        probabilities[:, i] = _level_probabilities(mean, var, prior_mean, prior_var, levels)
        ticker.update(i + 1)
    observed = X[:, target]
    df = n_subjects - 2
    r = float(np.corrcoef(predicted, observed)[0, 1]) if np.std(predicted) > 0 else float("nan")
    if np.isfinite(r) and abs(r) < 1:
        t = r * np.sqrt(df) / np.sqrt(1 - r**2)   # the slope T of spm_ancova([1 x], [], qE, [0; 1])
        p = float(stats.t.sf(t, df))
    else:
        p = float("nan") if not np.isfinite(r) else (0.0 if r > 0 else 1.0)
    names = covariate_names[target] if covariate_names is not None else f"covariate{target + 1}"
    return LOOResult(predicted=predicted, predicted_sd=np.sqrt(predicted_var), observed=observed, r=r, p=p, df=df,
                     covariate=names,
                     subject_names=list(subject_names) if subject_names is not None else [f"subject{i + 1}" for i in range(n_subjects)],
                     levels=levels, probabilities=probabilities)
