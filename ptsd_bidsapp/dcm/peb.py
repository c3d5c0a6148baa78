"""Parametric Empirical Bayes (PEB) over DCM posteriors.

A second-level (between-subject) general linear model over first-level parameters,
inverted from the subjects' Gaussian posteriors alone by Bayesian model reduction
(Friston et al. 2016, "Bayesian model reduction and empirical Bayes for group (DCM)
studies", NeuroImage 128:413; Zeidman et al. 2019, "A guide to group effective
connectivity analysis, part 2", NeuroImage 200:12). Conventions mirror SPM12
``spm_dcm_peb`` / ``spm_dcm_bmr_all`` / ``spm_dcm_peb_bmc`` / ``spm_dcm_loo``:

Hierarchical model (Friston et al. 2016, eqs. 1–3 and A.7–A.10)::

    level 1: subject posteriors q(θ_i) = N(qE_i, qC_i) obtained under the priors N(pE, pC)
    level 2: θ_i = (x_i ⊗ I) β + ε_i,   ε_i ~ N(0, Σ(γ)),
             Σ(γ)⁻¹ = pQ/4096 + Σ_j exp(γ_j) Q_j,   pQ = (pC/β_scale)⁻¹      (β_scale = 16)
    level 3: β ~ N([pE; 0; …], diag(c) ⊗ pC/α)   c_j = N / Σ_i x_ij²        (α = 1)
             γ ~ N(hE = 0, hC = 1/16 · I)

* Precision components ``Q_j``: ``'all'`` one per parameter (our default, the setting of
  the Zeidman et al. 2019 tutorial, ``M.Q = 'all'``; ``spm_dcm_peb`` itself defaults to
  ``'single'``), ``'fields'`` one per parameter field (A, B, …), ``'single'`` one in all,
  ``'none'`` no hyperparameters (covariance fixed at ``pC/16``).
* ``c_j`` scales the prior of each group effect by the norm of its covariate, so the prior
  is invariant to covariate units (``spm_dcm_peb``, "adjust priors for the norm of
  explanatory variables").
* Subject posteriors are shrunk, ``qC ← (qC⁻¹ + pC⁻¹/16)⁻¹``, to accommodate inefficient
  first-level inversions (``spm_dcm_peb``; set ``shrink_posteriors=False`` to disable).
* The free energy is ``Σ_i [ΔF_i(β, γ) + F_i] − KL`` under the Laplace assumption, where
  ``ΔF_i`` is the reduced free energy of subject *i* under its empirical prior
  ``N((x_i ⊗ I)β, Σ(γ))`` (eq. A.10) and the second-level complexity uses the joint
  Hessian over (β, γ). Variational Laplace: Gauss–Newton on (β, γ) with exact gradients
  and curvatures (eq. A.11), regularised as SPM's ``spm_dx`` (step ``(e^{τJ} − I)J⁻¹g``
  with a log time constant increased after an improvement and decreased after a failure),
  then Newton steps to the fixed point of that scheme, the mode of the variational energy
  L (the expansion point of the Laplace approximation), where F is evaluated.
  Deviation from SPM (documented): ``spm_dcm_peb`` accepts a step when F (L plus the
  log-determinant term) rises and stops when it no longer does, which can leave it short
  of the mode at a point that depends on the optimisation path — e.g. on the units of a
  covariate (differences of up to 0.1 nats in F and 0.07 in the log precisions in our
  tests); steps here are accepted on L and the fit ends at its mode (Newton decrement
  < 1e-10 nats), so the result does not depend on where the path happened to stop.

Group-effect ordering: ``vec(Ep)`` with the parameter index fastest, i.e. column *j* of
``Ep`` (parameters × covariates) holds the effects of covariate *j*.
"""

from __future__ import annotations

import fnmatch
import itertools
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ptsd_bidsapp.dcm.bmr import reduced_free_energy

__all__ = [
    "PEBResult",
    "BMAResult",
    "SessionChangeResult",
    "LOOResult",
    "fit_peb",
    "bmr_search",
    "fit_session_change",
    "loo_predict",
    "select_parameters",
    "parameter_field",
    "posterior_probability_nonzero",
]

