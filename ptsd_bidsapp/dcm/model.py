"""Neuronal and haemodynamic state equations and the BOLD observation of DCM for fMRI.

Hidden states per region (SPM12 ``spm_fx_fmri`` order, ``(n, 5)`` arrays):

0. ``x``  neuronal activity
1. ``s``  vasodilatory signal
2. ``log f`` (inflow, log scale)
3. ``log v`` (venous volume, log scale)
4. ``log q`` (deoxyhaemoglobin content, log scale)

Flattened state vectors follow SPM's ``spm_vec`` of the ``(n, 5)`` matrix, i.e. column
by column: ``[x_1..x_n, s_1..s_n, logf_1.., logv_1.., logq_1..]`` (index ``k*n + region``).

Neuronal model (Friston, Harrison & Penny 2003, eq. 1; SPM12 ``spm_fx_fmri``)::

    dx/dt = (A + sum_j u_j B_j) x + (C / 16) u

with the self-connections log-scaled: the effective diagonal is ``-exp(A_ii + sum_j u_j
B_j,ii) / 2`` Hz (prior mean -0.5 Hz). SPM12 divides ``C`` by 16 inside ``spm_fx_fmri``;
this package keeps that convention so that ``C`` estimates are comparable one-to-one.

Haemodynamics (balloon model, Buxton et al. 1998; Friston et al. 2000; in log states as
Stephan et al. 2008 NeuroImage 42:649 and SPM12 ``spm_fx_fmri``)::

    ds/dt     = x - kappa s - gamma (f - 1)
    dlogf/dt  = s / f
    dlogv/dt  = (f - v^(1/alpha)) / (tau v)
    dlogq/dt  = (f E(f)/E0 - v^(1/alpha) q / v) / (tau q),   E(f) = 1 - (1 - E0)^(1/f)

``kappa = 0.64 exp(decay)``, ``gamma = 0.32``, ``tau = 2 exp(transit)``, ``alpha = 0.32``,
``E0 = 0.4``.

BOLD (Stephan et al. 2007, NeuroImage 38:387, eqs. 12-14 with the TE-dependent
coefficients of their "classical" revised model; SPM12 ``spm_gx_fmri``), in percent
signal change::

    y = V0 (k1 (1 - q) + k2 (1 - q/v) + k3 (1 - v))
    k1 = 4.3 nu0 E0 TE,  k2 = exp(epsilon) r0 E0 TE,  k3 = 1 - exp(epsilon)

``V0 = 4``, ``nu0 = 40.3`` Hz, ``r0 = 25`` Hz, ``E0 = 0.4``, TE in seconds. The TE is
the model's (``DCMSpec.te``); SPM12's ``spm_gx_fmri`` ($Id 6262, as stored in the
``spm/spm12`` repository) fixes TE at 0.04 s and ignores ``DCM.TE`` (SPM8's version read
``M.TE``), so ``te=0.04`` reproduces SPM12 exactly.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "KAPPA", "GAMMA", "TAU", "ALPHA", "E0", "V0", "NU0", "R0", "C_SCALE",
    "effective_connectivity",
    "fx",
    "gx",
    "bold_coefficients",
    "jacobian_at_rest",
]

# Haemodynamic constants (SPM12 spm_fx_fmri ``H``; Stephan et al. 2007 table 1)
KAPPA = 0.64   # rate of signal decay (1/s)
GAMMA = 0.32   # rate of flow-dependent elimination / autoregulation (1/s)
TAU = 2.00     # haemodynamic transit time (s)
ALPHA = 0.32   # Grubb's exponent
E0 = 0.40      # resting oxygen extraction fraction
# BOLD constants (SPM12 spm_gx_fmri; Stephan et al. 2007)
V0 = 4.0       # resting venous volume (%)
NU0 = 40.3     # frequency offset at the outer surface of magnetised vessels (Hz)
R0 = 25.0      # slope of intravascular relaxation rate vs. oxygen saturation (Hz)
#: ``spm_fx_fmri`` scales the driving inputs by 1/16 (``P.C = P.C/16``).
C_SCALE = 1.0 / 16.0


def effective_connectivity(A: np.ndarray, B: np.ndarray | None = None, u=None) -> np.ndarray:
    """Neuronal Jacobian ``A + sum_j u_j B_j`` with log-scaled self-connections.

    ``A`` ``(..., n, n)``, ``B`` ``(..., m, n, n)``, ``u`` ``(m,)``. Diagonal entries become
    ``-exp(A_ii + sum_j u_j B_j,ii) / 2`` (SPM12 ``spm_fx_fmri``: "diag(A) is a log
    self-inhibition").
    """
    J = np.array(A, dtype=float, copy=True)
    if B is not None and u is not None:
        J = J + np.tensordot(np.asarray(u, dtype=float), np.asarray(B, dtype=float), axes=(0, -3))
    n = J.shape[-1]
    idx = np.arange(n)
    J[..., idx, idx] = -np.exp(J[..., idx, idx]) / 2.0
    return J


def fx(x: np.ndarray, u: np.ndarray, P: dict) -> np.ndarray:
    """Full nonlinear flow ``dx/dt`` (SPM12 ``spm_fx_fmri``, one-state, bilinear).

    Parameters
    ----------
    x : array (n, 5)
        Hidden states (see module docstring).
    u : array (m,)
        Inputs at this time.
    P : dict
        Parameters (``A``, ``B`` (m, n, n), ``C`` (n, m), ``transit``, ``decay``, ``epsilon``).

    Returns
    -------
    array (n, 5)
    """
    x = np.asarray(x, dtype=float)
    u = np.atleast_1d(np.asarray(u, dtype=float))
    J = effective_connectivity(P["A"], P["B"], u)
    f, v, q = np.exp(x[:, 2]), np.exp(x[:, 3]), np.exp(x[:, 4])
    kappa = KAPPA * np.exp(np.asarray(P["decay"], dtype=float))
    tau = TAU * np.exp(np.asarray(P["transit"], dtype=float))
    fv = v ** (1.0 / ALPHA)                              # outflow f_out(v)
    ff = (1.0 - (1.0 - E0) ** (1.0 / f)) / E0            # oxygen extraction E(f)/E0
    out = np.empty_like(x)
    out[:, 0] = J @ x[:, 0] + C_SCALE * (np.asarray(P["C"], dtype=float) @ u)
    out[:, 1] = x[:, 0] - kappa * x[:, 1] - GAMMA * (f - 1.0)
    out[:, 2] = x[:, 1] / f
    out[:, 3] = (f - fv) / (tau * v)
    out[:, 4] = (ff * f - fv * q / v) / (tau * q)
    return out


def bold_coefficients(epsilon, te: float):
    """``k1, k2, k3`` of the BOLD equation (Stephan et al. 2007; SPM12 ``spm_gx_fmri``)."""
    ep = np.exp(np.asarray(epsilon, dtype=float))
    k1 = 4.3 * NU0 * E0 * te
    k2 = ep * R0 * E0 * te
    k3 = 1.0 - ep
    return k1, k2, k3


def gx(x: np.ndarray, epsilon, te: float) -> np.ndarray:
    """BOLD signal change (%) from hidden states (SPM12 ``spm_gx_fmri``).

    ``x`` is ``(..., n, 5)`` (or any array whose last-but-one axis is regions and last axis
    the five states); ``epsilon`` broadcasts against the leading axes. Returns ``(..., n)``.
    """
    x = np.asarray(x, dtype=float)
    k1, k2, k3 = bold_coefficients(epsilon, te)
    k2 = np.asarray(k2)[..., None] if np.ndim(k2) else k2
    k3 = np.asarray(k3)[..., None] if np.ndim(k3) else k3
    v = np.exp(x[..., 3])
    q = np.exp(x[..., 4])
    return V0 * (k1 * (1.0 - q) + k2 * (1.0 - q / v) + k3 * (1.0 - v))


#: step of SPM12's ``spm_diff`` (``spm_bireduce`` differentiates ``spm_fx_fmri`` with it)
SPM_FD_STEP = np.exp(-8.0)


def _forward_difference(g, step):
    """``(g(step) - g(0)) / step`` for a function of the perturbation (elementwise)."""
    return (g(step) - g(0.0)) / step


def jacobian_at_rest(A, B, C, transit, decay, method: str = "spm"):
    """Bilinear operators of the state equation expanded at rest (SPM12 ``spm_bireduce``).

    SPM12's fMRI integrator (``spm_int``) does not integrate the nonlinear balloon model:
    it integrates its bilinear approximation around the resting state ``x = 0``, ``u = 0``
    (where ``f(0, 0) = 0``)::

        dx/dt = (J0 + sum_j u_j J_j) x + sum_j u_j c_j

    ``method="spm"`` (default) takes the derivatives as SPM12 r7771 ``spm_bireduce`` does,
    by forward differences of the flow with step ``exp(-8)`` (``spm_diff``), written in
    closed form per entry (the flow's terms are separable at rest); ``"analytic"`` takes
    them exactly. They differ by O(exp(-8)) in the haemodynamic block, about 1e-4 of the
    predicted BOLD — which moved the free energy of one SPM reference case by 1 nat, so
    the SPM form is the default. All arguments may carry leading batch axes
    (``A`` ``(..., n, n)``, ``B`` ``(..., m, n, n)``, ``C`` ``(..., n, m)``, ``transit``/``decay``
    ``(..., n)``).

    Returns
    -------
    J0 : array (..., 5n, 5n)
        Jacobian at rest, state order as the module docstring.
    J1 : array (..., m, 5n, 5n)
        Its derivative with respect to each input (non-zero only in the neuronal block:
        ``B_j`` off the diagonal and ``-exp(A_ii)/2 * B_j,ii`` on it).
    c : array (..., m, 5n)
        Driving input vectors (``C[:, j] / 16`` in the neuronal rows).
    """
    A = np.asarray(A, dtype=float)
    B = np.asarray(B, dtype=float)
    C = np.asarray(C, dtype=float)
    n = A.shape[-1]
    m = B.shape[-3]
    batch = A.shape[:-2]
    kappa = KAPPA * np.exp(np.asarray(decay, dtype=float))
    tau = TAU * np.exp(np.asarray(transit, dtype=float))
    J0 = np.zeros(batch + (5 * n, 5 * n))
    r = np.arange(n)
    xs, ss, fs, vs, qs = (k * n + r for k in range(5))
    J0[..., :n, :n] = effective_connectivity(A)
    J0[..., ss, xs] = 1.0
    J0[..., ss, ss] = -kappa
    J0[..., ss, fs] = -GAMMA
    J0[..., fs, ss] = 1.0
    J0[..., vs, fs] = 1.0 / tau
    J0[..., vs, vs] = -1.0 / (ALPHA * tau)
    J0[..., qs, fs] = (E0 + (1.0 - E0) * np.log(1.0 - E0)) / (E0 * tau)
    J0[..., qs, vs] = (ALPHA - 1.0) / (ALPHA * tau)
    J0[..., qs, qs] = -1.0 / tau
    J1 = np.zeros(batch + (m, 5 * n, 5 * n))
    self_rate = -np.exp(A[..., r, r]) / 2.0                  # (..., n)
    Bn = np.array(B, copy=True)
    Bn[..., r, r] = B[..., r, r] * self_rate[..., None, :]  # d/du of -exp(a + u b)/2 at u = 0
    if method == "spm":
        h = SPM_FD_STEP
        # flow at rest perturbed in one log state by h (f = v = q = 1 otherwise), divided by h
        J0[..., ss, fs] = -GAMMA * _forward_difference(np.expm1, h)
        J0[..., vs, fs] = _forward_difference(np.exp, h) / tau
        J0[..., vs, vs] = _forward_difference(lambda d: (1.0 - np.exp(d / ALPHA)) / np.exp(d), h) / tau
        J0[..., qs, fs] = _forward_difference(
            lambda d: np.exp(d) * (1.0 - (1.0 - E0) ** np.exp(-d)) / E0, h) / tau
        J0[..., qs, vs] = _forward_difference(lambda d: -np.exp(d * (1.0 / ALPHA - 1.0)), h) / tau
        J0[..., qs, qs] = _forward_difference(lambda d: np.exp(-d), h) / tau
        # d/du of the self-inhibition -exp(a + u b)/2, also by forward difference in u
        a = A[..., r, r][..., None, :]
        Bn[..., r, r] = -(np.exp(a + h * B[..., r, r]) - np.exp(a)) / (2.0 * h)
    elif method != "analytic":
        raise ValueError(f"method must be 'spm' or 'analytic', got {method!r}")
    J1[..., :n, :n] = Bn
    c = np.zeros(batch + (m, 5 * n))
    c[..., :n] = C_SCALE * np.swapaxes(C, -1, -2)
    return J0, J1, c
