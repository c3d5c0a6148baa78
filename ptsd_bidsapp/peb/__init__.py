"""Group-level inference over DCM posteriors: PEB, BMR/BMA, session change, LOO.

One SPM12 routine per module (Friston et al. 2016, "Bayesian model reduction and empirical
Bayes for group (DCM) studies", NeuroImage 128:413; Zeidman et al. 2019, "A guide to group
effective connectivity analysis, part 2", NeuroImage 200:12):

* :mod:`~ptsd_bidsapp.peb.reduce` — Bayesian model reduction of a Gaussian posterior
  (``spm_log_evidence_reduce``);
* :mod:`~ptsd_bidsapp.peb.fit` — the PEB model itself (``spm_dcm_peb``), parameter selection;
* :mod:`~ptsd_bidsapp.peb.bmr` — greedy BMR over group effects + BMA
  (``spm_dcm_bmr_all`` / ``spm_dcm_peb_bmc``);
* :mod:`~ptsd_bidsapp.peb.session_change` — session change by PEB of PEBs (longitudinal
  design, Zeidman et al. 2019 sec. 2.8);
* :mod:`~ptsd_bidsapp.peb.loo` — leave-one-out prediction of a covariate (``spm_dcm_loo``);
* :mod:`~ptsd_bidsapp.peb.rnd` — re-randomisation tests of group effects (after
  ``spm_dcm_peb_rnd``).

Inputs are plain arrays (posterior means/covariances and priors of the first-level DCMs,
e.g. from :func:`ptsd_bidsapp.dcm.estimate_dcm`); this package imports nothing else of ours.
Group-effect ordering: ``vec(Ep)`` with the parameter index fastest.
"""

from ptsd_bidsapp.peb.bmr import OCCAM_WINDOW, BMAResult, bmr_search
from ptsd_bidsapp.peb.fit import PEBResult, fit_peb, parameter_field, posterior_probability_nonzero, select_parameters
from ptsd_bidsapp.peb.loo import LOOResult, loo_predict
from ptsd_bidsapp.peb.reduce import range_basis, reduced_free_energy
from ptsd_bidsapp.peb.rnd import RerandomisationResult, rerandomisation_test
from ptsd_bidsapp.peb.session_change import (
    WITHIN_SUBJECT_DESIGN,
    WITHIN_SUBJECT_EFFECTS,
    SessionChangeResult,
    fit_session_change,
)

__all__ = [
    "PEBResult",
    "BMAResult",
    "SessionChangeResult",
    "LOOResult",
    "RerandomisationResult",
    "fit_peb",
    "bmr_search",
    "fit_session_change",
    "loo_predict",
    "rerandomisation_test",
    "select_parameters",
    "parameter_field",
    "posterior_probability_nonzero",
    "reduced_free_energy",
    "range_basis",
    "OCCAM_WINDOW",
    "WITHIN_SUBJECT_DESIGN",
    "WITHIN_SUBJECT_EFFECTS",
]
