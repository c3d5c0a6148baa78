"""Leave-one-out prediction of a covariate from DCM parameters (SPM12 ``spm_dcm_loo``).

For each subject a PEB (:func:`ptsd_bidsapp.peb.fit.fit_peb`) is fitted to the others and
the left-out subject's covariate is inferred from its own parameter posterior, as
``spm_dcm_ppd`` does (Zeidman et al. 2019, "A guide to group effective connectivity
analysis, part 2", NeuroImage 200:12, sec. 2.7; Friston et al. 2016, NeuroImage 128:413).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ptsd_bidsapp.peb.fit import PEBResult, _as_list_of_arrays, fit_peb
from ptsd_bidsapp.peb.reduce import _inv, _prepare_subject, _sym

__all__ = ["LOOResult", "loo_predict"]

@dataclass
class LOOResult:
    """Leave-one-out posterior predictive of one covariate (``spm_dcm_loo``).

    Attributes
    ----------
    predicted, predicted_sd : ndarray, (Ns,)
        Posterior predictive mean and SD of the left-out subject's covariate.
    observed : ndarray, (Ns,)
    r : float
        Out-of-sample Pearson correlation of predicted with observed.
    p : float
        One-sided p-value of a positive slope of predicted on observed
        (t-test with Ns − 2 df, as ``spm_dcm_loo``).
    df : int
    covariate : str
    """

    predicted: np.ndarray
    predicted_sd: np.ndarray
    observed: np.ndarray
    r: float
    p: float
    df: int
    covariate: str
    subject_names: list

    def table(self) -> pd.DataFrame:
        return pd.DataFrame({"subject": self.subject_names, "observed": self.observed,
                             "predicted": self.predicted, "predicted_sd": self.predicted_sd})


def _predict_covariate(peb: PEBResult, qE, qC, pE, pC, x_known, target, prior_mean, prior_var):
    """Posterior of one design entry of a new subject given its parameter posterior.

    The subject's parameters θ ~ N(W x, Ce) with W = ``peb.Ep`` (the PEB's group effects)
    and Ce the random-effects covariance; the unknown entry x_t ~ N(prior_mean, prior_var),
    the other entries known. The subject's posterior enters through BMR: ΔF(rE) is
    quadratic in the empirical prior mean rE = W x, so the posterior over x_t is Gaussian
    (the single-subject PEB of ``spm_dcm_ppd``, solved in closed form).
    """
    subject = _prepare_subject(qE, qC, pE, pC)
    rC = peb.Ce
    rP = _inv(rC)
    sC = _inv(_sym(subject.likelihood_precision + rP))
    # ΔF(rE) = const + rE'·rP·sC·η − ½ rE'(rP − rP·sC·rP) rE
    curvature = rP - rP @ sC @ rP
    linear = rP @ sC @ subject.likelihood_linear
    w = peb.Ep[:, target]
    offset = peb.Ep @ x_known
    precision = w @ curvature @ w + 1.0 / prior_var
    mean = (w @ (linear - curvature @ offset) + prior_mean / prior_var) / precision
    return mean, 1.0 / precision


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
    **peb_options,
) -> LOOResult:
    """Leave-one-out prediction of a covariate from DCM parameters (``spm_dcm_loo``).

    For each subject, a PEB is fitted to the other subjects (design ``X`` without that
    row); the left-out subject's value of column ``target`` is then inferred from its own
    parameter posterior under the training PEB's group effects and random-effects
    covariance, with the prior ``N(mean of training column, 4 × variance of the column)``
    (``spm_dcm_ppd`` uses a prior variance of 4 × var). The other design entries of the
    left-out subject are treated as known.

    Returns
    -------
    LOOResult
        Out-of-sample predictive means/SDs, Pearson r with the observed values and the
        one-sided p-value of a positive relation.
    """
    X = np.atleast_2d(np.asarray(X, dtype=float))
    n_subjects = X.shape[0]
    pE_list = _as_list_of_arrays(pE, n_subjects, "vec")
    pC_list = _as_list_of_arrays(pC, n_subjects)
    if select is None:
        select = [i for i in range(len(param_names)) if pC_list[0][i, i] > 0]
    select = list(select)
    idx = np.ix_(select, select)
    predicted = np.zeros(n_subjects)
    predicted_var = np.zeros(n_subjects)
    for i in range(n_subjects):
        train = [j for j in range(n_subjects) if j != i]
        peb = fit_peb([Ep_list[j] for j in train], [Cp_list[j] for j in train], [pE_list[j] for j in train],
                      [pC_list[j] for j in train], X[train], param_names, covariate_names, select=select,
                      **peb_options)
        column = X[train, target]
        x_known = X[i].copy()
        x_known[target] = 0.0
        mean, var = _predict_covariate(
            peb,
            np.asarray(Ep_list[i], dtype=float).ravel()[select],
            np.asarray(Cp_list[i], dtype=float)[idx],
            pE_list[i].ravel()[select],
            pC_list[i][idx],
            x_known,
            target,
            float(column.mean()),
            float(4.0 * column.var(ddof=1)),
        )
        predicted[i], predicted_var[i] = mean, var
    observed = X[:, target]
    df = n_subjects - 2
    r = float(np.corrcoef(predicted, observed)[0, 1]) if np.std(predicted) > 0 else float("nan")
    if np.isfinite(r) and abs(r) < 1:
        t = r * np.sqrt(df) / np.sqrt(1 - r**2)
        p = float(stats.t.sf(t, df))
    else:
        p = float("nan") if not np.isfinite(r) else (0.0 if r > 0 else 1.0)
    names = covariate_names[target] if covariate_names is not None else f"covariate{target + 1}"
    return LOOResult(predicted=predicted, predicted_sd=np.sqrt(predicted_var), observed=observed, r=r, p=p, df=df,
                     covariate=names,
                     subject_names=list(subject_names) if subject_names is not None else [f"subject{i + 1}" for i in range(n_subjects)])