#: Lower bound on the random-effects precision relative to pQ (``spm_dcm_peb``).
_PRECISION_FLOOR = 1.0 / 4096.0
#: Increase of the log time constant after an accepted step (SPM: 1/4; 1/2 reaches
#: Gauss–Newton steps in half the iterations with the same optimum).
_LOG_TIME_INCREMENT = 0.5
#: Occam's window for Bayesian model averaging, in nats (``spm_dcm_bmr_all``).
OCCAM_WINDOW = 8.0


# ---------------------------------------------------------------------------------------
# parameter names
# ---------------------------------------------------------------------------------------
def parameter_field(name: str) -> str:
    """Parameter field of a DCM parameter name (``'B_fearful_amygdala-vmpfc'`` → ``'B'``).

    Names of nested (PEB-of-PEB) parameters carry a ``'<effect>:'`` prefix, which is ignored.
    """
    return name.split(":")[-1].split("_")[0]


def _is_between_region(name: str) -> bool:
    """True for A/B connection names whose source and target regions differ."""
    base = name.split(":")[-1]
    field_ = parameter_field(name)
    if field_ not in ("A", "B"):
        return True
    pair = base.split("_")[-1]
    if "-" not in pair:
        return True
    source, target = pair.split("-", 1)
    return source != target


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
        Diagonal of the prior covariance; parameters with zero prior variance are fixed
        and dropped (``spm_find_pC``).
    """
    keep = []
    for index, name in enumerate(param_names):
        if fields is not None and parameter_field(name) not in fields:
            continue
        if between_only and not _is_between_region(name):
            continue
        if patterns is not None and not any(fnmatch.fnmatchcase(name, p) for p in patterns):
            continue
        if prior_variance is not None and not prior_variance[index] > 0:
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
        Subjects' posteriors under the empirical priors (``Ns × Np``, ``Ns × Np × Np``).
    subject_names : list of str
    n_iter : int
    converged : bool
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
    random_effects: str = "all"
    joint_cov: np.ndarray | None = field(default=None, repr=False)

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
def _sym(matrix):
    return (matrix + matrix.T) / 2


def _inv(matrix):
    return _sym(np.linalg.inv(matrix))


def _logdet_pd(matrix) -> float:
    sign, value = np.linalg.slogdet(matrix)
    return float(value) if sign > 0 else -np.inf


def _precision_components(pQ: np.ndarray, fields: list[str], option: str) -> list[np.ndarray]:
    """Between-subject precision components (``spm_dcm_peb``, ``M.Q``)."""
    n = pQ.shape[0]
    if option == "single":
        return [pQ.copy()]
    if option == "fields":
        components = []
        for name in dict.fromkeys(fields):
            idx = [i for i, f in enumerate(fields) if f == name]
            Q = np.zeros((n, n))
            Q[np.ix_(idx, idx)] = pQ[np.ix_(idx, idx)]
            components.append(Q)
        return components
    if option == "none":
        return []
    if option == "all":
        components = []
        for i in range(n):
            Q = np.zeros((n, n))
            Q[i, i] = pQ[i, i]
            components.append(Q)
        return components
    raise ValueError(f"random_effects must be 'all', 'fields', 'single' or 'none', not {option!r}")


@dataclass
class _Subject:
    """Precomputed terms of one subject's BMR (full-rank case, Friston & Penny 2011 eq. 7)."""

    qP: np.ndarray
    likelihood_precision: np.ndarray  # qP − pP
    likelihood_linear: np.ndarray  # qP qE − pP pE
    constant: float  # ½ln|qP| − ½ln|pP| − ½qE'qP qE + ½pE'pP pE


def _prepare_subject(qE, qC, pE, pC) -> _Subject:
    qP, pP = _inv(qC), _inv(pC)
    constant = 0.5 * (_logdet_pd(qP) - _logdet_pd(pP)) - 0.5 * qE @ qP @ qE + 0.5 * pE @ pP @ pE
    return _Subject(qP, qP - pP, qP @ qE - pP @ pE, float(constant))


