"""Generalised PPI (McLaren et al. 2012, NeuroImage 61:1277) on ROI signals.

The seed BOLD is deconvolved to the neural level with a hemodynamic model at microtime
resolution: ``fmri_t`` bins per TR (SPM ``fMRI_T``, default 16), bin width ``dt = TR / fmri_t`` s.
Two variants (``method``):

``"spm"`` (default) — equal to SPM12 r7771 ``spm_peb_ppi.m`` ($Id 6556; with ``spm_PEB.m`` 7654,
``spm_hrf.m`` 7721, ``spm_dctmtx.m`` 6416, ``spm_get_ons.m`` 4855; Gitelman et al. 2003,
NeuroImage 19:200). Checked against SPM12 run under Octave (``tests/measures/test_gppi_spm12.py``,
``scripts/spm12_reference/ppi/``): equal values, not only correlated. SPM whitens ``H`` with the
first level's ``SPM.xX.W``; here (and in the reference cases) ``W = I``, SPM's value for an
i.i.d. first level:

* basis ``xb`` = DCT (``spm_dctmtx``) of ``N*fmri_t + 128`` microtime bins and ``N`` components
  (``N`` scans); ``H`` (N x N) = ``xb`` convolved with the canonical HRF (``spm_hrf(dt)``) and
  sampled at microtime bin 0 of every scan (after the 128 padding bins);
* BOLD model ``y = H b + X0 g + e`` with ``X0 = [1, confounds]``; known covariances
  ``Cov(e) = sigma2 I``, ``Cov(b) = N / trace(H'H) I``, ``Cov(g) = 1e6 I`` (``spm_peb_ppi`` passes
  ``P{1}.C = I/4`` and ``P{2}.C = Q`` as matrices, not cells, and ``spm_PEB`` treats non-cell
  ``C`` as *known* covariances: no hyperparameter is estimated, the EM loop stops after one
  E-step; the issue text's "ReML-estimated precision" does not happen in r7771, and SPM's own
  outputs for a seed scaled x10 are exactly x10, which a data-driven variance would not give).
  ``sigma2 = 1/4`` (data units squared) unless ``precision`` says otherwise. The posterior mean
  (the E-step of parametric empirical Bayes with known covariances; Friston et al. 2002,
  NeuroImage 16:465, section "Parametric empirical Bayes")::

      [b; g] = (X' X / sigma2 + Cp^-1)^-1 X' y / sigma2,   X = [H, X0],
      Cp = blkdiag(N / trace(H'H) I, 1e6 I)                                            (1)

  (``spm_PEB``'s 1e-6 added to known covariances and ``spm_inv``'s tolerances are reproduced);
* neural signal ``xn = xb[128:] b``, mean removed (``spm_detrend``);
* per condition ``c`` the psychological variable ``psy_c`` is built like ``spm_get_ons`` (bins
  ``round(onset/dt)`` to ``round(onset/dt) + round(duration/dt)`` inclusive, overlapping events add,
  height ``1/dt`` when every duration of the condition is 0), mean removed; the interaction
  ``PPI.ppi = HRF * (psy_c xn)`` sampled at the reference bin ``fmri_t0`` (SPM ``fMRI_T0``, 1-based:
  bin ``fmri_t0`` of scan ``j`` is at time ``(j * fmri_t + fmri_t0 - 1) * dt``), mean removed.
  ``spm_peb_ppi`` called with ``Uu = [c 1 1]`` per condition gives exactly these columns.

``"slice_reference"`` — the app's earlier variant, kept as an option (on one seed it recovered
the true neural signal better than SPM's, r 0.80 vs 0.69; on the simulated trial's faces runs
the two recover the planted signal and gPPI change about equally, ``benchmarks/gppi_variants.py``):
``H`` and the interaction are both sampled at the reference bin, confounds are projected out
exactly, the HRF is nilearn's ``spm_hrf`` at ``dt``, and ``b`` is the ridge estimate::

    b = (H' R H + lambda I)^-1 H' R y,   lambda = precision * trace(H' R H) / N                 (2)

(``R`` the residual-forming matrix of ``X0``; ``precision`` default 1.0); the boxcar covers bins
``round(onset/dt)`` to ``round((onset + duration)/dt) - 1`` with height 1.

In both, ``precision`` is the noise variance ``sigma2`` (data units squared, e.g. PSC^2) assumed
under the prior ``Cov(b) = N / trace(H'H) I`` (``H' R H`` for ``slice_reference``); config
``gppi.deconvolution_precision``, ``null`` = the method's default (0.25 for ``spm`` as
``spm_peb_ppi``, 1.0 for ``slice_reference``); larger = smoother.

The reference bin (``fmri_t0``, 1-based) defaults to the run's slice-time reference:
``round(slice_time_ref * fmri_t) + 1`` (clamped to 1..fmri_t), i.e. the microtime bin at
``slice_time_ref * TR``. SPM's own default (``defaults.stats.fmri.t0 = 8``) is not used unless
configured, because the data's slice-time reference is known here.

Each target ROI is fitted with [task regressors, seed BOLD, interaction terms, confounds]
under AR(1); the measure is the contrast of interaction betas.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from scipy import signal as _signal
from scipy import stats as _stats

from ptsd_bidsapp.measures.errors import MeasureError

METHODS = ("spm", "slice_reference")
DEFAULT_METHOD = "spm"
MICROTIME_BINS = 16  # default fmri_t (SPM defaults.stats.fmri.t)
_PAD = 128           # microtime bins prepended to the DCT basis (spm_peb_ppi: spm_dctmtx(N*NT + 128, N))
SPM_NOISE_VARIANCE = 0.25     # spm_peb_ppi: P{1}.C = speye(N,N)/4
SPM_CONFOUND_VARIANCE = 1e6   # spm_peb_ppi: prior variance of the X0 coefficients
_SPM_KNOWN_C_JITTER = 1e-6    # spm_PEB adds 1e-6 I to every known (non-cell) covariance
_SPM_INV_TOL = np.exp(-16)    # spm_PEB: iC = spm_inv(Ce, exp(-16)) = inv(Ce + exp(-16) I)
DEFAULT_PRECISION = {"spm": SPM_NOISE_VARIANCE, "slice_reference": 1.0}


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise MeasureError(f"gPPI method must be one of {', '.join(METHODS)} (got {method!r})")
    return method


def _check_fmri_t(fmri_t: int) -> int:
    if int(fmri_t) != fmri_t or fmri_t < 1:
        raise MeasureError(f"fmri_t (microtime bins per TR) must be a positive integer (got {fmri_t!r})")
    return int(fmri_t)


def reference_bin(fmri_t: int = MICROTIME_BINS, fmri_t0: int | None = None, slice_time_ref: float = 0.0) -> int:
    """SPM's ``fMRI_T0`` (1-based microtime reference bin) for a run.

    Parameters
    ----------
    fmri_t : int
        Microtime bins per TR (SPM ``fMRI_T``).
    fmri_t0 : int, optional
        Explicit reference bin, 1..``fmri_t``; bin ``t0`` of a scan starts ``(t0 - 1) * TR / fmri_t`` s
        after the scan's start.
    slice_time_ref : float
        Slice-time reference as a fraction of TR (0..1); used when ``fmri_t0`` is None:
        ``round(slice_time_ref * fmri_t) + 1``, clamped to 1..``fmri_t``.

    Returns
    -------
    int
        1-based reference bin.
    """
    fmri_t = _check_fmri_t(fmri_t)
    if fmri_t0 is None:
        return int(min(max(np.floor(slice_time_ref * fmri_t + 0.5), 0), fmri_t - 1)) + 1
    if int(fmri_t0) != fmri_t0 or not 1 <= fmri_t0 <= fmri_t:
        raise MeasureError(f"fmri_t0 must be an integer within 1..fmri_t={fmri_t} (got {fmri_t0!r})")
    return int(fmri_t0)


def dct_basis(n_samples: int, n_components: int) -> np.ndarray:
    """SPM ``spm_dctmtx``: column k = sqrt(2/N) cos(pi (2n+1) k / 2N); first column 1/sqrt(N)."""
    n = np.arange(n_samples)[:, None]
    k = np.arange(n_components)[None, :]
    basis = np.sqrt(2.0 / n_samples) * np.cos(np.pi * (2 * n + 1) * k / (2 * n_samples))
    basis[:, 0] = 1.0 / np.sqrt(n_samples)
    return basis


def spm_canonical_hrf(dt: float) -> np.ndarray:
    """SPM12 ``spm_hrf(dt)``: canonical HRF sampled every ``dt`` s over 32 s, sum 1.

    Difference of gamma densities (peak shape 6, undershoot shape 16, scale 1 s, ratio 6,
    onset 0, length 32 s) at ``t = k * dt``, ``k = 0..floor(32/dt)``, normalised to sum 1
    (so a unit step gives a unit plateau).

    Parameters
    ----------
    dt : float
        Sampling interval (s), here the microtime bin width TR / fMRI_T.

    Returns
    -------
    ndarray (floor(32/dt) + 1,)
    """
    t = np.arange(int(np.floor(32.0 / dt)) + 1) * dt
    hrf = _stats.gamma.pdf(t, 6.0) - _stats.gamma.pdf(t, 16.0) / 6.0
    return hrf / hrf.sum()


def _hrf(t_r: float, fmri_t: int, method: str) -> np.ndarray:
    if method == "spm":
        return spm_canonical_hrf(t_r / fmri_t)
    from nilearn.glm.first_level.hemodynamic_models import spm_hrf
    return spm_hrf(t_r, oversampling=fmri_t)


def _scan_indices(n_scans: int, fmri_t: int, t0: int) -> np.ndarray:
    """0-based microtime indices of reference bin ``t0`` (1-based) of every scan."""
    return np.arange(n_scans) * fmri_t + (t0 - 1)


def convolve_microtime(signal: np.ndarray, t_r: float, slice_time_ref: float = 0.0, *,
                       fmri_t: int = MICROTIME_BINS, fmri_t0: int | None = None,
                       method: str = DEFAULT_METHOD) -> np.ndarray:
    """Convolve microtime signal(s) with the HRF and sample at the reference bin of every scan.

    Parameters
    ----------
    signal : ndarray (n_scans * fmri_t [, k])
        Microtime signal(s), bin width ``t_r / fmri_t`` s.
    t_r : float
        Repetition time (s).
    slice_time_ref : float
        Slice-time reference (fraction of TR) giving the reference bin when ``fmri_t0`` is None.
    fmri_t, fmri_t0 : int
        SPM ``fMRI_T`` / ``fMRI_T0`` (see :func:`reference_bin`).
    method : {"spm", "slice_reference"}
        HRF: SPM12's ``spm_hrf(dt)`` exactly (``spm``, default) or nilearn's ``spm_hrf``
        (``slice_reference``, the earlier behaviour).

    Returns
    -------
    ndarray (n_scans [, k])
        Same units as ``signal`` (the HRF sums to 1).
    """
    fmri_t = _check_fmri_t(fmri_t)
    hrf = _hrf(t_r, fmri_t, _check_method(method))
    signal = np.asarray(signal, float)
    flat = signal.reshape(signal.shape[0], -1)
    n_scans = flat.shape[0] // fmri_t
    out = _signal.fftconvolve(flat, hrf[:, None], axes=0)[: flat.shape[0]] if flat.size else flat
    out = out[_scan_indices(n_scans, fmri_t, reference_bin(fmri_t, fmri_t0, slice_time_ref))]
    return out.reshape((n_scans,) + signal.shape[1:])


def deconvolution_design(n_scans: int, t_r: float, *, method: str = DEFAULT_METHOD, fmri_t: int = MICROTIME_BINS,
                         fmri_t0: int | None = None, slice_time_ref: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Microtime DCT basis ``xb`` and its HRF-convolved scan-time version ``H``.

    Parameters
    ----------
    n_scans : int
    t_r : float
        Repetition time (s).
    method : {"spm", "slice_reference"}
        ``spm``: ``H`` sampled at microtime bin 0 of every scan (``spm_peb_ppi``);
        ``slice_reference``: at the reference bin.
    fmri_t, fmri_t0, slice_time_ref
        See :func:`reference_bin`.

    Returns
    -------
    xb : ndarray (n_scans * fmri_t, n_scans)
        DCT basis at microtime (the 128 padding bins removed), unitless.
    H : ndarray (n_scans, n_scans)
        ``xb`` (with padding) convolved with the HRF, sampled at scan times.
    """
    fmri_t = _check_fmri_t(fmri_t)
    method = _check_method(method)
    xb = dct_basis(n_scans * fmri_t + _PAD, n_scans)
    t0 = 1 if method == "spm" else reference_bin(fmri_t, fmri_t0, slice_time_ref)
    full = _signal.fftconvolve(xb, _hrf(t_r, fmri_t, method)[:, None], axes=0)
    h = full[_scan_indices(n_scans, fmri_t, t0) + _PAD]
    return xb[_PAD:], h


