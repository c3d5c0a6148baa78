"""Bayesian model reduction (BMR) under the Laplace assumption.

Given the Gaussian prior ``N(pE, pC)`` and posterior ``N(qE, qC)`` of a *full* model, the
evidence and posterior of any *reduced* model that differs only in its prior ``N(rE, rC)``
follow analytically, without re-fitting (Friston & Penny 2011, "Post hoc Bayesian model
selection", NeuroImage 56:2089, eqs. 6–9; Friston et al. 2016, NeuroImage 128:413, eq. A.6).
This is the convention of SPM12 r7771 ``spm_log_evidence_reduce`` ($Id 6849), computed in
its exact limit; :func:`regularised_reduced_free_energy` is the regularised form of
``spm_log_evidence`` ($Id 6856) that ``spm_dcm_bmr_all`` scores its search with.

Also the per-subject reduction that ``spm_dcm_peb`` repeats at every iteration
(``_prepare_subject``, ``_reduce``): the same algebra for a full-rank empirical prior, with
the terms that do not depend on that prior precomputed (Friston & Penny 2011, eq. 7).

Writing the (implicit) likelihood as the ratio ``q(θ)/p(θ)``, i.e. a Gaussian in θ with
precision ``Λ = qP − pP`` and linear term ``η = qP·qE − pP·pE``::

    ΔF = ln ∫ q(θ) r(θ) / p(θ) dθ
       = ½ ln|qP| − ½ ln|pP| − ½ qE'qP qE + ½ pE'pP pE + ln ∫ exp(−½θ'Λθ + η'θ) r(θ) dθ

and the reduced posterior is proportional to ``exp(−½θ'Λθ + η'θ) · r(θ)``.

Singular covariances are handled exactly rather than by regularised inversion:

* directions outside the range of ``pC`` are fixed in the full model; the problem is
  projected on the range of ``pC`` (as ``spm_log_evidence_reduce`` does with ``spm_svd``);
* a reduced prior whose covariance is singular (parameters "switched off", ``rC = R pC R``
  with ``R`` a 0/1 diagonal) is parameterised as ``θ = rE + V z``, ``z ~ N(0, S)``, where
  ``V`` spans the range of ``rC`` and ``S = V' rC V``; the integral over ``z`` is Gaussian.
  This is the limit of SPM's regularised formula as the precision of the removed
  parameters goes to infinity, computed without large numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["reduced_free_energy", "regularised_reduced_free_energy", "range_basis"]


def range_basis(cov: np.ndarray, rtol: float = 1e-12) -> np.ndarray:
    """Orthonormal basis of the range of a symmetric positive semi-definite matrix.

    Eigenvectors whose eigenvalue exceeds ``rtol`` × the largest eigenvalue (the role of
    ``spm_svd`` in SPM). Returns an ``(n, k)`` array; ``k`` may be 0.
    """
    cov = np.asarray(cov, dtype=float)
    n = cov.shape[0]
    if n == 0:
        return np.zeros((0, 0))
    values, vectors = np.linalg.eigh((cov + cov.T) / 2)
    top = values.max(initial=0.0)
    if top <= 0:
        return np.zeros((n, 0))
    keep = values > rtol * top
    return vectors[:, keep]


def _sym(matrix):
    return (matrix + matrix.T) / 2


def _vectors(*arrays):
    """Each argument as a flat float vector."""
    return [np.asarray(a, dtype=float).ravel() for a in arrays]


def _matrices(*arrays):
    """Each argument as a 2-D float array (a scalar variance as 1 × 1)."""
    return [np.atleast_2d(np.asarray(a, dtype=float)) for a in arrays]


def _inv(matrix):
    return _sym(np.linalg.inv(matrix))


def _logdet(matrix: np.ndarray) -> float:
    sign, value = np.linalg.slogdet(matrix)
    if sign <= 0:
        raise np.linalg.LinAlgError("matrix is not positive definite (reduced model not nested?)")
    return float(value)


def reduced_free_energy(qE, qC, pE, pC, rE, rC, rtol: float = 1e-12):
    """Free energy and posterior of a reduced model by Bayesian model reduction.

    Mirrors SPM12 ``spm_log_evidence_reduce`` (Friston & Penny 2011, eqs. 6–9).

    Parameters
    ----------
    qE, qC : array, (n,), (n, n)
        Posterior mean and covariance of the full model.
    pE, pC : array, (n,), (n, n)
        Prior mean and covariance of the full model (may be singular: fixed parameters).
    rE, rC : array, (n,), (n, n)
        Prior mean and covariance of the reduced model. Its covariance may be singular
        (removed parameters are fixed at ``rE``). The reduced model must be nested: its
        range inside that of ``pC`` and the reduced posterior precision positive definite.
    rtol : float
        Relative eigenvalue threshold defining the range of ``pC`` and ``rC``.

    Returns
    -------
    dF : float
        ``ln p(y | reduced) − ln p(y | full)`` (nats) under the Laplace assumption.
    sE : ndarray, (n,)
        Posterior mean of the reduced model.
    sC : ndarray, (n, n)
        Posterior covariance of the reduced model.
    """
    qE, pE, rE = _vectors(qE, pE, rE)
    qC, pC, rC = _matrices(qC, pC, rC)

    # Restrict to the parameters that are free in the full model (range of pC).
    U = range_basis(pC, rtol)
    u_qE, u_pE, u_rE = U.T @ qE, U.T @ pE, U.T @ rE
    u_qC, u_pC, u_rC = U.T @ qC @ U, U.T @ pC @ U, U.T @ rC @ U

    qP = _inv(u_qC)
    pP = _inv(u_pC)
    likelihood_precision = qP - pP                       # Λ
    likelihood_linear = qP @ u_qE - pP @ u_pE            # η

    # Normalising terms of q/p (dimension-free: ratio of two densities).
    F = 0.5 * (_logdet(qP) - _logdet(pP)) - 0.5 * (u_qE @ qP @ u_qE) + 0.5 * (u_pE @ pP @ u_pE)

    # Reduced prior: θ = rE + V z, z ~ N(0, S). The rtol on rC is relative to pC's scale
    # so that a parameter switched off (variance exactly 0) is always recognised.
    values, vectors = np.linalg.eigh((u_rC + u_rC.T) / 2)
    scale = np.linalg.eigvalsh(u_pC).max(initial=0.0) if u_pC.size else 0.0
    V = vectors[:, values > rtol * max(scale, np.finfo(float).tiny)]
    S = V.T @ u_rC @ V

    # Terms of exp(−½θ'Λθ + η'θ) evaluated along the reduced prior's affine subspace.
    F += -0.5 * (u_rE @ likelihood_precision @ u_rE) + likelihood_linear @ u_rE
    k = V.shape[1]
    if k:
        gradient = V.T @ (likelihood_linear - likelihood_precision @ u_rE)
        S_inv = _inv(S)
        H = V.T @ likelihood_precision @ V + S_inv          # reduced posterior precision over z
        H = (H + H.T) / 2
        z_cov = _inv(H)
        z_mean = z_cov @ gradient
        F += -0.5 * (_logdet(S) + _logdet(H)) + 0.5 * (gradient @ z_mean)
        u_sE = u_rE + V @ z_mean
        u_sC = V @ z_cov @ V.T
    else:
        u_sE = u_rE
        u_sC = np.zeros_like(u_rC)

    # Back to the full parameter space; directions fixed in the full model keep rE.
    sE = U @ u_sE + (rE - U @ (U.T @ rE))
    sC = U @ u_sC @ U.T
    return float(F), sE, (sC + sC.T) / 2


# ---------------------------------------------------------------------------------------
# per-subject reduction for the PEB (full-rank empirical priors)
# ---------------------------------------------------------------------------------------
def _logdet_pd(matrix) -> float:
    sign, value = np.linalg.slogdet(matrix)
    return float(value) if sign > 0 else -np.inf


@dataclass
class _Subject:
    """Precomputed terms of one subject's BMR (full-rank case, Friston & Penny 2011 eq. 7)."""

    likelihood_precision: np.ndarray  # qP − pP
    likelihood_linear: np.ndarray  # qP qE − pP pE
    constant: float  # ½ln|qP| − ½ln|pP| − ½qE'qP qE + ½pE'pP pE


