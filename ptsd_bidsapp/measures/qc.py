"""Per-run motion QC from fMRIPrep's ``framewise_displacement`` column."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from ptsd_bidsapp.measures.errors import MeasureError


def motion_qc(confounds_raw: pd.DataFrame, motion_qc_config: Mapping[str, Any], source: str = "confounds") -> dict:
    """Mean FD, percent of volumes above threshold and the exclusion decision of one run.

    Parameters
    ----------
    confounds_raw : DataFrame
        The full fMRIPrep confounds table (not the load_confounds selection); needs
        ``framewise_displacement`` (mm; first volume n/a, counted as 0).
    motion_qc_config : mapping
        Config ``motion_qc``: ``fd_threshold`` (mm), ``max_mean_fd`` (mm), ``max_percent_censored`` (%).
    source : str
        File name for error messages.

    Returns
    -------
    dict
        ``mean_fd`` (mm), ``max_fd`` (mm), ``n_volumes``, ``n_censored``, ``percent_censored`` (%),
        ``censored`` (bool per volume), ``excluded`` (bool), ``reasons`` (list of str).
    """
    if "framewise_displacement" not in confounds_raw.columns:
        raise MeasureError(f"{source}: column 'framewise_displacement' missing; motion QC impossible")
    fd = pd.to_numeric(confounds_raw["framewise_displacement"], errors="coerce").to_numpy(float)
    fd = np.nan_to_num(fd, nan=0.0)  # fMRIPrep leaves the first volume n/a
    threshold = float(motion_qc_config["fd_threshold"])
    censored = fd > threshold
    mean_fd = float(fd.mean()) if fd.size else float("nan")
    percent = 100.0 * censored.sum() / max(fd.size, 1)
    reasons = []
    if mean_fd > float(motion_qc_config["max_mean_fd"]):
        reasons.append(f"mean FD {mean_fd:.3f} mm > {motion_qc_config['max_mean_fd']} mm")
    if percent > float(motion_qc_config["max_percent_censored"]):
        reasons.append(f"{percent:.1f}% volumes with FD > {threshold} mm (limit {motion_qc_config['max_percent_censored']}%)")
    return {"mean_fd": mean_fd, "max_fd": float(fd.max()) if fd.size else float("nan"),
            "n_volumes": int(fd.size), "n_censored": int(censored.sum()), "percent_censored": float(percent),
            "censored": censored, "excluded": bool(reasons), "reasons": reasons}


#: Volumes needed by a band-passed (task-free) run: nilearn's Butterworth band-pass
#: (order 5, ``scipy.signal.filtfilt`` with padlen 3 * 11 = 33) needs more than 33 samples.
MIN_BANDPASS_VOLUMES = 34


def check_run_length(n_volumes: int, n_regressors: int, band_pass: bool, source: str) -> None:
    """Refuse a run too short to estimate its measures, with the reason in words.

    Parameters
    ----------
    n_volumes : int
        Volumes of the run.
    n_regressors : int
        Columns of the run's regression model (confounds + conditions + intercept).
    band_pass : bool
        The run is band-pass filtered (task-free connectivity).
    source : str
        The BOLD file, for the message.

    Raises
    ------
    MeasureError
        Naming the file, the number of volumes and the minimum.

    Notes
    -----
    Both minimums apply to the whole run: nilearn band-passes the interpolated whole series,
    and a run left with too few volumes by censoring is a motion-QC matter (its connectivity
    and GLM estimates become ``n/a`` "not estimable", the run is flagged), not a broken input.
    """
    if band_pass and n_volumes < MIN_BANDPASS_VOLUMES:  # the filter runs on the whole (interpolated) series
        raise MeasureError(f"{source} has only {n_volumes} volume(s): too short to analyse (the band-pass filter of "
                           f"task-free connectivity needs at least {MIN_BANDPASS_VOLUMES})")
    needed = n_regressors + 2  # at least two residual degrees of freedom
    if n_volumes < needed:
        raise MeasureError(f"{source} has only {n_volumes} volume(s): too short to analyse "
                           f"({n_regressors} regressors (confounds, conditions, intercept) need at least {needed})")


def conditions_outside_scan(events: pd.DataFrame, n_volumes: int, tr: float) -> dict[str, str]:
    """Conditions none of whose events overlap the scan, each with the reason in words.

    Parameters
    ----------
    events : DataFrame
        ``onset``, ``duration`` (s) and ``trial_type`` of the configured conditions.
    n_volumes : int
        Volumes of the run.
    tr : float
        Repetition time (s); the scan covers [0, n_volumes * tr) s.

    Returns
    -------
    dict
        ``{condition: reason}``; empty when every condition has an event inside the scan.
    """
    end = n_volumes * tr
    out = {}
    for condition, rows in events.groupby("trial_type", sort=True):
        onset = rows["onset"].to_numpy(float)
        stop = onset + np.nan_to_num(rows["duration"].to_numpy(float), nan=0.0)
        inside = (stop > 0.0) & (onset < end)
        if not inside.any():
            out[str(condition)] = (f"all {len(rows)} '{condition}' event(s) lie outside the scan (0-{end:g} s; "
                                   f"onsets {onset.min():g}-{onset.max():g} s)")
    return out


#: Largest difference (mm) between the affines of the BOLD and its brain mask still taken as one
#: grid (rounding in the NIfTI header); fMRIPrep writes both on the same grid.
GRID_TOLERANCE_MM = 0.01


def check_same_grid(mask_img, bold_img, mask_name: str, bold_name: str) -> None:
    """Refuse a brain mask that is not on the BOLD grid (shape or affine differ).

    The mask is applied voxel for voxel, so a mask on another grid (another resolution, a
    shifted origin) would silently select the wrong voxels; it is not resampled, because
    fMRIPrep writes the mask on the BOLD grid and a mismatch means the files do not belong
    together.

    Raises
    ------
    MeasureError
        Naming both files, the shapes and the largest affine difference (mm).
    """
    shape_m, shape_b = tuple(mask_img.shape[:3]), tuple(bold_img.shape[:3])
    if shape_m != shape_b:
        raise MeasureError(f"brain mask {mask_name} grid {shape_m} differs from BOLD {bold_name} {shape_b}: "
                           "the mask must be on the BOLD grid (as fMRIPrep writes it)")
    diff = float(np.max(np.abs(np.asarray(mask_img.affine, float) - np.asarray(bold_img.affine, float))))
    if not diff <= GRID_TOLERANCE_MM:
        raise MeasureError(f"brain mask {mask_name} is on another grid than BOLD {bold_name}: same shape "
                           f"{shape_b} but the affines differ by up to {diff:.3g} mm (tolerance "
                           f"{GRID_TOLERANCE_MM} mm); the mask is applied voxel for voxel, so it must be on the "
                           "BOLD grid (as fMRIPrep writes it): check that the two files belong together")
