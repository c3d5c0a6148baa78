"""Small synthetic DCM designs shared by the DCM tests (offline, deterministic)."""

from __future__ import annotations

import numpy as np

from ptsd_bidsapp.dcm import DCMSpec

TR = 2.0
MICROTIME = 16
TE = 0.03
REGIONS = ["amygdala", "vmpfc"]
INPUTS = ["faces", "fearful"]


def faces_inputs(n_scans: int = 200, tr: float = TR, block_s: float = 16.0) -> np.ndarray:
    """Block design on the microtime grid: faces blocks (16 s on, 16 s off), every other one fearful."""
    dt = tr / MICROTIME
    u = np.zeros((n_scans * MICROTIME, 2))
    period = int(round(2 * block_s / dt))
    on = int(round(block_s / dt))
    for i, start in enumerate(range(0, u.shape[0], period)):
        u[start:start + on, 0] = 1.0
        if i % 2 == 0:
            u[start:start + on, 1] = 1.0
    return u


def faces_spec(y=None, n_scans: int = 200, with_b: bool = True, **kwargs) -> DCMSpec:
    """The default faces DCM: full A, faces drive the amygdala, fearful modulates both extrinsic connections."""
    a = np.ones((2, 2))
    b = np.zeros((2, 2, 2))
    if with_b:
        b[1] = [[0, 1], [1, 0]]
    c = np.array([[1, 0], [0, 0]])
    return DCMSpec(a, b, c, faces_inputs(n_scans), TR / MICROTIME, TR, TE, y=y,
                   region_names=REGIONS, input_names=INPUTS, n_scans=None if y is not None else n_scans, **kwargs)


def random_faces_parameters(rng: np.random.Generator, b_min: float = 0.0, c_range=(0.3, 0.8)) -> dict:
    """Generating parameters in plausible ranges (Hz); B magnitudes at least ``b_min``."""
    def signed(lo, hi):
        return float(rng.choice([-1.0, 1.0]) * rng.uniform(lo, hi))

    if b_min > 0:
        b_av, b_va = signed(b_min, 0.5), signed(b_min, 0.5)
    else:
        b_av, b_va = float(rng.uniform(-0.4, 0.2)), float(rng.uniform(-0.2, 0.5))
    return {
        "A": [[float(rng.normal(0, 0.1)), float(rng.uniform(-0.5, 0.1))],
              [float(rng.uniform(0.1, 0.6)), float(rng.normal(0, 0.1))]],
        "B": {"fearful": [[0.0, b_av], [b_va, 0.0]]},
        "C": [[float(rng.uniform(*c_range)), 0.0], [0.0, 0.0]],
        "transit": rng.normal(0, 1 / 16, 2),
        "decay": rng.normal(0, 1 / 16),
        "epsilon": float(rng.normal(0, 1 / 16)),
    }


# --------------------------------------------------------------------------------------------
# The published model, typed in from the sources (not the package's constants): SPM12 r7771
# spm_fx_fmri H = [0.64 0.32 2.00 0.32 0.4] (Stephan et al. 2007, NeuroImage 38:387, table 1)
# and the BOLD constants of Stephan et al. 2007 eqs. 12-14 / spm_gx_fmri.
KAPPA, GAMMA, TAU, ALPHA, E0 = 0.64, 0.32, 2.00, 0.32, 0.40
V0, NU0, R0 = 4.0, 40.3, 25.0
#: spm_diff's step (spm_bireduce, spm_nlsi_GN)
SPM_DX = np.exp(-8.0)


def published_flow(x, u, P):
    """spm_fx_fmri (one-state, bilinear) written out: x (n, 5) log haemodynamic states, u (m,)."""
    x = np.asarray(x, dtype=float)
    u = np.atleast_1d(np.asarray(u, dtype=float))
    A, B, C = (np.asarray(P[k], dtype=float) for k in ("A", "B", "C"))
    n = x.shape[0]
    J = A + np.tensordot(u, B, axes=(0, 0))
    J[np.diag_indices(n)] = -np.exp(np.diag(J)) / 2           # log self-inhibition, -0.5 Hz at 0
    s, f, v, q = x[:, 1], np.exp(x[:, 2]), np.exp(x[:, 3]), np.exp(x[:, 4])
    kappa = KAPPA * np.exp(np.asarray(P["decay"], dtype=float))
    tau = TAU * np.exp(np.asarray(P["transit"], dtype=float))
    out = np.empty_like(x)
    out[:, 0] = J @ x[:, 0] + C @ u / 16
    out[:, 1] = x[:, 0] - kappa * s - GAMMA * (f - 1)
    out[:, 2] = s / f
    out[:, 3] = (f - v ** (1 / ALPHA)) / (tau * v)
    out[:, 4] = (f * (1 - (1 - E0) ** (1 / f)) / E0 - v ** (1 / ALPHA) * q / v) / (tau * q)
    return out


def published_bold(x, epsilon, te):
    """spm_gx_fmri / Stephan et al. 2007 eqs. 12-14 with the model's TE (s), percent signal change."""
    x = np.asarray(x, dtype=float)
    ep = np.exp(epsilon)
    v, q = np.exp(x[:, 3]), np.exp(x[:, 4])
    return V0 * (4.3 * NU0 * E0 * te * (1 - q) + ep * R0 * E0 * te * (1 - q / v) + (1 - ep) * (1 - v))


def published_bireduce(P, n, m):
    """spm_bireduce at rest by forward differences of :func:`published_flow` (step exp(-8)):
    J0 = df/dx, J1[j] = d(df/dx)/du_j, c[j] = df/du_j, flattened as spm_vec (state-major)."""
    def flat(x, u):
        return published_flow(x.reshape(5, n).T, u, P).T.ravel()

    def jacobian(u):
        f0 = flat(np.zeros(5 * n), u)
        J = np.zeros((5 * n, 5 * n))
        for k in range(5 * n):
            dx = np.zeros(5 * n)
            dx[k] = SPM_DX
            J[:, k] = (flat(dx, u) - f0) / SPM_DX
        return J

    J0 = jacobian(np.zeros(m))
    J1 = np.zeros((m, 5 * n, 5 * n))
    c = np.zeros((m, 5 * n))
    for j in range(m):
        du = np.zeros(m)
        du[j] = SPM_DX
        J1[j] = (jacobian(du) - J0) / SPM_DX
        J1[j][n:] = 0.0                                        # haemodynamics do not depend on u
        c[j] = (flat(np.zeros(5 * n), du) - flat(np.zeros(5 * n), np.zeros(m))) / SPM_DX
    return J0, J1, c
