"""Amygdala <-> vmPFC BOLD from the bilinear DCM forward model (faces task).

Uses :func:`ptsd_bidsapp.dcm.simulate_dcm` (Contract 5, SPM12 conventions). If the DCM
engine cannot be imported, a compact Euler re-implementation of the same deterministic
equations is used instead (it agrees with the engine to r > 0.99, see
tests/simulate/test_dcm_forward.py) and the choice is recorded in ``truth.json``:

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
``C[to][input]``, ``transit``/``decay`` per region (log scale), ``epsilon``.
"""

from __future__ import annotations

import numpy as np

REGIONS = ("amygdala", "vmpfc")
INPUTS = ("faces", "fearful")


def _fallback(params: dict, u: np.ndarray, dt: float, te: float, sample_idx: np.ndarray) -> np.ndarray:
    a = np.array(params["A"], dtype=float)
    n = a.shape[0]
    eff_a = a.copy()
    eff_a[np.diag_indices(n)] = -np.exp(np.diag(a)) / 2.0
    b = np.array([params["B"][name] for name in INPUTS], dtype=float)  # (inputs, to, from)
    c = np.array(params["C"], dtype=float) / 16.0  # SPM12 units: the flow receives C u / 16
    kappa = 0.64 * np.exp(np.array(params["decay"], dtype=float))
    gamma, alpha, e0 = 0.32, 0.32, 0.4
    tau = 2.0 * np.exp(np.array(params["transit"], dtype=float))
    ep = np.exp(float(params.get("epsilon", 0.0)))
    v0, nu0, r0 = 4.0, 40.3, 25.0
    k1, k2, k3 = 4.3 * nu0 * e0 * te, ep * r0 * e0 * te, 1.0 - ep

    x = np.zeros(n)
    s = np.zeros(n)
    lf = np.zeros(n)
    lv = np.zeros(n)
    lq = np.zeros(n)
    y = np.zeros((u.shape[0], n))
    sub = 2  # Euler sub-steps per microtime bin (stable for the haemodynamic time constants)
    h = dt / sub
    for t in range(u.shape[0]):
        ut = u[t]
        jac = eff_a + np.tensordot(ut, b, axes=(0, 0))
        drive = c @ ut
        for _ in range(sub):
            f, v, q = np.exp(lf), np.exp(lv), np.exp(lq)
            dx = jac @ x + drive
            ds = x - kappa * s - gamma * (f - 1.0)
            fv = v ** (1.0 / alpha)
            ff = (1.0 - (1.0 - e0) ** (1.0 / f)) / e0
            dlf = s / f
            dlv = (f - fv) / (tau * v)
            dlq = (f * ff - fv * q / v) / (tau * q)
            x = x + h * dx
            s = s + h * ds
            lf, lv, lq = lf + h * dlf, lv + h * dlv, lq + h * dlq
        v, q = np.exp(lv), np.exp(lq)
        y[t] = v0 * (k1 * (1.0 - q) + k2 * (1.0 - q / v) + k3 * (1.0 - v))
    return y[sample_idx]


def dcm_engine_available() -> bool:
    try:
        from ptsd_bidsapp.dcm import DCMSpec, simulate_dcm  # noqa: F401
    except Exception:
        return False
    return True


def simulate_faces_bold(params: dict, u: np.ndarray, tr: float, te: float, start_time: float,
                        n_volumes: int, centre_inputs: bool = True, engine: str = "auto") -> tuple[np.ndarray, str]:
    """Noise-free DCM BOLD (percent signal change) of (amygdala, vmpfc).

    Parameters
    ----------
    params : dict
        ``A`` (2x2, Hz; diagonal log-scale), ``B`` {input: 2x2}, ``C`` (2 x n_inputs),
        ``transit``, ``decay`` (per region), ``epsilon``.
    u : ndarray (n_microtime, 2)
        Inputs (faces, fearful) on the microtime grid ``dt = tr / 16``.
    tr, te, start_time : float
        Seconds.
    centre_inputs : bool
        Mean-centre the inputs (SPM's ``options.centre``), as the estimation does.
    engine : {"auto", "dcm", "fallback"}
        ``auto``: the DCM engine if importable, else the fallback.

    Returns
    -------
    y : ndarray (n_volumes, 2)
    engine : str
        ``"ptsd_bidsapp.dcm.simulate_dcm"`` or ``"ptsd_bidsapp.simulate.dcm_forward (fallback)"``.
    """
    from ptsd_bidsapp.simulate.design import MICROTIME

    dt = tr / MICROTIME
    if engine == "dcm" or (engine == "auto" and dcm_engine_available()):
        from ptsd_bidsapp.dcm import DCMSpec, simulate_dcm

        a_mask = np.ones((2, 2))
        b_mask = np.zeros((2, 2, 2))
        b_mask[1] = [[0, 1], [1, 0]]
        c_mask = np.array([[1, 0], [0, 0]])
        spec = DCMSpec(a=a_mask, b=b_mask, c=c_mask, u=u, u_dt=dt, tr=tr, te=te, y=None, x0=None,
                       region_names=list(REGIONS), input_names=list(INPUTS), delays=start_time,
                       centre_inputs=centre_inputs, n_scans=n_volumes)
        p = {
            "A": np.array(params["A"], dtype=float),
            "B": np.stack([np.array(params["B"][k], dtype=float) for k in INPUTS]),
            "C": np.array(params["C"], dtype=float),
            "transit": np.array(params["transit"], dtype=float),
            "decay": np.array(params["decay"], dtype=float),
            "epsilon": float(params.get("epsilon", 0.0)),
        }
        y, _ = simulate_dcm(spec, p, snr=None, rng=None)
        y = np.asarray(y, dtype=float)
        if y.shape[0] != n_volumes:
            raise RuntimeError(f"simulate_dcm returned {y.shape[0]} scans, expected {n_volumes}")
        return y, "ptsd_bidsapp.dcm.simulate_dcm"
    uu = np.asarray(u, dtype=float)
    if centre_inputs:
        uu = uu - uu.mean(axis=0)
    idx = np.clip(np.rint((np.arange(n_volumes) * tr + start_time) / dt).astype(int), 0, uu.shape[0] - 1)
    return _fallback(params, uu, dt, te, idx), "ptsd_bidsapp.simulate.dcm_forward (fallback)"