def deconvolve_seed(seed_bold: np.ndarray, t_r: float, confounds: np.ndarray | None = None,
                    precision: float | None = None, slice_time_ref: float = 0.0, *,
                    method: str = DEFAULT_METHOD, fmri_t: int = MICROTIME_BINS,
                    fmri_t0: int | None = None) -> np.ndarray:
    """Estimate the neural signal of a seed at microtime resolution (eq. 1 or 2).

    Parameters
    ----------
    seed_bold : ndarray (n_scans,)
        Seed ROI signal (e.g. percent signal change, PSC).
    t_r : float
        Repetition time (s).
    confounds : ndarray (n_scans, k), optional
        Nuisance regressors ``X0`` (an intercept is always added).
    precision : float, optional
        Noise variance ``sigma2`` in data units squared (e.g. PSC^2) under the prior
        ``Cov(b) = N/trace(H'H) I`` (config ``gppi.deconvolution_precision``; larger = smoother).
        None: the method's default (``spm``: 1/4 as ``spm_peb_ppi``; ``slice_reference``: 1.0).
    slice_time_ref : float
        Slice-time reference (fraction of TR); only ``slice_reference`` samples ``H`` there.
    method : {"spm", "slice_reference"}
        See the module docstring.
    fmri_t, fmri_t0 : int
        SPM ``fMRI_T`` / ``fMRI_T0``.

    Returns
    -------
    ndarray (n_scans * fmri_t,)
        Neural signal ``PPI.xn`` at microtime (dt = TR/fmri_t s), mean zero, data units
        (the HRF sums to 1).
    """
    method = _check_method(method)
    y = np.asarray(seed_bold, float)
    if y.ndim != 1 or not np.all(np.isfinite(y)):
        raise MeasureError("seed signal must be a finite 1-D array")
    sigma2 = DEFAULT_PRECISION[method] if precision is None else float(precision)
    if not sigma2 > 0:
        raise MeasureError(f"deconvolution precision must be > 0 (got {precision!r})")
    n = y.size
    xb, h = deconvolution_design(n, t_r, method=method, fmri_t=fmri_t, fmri_t0=fmri_t0,
                                 slice_time_ref=slice_time_ref)
    x0 = np.ones((n, 1)) if confounds is None else np.column_stack([np.ones(n), np.asarray(confounds, float)])
    if method == "spm":
        # spm_PEB, two levels, known covariances (eq. 1): one E-step, no ReML
        prior_b = n / np.trace(h.T @ h) + _SPM_KNOWN_C_JITTER + _SPM_INV_TOL
        prior_g = SPM_CONFOUND_VARIANCE + _SPM_KNOWN_C_JITTER + _SPM_INV_TOL
        noise = sigma2 + _SPM_KNOWN_C_JITTER + _SPM_INV_TOL
        x = np.column_stack([h, x0])
        prior_precision = np.r_[np.full(n, 1.0 / prior_b), np.full(x0.shape[1], 1.0 / prior_g)]
        # Cby = spm_inv(XX' iC XX): spm_inv's default tolerance eps(norm(A, inf)) * size(A), where the
        # largest row of A is the pseudo-observation fixing spm_PEB's third level (precision exp(16))
        tol = np.spacing(1.0 / _SPM_INV_TOL) * (x.shape[1] + 1)
        posterior_precision = x.T @ x / noise + np.diag(prior_precision + tol)
        b = np.linalg.solve(posterior_precision, x.T @ y / noise)[:n]
    else:
        residual_forming = np.eye(n) - x0 @ np.linalg.pinv(x0)
        rh = residual_forming @ h
        lam = sigma2 * np.trace(rh.T @ rh) / n
        b = np.linalg.solve(rh.T @ rh + lam * np.eye(n), rh.T @ (residual_forming @ y))
    xn = xb @ b
    return xn - xn.mean()


