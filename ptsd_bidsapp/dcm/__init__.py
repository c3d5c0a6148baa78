"""Deterministic bilinear DCM for fMRI, following SPM12 (r7771) conventions.

Public API (ARCHITECTURE Contract 5)::

    from ptsd_bidsapp.dcm import DCMSpec, estimate_dcm, simulate_dcm

Modules: :mod:`~ptsd_bidsapp.dcm.priors` (``spm_dcm_fmri_priors``),
:mod:`~ptsd_bidsapp.dcm.model` (``spm_fx_fmri``, ``spm_gx_fmri``, ``spm_bireduce``),
:mod:`~ptsd_bidsapp.dcm.integrate` (``spm_int``), :mod:`~ptsd_bidsapp.dcm.simulate`
(``spm_dcm_generate``), :mod:`~ptsd_bidsapp.dcm.inversion` (``spm_nlsi_GN`` /
``spm_dcm_estimate``), :mod:`~ptsd_bidsapp.dcm.participant` (per-session DCMs from VOIs and
events), :mod:`~ptsd_bidsapp.dcm.peb` and :mod:`~ptsd_bidsapp.dcm.bmr` (group level).
"""

from ptsd_bidsapp.dcm.api import DCMSpec, as_parameter_dict
from ptsd_bidsapp.dcm.priors import dcm_fmri_priors, pack_parameters, parameter_names, unpack_parameters
from ptsd_bidsapp.dcm.simulate import simulate_dcm

__all__ = [
    "DCMSpec",
    "simulate_dcm",
    "as_parameter_dict",
    "dcm_fmri_priors",
    "pack_parameters",
    "unpack_parameters",
    "parameter_names",
]

try:  # the inversion lands after the forward model
    from ptsd_bidsapp.dcm.inversion import DCMResult, estimate_dcm  # noqa: F401

    __all__ += ["DCMResult", "estimate_dcm"]
except ImportError:  # pragma: no cover
    pass
