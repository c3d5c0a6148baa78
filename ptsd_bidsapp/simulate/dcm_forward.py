"""Amygdala <-> vmPFC BOLD from the bilinear DCM forward model (faces task).

Uses :func:`ptsd_bidsapp.dcm.simulate_dcm` (Contract 5, SPM12 conventions; an independent
Euler integration of the same equations in tests/simulate/test_dcm_forward.py checks it):

- neural: ``dx/dt = (A + sum_j u_j B_j) x + C u / 16`` with SPM's self-connection
  parameterisation ``A_ii = -exp(a_ii) / 2`` Hz (Friston, Harrison & Penny 2003;
  SPM12 ``spm_fx_fmri``);
- haemodynamics: balloon model with log-states, ``kappa = 0.64 exp(decay)``,
  ``gamma = 0.32``, ``tau = 2 exp(transit)``, ``alpha = 0.32``, ``E0 = 0.4``
  (Stephan et al. 2007);
- BOLD: ``V0 (k1 (1 - q) + k2 (1 - q/v) + k3 (1 - v))`` with ``V0 = 4``,
  ``k1 = 4.3 nu0 E0 TE``, ``k2 = exp(epsilon) r0 E0 TE``, ``k3 = 1 - exp(epsilon)``,
  ``nu0 = 40.3``, ``r0 = 25`` (Stephan et al. 2007, SPM12 ``spm_gx_fmri``), which is
  in percent signal change.

Parameters are passed as in Contract 4: ``A[to][from]``, ``B[input][to][from]``,
``C[to][input]``, ``transit`` per region and one ``decay`` (log scale), ``epsilon``.
"""

from __future__ import annotations

import numpy as np

REGIONS = ("amygdala", "vmpfc")
INPUTS = ("faces", "fearful")


def simulate_faces_bold(params: dict, u: np.ndarray, tr: float, te: float, start_time: float,
                        n_volumes: int, centre_inputs: bool = True) -> tuple[np.ndarray, str]:
    """Noise-free DCM BOLD (percent signal change) of (amygdala, vmpfc).

    Parameters
    ----------
    params : dict
        ``A`` (2x2, Hz; diagonal log-scale), ``B`` {input: 2x2}, ``C`` (2 x n_inputs),
        ``transit`` (per region), ``decay`` (one, shared), ``epsilon``.
    u : ndarray (n_microtime, 2)
        Inputs (faces, fearful) on the microtime grid ``dt = tr / 16``.
    tr, te, start_time : float
        Seconds.
    centre_inputs : bool
        Mean-centre the inputs (SPM's ``options.centre``), as the estimation does.

    Returns
    -------
    y : ndarray (n_volumes, 2)
    engine : str
        The forward model used (recorded in ``truth.json``).
    """
    from ptsd_bidsapp.dcm import DCMSpec, simulate_dcm
    from ptsd_bidsapp.simulate.design import MICROTIME

    a_mask = np.ones((2, 2))
    b_mask = np.zeros((2, 2, 2))
    b_mask[1] = [[0, 1], [1, 0]]
    c_mask = np.array([[1, 0], [0, 0]])
    spec = DCMSpec(a=a_mask, b=b_mask, c=c_mask, u=u, u_dt=tr / MICROTIME, tr=tr, te=te, y=None, x0=None,
                   region_names=list(REGIONS), input_names=list(INPUTS), delays=start_time,
                   centre_inputs=centre_inputs, n_scans=n_volumes)
    p = {
        "A": np.array(params["A"], dtype=float),
        "B": np.stack([np.array(params["B"][k], dtype=float) for k in INPUTS]),
        "C": np.array(params["C"], dtype=float),
        "transit": np.array(params["transit"], dtype=float),
        "decay": float(params["decay"]),
        "epsilon": float(params.get("epsilon", 0.0)),
    }
    y, _ = simulate_dcm(spec, p, snr=None, rng=None)
    y = np.asarray(y, dtype=float)
    if y.shape[0] != n_volumes:
        raise RuntimeError(f"simulate_dcm returned {y.shape[0]} scans, expected {n_volumes}")
    return y, "ptsd_bidsapp.dcm.simulate_dcm"