def _reduce(subject: _Subject, rE, rP, logdet_rP):
    """Reduced free energy, posterior mean/covariance for a full-rank empirical prior."""
    sP = _sym(subject.likelihood_precision + rP)
    sC = _inv(sP)
    sE = sC @ (subject.likelihood_linear + rP @ rE)
    logdet_sP = _logdet_pd(sP)
    if not np.isfinite(logdet_sP):
        # reduced posterior precision not positive definite (an approximate first-level
        # posterior less precise than its prior): this empirical prior is inadmissible
        return -np.inf, sE, sC
    dF = subject.constant + 0.5 * (logdet_rP - logdet_sP) - 0.5 * rE @ rP @ rE + 0.5 * sE @ sP @ sE
    return dF, sE, sC


def _regularised_step(hessian, gradient, log_time):
    """Ascent step ``(e^{τJ} − I) J⁻¹ g`` (the local-linearisation update of ``spm_dx``).

    ``τ = exp(log_time) / |J|^{1/n}`` as in ``spm_dx``. Positive curvatures (non-concave
    directions) are reflected to negative so the step is always an ascent direction.
    """
    values, vectors = np.linalg.eigh(_sym(hessian))
    magnitude = np.maximum(np.abs(values), 1e-12 * max(np.abs(values).max(), 1e-300))
    tau = np.exp(log_time - np.mean(np.log(magnitude)))
    lam = -magnitude
    phi = -np.expm1(lam * tau) / magnitude  # (e^{λτ} − 1)/λ with λ < 0
    return vectors @ (phi * (vectors.T @ gradient))


