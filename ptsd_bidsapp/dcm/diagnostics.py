"""Fit diagnostics of an estimated DCM (after SPM12 r7771 ``spm_dcm_fmri_check``, $Id 7639).

``spm_dcm_fmri_check`` reports three numbers and colours each red below a threshold:

1. percent variance explained, ``100 PSS / (PSS + RSS)`` with ``PSS`` the summed squares of
   the prediction (without confounds) and ``RSS`` of the residuals (red at <= 10 %);
2. the largest between-region connection ``max |A_ij|, i != j`` in Hz (red at <= 1/8 Hz);
3. the effective number of parameters ``2 KL(q || p) / ln(scans)``: how far the posterior
   moved from the prior in units of the BIC penalty of one parameter (red at <= 1).

This module adds the explained variance per region (a model can fit one region and miss the
other) and the convergence flag, and decides whether the fit is usable (``fit_ok``): the
app's rule flags a DCM whose explained variance is below a configurable threshold (default
10 %, SPM's) or whose inversion did not converge.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["DCMDiagnostics", "dcm_diagnostics", "EXPLAINED_VARIANCE_THRESHOLD",
           "CONNECTION_THRESHOLD", "EFFECTIVE_PARAMETERS_THRESHOLD"]

#: percent; SPM12 ``spm_dcm_fmri_check`` warns at or below this explained variance
EXPLAINED_VARIANCE_THRESHOLD = 10.0
#: Hz; ... and at or below this largest between-region connection
CONNECTION_THRESHOLD = 1.0 / 8.0
#: ... and at or below this effective number of parameters
EFFECTIVE_PARAMETERS_THRESHOLD = 1.0


@dataclass
class DCMDiagnostics:
    """Diagnostics of one DCM fit (see module docstring).

    Attributes
    ----------
    explained_variance : float
        Percent, all regions pooled.
    explained_variance_per_region : dict
        Region -> percent.
    largest_connection : float
        Hz, ``max |A_ij|`` over between-region connections (NaN with one region).
    effective_parameters : float
        ``2 KL(q || p) / ln(scans)``.
    converged : bool
    fit_ok : bool
        Explained variance above ``threshold`` and converged.
    problems : list of str
        Human-readable reasons when ``fit_ok`` is false, and SPM's warnings.
    threshold : float
        The explained-variance threshold used (percent).
    """

    explained_variance: float
    explained_variance_per_region: dict
    largest_connection: float
    effective_parameters: float
    converged: bool
    fit_ok: bool
    problems: list
    threshold: float

    def as_dict(self) -> dict:
        return asdict(self)


def _percent_explained(pred: np.ndarray, resid: np.ndarray) -> float:
    pss, rss = float(np.sum(pred ** 2)), float(np.sum(resid ** 2))
    return 100.0 * pss / (pss + rss) if pss + rss > 0 else float("nan")


def _logdet_psd(matrix: np.ndarray) -> float:
    # log of the product of the positive eigenvalues (the support of the prior)
    w = np.linalg.eigvalsh((matrix + matrix.T) / 2)
    w = w[w > 1e-12 * max(w.max(), 1e-300)]
    return float(np.sum(np.log(w)))


def kl_posterior_prior(Ep, Cp, pE, pC) -> float:
    """``KL(N(Ep, Cp) || N(pE, pC))`` in nats on the support of ``pC`` (pseudo-inverse).

    ``2 KL = tr(pC⁺ Cp) + (Ep - pE)' pC⁺ (Ep - pE) - ln|Cp pC⁺| - rank(pC)`` (the quantity
    ``spm_dcm_fmri_check`` divides by ``ln(scans)``).
    """
    Ep, pE = np.asarray(Ep, float).ravel(), np.asarray(pE, float).ravel()
    Cp, pC = np.asarray(Cp, float), np.asarray(pC, float)
    pC = np.diag(pC) if pC.ndim == 1 else pC
    free = np.flatnonzero(np.diag(pC) > 0)
    pCf, Cpf = pC[np.ix_(free, free)], Cp[np.ix_(free, free)]
    ipC = np.linalg.pinv(pCf)
    d = (Ep - pE)[free]
    two_kl = np.trace(ipC @ Cpf) + d @ ipC @ d - (_logdet_psd(Cpf) - _logdet_psd(pCf)) - free.size
    return float(two_kl / 2.0)


def dcm_diagnostics(result, threshold: float = EXPLAINED_VARIANCE_THRESHOLD) -> DCMDiagnostics:
    """Diagnostics of a :class:`~ptsd_bidsapp.dcm.inversion.DCMResult`.

    Parameters
    ----------
    result : DCMResult
    threshold : float
        Explained variance (percent) at or below which the fit is flagged.

    Returns
    -------
    DCMDiagnostics
    """
    regions = list(result.spec.region_names) if result.spec is not None else \
        [f"R{i + 1}" for i in range(result.y_pred.shape[1])]
    ev = _percent_explained(result.y_pred, result.residuals)
    per_region = {r: _percent_explained(result.y_pred[:, i], result.residuals[:, i]) for i, r in enumerate(regions)}
    A = np.asarray(result.Ep["A"], dtype=float)
    off = ~np.eye(A.shape[0], dtype=bool)
    largest = float(np.max(np.abs(A[off]))) if off.any() else float("nan")
    n_scans = result.y_pred.shape[0]
    effective = 2.0 * kl_posterior_prior(result.Ep_vector, result.Cp, result.pE, result.pC) / np.log(n_scans)
    problems = []
    if not ev > threshold:
        problems.append(f"explained variance {ev:.1f}% <= {threshold:g}%")
    if not result.converged:
        problems.append(f"inversion did not converge in {result.n_iter} iterations")
    fit_ok = not problems
    if not largest > CONNECTION_THRESHOLD:
        problems.append(f"largest between-region connection {largest:.3f} Hz <= 1/8 Hz (spm_dcm_fmri_check)")
    if not effective > EFFECTIVE_PARAMETERS_THRESHOLD:
        problems.append(f"effective number of parameters {effective:.2f} <= 1: the posterior hardly left the prior")
    return DCMDiagnostics(explained_variance=ev, explained_variance_per_region=per_region,
                          largest_connection=largest, effective_parameters=float(effective),
                          converged=bool(result.converged), fit_ok=fit_ok, problems=problems,
                          threshold=float(threshold))
