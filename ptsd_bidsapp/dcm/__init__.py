"""Deterministic bilinear DCM for fMRI, following SPM12 (r7771) conventions.

Public API (ARCHITECTURE Contract 5)::

    import numpy as np
    from ptsd_bidsapp.dcm import DCMSpec, estimate_dcm, simulate_dcm

    tr, n_scans = 2.0, 200
    u = np.zeros((n_scans * 16, 2))          # inputs at microtime: 16 bins per TR
    for i, start in enumerate(range(0, u.shape[0], 512)):  # 32 s on / 32 s off blocks
        u[start:start + 256, 0] = 1                          # faces
        u[start:start + 256, 1] = i % 2 == 0                 # every other block fearful
    spec = DCMSpec(a=np.ones((2, 2)),                   # a[to, from]
                   b=np.array([np.zeros((2, 2)), [[0, 1], [1, 0]]]),  # b[input, to, from]
                   c=np.array([[1, 0], [0, 0]]),        # c[to, input]
                   u=u, u_dt=tr / 16, tr=tr, te=0.03,
                   region_names=["amygdala", "vmpfc"], input_names=["faces", "fearful"])
    y, states = simulate_dcm(spec, {"A": [[0, -0.2], [0.3, 0]],
                                    "B": {"fearful": [[0, -0.1], [0.3, 0]]},
                                    "C": [[0.5, 0], [0, 0]]}, snr=4, rng=0)
    spec.y = y
    result = estimate_dcm(spec)              # result.Ep["A"], result.Cp, result.F, result.pp ...

Modules: :mod:`~ptsd_bidsapp.dcm.priors` (``spm_dcm_fmri_priors``),
:mod:`~ptsd_bidsapp.dcm.model` (``spm_fx_fmri``, ``spm_gx_fmri``, ``spm_bireduce``),
:mod:`~ptsd_bidsapp.dcm.integrate` (``spm_int``), :mod:`~ptsd_bidsapp.dcm.simulate`
(``spm_dcm_generate``), :mod:`~ptsd_bidsapp.dcm.inversion` (``spm_nlsi_GN`` /
``spm_dcm_estimate``), :mod:`~ptsd_bidsapp.dcm.participant` (per-session DCMs from VOIs and
events). The group level (PEB, BMR/BMA, LOO) over these posteriors is :mod:`ptsd_bidsapp.peb`.
"""

from ptsd_bidsapp.dcm.api import DCMSpec, as_parameter_dict
from ptsd_bidsapp.dcm.inversion import DCMResult, estimate_dcm
from ptsd_bidsapp.dcm.priors import dcm_fmri_priors, pack_parameters, parameter_names, unpack_parameters
from ptsd_bidsapp.dcm.simulate import simulate_dcm

__all__ = [
    "DCMSpec",
    "DCMResult",
    "estimate_dcm",
    "simulate_dcm",
    "as_parameter_dict",
    "dcm_fmri_priors",
    "pack_parameters",
    "unpack_parameters",
    "parameter_names",
]
