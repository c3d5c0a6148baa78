"""Integration of the DCM state equation at microtime resolution (SPM12 ``spm_int``).

SPM12 integrates the bilinear expansion of ``spm_fx_fmri`` around rest (see
:func:`ptsd_bidsapp.dcm.model.jacobian_at_rest`) exactly for piecewise-constant inputs:
on the augmented state ``z = [1; x]`` the flow is linear, ``dz/dt = M(u) z``, so between
two evaluation times the update is the matrix exponential ``z <- expm(M(u) dt) z``
(local linearisation, Ozaki 1992; Friston, Harrison & Penny 2003 sec. 2.3). The operator
``M(u)`` changes only when the input changes; evaluation times are the input change
points and the response sampling times, so the cost does not grow with the number of
microtime bins.

Timing conventions, as ``spm_int`` (converted to 0-based indices):

* microtime bin ``b`` holds the input over ``[b dt, (b+1) dt)``; the state at bin ``b`` is
  the state at time ``b dt`` (``x(0) = 0``, rest);
* scan ``k`` of ``v`` (``u`` bins in total) is sampled for region ``j`` at bin
  ``ceil(k u / v) + D_j - 1`` with ``D_j = max(round(delay_j / dt), 1)``; ``delay_j`` is
  the acquisition time of region ``j`` within the scan in seconds (SPM ``DCM.delays``,
  default TR/2 as ``spm_dcm_specify``);
* the BOLD observation (``spm_gx_fmri``) is applied to the states at the sampled bins.

The integrator is vectorised over a batch of parameter vectors (finite-difference
Jacobians evaluate all perturbed parameter sets in one pass).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import expm

from ptsd_bidsapp.dcm import model

__all__ = ["Schedule", "make_schedule", "integrate"]


def _matlab_round(x):
    # MATLAB round(): halves away from zero (numpy rounds halves to even)
    x = np.asarray(x, dtype=float)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


@dataclass
class Schedule:
    """Parameter-independent bookkeeping of one integration (built once per model)."""

    n_regions: int
    n_scans: int
    u_dt: float
    patterns: np.ndarray        # (n_patterns, m) distinct input values at change points
    step_keys: np.ndarray       # (n_keys, 2) unique (pattern index, number of bins) updates
    event_key: np.ndarray       # (n_events,) index into step_keys of the update after each event (-1: none)
    sample_event: np.ndarray    # (n_samples,) event index of each (scan, region) sample
    sample_scan: np.ndarray     # (n_samples,) scan index
    sample_region: np.ndarray   # (n_samples,) region index
    sample_bins: np.ndarray     # (n_scans, n_regions) microtime bin of every sample


def make_schedule(u: np.ndarray, u_dt: float, n_scans: int, delays) -> Schedule:
    """Evaluation times of ``spm_int`` for inputs ``u`` (bins x inputs) and per-region delays (s)."""
    u = np.asarray(u, dtype=float)
    if u.ndim == 1:
        u = u[:, None]
    n_bins = u.shape[0]
    delays = np.atleast_1d(np.asarray(delays, dtype=float))
    n = delays.size
    v = int(n_scans)
    if v < 1 or n_bins < 1:
        raise ValueError("need at least one scan and one microtime bin")
    D = np.maximum(_matlab_round(delays / u_dt), 1).astype(int)
    s = np.ceil(np.arange(v) * n_bins / v - 1e-9).astype(int)  # spm_int: s = ceil((0:v-1)*u/v)
    sample_bins = s[:, None] + D[None, :] - 1                    # 0-based bins (scan, region)
    if sample_bins.max() >= n_bins:
        raise ValueError(
            f"a response sample falls after the last input bin (bin {int(sample_bins.max())} of {n_bins}): "
            "the inputs must cover every scan plus the regional delays (u needs >= n_scans*TR/u_dt bins)")
    change = np.concatenate([[0], 1 + np.flatnonzero(np.any(np.diff(u, axis=0) != 0, axis=1))])
    times = np.union1d(change, sample_bins.ravel())
    # pattern active from each event onwards (last change at or before it)
    patterns, pattern_of_change = np.unique(u[change], axis=0, return_inverse=True)
    pattern_of_change = np.asarray(pattern_of_change).ravel()
    last_change = np.searchsorted(change, times, side="right") - 1
    active = pattern_of_change[last_change]
    steps = np.diff(times)                                       # bins to the next event
    keys = np.stack([active[:-1], steps], axis=1) if steps.size else np.zeros((0, 2), int)
    step_keys, event_key = np.unique(keys, axis=0, return_inverse=True) if steps.size else (keys, np.zeros(0, int))
    event_key = np.concatenate([np.asarray(event_key).ravel(), [-1]]).astype(int)
    event_of_bin = {int(t): i for i, t in enumerate(times)}
    sample_event = np.array([event_of_bin[int(b)] for b in sample_bins.ravel()], dtype=int)
    scan_idx, region_idx = np.meshgrid(np.arange(v), np.arange(n), indexing="ij")
    return Schedule(n_regions=n, n_scans=v, u_dt=float(u_dt), patterns=patterns,
                    step_keys=step_keys.astype(int), event_key=event_key, sample_event=sample_event,
                    sample_scan=scan_idx.ravel(), sample_region=region_idx.ravel(), sample_bins=sample_bins)


def _operators(params: dict, schedule: Schedule):
    """Augmented propagators ``expm(M(u) k dt)`` for every (pattern, k) in the schedule.

    ``params`` fields carry a leading batch axis. Returns ``(batch, n_keys, d+1, d+1)``.
    """
    J0, J1, c = model.jacobian_at_rest(params["A"], params["B"], params["C"],
                                       params["transit"], params["decay"])
    batch = J0.shape[:-2]
    d = J0.shape[-1]
    pats = schedule.patterns                                    # (P, m)
    # M(u) on z = [1; x]: first row zero, first column sum_j u_j c_j, block J0 + sum_j u_j J_j
    Mp = np.zeros(batch + (pats.shape[0], d + 1, d + 1))
    Mp[..., 1:, 1:] = J0[..., None, :, :] + np.einsum("pm,...mij->...pij", pats, J1)
    Mp[..., 1:, 0] = np.einsum("pm,...mi->...pi", pats, c)
    keys = schedule.step_keys
    if keys.shape[0] == 0:
        return np.zeros(batch + (0, d + 1, d + 1))
    scaled = Mp[..., keys[:, 0], :, :] * (keys[:, 1] * schedule.u_dt)[:, None, None]
    return expm(scaled)


def integrate(params: dict, schedule: Schedule, te: float, return_states: bool = False):
    """Predicted BOLD for a batch of parameter sets (SPM12 ``spm_int`` + ``spm_gx_fmri``).

    Parameters
    ----------
    params : dict
        ``A`` (b, n, n), ``B`` (b, m, n, n), ``C`` (b, n, m), ``transit`` (b, n), ``decay``
        (b, n), ``epsilon`` (b,) — a batch of ``b`` parameter sets.
    schedule : Schedule
    te : float
        Echo time (s).
    return_states : bool
        Also return the hidden states at the sampled bins, ``(b, scans, regions, 5)``.

    Returns
    -------
    y : array (b, scans, regions)
        BOLD signal change (%).
    """
    E = _operators(params, schedule)                            # (b, K, d+1, d+1)
    b = E.shape[0]
    n = schedule.n_regions
    d = 5 * n
    n_events = schedule.event_key.size
    z = np.zeros((b, d + 1))
    z[:, 0] = 1.0
    states = np.empty((n_events, b, d))
    # the only sequential part: propagate through the evaluation times
    Et = np.ascontiguousarray(np.swapaxes(E, 2, 3))             # z_row @ E^T == (E @ z)^T
    last_event = np.full(b, n_events - 1)
    alive = np.ones(b, dtype=bool)
    for i, key in enumerate(schedule.event_key):
        states[i] = z[:, 1:]
        if key >= 0:
            z = np.einsum("bi,bij->bj", z, Et[:, key])
            # spm_int stops integrating once the state diverges (norm(x, 1) > 1e6); later
            # samples stay zero
            blown = alive & ~(np.abs(z).sum(axis=1) <= 1e6)
            if blown.any():
                last_event[blown] = i
                alive &= ~blown
                z[blown] = 0.0
    # state of the region's own sample: (b, samples, 5)
    ev = schedule.sample_event
    reg = schedule.sample_region
    st = states[ev]                                             # (S, b, d)
    cols = np.arange(5)[None, :] * n + reg[:, None]            # (S, 5)
    xs = np.take_along_axis(st, cols[:, None, :].repeat(b, axis=1), axis=2)  # (S, b, 5)
    xs = np.swapaxes(xs, 0, 1)                                  # (b, S, 5)
    eps = np.asarray(params["epsilon"], dtype=float).reshape(b, 1)
    k1, k2, k3 = model.bold_coefficients(eps, te)
    vol = np.exp(xs[..., 3])
    q = np.exp(xs[..., 4])
    y_samples = model.V0 * (k1 * (1.0 - q) + k2 * (1.0 - q / vol) + k3 * (1.0 - vol))  # (b, S)
    unreached = ev[None, :] > last_event[:, None]               # (b, S)
    y_samples = np.where(unreached, 0.0, y_samples)
    xs = np.where(unreached[..., None], 0.0, xs)
    y = np.empty((b, schedule.n_scans, n))
    y[:, schedule.sample_scan, schedule.sample_region] = y_samples
    if not return_states:
        return y
    x = np.empty((b, schedule.n_scans, n, 5))
    x[:, schedule.sample_scan, schedule.sample_region, :] = xs
    return y, x
