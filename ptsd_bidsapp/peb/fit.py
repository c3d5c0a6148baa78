"""Parametric Empirical Bayes (PEB) over DCM posteriors (SPM12 ``spm_dcm_peb``).

A second-level (between-subject) general linear model over first-level parameters,
inverted from the subjects' Gaussian posteriors alone by Bayesian model reduction
(Friston et al. 2016, "Bayesian model reduction and empirical Bayes for group (DCM)
studies", NeuroImage 128:413; Zeidman et al. 2019, "A guide to group effective
connectivity analysis, part 2", NeuroImage 200:12). Conventions mirror SPM12
``spm_dcm_peb``:

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

from ptsd_bidsapp.peb.reduce import _inv, _logdet_pd, _prepare_subject, _reduce, _sym

__all__ = [
    "PEBResult",
    "fit_peb",
    "select_parameters",
    "parameter_field",
    "posterior_probability_nonzero",
]

#: Lower bound on the random-effects precision relative to pQ (``spm_dcm_peb``).
_PRECISION_FLOOR = 1.0 / 4096.0
#: Increase of the log time constant after an accepted step (SPM: 1/4; 1/2 reaches
#: Gauss–Newton steps in half the iterations with the same optimum).
_LOG_TIME_INCREMENT = 0.5


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


def _regularised_step(hessian, gradient, log_time):
    """Ascent step ``(e^{τJ} − I) J⁻¹ g`` (the local-linearisation update of ``spm_dx``).

    ``τ = exp(log_time) / |J|^{1/n}`` as in ``spm_dx``. Positive curvatures (non-concave
    directions) are reflected to negative so the step is always an ascent direction.

    Not :func:`ptsd_bidsapp.dcm.inversion.spm_dx` (the DCM inversion's step, SPM's own
    augmented-matrix exponential): that one steps along positive curvatures as they are,
    which the PEB's exact Hessian in γ can have far from the mode; this one, computed in
    the eigenbasis, never does.
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
