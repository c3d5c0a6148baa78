"""Bayesian model reduction over PEB group effects, then Bayesian model averaging.

SPM12 r7771 ``spm_dcm_bmr_all`` ($Id 7717) as called by ``spm_dcm_peb_bmc(PEB)`` ($Id 7679):
a greedy search over the second-level parameters of a PEB (:mod:`ptsd_bidsapp.peb.fit`),
each reduced model scored by Bayesian model reduction
(:func:`ptsd_bidsapp.peb.reduce.reduced_free_energy`), and the Bayesian model average of
the reduced posteriors within Occam's window (Friston et al. 2016, "Bayesian model
reduction and empirical Bayes for group (DCM) studies", NeuroImage 128:413, sec. 2.4;
Zeidman et al. 2019, "A guide to group effective connectivity analysis, part 2",
NeuroImage 200:12, sec. 2.6). Our own implementation of the r7717 search.

Differences from SPM (documented):

* The models of the search are scored as SPM does (``spm_log_evidence``: regularised
  inverses with tolerance e⁻¹⁶, restricted to the changed effects;
  :func:`ptsd_bidsapp.peb.reduce.regularised_reduced_free_energy`), so the search takes
  SPM's path; these scores differ from the exact BMR limit by up to ~0.06 nats for
  precisely estimated effects (``exact_scores=True`` uses the exact limit). The models
  averaged are reduced exactly (SPM: ``spm_log_evidence_reduce``, tolerance 1e-8; ~1e-6).
* The BMA uses the exact moments of the Gaussian mixture (mean and full covariance);
  ``spm_dcm_bma`` estimates them from 1000 Monte-Carlo draws (a model from the softmax of
  the free energies, then parameters from its Gaussian) and keeps only the variances, so
  SPM's BMA expectations carry sampling noise (~3% of a posterior SD).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ptsd_bidsapp.peb.fit import PEBResult, _effects_table, posterior_probability_nonzero, principal_basis
from ptsd_bidsapp.peb.reduce import _sym, reduced_free_energy, regularised_reduced_free_energy

__all__ = ["BMAResult", "bmr_search", "OCCAM_WINDOW", "model_space"]

#: Occam's window for Bayesian model averaging, in nats (``spm_dcm_bmr_all``).
OCCAM_WINDOW = 8.0


@dataclass
class BMAResult:
    """Greedy BMR search and BMA over second-level parameters (``spm_dcm_peb_bmc``).

    Attributes
    ----------
    param_names, covariate_names : list of str
    Ep : ndarray, (Np, Nx)
        Bayesian model average of the group effects.
    Cp : ndarray, (Np·Nx, Np·Nx)
        BMA covariance (exact moments of the Gaussian mixture; SPM keeps its diagonal).
    Pp : ndarray, (Np, Nx)
        Posterior probability that each effect is present (model family with vs without).
    free_energies : ndarray
        Reduced free energies (relative to the full PEB) of the models in the last search
        (``BMR.F``).
    model_space : ndarray of bool
        Rows: models of the last search, in ``spm_perm_mtx`` order (row 0 removes every
        searched effect, the last row none); columns: the searched effects; True = removed
        (``BMR.K``).
    searched : ndarray of int
        Indices (into ``vec(Ep)``) of the effects in the last search (``BMR.k``).
    best_model_F : float
        Reduced free energy of the winning model relative to the full model (nats).
    n_models_averaged : int
    averaged_free_energies : ndarray, optional
        Free energies of the averaged models after the winner's removals were applied.
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
    averaged_free_energies: np.ndarray | None = None

    @property
    def Pp_sign(self) -> np.ndarray:
        return posterior_probability_nonzero(self.Ep, np.diag(self.Cp).reshape(self.Ep.shape, order="F"))

    def table(self) -> pd.DataFrame:
        """Long table: parameter, covariate, Ep, Cp (variance), Pp_sign, Pp (presence)."""
        return _effects_table(self.param_names, self.covariate_names, self.Ep, np.diag(self.Cp), Pp=self.Pp)


def model_space(n: int) -> np.ndarray:
    """All 2ⁿ on/off patterns of n effects, True = removed, in ``spm_perm_mtx`` order.

    Row 0 removes all n effects and the last row none; column 0 varies slowest.
    """
    rows = np.arange(2**n)[:, None]
    bits = (rows >> np.arange(n - 1, -1, -1)[None, :]) & 1
    return bits == 0


def _reduced_prior(pE, pC, present):
    """Switch off parameters: mean and (co)variance set to zero (``spm_dcm_bmr_all``, β = γ = 0)."""
    R = np.diag(present.astype(float))
    return R @ pE, R @ pC @ R