def _spm_round(x: np.ndarray) -> np.ndarray:
    """MATLAB ``round`` (halves away from zero)."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def psychological_microtime(events: pd.DataFrame, condition: str, n_scans: int, t_r: float, *,
                            method: str = DEFAULT_METHOD, fmri_t: int = MICROTIME_BINS) -> np.ndarray:
    """Stimulus function of ``condition`` at microtime (onsets/durations in s).

    Parameters
    ----------
    events : DataFrame
        BIDS events (``onset``, ``duration`` in s from the first scan, ``trial_type``).
    condition : str
    n_scans : int
    t_r : float
        Repetition time (s).
    method : {"spm", "slice_reference"}
        ``spm`` (default): as ``spm_get_ons`` (bins ``round(onset/dt)`` .. ``round(onset/dt) + round(duration/dt)``
        inclusive, overlaps add, height ``1/dt`` (1/s) when all durations are 0); ``slice_reference``
        (earlier behaviour): bins ``round(onset/dt)`` .. ``round((onset + duration)/dt) - 1``, height 1.
    fmri_t : int
        Microtime bins per TR.

    Returns
    -------
    ndarray (n_scans * fmri_t,)
        Unitless (or 1/s for SPM's zero-duration events).
    """
    fmri_t = _check_fmri_t(fmri_t)
    dt = t_r / fmri_t
    psy = np.zeros(n_scans * fmri_t)
    rows = events[events["trial_type"] == condition]
    if _check_method(method) == "spm":
        onsets = rows["onset"].to_numpy(float)
        durations = rows["duration"].to_numpy(float)
        height = 1.0 / dt if (durations.size and not np.any(durations)) else 1.0
        steps = np.zeros(psy.size + 1)
        for on, dur in zip(onsets, durations):
            start = int(_spm_round(on / dt))
            stop = start + int(_spm_round(dur / dt)) + 1
            start, stop = max(start, 0), max(stop, 0)
            if start < steps.size:
                steps[start] += height
            if stop < steps.size:
                steps[stop] -= height
        return np.cumsum(steps)[: psy.size]
    for _, row in rows.iterrows():
        start = int(round(row["onset"] / dt))
        stop = max(start + 1, int(round((row["onset"] + row["duration"]) / dt)))
        psy[max(start, 0):max(min(stop, psy.size), 0)] = 1.0
    return psy


def interaction_regressors(neural: np.ndarray, events: pd.DataFrame, conditions: Sequence[str], t_r: float,
                           slice_time_ref: float = 0.0, *, method: str = DEFAULT_METHOD,
                           fmri_t: int = MICROTIME_BINS, fmri_t0: int | None = None) -> pd.DataFrame:
    """gPPI interaction terms ``HRF * (psy_c xn)``, one column ``ppi_<c>`` per condition.

    Parameters
    ----------
    neural : ndarray (n_scans * fmri_t,)
        Deconvolved seed signal (:func:`deconvolve_seed`).
    events : DataFrame
        BIDS events (s).
    conditions : sequence of str
    t_r : float
        Repetition time (s).
    slice_time_ref : float
        Fraction of TR giving the reference bin when ``fmri_t0`` is None.
    method : {"spm", "slice_reference"}
        ``spm``: column ``c`` equals ``PPI.ppi`` of ``spm_peb_ppi`` with ``Uu = [c 1 1]``
        (mean removed); ``slice_reference``: the earlier variant (no mean removal).
    fmri_t, fmri_t0 : int
        SPM ``fMRI_T`` / ``fMRI_T0``.

    Returns
    -------
    DataFrame (n_scans, len(conditions))
        Units of ``neural`` (x 1/s for SPM's zero-duration events).
    """
    method = _check_method(method)
    fmri_t = _check_fmri_t(fmri_t)
    n_scans = neural.size // fmri_t
    cols = {}
    for condition in conditions:
        psy = psychological_microtime(events, condition, n_scans, t_r, method=method, fmri_t=fmri_t)
        ppi = convolve_microtime((psy - psy.mean()) * neural, t_r, slice_time_ref, fmri_t=fmri_t,
                                 fmri_t0=fmri_t0, method=method)
        cols[f"ppi_{condition}"] = ppi - ppi.mean() if method == "spm" else ppi
    return pd.DataFrame(cols)


def gppi_matrix(signals: np.ndarray, roi_names: Sequence[str], task_design: pd.DataFrame, events: pd.DataFrame,
                conditions: Sequence[str], contrast: str, t_r: float, confounds: np.ndarray | None = None,
                seeds: Sequence[str] | None = None, precision: float | None = None, slice_time_ref: float = 0.0,
                noise_model: str = "ar1", *, method: str = DEFAULT_METHOD, fmri_t: int = MICROTIME_BINS,
                fmri_t0: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Directed and symmetrised gPPI ROI x ROI matrices of one interaction contrast.

    Parameters
    ----------
    signals : ndarray (n_scans, n_rois)
        ROI signals (% signal change); NaN columns give n/a rows/columns.
    task_design : DataFrame
        Task regressors (conditions, convolved) — e.g. the condition columns of
        :func:`ptsd_bidsapp.measures.activation.task_design_matrix` without confounds.
    events : DataFrame
        BIDS events (onset, duration in s, trial_type).
    conditions : sequence of str
    contrast : str
        Over condition names, e.g. ``"fearful - neutral"``, applied to the ``ppi_<c>`` betas.
    t_r : float
        Repetition time (s).
    confounds : ndarray (n_scans, k), optional
    seeds : sequence of str, optional
        Seed ROIs (default all).
    precision : float, optional
        Deconvolution noise variance (PSC^2; config ``gppi.deconvolution_precision``); None =
        the method's default.
    slice_time_ref : float
        Slice-time reference (fraction of TR).
    noise_model : str
        Target GLM noise model (nilearn ``run_glm``).
    method : {"spm", "slice_reference"}
        Config ``gppi.method`` (see the module docstring).
    fmri_t, fmri_t0 : int
        Config ``gppi.fmri_t`` / ``gppi.fmri_t0`` (SPM ``fMRI_T`` / ``fMRI_T0``).

    Returns
    -------
    directed : DataFrame
        ``directed.loc[seed, target]`` = contrast of interaction betas in the target's GLM
        (seed -> target); diagonal and non-seeds NaN.
    symmetric : DataFrame
        ``(directed + directed.T) / 2`` (config ``gppi.symmetrise: mean``); NaN where either is NaN.
    """
    from nilearn.glm.contrasts import compute_contrast, expression_to_contrast_vector
    from nilearn.glm.first_level import run_glm

    signals = np.asarray(signals, float)
    n, n_rois = signals.shape
    names = list(roi_names)
    directed = pd.DataFrame(np.nan, index=names, columns=names)
    nuisance = np.ones((n, 1)) if confounds is None else np.column_stack([np.ones(n), confounds])
    options = dict(method=method, fmri_t=fmri_t, fmri_t0=fmri_t0)
    # the seed and nuisance columns get names no task condition has (a trial_type may be "seed")
    taken = {str(c) for c in task_design.columns}
    seed_column = _free_name("seed", taken)
    nuisance_columns = [_free_name(f"nuis{i}", taken) for i in range(nuisance.shape[1])]
    for s, seed in enumerate(names):
        if (seeds is not None and seed not in seeds) or not np.all(np.isfinite(signals[:, s])):
            continue
        neural = deconvolve_seed(signals[:, s], t_r, confounds, precision, slice_time_ref, **options)
        ppi = interaction_regressors(neural, events, conditions, t_r, slice_time_ref, **options)
        design = pd.concat([task_design.reset_index(drop=True), pd.DataFrame({seed_column: signals[:, s]}), ppi,
                            pd.DataFrame(nuisance, columns=nuisance_columns)], axis=1)
        if design.columns.duplicated().any():  # a task column named like an interaction column
            raise ValueError(f"gPPI design columns {sorted(set(design.columns[design.columns.duplicated()]))} "
                             "appear twice: rename the condition(s) whose name starts with 'ppi_'")
        vec = np.asarray(expression_to_contrast_vector(_ppi_expression(contrast, conditions), list(design.columns)))
        targets = [t for t in range(n_rois) if t != s and np.all(np.isfinite(signals[:, t]))]
        if not targets:
            continue
        labels, results = run_glm(signals[:, targets], design.to_numpy(float), noise_model=noise_model)
        effect = np.ravel(compute_contrast(labels, results, vec, stat_type="t").effect_size())
        directed.iloc[s, targets] = effect
    symmetric = (directed + directed.T) / 2.0
    return directed, symmetric


def _free_name(name: str, taken: set[str]) -> str:
    """``name``, prefixed with ``_`` until it is not in ``taken``."""
    while name in taken:
        name = "_" + name
    return name


def _ppi_expression(contrast: str, conditions: Sequence[str]) -> str:
    """Map ``"fearful - neutral"`` to ``"ppi_fearful - ppi_neutral"`` (whole-word replacement)."""
    import re
    pattern = re.compile(r"\b(" + "|".join(re.escape(c) for c in sorted(conditions, key=len, reverse=True)) + r")\b")
    return pattern.sub(lambda m: f"ppi_{m.group(1)}", contrast)