@dataclass
class _Subjects:
    """The :class:`_Subject` terms of several subjects stacked on a leading axis."""

    likelihood_precision: np.ndarray  # (n, p, p)
    likelihood_linear: np.ndarray  # (n, p)
    constant: np.ndarray  # (n,)

    @classmethod
    def stack(cls, subjects) -> "_Subjects":
        return cls(np.stack([s.likelihood_precision for s in subjects]),
                   np.stack([s.likelihood_linear for s in subjects]),
                   np.array([s.constant for s in subjects], dtype=float))


def _prepare_subject(qE, qC, pE, pC) -> _Subject:
    qP, pP = _inv(qC), _inv(pC)
    constant = 0.5 * (_logdet_pd(qP) - _logdet_pd(pP)) - 0.5 * qE @ qP @ qE + 0.5 * pE @ pP @ pE
    return _Subject(qP - pP, qP @ qE - pP @ pE, float(constant))


def _reduce_stack(subjects: _Subjects, rE, rP, logdet_rP):
    """:func:`_reduce` for every subject at once: ``rE`` (n, p); returns dF (n,), sE (n, p), sC (n, p, p).

    The same operations per subject, on stacked arrays (one batched LAPACK call instead of a
    Python loop). A subject whose reduced precision is not positive definite gets dF = −inf.
    """
    sP = subjects.likelihood_precision + rP[None]
    sP = (sP + np.swapaxes(sP, 1, 2)) / 2
    sC = np.linalg.inv(sP)
    sC = (sC + np.swapaxes(sC, 1, 2)) / 2
    sE = np.einsum("ipq,iq->ip", sC, subjects.likelihood_linear + rE @ rP.T)
    sign, logdet_sP = np.linalg.slogdet(sP)
    quadratic = np.einsum("ip,ip->i", rE @ rP.T, rE) - np.einsum("ip,ipq,iq->i", sE, sP, sE)
    dF = subjects.constant + 0.5 * (logdet_rP - logdet_sP) - 0.5 * quadratic
    # reduced posterior precision not positive definite (an approximate first-level posterior
    # less precise than its prior): this empirical prior is inadmissible
    return np.where(sign > 0, dF, -np.inf), sE, sC


