"""Re-randomisation tests of PEB group effects (after SPM12 r7771 ``spm_dcm_peb_rnd``).

Why: on real fMRI the first-level DCM posteriors are over-confident (noise under-estimated,
serially correlated residuals), and the PEB posterior probabilities inherit it — on null
data built from real signals, 43 % of between-subject effects reached Pp > 0.95. A
re-randomisation test asks instead how often an effect as large arises when the link
between subjects and covariate is broken (Nichols & Holmes 2002, Hum Brain Mapp 15:1;
Winkler et al. 2014, NeuroImage 92:381).

``spm_dcm_peb_rnd`` ($Id 6737) permutes the second column of the design, refits PEB and BMR
each time, and compares the log odds of that covariate's model family with its null
distribution (32 unseeded permutations by default). This module keeps the idea and changes
what makes it slow or partial (documented deviations):

* **Statistic.** Each subject's posterior ``N(qE_i, qC_i)`` under the DCM prior
  ``N(pE, pC)`` carries a Gaussian likelihood with precision ``L_i = qC_i⁻¹ − pC⁻¹`` and
  information vector ``b_i = qC_i⁻¹ qE_i − pC⁻¹ pE`` (the quantities Bayesian model
  reduction works with; Friston et al. 2016, NeuroImage 128:413, eq. A.3). With the
  second level ``θ_i = (x_i ⊗ I) β + ε_i``, ``ε_i ~ N(0, Σ)``, the marginal likelihood of
  ``β`` is Gaussian with weights ``W_i = (I + L_i Σ)⁻¹ L_i`` (``= (L_i⁻¹ + Σ)⁻¹``, written
  without inverting ``L_i``); the generalised least-squares estimate
  ``β̂ = (Σ_i X_i' W_i X_i)⁻¹ Σ_i X_i' (I + L_i Σ)⁻¹ b_i`` and its z-scores are the statistic.
  It is the PEB posterior mean of ``β`` under a flat third-level prior at fixed ``Σ``.
* **Subjects are re-randomised jointly.** The covariate rows (improvement, drug, their
  interaction, ...) are permuted together across subjects, so a permuted design stays
  coherent (the interaction stays the product of its permuted components). Permuting one
  column alone, as ``spm_dcm_peb_rnd`` does, leaves the other columns carrying the true
  labels — the interaction still encodes the true arm when the drug column is shuffled —
  and on null trials from real signals that made the test liberal (per-effect p < 0.05 for
  16 % of null effects). The joint permutation is exact under the null that the DCM
  parameters do not depend on any covariate, which is what a finding must guard against.
* **Σ from a model that permutations leave unchanged.** ``Σ`` of a covariate test is passed
  in by the caller; the app uses the random-effects covariance of the PEB with the mean
  only (invariant to any permutation of the covariate rows), so every re-randomisation costs
  one small linear solve instead of a PEB fit.
* **Every between-subject covariate** is tested (each gets its own p from the same
  re-randomisations).
* **A mean** (the ``mean`` column) is tested by sign flips: each subject's deviation from
  ``flip_centre`` is negated at random — swapping a subject's sessions in a session-change
  model (centre 0), or reflecting its parameters about the prior mean in a one-level model.
  Exchangeable when the mean is zero and subjects' deviations are symmetric (Winkler et al.
  2014); ``Σ`` is then the full model's (approximately invariant to flips: it depends on
  the residuals' second moments).
* **Family-wise p** over the covariate's parameters from the null distribution of the
  minimum per-parameter p (Westfall & Young 1993 min-p: each parameter's |z| is first
  referred to its own null, so parameters with wider nulls do not dominate), beside the
  per-effect p.
* **Seeded**: each column has its own random stream.

p-values are ``(1 + #{null >= observed}) / (1 + n_permutations)`` (never 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ptsd_bidsapp.progress import Ticker

__all__ = ["RerandomisationResult", "rerandomisation_test", "gls_effects", "FWE_FAMILIES"]

#: families of the family-wise p (config ``peb.finding_family``)
FWE_FAMILIES = ("covariate", "model")


@dataclass
class RerandomisationResult:
    """Per-effect and family-wise re-randomisation p-values.

    Attributes
    ----------
    param_names, covariate_names : list of str
    z : ndarray (n_parameters, n_covariates)
        Observed GLS z of each effect (NaN where the covariate was not tested).
    p : ndarray (n_parameters, n_covariates)
        Per-effect two-sided p (|z| against the null |z| of the same effect).
    p_fwe : ndarray (n_parameters, n_covariates)
        Family-wise p over the covariate's parameters (p against the null minimum p).
    method : dict
        Covariate -> ``"permutation"``, ``"sign-flip"`` or ``None`` (not tested).
    n_permutations : int
    seed : int
    family : str
        Family of ``p_fwe``: ``"covariate"`` or ``"model"``.
    """

    param_names: list
    covariate_names: list
    z: np.ndarray
    p: np.ndarray
    p_fwe: np.ndarray
    method: dict
    n_permutations: int
    seed: int
    family: str = "covariate"

    def table(self) -> pd.DataFrame:
        """Long table (parameter, covariate, z, p_rnd, p_rnd_fwe, rnd_method) in ``vec(Ep)`` order."""
        rows = []
        for j, cov in enumerate(self.covariate_names):
            for i, par in enumerate(self.param_names):
                rows.append({"parameter": par, "covariate": cov, "z": float(self.z[i, j]),
                             "p_rnd": float(self.p[i, j]), "p_rnd_fwe": float(self.p_fwe[i, j]),
                             "rnd_method": self.method.get(cov) or "n/a"})
        return pd.DataFrame(rows)


def _likelihoods(qE, qC, pE, pC):
    """Per-subject likelihood precision ``L_i`` and information ``b_i`` (see module docstring)."""
    pC = np.asarray(pC, dtype=float)
    pC = np.diag(pC) if pC.ndim == 1 else pC
    ipC = np.linalg.pinv(pC)
    L, b = [], []
    for i in range(len(qE)):
        iqC = np.linalg.pinv(np.asarray(qC[i], dtype=float))
        Li = iqC - ipC
        L.append((Li + Li.T) / 2)
        b.append(iqC @ np.asarray(qE[i], dtype=float) - ipC @ np.asarray(pE[i], dtype=float))
    return np.stack(L), np.stack(b)


def gls_effects(L: np.ndarray, b: np.ndarray, X: np.ndarray, Sigma: np.ndarray):
    """GLS estimate and z of the group effects for fixed between-subject covariance ``Sigma``.

    Parameters
    ----------
    L : array (n_subjects, p, p)
        Likelihood precisions.
    b : array (n_subjects, p)
        Likelihood information vectors.
    X : array (n_subjects, k)
        Design.
    Sigma : array (p, p)
        Between-subject covariance.

    Returns
    -------
    beta, z : arrays (p, k)
    """
    W, Wy = _gls_weights(L, b, Sigma)
    beta, z = _gls_solve(W, Wy[None], np.asarray(X, dtype=float)[None])
    return beta[0], z[0]


def _gls_weights(L: np.ndarray, b: np.ndarray, Sigma: np.ndarray):
    """Each subject's GLS weight ``W_i = (I + L_i Σ)⁻¹ L_i`` (symmetrised) and ``(I + L_i Σ)⁻¹ b_i``.

    They depend on the likelihoods and ``Σ`` only, not on the design: a re-randomisation of the
    design reuses them; a sign flip of ``b`` flips the second term linearly.
    """
    n, p = b.shape
    M = np.linalg.solve(np.eye(p)[None] + L @ Sigma[None], np.concatenate([L, b[:, :, None]], axis=2))  # (n, p, p+1)
    W, Wy = M[:, :, :p], M[:, :, p]
    return (W + np.swapaxes(W, 1, 2)) / 2, Wy


def _gls_solve(W: np.ndarray, Wy: np.ndarray, X: np.ndarray):
    """GLS group effects and z for a batch of designs ``X`` (B, n, k) and weighted data ``Wy`` (B, n, p).

    ``sum_i (x_i x_i') kron W_i`` and ``sum_i x_i kron W_i y_i`` with vec(beta) parameter-fastest;
    the covariance is their pseudo-inverse. Returns beta, z (B, p, k).
    """
    B, _, k = X.shape
    p = W.shape[1]
    precision = np.einsum("Bia,Bib,ipq->Bapbq", X, X, W).reshape(B, k * p, k * p)
    rhs = np.einsum("Bia,Bip->Bap", X, Wy).reshape(B, k * p, 1)
    cov = np.linalg.pinv(precision)
    beta = (cov @ rhs).reshape(B, k, p).transpose(0, 2, 1)
    sd = np.sqrt(np.maximum(np.diagonal(cov, axis1=1, axis2=2), 0)).reshape(B, k, p).transpose(0, 2, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(sd > 0, beta / np.where(sd > 0, sd, 1.0), 0.0)
    return beta, z


#: Re-randomisations whose GLS systems are solved in one batched call.
_RND_BATCH = 128


def rerandomisation_test(
    qE: Sequence[np.ndarray],
    qC: Sequence[np.ndarray],
    pE,
    pC: np.ndarray,
    X: np.ndarray,
    param_names: Sequence[str],
    covariate_names: Sequence[str],
    between_covariance: Mapping[str, np.ndarray],
    *,
    permute: Sequence[str],
    sign_flip: Sequence[str] = (),
    flip_centre=None,
    n_permutations: int = 1000,
    seed: int = 0,
    family: str = "covariate",
    progress: str | None = None,
) -> RerandomisationResult:
    """Re-randomisation p-values of PEB group effects (see module docstring).

    Parameters
    ----------
    qE, qC : sequences (n_subjects) of arrays (p,), (p, p)
        Subjects' posteriors over the modelled parameters (marginals, as ``spm_dcm_peb``).
    pE : array (p,) or (n_subjects, p)
        Prior means under which the posteriors were obtained.
    pC : array (p, p) or (p,)
        Prior covariance (the same for every subject).
    X : array (n_subjects, k)
        The observed design.
    param_names, covariate_names : sequences of str
    between_covariance : mapping
        Tested covariate -> ``Σ`` (p, p) of the PEB fitted without that column.
    permute : sequence of str
        Covariates tested by re-randomising subjects: these columns are permuted jointly (the
        same permutation of rows for all of them).
    sign_flip : sequence of str
        Covariates (the ``mean``) tested by sign flips about ``flip_centre``.
    flip_centre : array (p,) or (n_subjects, p), optional
        Centre of the sign flips (default ``pE``).
    n_permutations : int
        Re-randomisations per tested covariate.
    seed : int
    family : {"covariate", "model"}
        Family of the family-wise p: the tested covariate's parameters (``"covariate"``), or
        every effect of all the re-randomised covariates together (``"model"``; the sign-flip
        test of a mean keeps its own family).
    progress : str, optional
        Name of the step in the progress lines (:class:`ptsd_bidsapp.progress.Ticker`).

    Returns
    -------
    RerandomisationResult
    """
    if family not in FWE_FAMILIES:
        raise ValueError(f"family must be one of {FWE_FAMILIES}, got {family!r}")
    X = np.asarray(X, dtype=float)
    n_sub, covariate_names = X.shape[0], list(covariate_names)
    unknown = [c for c in list(permute) + list(sign_flip) if c not in covariate_names or c not in between_covariance]
    if unknown:
        raise ValueError(f"covariates {unknown} are not design columns {covariate_names} with a covariance")
    p_count = len(param_names)
    pE_rows = np.broadcast_to(np.asarray(pE, dtype=float), (n_sub, p_count))
    centre = pE_rows if flip_centre is None else np.broadcast_to(np.asarray(flip_centre, dtype=float),
                                                                 (n_sub, p_count))
    L, b = _likelihoods(qE, qC, pE_rows, pC)
    b_centre = np.einsum("ipq,iq->ip", L, centre)       # information of the flip centre
    z_all = np.full((p_count, len(covariate_names)), np.nan)
    p = np.full_like(z_all, np.nan)
    p_fwe = np.full_like(z_all, np.nan)
    method: dict = {c: None for c in covariate_names}
    tests = [(c, "permutation") for c in permute] + [(c, "sign-flip") for c in sign_flip]
    permuted = [covariate_names.index(c) for c in permute]
    null_cache: dict = {}                # permuted covariates sharing one Σ share one pass
    for cov, how in tests:
        j = covariate_names.index(cov)
        Sigma = np.asarray(between_covariance[cov], dtype=float)
        _, z = gls_effects(L, b, X, Sigma)
        observed = np.abs(z[:, j])
        z_all[:, j] = z[:, j]
        key = (how, Sigma.tobytes()) if how == "permutation" else (how, j)
        if key not in null_cache:
            # every permuted covariate sees the same re-randomisations; sign flips their own stream
            rng = np.random.default_rng([int(seed), 0] if how == "permutation" else [int(seed), j, 1])
            null_z = np.empty((int(n_permutations), p_count, X.shape[1]))
            ticker = Ticker(f"{progress or 're-randomisation test'} ({cov}, {how})", int(n_permutations))
            # the weights do not depend on the design; a sign flip enters the weighted data linearly
            W, Wy = _gls_weights(L, b, Sigma)
            if how == "sign-flip":
                _, Wy_centre = _gls_weights(L, b_centre, Sigma)
            for start in range(0, int(n_permutations), _RND_BATCH):
                count = min(_RND_BATCH, int(n_permutations) - start)
                Xk = np.repeat(X[None], count, axis=0)
                Wyk = np.broadcast_to(Wy, (count,) + Wy.shape)
                if how == "permutation":  # the generator draws in the same order as one at a time
                    for m in range(count):
                        Xk[m][:, permuted] = X[rng.permutation(n_sub)][:, permuted]
                else:
                    flips = np.stack([rng.choice([-1.0, 1.0], size=n_sub) for _ in range(count)])[:, :, None]
                    Wyk = Wy_centre[None] + flips * (Wy - Wy_centre)[None]
                _, zk = _gls_solve(W, Wyk, Xk)
                null_z[start:start + count] = np.abs(zk)
                ticker.update(start + count)
            null_cache[key] = null_z
        null = null_cache[key][:, :, j]
        tol = 1e-10 * np.maximum(observed, 1.0)
        p[:, j] = (1 + (null >= observed[None, :] - tol).sum(axis=0)) / (1 + n_permutations)
        p_fwe[:, j] = _min_p_fwe(null, observed, p[:, j])
        method[cov] = how
    if family == "model" and permuted:
        # one family for every effect of the re-randomised covariates: they share the permutations
        # (one Σ), so the minimum p over all of them has a joint null distribution
        keys = {key for key in null_cache if key[0] == "permutation"}
        if len(keys) != 1:
            raise ValueError("family='model' needs one between-subject covariance for all permuted covariates")
        null = null_cache[keys.pop()][:, :, permuted].reshape(int(n_permutations), -1)
        observed = np.abs(z_all[:, permuted]).reshape(-1)
        p_fwe[:, permuted] = _min_p_fwe(null, observed, p[:, permuted].reshape(-1)).reshape(p_count, len(permuted))
    return RerandomisationResult(param_names=list(param_names), covariate_names=covariate_names, z=z_all, p=p,
                                 p_fwe=p_fwe, method=method, n_permutations=int(n_permutations), seed=int(seed),
                                 family=family)


def _min_p_fwe(null: np.ndarray, observed: np.ndarray, p_observed: np.ndarray) -> np.ndarray:
    """Family-wise p of each effect from the null distribution of the minimum p (Westfall & Young 1993).

    ``null`` (n_permutations, n_effects) holds the null |z| of every effect of the family,
    ``observed`` (n_effects,) the observed |z| and ``p_observed`` their per-effect p. Each
    re-randomisation's |z| is first turned into its p within the effect's own null distribution
    (so an effect whose null is wide, a poorly estimated one, does not dominate the family);
    the observed statistic counts as one of the ``n + 1`` exchangeable values, as in ``p``.
    """
    n_perm = null.shape[0]
    tol_null = 1e-10 * np.maximum(null, 1.0)
    ranks = (null[:, None, :] >= null[None, :, :] - tol_null[None, :, :]).sum(axis=0)   # itself included
    ranks = ranks + (observed[None, :] >= null - tol_null)
    min_p_null = (ranks / (1 + n_perm)).min(axis=1)                                       # (n_permutations,)
    return (1 + (min_p_null[:, None] <= p_observed[None, :] + 1e-12).sum(axis=0)) / (1 + n_perm)
