"""Change in connectivity between two sessions by PEB of PEBs.

The longitudinal design of Zeidman et al. 2019 ("A guide to group effective connectivity
analysis, part 2", NeuroImage 200:12, sec. 2.8): a within-subject ``spm_dcm_peb`` over each
subject's two session DCMs (session mean and change), then a between-subject
``spm_dcm_peb`` over the subjects' changes (Friston et al. 2016, NeuroImage 128:413:
a PEB posterior can be the first level of another PEB). Both levels are
:func:`ptsd_bidsapp.peb.fit.fit_peb` (SPM12 r7771 ``spm_dcm_peb``, $Id 7720); SPM has no
routine for the two-level design itself, and the within-subject settings below
(``random_effects='none'``, ``beta = 1024``, between-level ``hE = ln 4``) are this project's
choices, not SPM defaults (SPM would use ``'single'``, β = 16, hE = 0 at both levels).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ptsd_bidsapp.peb.fit import PEBResult, _as_list_of_arrays, fit_peb

__all__ = ["SessionChangeResult", "fit_session_change", "WITHIN_SUBJECT_DESIGN", "WITHIN_SUBJECT_EFFECTS"]

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

    Parameters are as in :func:`fit_peb`; ``peb_options`` are passed to both levels
    (``random_effects`` and ``beta`` to the between level only). The between level therefore
    has ``fit_peb``'s defaults — SPM's: ``random_effects='single'``, α = 1, β = 16, hC = 1/16
    — except ``hE`` (``between_hE``).
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
