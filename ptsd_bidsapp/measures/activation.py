"""ROI mean signals and the ROI-level first-level GLM (nilearn design, AR(1))."""

from __future__ import annotations

import warnings
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from nilearn.glm.first_level import make_first_level_design_matrix, run_glm

from ptsd_bidsapp.measures.errors import MeasureError


def roi_mean_signals(data: np.ndarray, labels: np.ndarray, label_ids: Sequence[int], source: str = "BOLD"
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Mean time series per ROI, from a 4D array or from the gathered ROI voxels.

    Parameters
    ----------
    data : ndarray (x, y, z, t) or (n_voxels, t)
        BOLD on the same grid as ``labels`` (resample the dseg to the BOLD grid first,
        nearest neighbour), or the voxels read by
        :func:`ptsd_bidsapp.measures.bold_stream.read_bold_voxels` (one row per voxel).
    labels : ndarray of int, shape (x, y, z) or (n_voxels,)
        Atlas index of each voxel (0 = none).
    label_ids : sequence of int
        Atlas indices in output order.

    Returns
    -------
    signals : ndarray (t, n_rois), float64
        ROI mean over finite voxels; column of NaN for an ROI with no finite voxel.
    n_voxels : ndarray of int
        Finite voxels used per ROI.
    """
    if data.ndim != labels.ndim + 1 or labels.shape != data.shape[:labels.ndim]:
        raise MeasureError(f"{source}: label grid {labels.shape} differs from BOLD grid {data.shape[:-1]}")
    signals = np.full((data.shape[-1], len(label_ids)), np.nan)
    n_voxels = np.zeros(len(label_ids), int)
    for j, index in enumerate(label_ids):
        roi = data[labels == index]  # (n_vox, t): copy of the ROI only
        finite = np.all(np.isfinite(roi), axis=1)
        if (~finite).any():
            warnings.warn(f"{source}: ROI {index}: {int((~finite).sum())} voxels with NaN/inf dropped")
        n_voxels[j] = int(finite.sum())
        if n_voxels[j]:
            signals[:, j] = roi[finite].mean(axis=0, dtype=np.float64)
        else:
            warnings.warn(f"{source}: ROI {index} has no usable voxel; its signal is n/a")
    return signals, n_voxels


def percent_signal_change(signals: np.ndarray) -> np.ndarray:
    """Convert signals (t, n) to percent signal change about each column's mean: 100 (y - m) / m."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN (n/a) ROI column
        mean = np.nanmean(signals, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 100.0 * (signals - mean) / mean
    out[:, ~(np.abs(mean) > 0)] = np.nan
    return out


def task_design_matrix(n_volumes: int, t_r: float, events: pd.DataFrame, confounds: pd.DataFrame | None = None,
                       slice_time_ref: float = 0.0, hrf_model: str = "spm", drift_model: str | None = None
                       ) -> pd.DataFrame:
    """nilearn first-level design matrix for ROI GLMs.

    Parameters
    ----------
    n_volumes : int
    t_r : float
        Repetition time (s).
    events : DataFrame
        BIDS events (onset, duration in s; trial_type).
    confounds : DataFrame, optional
        Added as regressors (e.g. from :func:`load_run_confounds`, which include fMRIPrep cosines).
    slice_time_ref : float
        Fraction of TR of the reference slice, as nilearn's FirstLevelModel (StartTime / TR
        when fMRIPrep slice-timing corrected); frame times are ``(arange(n) + slice_time_ref) * t_r``.
    hrf_model, drift_model : str
        ``'spm'`` canonical HRF; no drift by default (fMRIPrep cosines carry the high-pass).
    """
    frame_times = (np.arange(n_volumes) + slice_time_ref) * t_r
    add = None if confounds is None else confounds.to_numpy(float)
    names = None if confounds is None else list(confounds.columns)
    return make_first_level_design_matrix(frame_times, events=events, hrf_model=hrf_model, drift_model=drift_model,
                                          add_regs=add, add_reg_names=names)


def _contrast_vector(expression: str, columns: Sequence[str]) -> np.ndarray:
    """Vector for a contrast string like ``"fearful - neutral"`` over design columns."""
    from nilearn.glm.contrasts import expression_to_contrast_vector
    return np.asarray(expression_to_contrast_vector(expression, list(columns)), float)


def fit_roi_glm(signals_psc: np.ndarray, design: pd.DataFrame, contrasts: Mapping[str, str],
                roi_names: Sequence[str], noise_model: str = "ar1", sample_mask: np.ndarray | None = None
                ) -> dict[str, pd.DataFrame]:
    """First-level GLM on ROI signals with AR(1) noise; one table per contrast.

    Parameters
    ----------
    signals_psc : ndarray (t, n_rois)
        ROI signals in percent signal change (columns of NaN are reported as n/a).
    design : DataFrame (t, p)
        From :func:`task_design_matrix`.
    contrasts : mapping name -> expression
        e.g. ``{"fearfulMinusNeutral": "fearful - neutral"}``.
    roi_names : sequence of str
    sample_mask : ndarray of int, optional
        Volumes kept (censoring).

    Returns
    -------
    dict name -> DataFrame
        Columns ``roi, effect_size`` (% signal change per unit regressor), ``stderr``, ``t``.
    """
    from nilearn.glm.contrasts import compute_contrast
    y, x = np.asarray(signals_psc, float), design.to_numpy(float)
    if sample_mask is not None:
        y, x = y[sample_mask], x[sample_mask]
    ok = np.all(np.isfinite(y), axis=0)
    tables = {}
    labels, results = (run_glm(y[:, ok], x, noise_model=noise_model) if ok.any() else (None, None))
    for name, expression in contrasts.items():
        vec = _contrast_vector(expression, design.columns)
        out = pd.DataFrame({"roi": list(roi_names), "effect_size": np.nan, "stderr": np.nan, "t": np.nan})
        if ok.any():
            con = compute_contrast(labels, results, vec, stat_type="t")
            out.loc[ok, "effect_size"] = np.ravel(con.effect_size())
            out.loc[ok, "stderr"] = np.sqrt(np.ravel(con.effect_variance()))
            out.loc[ok, "t"] = np.ravel(con.stat())
        tables[name] = out
    return tables