def _newton_to_mode(evaluate, best, n_b, max_iter: int = 64, tol: float = 1e-10):
    """Newton ascent of the variational energy L to its mode, with step halving.

    Curvatures are reflected to negative (as in :func:`_regularised_step`) so that every
    step is an ascent direction. Converged when the Newton decrement — the gain in L that
    a full Newton step would bring — is below ``tol`` nats.

    Returns
    -------
    best : dict
        The objective evaluated at the mode.
    converged : bool
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
    """Free energy of a PEB model with its gradient and curvature in (β, γ)."""

    def __init__(self, subjects, X, F_first, pQ, Q, prior_mean, prior_prec, hyper_mean, hyper_prec):
        self.subjects, self.X, self.F_first = subjects, X, F_first
        self.pQ, self.Q = pQ, Q
        self.prior_mean, self.prior_prec = prior_mean, prior_prec
        self.hyper_mean, self.hyper_prec = hyper_mean, hyper_prec
        self.n_params = pQ.shape[0]
        self.n_cov = X.shape[1]
        self.n_hyper = len(Q)
        self.n_b = self.n_params * self.n_cov
        joint = np.zeros((self.n_b + self.n_hyper, self.n_b + self.n_hyper))
        joint[: self.n_b, : self.n_b] = prior_prec
        joint[self.n_b :, self.n_b :] = hyper_prec
        self.logdet_joint_prior_prec = _logdet_pd(joint)

    def __call__(self, b, g):
        B = b.reshape(self.n_params, self.n_cov, order="F")
        rP = self.pQ * _PRECISION_FLOOR + sum((np.exp(g[j]) * self.Q[j] for j in range(self.n_hyper)), np.zeros_like(self.pQ))
        if self.n_hyper == 0:
            # no random-effects hyperparameters ('none', or a single subject): Σ = pC/beta
            rP = self.pQ.copy()
        rC = _inv(rP)
        logdet_rP = _logdet_pd(rP)
        dFdb = -self.prior_prec @ (b - self.prior_mean)
        dFdbb = -self.prior_prec.copy()
        dFdg = -self.hyper_prec @ (g - self.hyper_mean)
        dFdgg = -self.hyper_prec.copy()
        dFdbg = np.zeros((self.n_b, self.n_hyper))
        F = 0.0
        sEs, sCs = [], []
        for i, subject in enumerate(self.subjects):
            x = self.X[i]
            rE = B @ x
            dF, sE, sC = _reduce(subject, rE, rP, logdet_rP)
            sEs.append(sE)
            sCs.append(sC)
            F += dF + self.F_first[i]
            dE = sE - rE
            # ∂ΔF/∂rE = rP·dE ; ∂²ΔF/∂rE² = rP·sC·rP − rP   (Friston et al. 2016, eq. A.11)
            dFdb += np.kron(x, rP @ dE)
            dFdbb += np.kron(np.outer(x, x), rP @ sC @ rP - rP)
            mixing = np.eye(self.n_params) - rP @ sC
            QdE = [Qj @ dE for Qj in self.Q]
            for j in range(self.n_hyper):
                ej = np.exp(g[j])
                # ∂ΔF/∂γ_j = ½e^{γ_j}[tr((rC − sC)Q_j) − dE'Q_j dE]
                gj = ej * (np.sum((rC - sC) * self.Q[j]) - dE @ QdE[j]) / 2
                dFdg[j] += gj
                dFdgg[j, j] += gj
                dFdbg[:, j] += ej * np.kron(x, mixing @ QdE[j])
                for k in range(self.n_hyper):
                    ek = np.exp(g[k])
                    second = 0.5 * np.sum((rC @ self.Q[k] @ rC - sC @ self.Q[k] @ sC) * self.Q[j].T) - QdE[k] @ sC @ QdE[j]
                    dFdgg[j, k] -= ej * ek * second
        grad = np.concatenate([dFdb, dFdg])
        hess = np.block([[dFdbb, dFdbg], [dFdbg.T, dFdgg]])
        hess = _sym(hess)
        # Laplace: F − ½(b−bE)'bP(b−bE) − ½(g−gE)'gP(g−gE) + ½ln|ipC·Cp|, Cp = (−H)⁻¹
        complexity = 0.5 * (b - self.prior_mean) @ self.prior_prec @ (b - self.prior_mean)
        complexity += 0.5 * (g - self.hyper_mean) @ self.hyper_prec @ (g - self.hyper_mean)
        # log|−H| from the magnitudes of the eigenvalues (as spm_logdet, via singular values), so
        # that F stays finite where the exact curvature in γ is not yet negative definite.
        logdet_neg_hess = float(np.sum(np.log(np.maximum(np.abs(np.linalg.eigvalsh(hess)), 1e-300))))
        # L: the variational energy (log joint density of the PEB at (β, γ)), whose mode the
        # Gauss–Newton steps seek; F adds the Laplace log-determinant term.
        energy = F - complexity
        F_total = energy + 0.5 * (self.logdet_joint_prior_prec - logdet_neg_hess)
        return {"F": F_total, "L": energy, "grad": grad, "hess": hess, "b": b, "g": g, "rC": rC, "sE": sEs, "sC": sCs,
                "dFdbb": dFdbb, "dFdgg": dFdgg}


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
    random_effects: str = "all",
    alpha: float = 1.0,
    beta: float = 16.0,
    hE: float = 0.0,
    hC: float = 1.0 / 16.0,
    shrink_posteriors: bool = True,
    max_iter: int = 128,
    subject_names: Sequence[str] | None = None,
) -> PEBResult:
    """Invert a PEB model from subject-level posteriors (``spm_dcm_peb``).

    Parameters
    ----------
    Ep_list : sequence of (P,) arrays
        Posterior means of the first-level parameters, one per subject.
    Cp_list : sequence of (P, P) arrays
        Posterior covariances, one per subject.
    pE, pC : (P,) and (P, P) array, or sequences of them (one per subject)
        First-level prior mean and covariance. The third-level prior is built from the
        first subject's (as SPM does with ``DCM{1}``).
    X : (Ns, Nx) array
        Between-subject design; column 0 is normally a constant (the group mean) and the
        others are mean-centred covariates (Zeidman et al. 2019, sec. 2.3).
    param_names : sequence of str
        Names of all P first-level parameters.
    covariate_names : sequence of str, optional
        Names of the design columns.
    select : sequence of int, optional
        Indices of the parameters treated as random effects (SPM ``field``); default all
        with non-zero prior variance. See :func:`select_parameters`.
    F_list : sequence of float, optional
        First-level free energies (added to the PEB free energy; default 0).
    random_effects : {'all', 'fields', 'single', 'none'}
        Precision components of the between-subject covariance (``M.Q``); ``'none'``
        fixes the random-effects covariance at ``pC/beta`` (no hyperparameters).
    alpha, beta : float
        Third-level prior covariance ``pC/alpha``; second-level ``pC/beta`` (``M.alpha``,
        ``M.beta``).
    hE, hC : float
        Prior mean and variance of each log precision (``M.hE``, ``M.hC``).
    shrink_posteriors : bool
        Apply SPM's posterior shrinkage ``qC ← (qC⁻¹ + pC⁻¹/16)⁻¹`` (only when Ns > 1).
    max_iter : int
        Maximum number of variational Laplace iterations.
    subject_names : sequence of str, optional

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
        select = [i for i in range(n_all) if pC_list[0][i, i] > 0]
    select = list(select)
    if not select:
        raise ValueError("no parameters selected for the PEB")
    names = [param_names[i] for i in select]
    idx = np.ix_(select, select)

    # Level-1 summary statistics restricted to the random effects (marginals).
    subjects = []
    for i in range(n_subjects):
        qE = np.asarray(Ep_list[i], dtype=float).ravel()[select]
        qC = np.asarray(Cp_list[i], dtype=float)[idx]
        sub_pE = pE_list[i].ravel()[select]
        sub_pC = pC_list[i][idx]
        if np.any(np.linalg.eigvalsh(sub_pC) <= 0):
            raise ValueError("selected parameters must have a positive-definite prior covariance")
        if shrink_posteriors and n_subjects > 1:
            qC = _inv(_inv(qC) + _inv(sub_pC) / 16.0)
        subjects.append(_prepare_subject(qE, qC, sub_pE, sub_pC))
    F_first = np.zeros(n_subjects) if F_list is None else np.asarray(F_list, dtype=float)

    n_params = len(select)
    PE = pE_list[0].ravel()[select]
    PC = pC_list[0][idx]

    # Third-level prior on group effects, scaled by the norm of each covariate.
    col_ss = np.sum(X**2, axis=0)
    scale = np.where(col_ss > 0, n_subjects / np.where(col_ss > 0, col_ss, 1.0), 1.0)
    prior_mean = np.concatenate([PE] + [np.zeros(n_params)] * (n_cov - 1))
    prior_cov = np.kron(np.diag(scale), PC / alpha)
    prior_prec = _inv(prior_cov)

    # Second level: random-effects precision components.
    pQ = _inv(PC / beta)
    Q = _precision_components(pQ, [parameter_field(n) for n in names], random_effects) if n_subjects > 1 else []
    n_hyper = len(Q)
    hyper_mean = np.full(n_hyper, float(hE))
    hyper_prec = np.eye(n_hyper) / hC
    n_b = n_params * n_cov

    objective = _PEBObjective(subjects, X, F_first, pQ, Q, prior_mean, prior_prec, hyper_mean, hyper_prec)
    evaluate = objective

    b = prior_mean.copy()
    g = hyper_mean.copy()
    best = evaluate(b, g)
    if not np.isfinite(best["L"]):
        best["L"] = -np.inf
    log_time = -4.0
    n_iter = 0
    last_gain = np.inf
    for n_iter in range(1, max_iter + 1):
        step = _regularised_step(best["hess"], best["grad"], log_time)
        trial = evaluate(best["b"] + step[:n_b], best["g"] + step[n_b:])
        if np.isfinite(trial["L"]) and trial["L"] >= best["L"]:
            last_gain = trial["L"] - best["L"]
            best = trial
            log_time = min(log_time + _LOG_TIME_INCREMENT, 4.0)
        else:
            log_time -= 1.0
        # SPM's stopping rule (spm_dcm_peb): the last accepted (near Gauss–Newton) step gained
        # < 1e-4 nats, or repeated failures shrank the step to nothing.
        if (last_gain < 1e-4 and n_iter > 4 and log_time >= 0) or log_time < -8:
            break
    # Polish to the Gauss–Newton fixed point, the mode of L (the expansion point of the
    # Laplace approximation): Newton steps with backtracking on L.
    best, converged = _newton_to_mode(evaluate, best, n_b)

    # Final conditional update of β given γ: L is exactly quadratic in β (each ΔF_i is
    # quadratic in its empirical prior mean), so one Newton step gives the exact
    # conditional posterior mean (mean-field q(β)q(γ), as PEB.Cp is conditional on γ).
    n_b = objective.n_b
    b_final = best["b"] + np.linalg.solve(-best["dFdbb"], best["grad"][:n_b])
    best = evaluate(b_final, best["g"])

    Cb = _inv(-best["dFdbb"])
    Cg = _inv(-best["dFdgg"]) if n_hyper else np.zeros((0, 0))
    try:
        joint = _inv(-best["hess"])
    except np.linalg.LinAlgError:
        joint = None
    Ep = best["b"].reshape(n_params, n_cov, order="F")
    return PEBResult(
        param_names=names,
        covariate_names=covariate_names,
        X=X,
        Ep=Ep,
        Cp=Cb,
        Eh=best["g"].copy(),
        Ch=Cg,
        Ce=best["rC"],
        F=float(best["F"]),
        prior_mean=prior_mean,
        prior_cov=prior_cov,
        hE=hE,
        hC=hC,
        precision_components=Q,
        subject_Ep=np.array(best["sE"]),
        subject_Cp=np.array(best["sC"]),
        subject_names=list(subject_names) if subject_names is not None else [f"subject{i + 1}" for i in range(n_subjects)],
        n_iter=n_iter,
        converged=converged,
        random_effects=random_effects,
        joint_cov=joint,
    )