def bmr_search(peb: PEBResult, max_exhaustive: int = 8, occam_window: float = OCCAM_WINDOW, *,
               exact_scores: bool = False) -> BMAResult:
    """Greedy Bayesian model reduction over group effects, then Bayesian model averaging.

    Follows ``spm_dcm_bmr_all`` r7717 as called by ``spm_dcm_peb_bmc(PEB)``:

    1. Effects whose prior variance exceeds 1/1024 of the mean prior variance (of those
       below 1024) are free; the others are fixed (never searched, ``Pp`` = 0).
    2. With ``nparam`` free effects and ``nmax = fix(max(nparam/4, 8))``: if
       ``nparam > nmax``, each free effect is scored by removing it alone and the ``nmax``
       whose removal costs least evidence are kept; the model removing all of them is
       compared with the model removing none, and accepted if it is better by more than
       ``nmax`` nats. Otherwise the first ``max_exhaustive`` (8) of them are searched
       exhaustively (all 2^k subsets switched off: prior mean and variance 0).
    3. The winner's removals are kept; the search repeats while there were more than
       ``nmax`` free effects and something was removed.
    4. ``Pp`` of the effects in the last search is the posterior probability of the family
       of models that keep them (mean model probability with / without); effects removed
       earlier get 0, free effects not in the last search 1.
    5. BMA: every model of the last search within ``occam_window`` nats (8) of the best is
       re-reduced with the winner's removals applied as well, and the reduced posteriors
       are averaged with weights softmax(F) of those re-reduced free energies.

    Deviations from SPM (exact reduction of the averaged models, exact mixture moments) are
    listed in the module docstring; ``exact_scores=True`` scores the search by the exact
    BMR limit instead of SPM's regularised ``spm_log_evidence``.

    Notes
    -----
    The prior of a group effect scales as N / Σx², so a covariate in large units (e.g.
    CAPS-5 points rather than SD units) can push its effects on A parameters below the
    1/1024 threshold of step 1; designs should use comparable scales
    (:func:`ptsd_bidsapp.group.dcm_group.peb_design` z-scores).

    ``Pp`` is a model-evidence probability: an effect is kept only when its evidence
    outweighs the Occam factor of its prior (≈ ln(prior SD / posterior SD) nats for a
    single effect, Savage–Dickey), so it can be far below ``Pp_sign`` (the posterior
    probability of the effect's sign) for effects of moderate size under a wide prior.
    """
    qE = peb.Ep.ravel(order="F")
    qC = peb.Cp
    pE = peb.prior_mean
    pC = peb.prior_cov
    U = principal_basis(pC)
    u_qE, u_pE, u_qC, u_pC = U.T @ qE, U.T @ pE, U.T @ qC @ U, U.T @ pC @ U

    prior_var = np.diag(pC)
    small = prior_var < 1024
    threshold = np.mean(prior_var[small]) / 1024 if np.any(small) else 0.0
    free = prior_var > threshold
    initially_free = free.copy()

    def score(present):
        """Reduced free energy of switching off the effects not ``present`` (projected space)."""
        R = U.T @ np.diag(present.astype(float)) @ U
        if exact_scores:
            return reduced_free_energy(u_qE, u_qC, u_pE, u_pC, R @ u_pE, R @ u_pC @ R)[0]
        return regularised_reduced_free_energy(u_qE, u_qC, u_pE, u_pC, R @ u_pE, R @ u_pC @ R)

    def score_models(k, K):
        G = np.empty(len(K))
        for m, removed in enumerate(K):
            present = free.copy()
            present[k[removed]] = False
            G[m] = score(present)
        return G

    while True:
        k = np.flatnonzero(free)
        n_param = k.size
        if n_param == 0:
            raise ValueError("the PEB has no free group effects to reduce")
        n_max = int(max(n_param / 4, max_exhaustive))
        greedy = n_param > n_max
        if greedy:
            single = np.empty(n_param)
            for i, index in enumerate(k):
                present = free.copy()
                present[index] = False
                single[i] = score(present)
            # effects whose removal increases the evidence most (least evidence for them)
            k = k[np.argsort(-single, kind="stable")[:n_max]]
            K = np.array([[True] * k.size, [False] * k.size])
            G = score_models(k, K)
            bulk = G[0] - G[-1] > n_max
        else:
            bulk = False
        if not bulk:
            k = k[:max_exhaustive]
            K = model_space(k.size)
            G = score_models(k, K)
        best = int(np.argmax(G))
        free[k[K[best]]] = False
        if not (greedy and K[best].any()):
            break

    posterior = np.exp(G - G.max())
    posterior /= posterior.sum()
    Pp_vec = free.astype(float)
    for c in range(k.size):
        kept = posterior[~K[:, c]].mean() if np.any(~K[:, c]) else 0.0
        removed = posterior[K[:, c]].mean() if np.any(K[:, c]) else 0.0
        Pp_vec[k[c]] = kept / (kept + removed)
    Pp_vec[~initially_free] = 0.0

    # BMA over the window, each model re-reduced with the winner's removals applied too.
    window = np.flatnonzero(G > G.max() - occam_window)
    F_window, means, covs = [], [], []
    for m in window:
        present = free.copy()
        present[k[K[m]]] = False
        rE, rC = _reduced_prior(pE, pC, present)
        F_m, sE, sC = reduced_free_energy(qE, qC, pE, pC, rE, rC)
        F_window.append(F_m)
        means.append(sE)
        covs.append(sC)
    F_window = np.array(F_window)
    weights = np.exp(F_window - F_window.max())
    weights /= weights.sum()
    mean = sum(w * e for w, e in zip(weights, means))
    second = sum(w * (c + np.outer(e, e)) for w, e, c in zip(weights, means, covs))
    cov = _sym(second - np.outer(mean, mean))
    shape = peb.Ep.shape
    return BMAResult(
        param_names=list(peb.param_names),
        covariate_names=list(peb.covariate_names),
        Ep=mean.reshape(shape, order="F"),
        Cp=cov,
        Pp=Pp_vec.reshape(shape, order="F"),
        free_energies=G,
        model_space=K,
        searched=k,
        best_model_F=float(G.max()),
        n_models_averaged=int(window.size),
        averaged_free_energies=F_window,
    )
