"""Bayesian model reduction over PEB group effects, then Bayesian model averaging.

SPM12 ``spm_dcm_bmr_all`` as called by ``spm_dcm_peb_bmc(PEB)``: a greedy search over the
second-level parameters of a PEB (:mod:`ptsd_bidsapp.peb.fit`), each reduced model scored by
Bayesian model reduction (:func:`ptsd_bidsapp.peb.reduce.reduced_free_energy`), and the
Bayesian model average of the reduced posteriors within Occam's window (Friston et al. 2016,
"Bayesian model reduction and empirical Bayes for group (DCM) studies", NeuroImage 128:413,
sec. 2.4; Zeidman et al. 2019, "A guide to group effective connectivity analysis, part 2",
NeuroImage 200:12, sec. 2.6).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ptsd_bidsapp.peb.fit import PEBResult, _effects_table, posterior_probability_nonzero
from ptsd_bidsapp.peb.reduce import _sym, reduced_free_energy

__all__ = ["BMAResult", "bmr_search", "OCCAM_WINDOW"]

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