# ---------------------------------------------------------------------------------------
# Bayesian model reduction over group effects + Bayesian model averaging
# ---------------------------------------------------------------------------------------
@dataclass
class BMAResult:
    """Greedy BMR search and BMA over second-level parameters (``spm_dcm_peb_bmc``).

    Attributes
    ----------
    param_names, covariate_names : list of str
    Ep : ndarray, (Np, Nx)
        Bayesian model average of the group effects.
    Cp : ndarray, (Np·Nx, Np·Nx)
        BMA covariance (exact moments of the Gaussian mixture).
    Pp : ndarray, (Np, Nx)
        Posterior probability that each effect is present (model family with vs without).
    free_energies : ndarray
        Reduced free energies (relative to the full PEB) of the models in the last search.
    model_space : ndarray of bool
        Rows: models of the last search; columns: the searched effects; True = removed.
    searched : ndarray of int
        Indices (into ``vec(Ep)``) of the effects in the last search.
    best_model_F : float
        Reduced free energy of the winning model relative to the full model (nats).
    n_models_averaged : int
    """

    param_names: list
    covariate_names: list
    Ep: np.ndarray
    Cp: np.ndarray
    Pp: np.ndarray
    free_energies: np.ndarray
    model_space: np.ndarray
    searched: np.ndarray
    best_model_F: float
    n_models_averaged: int

    @property
    def Pp_sign(self) -> np.ndarray:
        return posterior_probability_nonzero(self.Ep, np.diag(self.Cp).reshape(self.Ep.shape, order="F"))

    def table(self) -> pd.DataFrame:
        """Long table: parameter, covariate, Ep, Cp (variance), Pp_sign, Pp (presence)."""
        return _effects_table(self.param_names, self.covariate_names, self.Ep, np.diag(self.Cp), Pp=self.Pp)