def _reduce(subject: _Subject, rE, rP, logdet_rP):
    """Reduced free energy, posterior mean/covariance for a full-rank empirical prior (one subject)."""
    dF, sE, sC = _reduce_stack(_Subjects.stack([subject]), np.asarray(rE, dtype=float)[None], rP, logdet_rP)
    return float(dF[0]), sE[0], sC[0]


# ---------------------------------------------------------------------------------------
# SPM's regularised form (model scores of the BMR search)
# ---------------------------------------------------------------------------------------
def regularised_reduced_free_energy(qE, qC, pE, pC, rE, rC, tol: float = float(np.exp(-16)),
                                    changed_only: bool = True) -> float:
    """Reduced free energy with regularised inverses, as SPM12 r7771 ``spm_log_evidence`` ($Id 6856).

    The same BMR formula as :func:`reduced_free_energy` (Friston & Penny 2011, eqs. 6–9),
    but every covariance/precision is inverted with ``tol`` added to its diagonal (so a
    switched-off parameter gets precision 1/tol instead of being pinned), parameters with
    prior variance ≤ ``tol`` are dropped and, with ``changed_only``, only the parameters
    whose prior changes are kept (their marginal, exact when the prior factorises). With
    ``tol = e⁻¹⁶`` the scores differ from the exact limit by up to a few hundredths of a nat
    for precisely estimated effects; ``spm_dcm_bmr_all`` ranks and selects models with
    these scores, so the search uses them to take SPM's path.
    """
    qE, pE, rE = _vectors(qE, pE, rE)
    qC, pC, rC = _matrices(qC, pC, rC)
    if changed_only:
        k = np.flatnonzero((pE != rE) | np.any(pC != rC, axis=1))
        if k.size:
            qE, pE, rE = qE[k], pE[k], rE[k]
            qC, pC, rC = qC[np.ix_(k, k)], pC[np.ix_(k, k)], rC[np.ix_(k, k)]
    i = np.flatnonzero(np.diag(pC) > tol)
    qE, pE, rE = qE[i], pE[i], rE[i]
    qC, pC, rC = qC[np.ix_(i, i)], pC[np.ix_(i, i)], rC[np.ix_(i, i)]
    eye = np.eye(i.size)

    def inv(matrix):
        return np.linalg.inv(matrix + tol * eye)

    qP, pP, rP = inv(qC), inv(pC), inv(rC)
    sP = qP + rP - pP
    sC = inv(sP)
    pC_reg = inv(pP)
    sE = qP @ qE + rP @ rE - pP @ pE
    logdet = np.linalg.slogdet(rP @ qP @ sC @ pC_reg)[1]
    quadratic = qE @ qP @ qE + rE @ rP @ rE - pE @ pP @ pE - sE @ sC @ sE
    return float((logdet - quadratic) / 2)
