"""Parametric Empirical Bayes (PEB) over DCM posteriors: SPM12 r7771 ``spm_dcm_peb`` ($Id 7720).

A second-level (between-subject) general linear model over first-level parameters,
inverted from the subjects' Gaussian posteriors alone by Bayesian model reduction
(Friston et al. 2016, "Bayesian model reduction and empirical Bayes for group (DCM)
studies", NeuroImage 128:413; Zeidman et al. 2019, "A guide to group effective
connectivity analysis, part 2", NeuroImage 200:12). Follows ``spm_dcm_peb`` of SPM12
release r7771 (``$Id: spm_dcm_peb.m 7720``); our own implementation of the equations.

Hierarchical model (Friston et al. 2016, eqs. 1–3 and A.7–A.10)::

    level 1: subject posteriors q(θ_i) = N(qE_i, qC_i) obtained under the priors N(pE_i, pC_i)
    level 2: θ_i = (x_i ⊗ I) β + ε_i,   ε_i ~ N(0, Σ(γ)),
             Σ(γ)⁻¹ = pQ·e⁻⁸ + Σ_j exp(γ_j) Q_j,    pQ = (PC/β_scale)⁻¹   (β_scale = 16)
    level 3: β ~ N([PE; 0; …], diag(c) ⊗ PC/α)    c_j = N / Σ_i x_ij²        (α = 1)
             γ ~ N(hE = 0, hC = 1/16 · I)

with ``PE``, ``PC`` the first-level priors averaged over subjects and everything projected
on the principal subspace of ``PC`` (singular vectors whose squared singular value exceeds
1e-6 of the mean, as ``spm_svd``).

* Precision components ``Q_j`` (``M.Q``): ``'single'`` one in all (the ``spm_dcm_peb``
  default), ``'fields'`` one per parameter field (A, B, …), ``'all'`` one per parameter
  (the setting of the Zeidman et al. 2019 tutorial), ``'none'`` no hyperparameters
  (covariance fixed at ``PC/β_scale``), or a list of 0/1 masks (``'manual'``).
* ``c_j`` scales the prior of each group effect by the norm of its covariate, so the prior
  is invariant to covariate units.
* Subject posteriors are shrunk, ``qC ← (qC⁻¹ + pC⁻¹/16)⁻¹`` (Ns > 1), to accommodate
  inefficient first-level inversions.
* Free energy ``F = Σ_i [ΔF_i(β, γ) + F_i] − ½β'bPβ − ½γ'gPγ + ½ln|ipC·Cp|`` with
  ``ΔF_i`` the reduced free energy of subject *i* under its empirical prior (eq. A.10),
  ``Cp`` the inverse negative joint Hessian over (β, γ) and — as in r7720 — the quadratic
  complexity terms *not* centred on the prior means (the gradients are).

Variational Laplace as r7720: exact gradients and curvatures (eq. A.11); the step
``(e^{τJ} − I)J⁻¹g`` of ``spm_dx`` with ``τ = e^t/|J|^{1/n}`` on the joint Hessian (recomputed
with the block-diagonal Hessian when its 1-norm is ≥ 8); ``β += Δβ``, ``γ += tanh(Δγ)``; a
point is accepted when its F is ≥ the best so far (``t ← min(t + ¼, 2)``), otherwise the
last accepted point is restored (``t ← max(t − 1, −4)``) and the next step is taken from it
along the rejected point's gradient; stop after more than 4 iterations when ``t ≤ −4`` or
the last accepted gain was < 1e-4 nats, at most 64 iterations. As in SPM the returned
``Ep``/``Eh`` are the parameters after the last (unevaluated) step and ``F``, ``Cp``, ``Ch``,
``Ce`` those of the last evaluated point.

Subjects' reduced posteriors (``subject_Ep``, ``subject_Cp``, ``subject_F``; SPM's second
output) use the unshrunk posteriors and the empirical prior of the last evaluated point, as
SPM, computed exactly on the modelled parameters (the marginal of SPM's reduction over all
parameters, as the prior factorises). SPM's own values carry the automatic ridge of
``spm_inv`` (``eps(‖RP‖∞)·P``, ≈ 0.6 when fixed parameters put ~1e14 in RP): ~0.006 in B
expectations and ~0.25 nats in F on the r7771 reference (documented deviation).

Option ``polish=True`` (not SPM; off by default): after SPM's scheme, Newton steps to the
mode of the variational energy and an exact conditional β update, so the result does not
depend on where the path stopped (e.g. on the units of a covariate: up to 0.1 nats in F).

Group-effect ordering: ``vec(Ep)`` with the parameter index fastest, i.e. column *j* of
``Ep`` (parameters × covariates) holds the effects of covariate *j*.

Also here: the selection of the parameters entered into a PEB (SPM's ``field`` argument)
and the posterior probability of an effect's sign, shared by the result tables.

Over 500 lines because it is one SPM routine: the PEB objective with its exact gradient and
curvature, the optimiser and its result are read together.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ptsd_bidsapp.contracts import parse_dcm_parameter
from ptsd_bidsapp.peb.reduce import _inv, _logdet_pd, _prepare_subject, _reduce, _reduce_stack, _Subjects, _sym

__all__ = [
    "PEBResult",
    "fit_peb",
    "select_parameters",
    "parameter_field",
    "posterior_probability_nonzero",
]

#: Lower bound on the random-effects precision relative to pQ (``spm_dcm_peb`` r7720: e⁻⁸).
_PRECISION_FLOOR = float(np.exp(-8.0))
#: Log time constant of spm_dx: start, increment after an accepted step, bounds (r7720).
_LOG_TIME_START, _LOG_TIME_INCREMENT, _LOG_TIME_MAX, _LOG_TIME_MIN = -4.0, 0.25, 2.0, -4.0
#: Default maximum number of VL iterations (``M.maxit``) and the stopping gain (nats).
_MAX_ITER, _TOL_DF = 64, 1e-4


# ---------------------------------------------------------------------------------------
# parameter names
# ---------------------------------------------------------------------------------------
def parameter_field(name: str) -> str:
    """Parameter field of a DCM parameter name (``'B_fearful_amygdala-vmpfc'`` → ``'B'``).

    Names of nested (PEB-of-PEB) parameters carry a ``'<effect>:'`` prefix, which is ignored.
    """
    return name.split(":")[-1].split("_")[0]


def _is_between_region(name: str) -> bool:
    """False only for A/B self-connections (``A_dacc_L-dacc_L``: ROI labels may contain ``_``).

    Names that are not contract names (no ``<from>-<to>`` pair) count as between-region.
    """
    base = name.split(":")[-1]
    if parameter_field(name) not in ("A", "B"):
        return True
    try:
        return parse_dcm_parameter(base).is_between_regions
    except ValueError:
        return True


def select_parameters(
    param_names: Sequence[str],
    fields: Sequence[str] | None = ("A", "B"),
    between_only: bool = False,
    patterns: Sequence[str] | None = None,
    prior_variance: np.ndarray | None = None,
) -> list[int]:
    """Indices of the parameters entered into a PEB.

    Parameters
    ----------
    param_names : sequence of str
        Names of the first-level parameters, ``<field>[_<input>]_<from>-<to>``
        (ARCHITECTURE Contract 2 without the ``dcm_<task>_`` prefix).
    fields : sequence of str, optional
        Parameter fields to keep (SPM ``field`` argument; default ``A`` and ``B``).
    between_only : bool
        Drop self-connections (``from == to``) of A and B.
    patterns : sequence of str, optional
        fnmatch patterns; if given, a parameter must also match one.
    prior_variance : array, optional
        Diagonal of the prior covariance; parameters whose prior variance is not above
        1/1024 of the mean prior variance (of those below 1024) are fixed and dropped
        (``spm_find_pC`` $Id 7714; for DCM priors: the zero-variance ones).
    """
    threshold = 0.0
    if prior_variance is not None:
        prior_variance = np.asarray(prior_variance, dtype=float)
        below = prior_variance[prior_variance < 1024]
        threshold = max(float(below.mean()) / 1024, 0.0) if below.size else 0.0
    keep = []
    for index, name in enumerate(param_names):
        if fields is not None and parameter_field(name) not in fields:
            continue
        if between_only and not _is_between_region(name):
            continue
        if patterns is not None and not any(fnmatch.fnmatchcase(name, p) for p in patterns):
            continue
        if prior_variance is not None and not prior_variance[index] > threshold:
            continue
        keep.append(index)
    return keep


def posterior_probability_nonzero(Ep: np.ndarray, Cp_diag: np.ndarray) -> np.ndarray:
    """Posterior probability that an effect has the sign of its mean, ``Φ(|Ep| / sd)``.

    The ``spm_dcm_review``-style "probability of an effect" (not a BMR probability).
    """
    sd = np.sqrt(np.maximum(np.asarray(Cp_diag, dtype=float), 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(sd > 0, np.abs(Ep) / sd, np.inf)
    return stats.norm.cdf(z)


# ---------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------
def _effects_table(param_names, covariate_names, Ep, Cp_diag, Pp=None, extra=None) -> pd.DataFrame:
    n_params, n_cov = Ep.shape
    rows = []
    for j in range(n_cov):
        for p in range(n_params):
            k = j * n_params + p
            row = {
                "parameter": param_names[p],
                "covariate": covariate_names[j],
                "Ep": Ep[p, j],
                "Cp": Cp_diag[k],
                "Pp_sign": float(posterior_probability_nonzero(Ep[p, j], Cp_diag[k])),
            }
            if Pp is not None:
                row["Pp"] = Pp[p, j]
            if extra:
                row.update({key: value[p, j] for key, value in extra.items()})
            rows.append(row)
    return pd.DataFrame(rows)


@dataclass
class PEBResult:
    """Posterior of a PEB model (``spm_dcm_peb``'s ``PEB`` structure).

    Attributes
    ----------
    param_names : list of str
        First-level parameters modelled (``PEB.Pnames``), length ``Np``.
    covariate_names : list of str
        Columns of the design (``PEB.Xnames``), length ``Nx``.
    X : ndarray, (Ns, Nx)
        Between-subject design.
    Ep : ndarray, (Np, Nx)
        Posterior means of the group effects.
    Cp : ndarray, (Np·Nx, Np·Nx)
        Posterior covariance of ``vec(Ep)`` (conditional on γ, as ``PEB.Cp``).
    Eh, Ch : ndarray
        Posterior mean / covariance of the log precisions γ.
    Ce : ndarray, (Np, Np)
        Expected between-subject (random-effects) covariance ``Σ(Eh)``.
    F : float
        Free energy (nats) of the whole hierarchical model (includes Σ F_i if given).
    prior_mean, prior_cov : ndarray
        Third-level prior on ``vec(Ep)`` (``PEB.M.pE``, ``PEB.M.pC``).
    hE, hC : float
        Hyperprior on γ.
    precision_components : list of ndarray
        ``Q_j`` (``PEB.M.Q``).
    subject_Ep, subject_Cp : ndarray
        Subjects' posteriors over the modelled parameters under the empirical priors
        (``Ns × Np``, ``Ns × Np × Np``; SPM's reduced DCMs, from the unshrunk posteriors at
        the last evaluated point).
    subject_names : list of str
    n_iter : int
    converged : bool
        The VL stopped by its rule (not at ``max_iter``).
    random_effects : str
    joint_cov : ndarray, optional
        Inverse negative Hessian over (vec(Ep), Eh).
    subject_F : ndarray, optional
        Subjects' free energies under the empirical priors, ``ΔF_i + F_i − F_c/Ns``
        (``DCM.F`` of SPM's reduced DCMs, with ``F_c`` the second-level complexity).
    """

    param_names: list
    covariate_names: list
    X: np.ndarray
    Ep: np.ndarray
    Cp: np.ndarray
    Eh: np.ndarray
    Ch: np.ndarray
    Ce: np.ndarray
    F: float
    prior_mean: np.ndarray
    prior_cov: np.ndarray
    hE: float
    hC: float
    precision_components: list
    subject_Ep: np.ndarray
    subject_Cp: np.ndarray
    subject_names: list
    n_iter: int
    converged: bool
    random_effects: str = "single"
    joint_cov: np.ndarray | None = field(default=None, repr=False)
    subject_F: np.ndarray | None = None

    @property
    def effect_names(self) -> list[str]:
        """``'<covariate>:<parameter>'`` for every element of ``vec(Ep)``."""
        return [f"{c}:{p}" for c in self.covariate_names for p in self.param_names]

    @property
    def Pp_sign(self) -> np.ndarray:
        """Posterior probability of the sign of each effect (Np × Nx)."""
        return posterior_probability_nonzero(self.Ep, np.diag(self.Cp).reshape(self.Ep.shape, order="F"))

    def table(self) -> pd.DataFrame:
        """Long table: parameter, covariate, Ep, Cp (variance), Pp_sign."""
        return _effects_table(self.param_names, self.covariate_names, self.Ep, np.diag(self.Cp))

    def as_posterior(self) -> dict:
        """This PEB as a Gaussian posterior for a higher PEB level (PEB of PEBs).

        Returns a dict with ``Ep`` (vec of group effects), ``Cp``, ``pE``, ``pC``,
        ``F`` and ``names`` (``'<covariate>:<parameter>'``), the fields that ``fit_peb``
        reads from a first-level DCM (``spm_dcm_peb`` accepts PEB structures alike).
        """
        return {
            "Ep": self.Ep.ravel(order="F").copy(),
            "Cp": self.Cp.copy(),
            "pE": self.prior_mean.copy(),
            "pC": self.prior_cov.copy(),
            "F": self.F,
            "names": self.effect_names,
        }


# ---------------------------------------------------------------------------------------
# fitting
# ---------------------------------------------------------------------------------------
def principal_basis(cov: np.ndarray, threshold: float = 1e-6) -> np.ndarray:
    """Orthonormal basis of the principal subspace of a covariance (the role of ``spm_svd``).

    Singular vectors whose squared singular value exceeds ``threshold`` × the mean squared
    singular value (``spm_svd(C, 1e-6)``). A diagonal covariance gives unit vectors, in the
    original order (SPM sorts them by variance; the PEB does not depend on the order).
    """
    cov = np.asarray(cov, dtype=float)
    n = cov.shape[0]
    if n == 0:
        return np.zeros((0, 0))
    if not np.any(cov - np.diag(np.diag(cov))):
        values, vectors = np.abs(np.diag(cov)), np.eye(n)
    else:
        values, vectors = np.linalg.eigh(_sym(cov))
        values = np.abs(values)
    squared = values**2
    total = squared.sum()
    if total <= 0:
        return np.zeros((n, 0))
    keep = squared * n / total > threshold
    return vectors[:, keep]


def _precision_components(pq: np.ndarray, fields: list[str], option, U: np.ndarray) -> list[np.ndarray]:
    """Between-subject precision components ``Q_j`` (``spm_dcm_peb``, ``M.Q``), projected on U.

    ``pq`` is the second-level prior precision in the original parameter space (``spm_inv(M.pC)``);
    ``'single'`` uses its projection ``pQ = (U'·M.pC·U)⁻¹`` (as SPM).
    """
    n = pq.shape[0]
    if not isinstance(option, str):  # 'manual': 0/1 masks over the modelled parameters
        components = []
        for mask in option:
            mask = np.asarray(mask, dtype=float)
            idx = np.flatnonzero(np.diag(mask) if mask.ndim == 2 else mask)
            Q = np.zeros((n, n))
            Q[np.ix_(idx, idx)] = pq[np.ix_(idx, idx)]
            Q = U.T @ Q @ U
            if np.any(Q):
                components.append(Q)
        return components
    if option == "single":
        return [None]  # filled in by the caller with pQ
    if option == "fields":
        components = []
        for name in dict.fromkeys(fields):
            idx = [i for i, f in enumerate(fields) if f == name]
            Q = np.zeros((n, n))
            Q[np.ix_(idx, idx)] = pq[np.ix_(idx, idx)]
            components.append(U.T @ Q @ U)
        return components
    if option == "none":
        return []
    if option == "all":
        components = []
        for i in range(n):
            Q = np.zeros((n, n))
            Q[i, i] = pq[i, i]
            Q = U.T @ Q @ U
            if np.any(Q):
                components.append(Q)
        return components
    raise ValueError(f"random_effects must be 'single', 'fields', 'all', 'none' or a list of masks, not {option!r}")


def _spm_dx(hessian, gradient, log_time):
    """Local-linearisation step ``(e^{τJ} − I)J⁻¹g`` of ``spm_dx`` ($Id 7144) with ``τ = e^t/|J|^{1/n}``.

    J is used as it is (SPM exponentiates the augmented matrix; for a symmetric J this is
    the same step computed in J's eigenbasis): along a positive curvature the step grows
    exponentially, which the caller checks (``norm(dp, 1) ≥ 8``). When ``τ > e^16`` the step
    is the Gauss–Newton step ``−J⁺g``.
    """
    hessian = _sym(np.asarray(hessian, dtype=float))
    n = gradient.size
    if n == 0:
        return np.zeros(0)
    values, vectors = np.linalg.eigh(hessian)
    magnitude = np.abs(values)
    nonzero = magnitude[magnitude > 0]
    logdet = float(np.sum(np.log(nonzero))) if nonzero.size else 0.0
    tau = np.exp(log_time - logdet / n)
    projected = vectors.T @ gradient
    if tau > np.exp(16):
        inverse = np.where(magnitude > 1e-12 * max(magnitude.max(), 1e-300), 1.0 / np.where(values == 0, 1, values), 0)
        return -(vectors @ (inverse * projected))
    z = np.minimum(values * tau, 700.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        phi = np.where(np.abs(z) > 1e-12, np.expm1(z) / np.where(values == 0, 1, values), tau)
    return vectors @ (phi * projected)


def _as_list_of_arrays(values, count, shape_check=None):
    """One array shared by all subjects, or a sequence of per-subject arrays."""
    single_ndim = 1 if shape_check == "vec" else 2
    try:
        array = np.asarray(values, dtype=float)
    except ValueError:  # ragged sequence: per-subject arrays of different shapes
        return [np.asarray(v, dtype=float) for v in values]
    if array.ndim == single_ndim:
        return [array] * count
    return [np.asarray(v, dtype=float) for v in values]


class _PEBObjective:
    """Free energy of a PEB model (``spm_dcm_peb`` r7720) with its gradient and curvature in (β, γ).

    ``designs[i]`` maps the group effects to subject *i*'s expected parameters
    (``kron(X(i,:), W)`` in SPM, here in the projected parameter space). Every subject's term
    is computed at once on arrays stacked over subjects (the sums over subjects of Friston et al.
    2016, eqs. A.10–A.11).
    """

    def __init__(self, subjects, designs, F_first, pQ, Q, prior_mean, prior_prec, hyper_mean, hyper_prec):
        self.subjects = _Subjects.stack(subjects)
        self.designs = np.stack([np.asarray(d, dtype=float) for d in designs])  # (n, p, n_b)
        self.F_first = np.asarray(F_first, dtype=float)
        self.pQ, self.Q = pQ, Q
        self.prior_mean, self.prior_prec = prior_mean, prior_prec
        self.hyper_mean, self.hyper_prec = hyper_mean, hyper_prec
        self.n_params = pQ.shape[0]
        self.n_hyper = len(Q)
        self.n_b = prior_mean.size
        self._Q = np.stack(Q) if Q else np.zeros((0, self.n_params, self.n_params))  # (J, p, p)
        joint = np.zeros((self.n_b + self.n_hyper, self.n_b + self.n_hyper))
        joint[: self.n_b, : self.n_b] = prior_prec
        joint[self.n_b :, self.n_b :] = hyper_prec
        self.logdet_joint_prior_prec = _logdet_pd(joint)

    def precision(self, g):
        """Random-effects precision ``rP = pQ·e⁻⁸ + Σ_j e^{γ_j} Q_j`` (``pQ`` without components)."""
        if self.n_hyper == 0:
            return self.pQ.copy()
        return self.pQ * _PRECISION_FLOOR + sum((np.exp(g[j]) * self.Q[j] for j in range(self.n_hyper)),
                                                np.zeros_like(self.pQ))

    def __call__(self, b, g):
        rP = self.precision(g)
        rC = _inv(rP)
        logdet_rP = _logdet_pd(rP)
        D, Q = self.designs, self._Q
        n_sub = D.shape[0]
        rE = D @ b  # (n, p)
        dF, sE, sC = _reduce_stack(self.subjects, rE, rP, logdet_rP)
        F = float(np.sum(dF + self.F_first))
        dE = sE - rE
        # ∂ΔF/∂rE = rP·dE ; ∂²ΔF/∂rE² = rP·sC·rP − rP   (Friston et al. 2016, eq. A.11), through each design
        dFdb = -self.prior_prec @ (b - self.prior_mean) + np.einsum("ipk,ip->k", D, dE @ rP.T)
        curvature = rP[None] @ sC @ rP[None] - rP[None]  # (n, p, p)
        DtHD = np.swapaxes(D, 1, 2) @ curvature @ D  # (n, n_b, n_b)
        dFdbb = -self.prior_prec + DtHD.sum(axis=0)
        e = np.exp(g[: self.n_hyper])
        QdE = np.einsum("jpq,iq->ijp", Q, dE)  # (n, J, p): Q_j dE_i
        sCQdE = np.einsum("ipq,ijq->ijp", sC, QdE)  # sC_i Q_j dE_i
        # ∂ΔF/∂γ_j = ½e^{γ_j}[tr((rC − sC)Q_j) − dE'Q_j dE]
        trace = np.einsum("pq,jpq->j", rC, Q)[None, :] - np.einsum("ipq,jpq->ij", sC, Q)
        g_i = e[None, :] * (trace - np.einsum("ip,ijp->ij", dE, QdE)) / 2  # (n, J)
        dFdg = -self.hyper_prec @ (g - self.hyper_mean) + g_i.sum(axis=0)
        # ∂²ΔF/∂β∂γ_j = e^{γ_j} X_i'(I − rP sC) Q_j dE
        mixed = QdE - np.einsum("pq,ijq->ijp", rP, sCQdE)
        dFdbg = np.einsum("ipk,ijp->kj", D, mixed) * e[None, :]
        # ∂²ΔF/∂γ_j∂γ_k = δ_jk ∂ΔF/∂γ_j − e^{γ_j}e^{γ_k}[½tr(rC Q_k rC Q_j − sC Q_k sC Q_j) − dE'Q_k sC Q_j dE]
        rCQ = np.einsum("pq,kqr->kpr", rC, Q)  # rC Q_k
        sCQ = np.einsum("ipq,kqr->ikpr", sC, Q)  # sC_i Q_k
        second = (0.5 * (n_sub * np.einsum("kpq,jqp->jk", rCQ, rCQ) - np.einsum("ikpq,ijqp->jk", sCQ, sCQ))
                  - np.einsum("ikp,ijp->jk", QdE, sCQdE))
        dFdgg = -self.hyper_prec + np.diag(g_i.sum(axis=0)) - np.outer(e, e) * second
        grad = np.concatenate([dFdb, dFdg])
        hess = _sym(np.block([[dFdbb, dFdbg], [dFdbg.T, dFdgg]]))
        # log|−H| from the magnitudes of the eigenvalues (spm_logdet of ipC·Cp uses singular values)
        logdet_neg_hess = float(np.sum(np.log(np.maximum(np.abs(np.linalg.eigvalsh(hess)), 1e-300))))
        logdet_term = 0.5 * (self.logdet_joint_prior_prec - logdet_neg_hess)
        # r7720 complexity: ½b'bP b + ½g'gP g, not centred on the prior means (the gradient is).
        complexity_spm = 0.5 * (b @ self.prior_prec @ b) + 0.5 * (g @ self.hyper_prec @ g) - logdet_term
        # L: the variational energy (log joint density at (β, γ)), whose gradient is ``grad``.
        complexity = 0.5 * (b - self.prior_mean) @ self.prior_prec @ (b - self.prior_mean)
        complexity += 0.5 * (g - self.hyper_mean) @ self.hyper_prec @ (g - self.hyper_mean)
        return {"F": F - complexity_spm, "L": F - complexity, "Fc": complexity_spm, "grad": grad, "hess": hess,
                "b": b, "g": g, "rP": rP, "rC": rC, "rE": rE, "dFdbb": dFdbb, "dFdgg": dFdgg}


def _variational_laplace(evaluate, b, g, max_iter: int = _MAX_ITER):
    """The VL scheme of ``spm_dcm_peb`` r7720 (see the module docstring).

    Returns
    -------
    last : dict
        The last evaluated point (its F, curvatures, rC, … are SPM's outputs).
    b, g : ndarray
        The parameters after the last step (SPM's ``PEB.Ep``, ``PEB.Eh``).
    n_iter : int
    stopped : bool
        True if the stopping rule ended the loop (not ``max_iter``).
    """
    n_b = b.size
    t = _LOG_TIME_START
    saved = None
    best_F = -np.inf
    dF = 0.0
    last = None
    stopped = False
    n = 0
    for n in range(1, max_iter + 1):
        last = evaluate(b, g)
        F = last["F"] if np.isfinite(last["F"]) else -np.inf
        if n == 1:
            best_F = F
        dFdp, dFdpp = last["grad"], last["hess"]
        if F >= best_F:
            dF = F - best_F
            best_F = F
            saved = {"b": b, "g": g, "dFdbb": last["dFdbb"], "dFdgg": last["dFdgg"]}
            t = min(t + _LOG_TIME_INCREMENT, _LOG_TIME_MAX)
        else:
            # restore the last accepted point (and its block curvatures); the step is taken
            # from there along the gradient (and joint Hessian) just evaluated, as SPM does
            t = max(t - 1.0, _LOG_TIME_MIN)
            b, g = saved["b"], saved["g"]
        dp = _spm_dx(dFdpp, dFdp, t)
        if not np.sum(np.abs(dp)) < 8:
            # suppress the (β, γ) dependencies for stability: block-diagonal curvature
            block = np.zeros_like(dFdpp)
            block[:n_b, :n_b] = saved["dFdbb"]
            block[n_b:, n_b:] = saved["dFdgg"]
            dp = _spm_dx(block, dFdp, t)
        b = b + dp[:n_b]
        g = g + np.tanh(dp[n_b:])
        if n > 4 and (t <= _LOG_TIME_MIN or dF < _TOL_DF):
            stopped = True
            break
    return last, b, g, n, stopped


def _newton_to_mode(evaluate, best, n_b, max_iter: int = 64, tol: float = 1e-10):
    """Newton ascent of the variational energy L to its mode, with step halving (``polish``).

    Curvatures are reflected to negative so that every step is an ascent direction.
    Converged when the Newton decrement — the gain in L that a full Newton step would
    bring — is below ``tol`` nats.
    """
    for _ in range(max_iter):
        step, decrement = _newton_step(best)
        if decrement < tol:
            return best, True
        size = 1.0
        for _ in range(40):
            trial = evaluate(best["b"] + size * step[:n_b], best["g"] + size * step[n_b:])
            if np.isfinite(trial["L"]) and trial["L"] >= best["L"]:
                break
            size /= 2
        else:  # no ascent along the Newton direction: at the mode to round-off
            return best, decrement < 1e-6
        best = trial
    return best, _newton_step(best)[1] < tol


def _newton_step(point):
    """Newton step ``|H|⁻¹g`` (curvature magnitudes) and the decrement ``½g'|H|⁻¹g`` (nats)."""
    values, vectors = np.linalg.eigh(_sym(point["hess"]))
    magnitude = np.maximum(np.abs(values), 1e-12 * max(np.abs(values).max(), 1e-300))
    projected = (vectors.T @ point["grad"]) / magnitude
    return vectors @ projected, float(0.5 * np.sum(projected**2 * magnitude))


def fit_peb(
    Ep_list: Sequence[np.ndarray],
    Cp_list: Sequence[np.ndarray],
    pE,
    pC,
    X: np.ndarray,
    param_names: Sequence[str],
    covariate_names: Sequence[str] | None = None,
    *,
    select: Sequence[int] | None = None,
    F_list: Sequence[float] | None = None,
    random_effects="single",
    alpha: float = 1.0,
    beta: float = 16.0,
    hE: float = 0.0,
    hC: float = 1.0 / 16.0,
    shrink_posteriors: bool = True,
    max_iter: int = _MAX_ITER,
    subject_names: Sequence[str] | None = None,
    polish: bool = False,
) -> PEBResult:
    """Invert a PEB model from subject-level posteriors (``spm_dcm_peb``, SPM12 r7771, $Id 7720).

    Parameters
    ----------
    Ep_list : sequence of (P,) arrays
        Posterior means of the first-level parameters, one per subject.
    Cp_list : sequence of (P, P) arrays
        Posterior covariances, one per subject.
    pE, pC : (P,) and (P, P) array, or sequences of them (one per subject)
        First-level prior mean and covariance. The third-level prior is built from their
        average over subjects (as SPM).
    X : (Ns, Nx) array
        Between-subject design; column 0 is normally a constant (the group mean) and the
        others are mean-centred covariates (Zeidman et al. 2019, sec. 2.3).
    param_names : sequence of str
        Names of all P first-level parameters.
    covariate_names : sequence of str, optional
        Names of the design columns.
    select : sequence of int, optional
        Indices of the parameters treated as random effects (SPM ``field``); default all
        free parameters (``spm_find_pC`` rule). See :func:`select_parameters` (SPM's
        default field is ``{'A', 'B'}``, self-connections included).
    F_list : sequence of float, optional
        First-level free energies (added to the PEB free energy; default 0).
    random_effects : {'single', 'fields', 'all', 'none'} or list of masks
        Precision components of the between-subject covariance (``M.Q``; SPM default
        ``'single'``); ``'none'`` fixes the random-effects covariance at ``PC/beta``; a list
        of 0/1 masks over the selected parameters gives SPM's ``'manual'`` components.
    alpha, beta : float
        Third-level prior covariance ``PC/alpha``; second-level ``PC/beta`` (``M.alpha``,
        ``M.beta``; SPM defaults 1 and 16). ``beta = 0`` uses the variance of the subjects'
        posterior means (as SPM).
    hE, hC : float
        Prior mean and variance of each log precision (``M.hE``, ``M.hC``; 0 and 1/16).
    shrink_posteriors : bool
        Apply SPM's posterior shrinkage ``qC ← (qC⁻¹ + pC⁻¹/16)⁻¹`` (only when Ns > 1).
    max_iter : int
        Maximum number of variational Laplace iterations (``M.maxit``, SPM default 64).
    subject_names : sequence of str, optional
    polish : bool
        Not SPM: continue from SPM's end point to the mode of the variational energy
        (Newton) and update β exactly given γ (see the module docstring).

    Returns
    -------
    PEBResult
    """
    X = np.atleast_2d(np.asarray(X, dtype=float))
    if X.shape[0] == 1 and len(Ep_list) > 1:
        X = X.T
    n_subjects, n_cov = X.shape
    if len(Ep_list) != n_subjects or len(Cp_list) != n_subjects:
        raise ValueError(f"design has {n_subjects} rows but {len(Ep_list)} posteriors were given")
    covariate_names = list(covariate_names) if covariate_names is not None else [f"covariate{j + 1}" for j in range(n_cov)]
    if len(covariate_names) != n_cov:
        raise ValueError("covariate_names must match the columns of X")

    pE_list = _as_list_of_arrays(pE, n_subjects, "vec")
    pC_list = _as_list_of_arrays(pC, n_subjects)
    param_names = list(param_names)
    n_all = len(param_names)
    if select is None:
        select = select_parameters(param_names, fields=None, prior_variance=np.diag(pC_list[0]))
    select = list(select)
    if not select:
        raise ValueError("no parameters selected for the PEB")
    names = [param_names[i] for i in select]
    idx = np.ix_(select, select)
    n_params = len(select)

    # Priors averaged over subjects, and the principal subspace of their covariance.
    PE = np.mean([p.ravel()[select] for p in pE_list], axis=0)
    PC = np.mean([p[idx] for p in pC_list], axis=0)
    U = principal_basis(PC)
    if U.shape[1] == 0:
        raise ValueError("the selected parameters have no prior variance")

    # Level-1 summary statistics in the projected space (marginals over the selection).
    subjects, raw = [], []
    for i in range(n_subjects):
        qE = U.T @ np.asarray(Ep_list[i], dtype=float).ravel()[select]
        qC = U.T @ np.asarray(Cp_list[i], dtype=float)[idx] @ U
        sub_pE = U.T @ pE_list[i].ravel()[select]
        sub_pC = U.T @ pC_list[i][idx] @ U
        raw.append((qE, qC, sub_pE, sub_pC))
        if shrink_posteriors and n_subjects > 1:
            qC = _inv(_inv(qC) + _inv(sub_pC) / 16.0)
        subjects.append(_prepare_subject(qE, qC, sub_pE, sub_pC))
    F_first = np.zeros(n_subjects) if F_list is None else np.asarray(F_list, dtype=float)

    # Third-level prior on group effects, scaled by the norm of each covariate.
    col_ss = np.sum(X**2, axis=0)
    scale = np.where(col_ss > 0, n_subjects / np.where(col_ss > 0, col_ss, 1.0), 1.0)
    prior_mean = np.concatenate([PE] + [np.zeros(n_params)] * (n_cov - 1))
    prior_cov = np.kron(np.diag(scale), PC / alpha)
    n_u = U.shape[1]
    Ub = np.kron(np.eye(n_cov), U)
    b_prior_mean = Ub.T @ prior_mean
    b_prior_prec = _inv(Ub.T @ prior_cov @ Ub)

    # Second level: random-effects precision and its components.
    if beta:
        second_cov = PC / beta
    else:  # M.beta = 0: variance of the subjects' posterior means
        second_cov = np.diag(np.var([np.asarray(e, dtype=float).ravel()[select] for e in Ep_list], axis=0))
    pQ = _inv(U.T @ second_cov @ U)
    Q = _precision_components(_inv(second_cov), [parameter_field(n) for n in names], random_effects, U) \
        if n_subjects > 1 else []
    Q = [pQ.copy() if q is None else q for q in Q]
    n_hyper = len(Q)
    hyper_mean = np.full(n_hyper, float(hE))
    hyper_prec = np.eye(n_hyper) / hC

    designs = [np.kron(X[i][None, :], np.eye(n_u)) for i in range(n_subjects)]
    objective = _PEBObjective(subjects, designs, F_first, pQ, Q, b_prior_mean, b_prior_prec, hyper_mean, hyper_prec)
    last, b, g, n_iter, converged = _variational_laplace(objective, b_prior_mean.copy(), hyper_mean.copy(), max_iter)
    if polish:
        best, converged = _newton_to_mode(objective, objective(b, g), b.size)
        # L is exactly quadratic in β: one Newton step gives the conditional posterior mean.
        b = best["b"] + np.linalg.solve(-best["dFdbb"], best["grad"][: b.size])
        g = best["g"]
        last = objective(b, g)

    Cb = _inv(-last["dFdbb"])
    Cg = _inv(-last["dFdgg"]) if n_hyper else np.zeros((0, 0))
    try:
        lift = np.zeros((Ub.shape[0] + n_hyper, Ub.shape[1] + n_hyper))
        lift[: Ub.shape[0], : Ub.shape[1]] = Ub
        lift[Ub.shape[0]:, Ub.shape[1]:] = np.eye(n_hyper)
        joint = lift @ _inv(-last["hess"]) @ lift.T
    except np.linalg.LinAlgError:
        joint = None

    # Subjects under the empirical priors of the last evaluated point, from their unshrunk
    # posteriors (SPM's reduced DCMs, with F_i = ΔF_i + F_i − F_c/Ns).
    rP, logdet_rP = last["rP"], _logdet_pd(last["rP"])
    sub_E, sub_C, sub_F = [], [], []
    for i, (qE, qC, sub_pE, sub_pC) in enumerate(raw):
        dF, sE, sC = _reduce(_prepare_subject(qE, qC, sub_pE, sub_pC), last["rE"][i], rP, logdet_rP)
        full_pE = pE_list[i].ravel()[select]
        sub_E.append(U @ sE + full_pE - U @ (U.T @ full_pE))
        sub_C.append(U @ sC @ U.T)
        sub_F.append(dF + F_first[i] - last["Fc"] / n_subjects)

    Ep = U @ b.reshape(n_u, n_cov, order="F")
    return PEBResult(
        param_names=names,
        covariate_names=covariate_names,
        X=X,
        Ep=Ep,
        Cp=_sym(Ub @ Cb @ Ub.T),
        Eh=np.asarray(g, dtype=float).copy(),
        Ch=Cg,
        Ce=_sym(U @ last["rC"] @ U.T),
        F=float(last["F"]),
        prior_mean=prior_mean,
        prior_cov=prior_cov,
        hE=hE,
        hC=hC,
        precision_components=[U @ q @ U.T for q in Q],
        subject_Ep=np.array(sub_E),
        subject_Cp=np.array(sub_C),
        subject_names=list(subject_names) if subject_names is not None else [f"subject{i + 1}" for i in range(n_subjects)],
        n_iter=n_iter,
        converged=bool(converged),
        random_effects=random_effects if isinstance(random_effects, str) else "manual",
        joint_cov=joint,
        subject_F=np.array(sub_F),
    )
