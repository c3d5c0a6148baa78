"""Generalised PPI (McLaren et al. 2012, NeuroImage 61:1277) on ROI signals.

The seed BOLD is deconvolved to the neural level following the structure of SPM12
``spm_peb_ppi.m``: a DCT basis at microtime resolution (16 bins per TR; ``spm_dctmtx``)
convolved with the canonical HRF (``spm_hrf`` sampled at TR/16) and sampled at the
slice-time reference bin gives ``H`` (scans x N), the BOLD model ``y = H b + X0 g + e``.
SPM12 ``spm_peb_ppi`` gives ``b`` the prior covariance ``Q = N / trace(H'H) I`` (confounds:
flat prior, 1e6) and lets ``spm_PEB`` estimate the noise variance by ReML (initial value 1/4).
Here ``b`` is the MAP (ridge) estimate with confounds ``X0`` projected out and the noise variance
*fixed* instead of estimated::

    b = (H' R H + lambda I)^-1 H' R y,   lambda = precision * trace(H' R H) / N     (1)

(``R`` the residual-forming matrix of ``X0``). This is SPM's prior with noise variance =
``precision`` (data units squared, e.g. (% signal change)^2); ``precision`` is config
``gppi.deconvolution_precision`` (larger = smoother neural estimate).
Differences from SPM, on purpose: ``H`` and the interaction are both sampled at the slice-time
reference bin (SPM samples ``Hxb`` at bin 1 and ``ppi`` at ``T0``).
The neural signal is ``xn = X b`` (X the microtime DCT), mean removed (``spm_detrend``).

Interaction per condition (McLaren 2012): ``ppi_c = (HRF * (psy_c xn))`` sampled like ``H``,
with ``psy_c`` the condition boxcar at microtime, mean-centred (so the interaction is not a
copy of the seed main effect). Each target ROI is fitted with [task regressors, seed BOLD,
interaction terms, confounds] under AR(1); the measure is the contrast of interaction betas.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from nilearn.glm.first_level.hemodynamic_models import spm_hrf

from ptsd_bidsapp.measures.errors import MeasureError

MICROTIME_BINS = 16  # SPM xBF.T
_PAD = 128           # microtime bins prepended, as spm_peb_ppi (spm_dctmtx(N*NT + 128, N))


def dct_basis(n_samples: int, n_components: int) -> np.ndarray:
    """SPM ``spm_dctmtx``: column k = sqrt(2/N) cos(pi (2n+1) k / 2N); first column 1/sqrt(N)."""
    n = np.arange(n_samples)[:, None]
    k = np.arange(n_components)[None, :]
    basis = np.sqrt(2.0 / n_samples) * np.cos(np.pi * (2 * n + 1) * k / (2 * n_samples))
    basis[:, 0] = 1.0 / np.sqrt(n_samples)
    return basis


def _microtime(t_r: float) -> tuple[float, np.ndarray]:
    dt = t_r / MICROTIME_BINS
    return dt, spm_hrf(t_r, oversampling=MICROTIME_BINS)


def _scan_indices(n_scans: int, slice_time_ref: float) -> np.ndarray:
    t0 = int(round(slice_time_ref * MICROTIME_BINS))
    return np.arange(n_scans) * MICROTIME_BINS + min(t0, MICROTIME_BINS - 1)


def convolve_microtime(signal: np.ndarray, t_r: float, slice_time_ref: float = 0.0) -> np.ndarray:
    """Convolve microtime signal(s) (n_scans*16 [, k]) with the SPM HRF and sample at scan times."""
    _, hrf = _microtime(t_r)
    signal = np.asarray(signal, float)
    flat = signal.reshape(signal.shape[0], -1)
    n_scans = flat.shape[0] // MICROTIME_BINS
    out = np.column_stack([np.convolve(flat[:, i], hrf)[: flat.shape[0]] for i in range(flat.shape[1])])
    out = out[_scan_indices(n_scans, slice_time_ref)]
    return out.reshape((n_scans,) + signal.shape[1:])


def deconvolve_seed(seed_bold: np.ndarray, t_r: float, confounds: np.ndarray | None = None,
                    precision: float = 1.0, slice_time_ref: float = 0.0) -> np.ndarray:
    """Estimate the neural signal of a seed at microtime resolution (eq. 1).

    Parameters
    ----------
    seed_bold : ndarray (n_scans,)
        Seed ROI signal (e.g. percent signal change).
    t_r : float
        Repetition time (s).
    confounds : ndarray (n_scans, k), optional
        Nuisance regressors (an intercept is always added).
    precision : float
        Prior precision of the DCT coefficients relative to the noise (config
        ``gppi.deconvolution_precision``; larger = smoother).
    slice_time_ref : float
        Fraction of TR at which scans are sampled.

    Returns
    -------
    ndarray (n_scans * 16,)
        Neural signal at microtime (dt = TR/16 s), mean zero, arbitrary units.
    """
    y = np.asarray(seed_bold, float)
    if y.ndim != 1 or not np.all(np.isfinite(y)):
        raise MeasureError("seed signal must be a finite 1-D array")
    n = y.size
    micro = dct_basis(n * MICROTIME_BINS + _PAD, n)
    _, hrf = _microtime(t_r)
    idx = _scan_indices(n, slice_time_ref) + _PAD
    h = np.column_stack([np.convolve(micro[:, i], hrf)[idx] for i in range(n)])
    x0 = np.ones((n, 1)) if confounds is None else np.column_stack([np.ones(n), np.asarray(confounds, float)])
    residual_forming = np.eye(n) - x0 @ np.linalg.pinv(x0)
    rh = residual_forming @ h
    lam = precision * np.trace(rh.T @ rh) / n
    b = np.linalg.solve(rh.T @ rh + lam * np.eye(n), rh.T @ (residual_forming @ y))
    xn = micro[_PAD:] @ b
    return xn - xn.mean()


def psychological_microtime(events: pd.DataFrame, condition: str, n_scans: int, t_r: float) -> np.ndarray:
    """Boxcar (1 during ``condition`` events, else 0) at microtime; onsets/durations in s."""
    dt = t_r / MICROTIME_BINS
    psy = np.zeros(n_scans * MICROTIME_BINS)
    for _, row in events[events["trial_type"] == condition].iterrows():
        start = int(round(row["onset"] / dt))
        stop = max(start + 1, int(round((row["onset"] + row["duration"]) / dt)))
        psy[max(start, 0):max(min(stop, psy.size), 0)] = 1.0
    return psy


def interaction_regressors(neural: np.ndarray, events: pd.DataFrame, conditions: Sequence[str], t_r: float,
                           slice_time_ref: float = 0.0) -> pd.DataFrame:
    """gPPI interaction terms: HRF * (mean-centred psy_c x neural), one column ``ppi_<c>`` per condition."""
    n_scans = neural.size // MICROTIME_BINS
    cols = {}
    for condition in conditions:
        psy = psychological_microtime(events, condition, n_scans, t_r)
        cols[f"ppi_{condition}"] = convolve_microtime((psy - psy.mean()) * neural, t_r, slice_time_ref)
    return pd.DataFrame(cols)


def gppi_matrix(signals: np.ndarray, roi_names: Sequence[str], task_design: pd.DataFrame, events: pd.DataFrame,
                conditions: Sequence[str], contrast: str, t_r: float, confounds: np.ndarray | None = None,
                seeds: Sequence[str] | None = None, precision: float = 1.0, slice_time_ref: float = 0.0,
                noise_model: str = "ar1") -> tuple[pd.DataFrame, pd.DataFrame]:
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
    confounds : ndarray (n_scans, k), optional
    seeds : sequence of str, optional
        Seed ROIs (default all).

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
    for s, seed in enumerate(names):
        if (seeds is not None and seed not in seeds) or not np.all(np.isfinite(signals[:, s])):
            continue
        neural = deconvolve_seed(signals[:, s], t_r, confounds, precision, slice_time_ref)
        ppi = interaction_regressors(neural, events, conditions, t_r, slice_time_ref)
        design = pd.concat([task_design.reset_index(drop=True), pd.DataFrame({"seed": signals[:, s]}), ppi,
                            pd.DataFrame(nuisance, columns=[f"nuis{i}" for i in range(nuisance.shape[1])])], axis=1)
        design = design.loc[:, ~design.columns.duplicated()]
        vec = np.asarray(expression_to_contrast_vector(_ppi_expression(contrast, conditions), list(design.columns)))
        targets = [t for t in range(n_rois) if t != s and np.all(np.isfinite(signals[:, t]))]
        if not targets:
            continue
        labels, results = run_glm(signals[:, targets], design.to_numpy(float), noise_model=noise_model)
        effect = np.ravel(compute_contrast(labels, results, vec, stat_type="t").effect_size())
        directed.iloc[s, targets] = effect
    symmetric = (directed + directed.T) / 2.0
    return directed, symmetric


def _ppi_expression(contrast: str, conditions: Sequence[str]) -> str:
    """Map ``"fearful - neutral"`` to ``"ppi_fearful - ppi_neutral"`` (whole-word replacement)."""
    import re
    pattern = re.compile(r"\b(" + "|".join(re.escape(c) for c in sorted(conditions, key=len, reverse=True)) + r")\b")
    return pattern.sub(lambda m: f"ppi_{m.group(1)}", contrast)
