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
