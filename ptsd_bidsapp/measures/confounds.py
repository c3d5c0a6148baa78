"""Confounds through :func:`nilearn.interfaces.fmriprep.load_confounds` only.

nilearn locates the confounds TSV next to the BOLD file from its fMRIPrep name and
accepts both ``_desc-confounds_timeseries.tsv`` and the pre-20.2 name
``_desc-confounds_regressors.tsv`` (``load_confounds_utils._get_file_name``), so no
extra handling is needed here. fMRIPrep's cosine regressors (strategy ``high_pass``)
carry the high-pass filter of task GLMs; no second filter is applied.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
from nilearn.interfaces.fmriprep import load_confounds

from ptsd_bidsapp.measures.errors import MeasureError

#: keys of a config ``denoising`` entry forwarded to load_confounds
_LOAD_CONFOUNDS_KEYS = ("strategy", "motion", "wm_csf", "scrub", "fd_threshold", "std_dvars_threshold",
                        "global_signal", "compcor", "n_compcor", "ica_aroma", "demean")


def find_confounds_file(bold_path: str | Path) -> Path | None:
    """Return the fMRIPrep confounds TSV beside ``bold_path`` (new or old naming), or None."""
    bold_path = Path(bold_path)
    stem = bold_path.name.split("_space-")[0].split("_desc-")[0]
    for suffix in ("_desc-confounds_timeseries.tsv", "_desc-confounds_regressors.tsv"):
        candidate = bold_path.parent / (stem + suffix)
        if candidate.is_file():
            return candidate
    return None


#: fMRIPrep's high-pass cutoff (s): its ``cosine_XX`` columns are the DCT basis of this period, so
#: a run shorter than it has none (nilearn ``_cosine_drift``: floor(2 n TR / 128) - 1 columns).
FMRIPREP_HIGH_PASS_PERIOD_S = 128.0


def load_run_confounds(bold_path: str | Path, denoising: Mapping[str, Any],
                       tr: float | None = None) -> tuple[pd.DataFrame, np.ndarray | None]:
    """Load the confounds of one fMRIPrep BOLD run with a config denoising strategy.

    Parameters
    ----------
    bold_path : str or Path
        Preprocessed BOLD (``..._desc-preproc_bold.nii.gz``); the confounds TSV must be
        in the same folder with fMRIPrep naming.
    denoising : mapping
        One entry of the config ``denoising`` section (``strategy``, ``motion``, ``wm_csf``,
        ``scrub``, ``fd_threshold`` in mm, ``std_dvars_threshold``, ...). Keys that are not
        load_confounds arguments (``low_pass``, ``high_pass`` in Hz) are ignored here.
        ``std_dvars_threshold: null`` disables DVARS censoring.
    tr : float, optional
        Repetition time (s). A run shorter than fMRIPrep's 128 s high-pass period has no
        ``cosine_XX`` column (none is needed: only the mean is below the cutoff); without ``tr``
        the cosines are always required by strategy ``high_pass``.

    Returns
    -------
    confounds : DataFrame
        Volumes x regressors (demeaned by nilearn).
    sample_mask : ndarray of int or None
        Indices of volumes kept (None when no volume is censored).

    Raises
    ------
    MeasureError
        Confounds file absent, a column the strategy needs is missing, or a selected column has
        n/a values beyond the first volume (names file, columns and volumes).
    """
    kwargs = {k: denoising[k] for k in _LOAD_CONFOUNDS_KEYS if k in denoising}
    kwargs["strategy"] = tuple(kwargs.get("strategy", ("motion", "high_pass", "wm_csf")))
    if kwargs.get("std_dvars_threshold") is None:
        kwargs["std_dvars_threshold"] = np.inf  # null in YAML: no DVARS censoring
    if kwargs.get("fd_threshold") is None:
        kwargs["fd_threshold"] = np.inf
    confounds_file = find_confounds_file(bold_path)
    try:
        confounds, sample_mask = load_confounds(str(bold_path), **kwargs)
    except KeyError as err:  # some nilearn selectors index the table directly
        raise MeasureError(f"confounds file {confounds_file} (for {bold_path}) lacks column(s) "
                           f"needed by strategy {list(kwargs['strategy'])}: {err.args[0]}") from err
    except ValueError as err:
        text = str(err)
        where = confounds_file if confounds_file else f"(no confounds TSV found beside {bold_path})"
        if "missing" in text.lower() or "not found" in text.lower() or "Could not find" in text:
            raise MeasureError(f"confounds for {bold_path}: {where}: {text}") from err
        raise MeasureError(f"load_confounds failed for {bold_path} (confounds file {where}): {text}") from err
    if confounds.shape[1] and confounds.isna().to_numpy().any():
        # nilearn fills only the first row of derivative columns; n/a inside a column would
        # reach the regression as NaN (numpy: "SVD did not converge")
        bad = confounds.columns[confounds.isna().any()].tolist()
        rows = sorted(set(np.flatnonzero(confounds[bad].isna().any(axis=1).to_numpy()).tolist()))
        raise MeasureError(f"confounds file {confounds_file} (for {bold_path}) has n/a values in column(s) "
                           f"{', '.join(bad)} at volume(s) {', '.join(map(str, rows[:10]))}"
                           f"{' ...' if len(rows) > 10 else ''} (0-based): fMRIPrep writes n/a only in the first "
                           "row of derivative columns; re-run fMRIPrep or fix the file")
    expect_cosines = tr is None or len(confounds) * float(tr) >= FMRIPREP_HIGH_PASS_PERIOD_S
    if ("high_pass" in kwargs["strategy"] and expect_cosines
            and not any(c.startswith("cosine") for c in confounds.columns)):
        # nilearn silently returns no cosines; the GLM has no other high-pass (drift_model null)
        raise MeasureError(f"confounds file {confounds_file} (for {bold_path}) has no 'cosine*' column "
                           "needed by strategy 'high_pass'")
    return confounds, sample_mask