def _reduced_prior(pE, pC, present):
    """Switch off parameters: mean and (co)variance set to zero (``spm_dcm_bmr_all``, β = γ = 0)."""
    R = np.diag(present.astype(float))
    return R @ pE, R @ pC @ R


def bmr_search(peb: PEBResult, max_exhaustive: int = 8, occam_window: float = OCCAM_WINDOW) -> BMAResult:
    """Greedy Bayesian model reduction over group effects, then Bayesian model averaging.

    Follows ``spm_dcm_bmr_all`` as called by ``spm_dcm_peb_bmc(PEB)`` (Friston et al. 2016,
    sec. 2.4; Zeidman et al. 2019, sec. 2.6): while more than ``max_exhaustive`` effects are
    free, the ``max_exhaustive`` effects whose individual removal costs least evidence are
    searched exhaustively (all 2^k subsets switched off), the best model's removals are
    kept, and the search repeats until nothing more is removed. ``Pp`` of the effects in
    the last search is the posterior probability of the family of models that contain
    them; effects removed earlier get 0, free effects not in the last search get 1. The
    BMA pools the reduced posteriors of the last search's models within ``occam_window``
    nats of the best (SPM: 8), weighted by their posterior probabilities.

    Notes
    -----
    Deviation from SPM (documented): the BMA uses the model set of the last search as it
    was scored (SPM re-applies the winning model's removals to every model in the window).

    As in SPM, effects whose prior variance is below 1/1024 of the mean prior variance are
    treated as fixed (never searched, ``Pp`` = 0). The prior of a group effect scales as
    N / Σx², so a covariate in large units (e.g. CAPS-5 points rather than SD units) can
    push its effects on A parameters below that threshold; designs should use
    comparable scales (:func:`ptsd_bidsapp.group.dcm_group.peb_design` z-scores).

    ``Pp`` is a model-evidence probability: an effect is kept only when its evidence
    outweighs the Occam factor of its prior (≈ ln(prior SD / posterior SD) nats for a
    single effect, Savage–Dickey), so it can be far below ``Pp_sign`` (the posterior
    probability of the effect's sign) for effects of moderate size under a wide prior.
    """
    qE = peb.Ep.ravel(order="F")
    qC = peb.Cp
    pE = peb.prior_mean
    pC = peb.prior_cov
    prior_var = np.diag(pC)
    small = prior_var < 1024
    threshold = np.mean(prior_var[small]) / 1024 if np.any(small) else 0.0
    free = prior_var > threshold

    def score(present):
        rE, rC = _reduced_prior(pE, pC, present)
        return reduced_free_energy(qE, qC, pE, pC, rE, rC)

    while True:
        candidates = np.flatnonzero(free)
        greedy = candidates.size > max_exhaustive
        if candidates.size == 0:
            raise ValueError("the PEB has no free group effects to reduce")
        if greedy:
            gains = []
            for index in candidates:
                present = free.copy()
                present[index] = False
                gains.append(score(present)[0])
            # Effects whose removal increases the evidence most (least evidence for them).
            order = np.argsort(-np.asarray(gains), kind="stable")
            candidates = candidates[order[:max_exhaustive]]
        model_space = np.array(list(itertools.product([False, True], repeat=candidates.size)), dtype=bool)
        G = np.empty(len(model_space))
        for m, removed in enumerate(model_space):
            present = free.copy()
            present[candidates[removed]] = False
            G[m] = score(present)[0]
        best = int(np.argmax(G))
        n_removed = int(model_space[best].sum())
        searched_free = free.copy()
        free[candidates[model_space[best]]] = False
        if not (greedy and n_removed):
            break

    posterior = np.exp(G - G.max())
    posterior /= posterior.sum()
    Pp_vec = free.astype(float)
    # Pp of an effect = Σ p(models that keep it) — equal families, so means ∝ sums.
    Pp_vec[candidates] = [posterior[~model_space[:, c]].sum() for c in range(candidates.size)]
    # Effects that were never free keep probability 0.
    Pp_vec[~(prior_var > threshold)] = 0.0

    window = np.flatnonzero(G > G.max() - occam_window)
    weights = posterior[window] / posterior[window].sum()
    mean = np.zeros_like(qE)
    second = np.zeros_like(qC)
    for w, m in zip(weights, window):
        present = searched_free.copy()
        present[candidates[model_space[m]]] = False
        _, sE, sC = score(present)
        mean += w * sE
        second += w * (sC + np.outer(sE, sE))
    cov = _sym(second - np.outer(mean, mean))
    shape = peb.Ep.shape
    return BMAResult(
        param_names=list(peb.param_names),
        covariate_names=list(peb.covariate_names),
        Ep=mean.reshape(shape, order="F"),
        Cp=cov,
        Pp=Pp_vec.reshape(shape, order="F"),
        free_energies=G,
        model_space=model_space,
        searched=candidates,
        best_model_F=float(G.max()),
        n_models_averaged=int(window.size),
    )


# ---------------------------------------------------------------------------------------
# session change: PEB of PEBs
# ---------------------------------------------------------------------------------------
#: Within-subject design over the two sessions: a session mean and the change post − pre
#: (rows: pre, post). With ±½ coding the second coefficient is the change post − pre.
WITHIN_SUBJECT_DESIGN = np.array([[1.0, -0.5], [1.0, 0.5]])
WITHIN_SUBJECT_EFFECTS = ("mean", "change")


@dataclass
class SessionChangeResult:
    """Two-level PEB of PEBs for the change in connectivity between sessions.

    Attributes
    ----------
    within : list of PEBResult
        One per subject: PEB over the subject's two session DCMs with design
        :data:`WITHIN_SUBJECT_DESIGN` (effects ``mean`` and ``change``).
    between : PEBResult
        PEB over the subjects' ``change`` effects with the between-subject design.
    """

    within: list
    between: PEBResult


def fit_session_change(
    Ep_pre: Sequence[np.ndarray],
    Cp_pre: Sequence[np.ndarray],
    Ep_post: Sequence[np.ndarray],
    Cp_post: Sequence[np.ndarray],
    pE,
    pC,
    X: np.ndarray,
    param_names: Sequence[str],
    covariate_names: Sequence[str] | None = None,
    *,
    select: Sequence[int] | None = None,
    F_pre: Sequence[float] | None = None,
    F_post: Sequence[float] | None = None,
    subject_names: Sequence[str] | None = None,
    effects: Sequence[str] = ("change",),
    within_beta: float = 1024.0,
    between_hE: float | None = None,
    **peb_options,
) -> SessionChangeResult:
    """Session change by PEB of PEBs (Zeidman et al. 2019, sec. 2.8 "longitudinal designs").

    Design
    ------
    1. Within subject: for each subject a PEB over its pre and post DCM posteriors with
       design ``[[1, −½], [1, +½]]`` (columns ``mean``, ``change``); the ``change`` effect
       is the subject's connectivity change post − pre, with its posterior covariance.
       With two sessions a session-specific residual is not identifiable (it is confounded
       with the change), so this level has no random-effects hyperparameters and a small
       fixed residual covariance ``pC/within_beta`` (default pC/1024): it is then almost a
       re-parameterisation of the two session posteriors into mean and change. (SPM's
       default between-"subject" covariance pC/16 would add its variance twice to every
       change estimate — e.g. SD 0.35 for B parameters with prior variance 1.)
    2. Between subjects: a PEB whose "first-level posteriors" are the within-subject PEB
       posteriors (their priors are the within-subject third-level priors), restricted to
       the ``effects`` (default: ``change``), with the between-subject design ``X``
       (e.g. mean, improvement, drug, improvement × drug, centred). Its group effects are
       then: the average change (column 0) and how the change depends on each covariate.
       The within level's prior on ``change`` is ``4·pC`` (covariate-norm scaling of the
       ±½ column), so the default random-effects covariance ``prior/16`` would be
       ``pC/4``; ``between_hE`` (default ``ln 4``) restores SPM's usual random-effects
       scale ``pC/16`` relative to the first-level DCM prior.

    Parameters are as in :func:`fit_peb`; ``peb_options`` are passed to both levels.
    """
    n_subjects = len(Ep_pre)
    pE_list = _as_list_of_arrays(pE, n_subjects, "vec")
    pC_list = _as_list_of_arrays(pC, n_subjects)
    within = []
    names = subject_names if subject_names is not None else [f"subject{i + 1}" for i in range(n_subjects)]
    for i in range(n_subjects):
        F_i = None
        if F_pre is not None and F_post is not None:
            F_i = [F_pre[i], F_post[i]]
        within.append(
            fit_peb(
                [Ep_pre[i], Ep_post[i]],
                [Cp_pre[i], Cp_post[i]],
                pE_list[i],
                pC_list[i],
                WITHIN_SUBJECT_DESIGN,
                param_names,
                list(WITHIN_SUBJECT_EFFECTS),
                select=select,
                F_list=F_i,
                subject_names=[f"{names[i]}_pre", f"{names[i]}_post"],
                random_effects="none",
                beta=within_beta,
                **{k: v for k, v in peb_options.items() if k not in ("random_effects", "beta")},
            )
        )
    posteriors = [w.as_posterior() for w in within]
    level_names = posteriors[0]["names"]
    chosen = [k for k, name in enumerate(level_names) if name.split(":")[0] in effects]
    if between_hE is None:
        column = WITHIN_SUBJECT_DESIGN[:, 1]
        between_hE = float(np.log(len(column) / np.sum(column**2)))
    peb_options = dict(peb_options)
    peb_options.setdefault("hE", between_hE)
    between = fit_peb(
        [p["Ep"] for p in posteriors],
        [p["Cp"] for p in posteriors],
        [p["pE"] for p in posteriors],
        [p["pC"] for p in posteriors],
        X,
        level_names,
        covariate_names,
        select=chosen,
        F_list=[p["F"] for p in posteriors],
        subject_names=names,
        **peb_options,
    )
    return SessionChangeResult(within=within, between=between)


# ---------------------------------------------------------------------------------------
# leave-one-out prediction
# ---------------------------------------------------------------------------------------
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
