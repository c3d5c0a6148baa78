"""Task-free functional connectivity: denoise, censor, band-pass, Pearson r, Fisher z."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from nilearn import signal


def denoise_signals(signals: np.ndarray, t_r: float, confounds: np.ndarray | None = None,
                    sample_mask: np.ndarray | None = None, low_pass: float | None = 0.08,
                    high_pass: float | None = 0.01) -> np.ndarray:
    """nilearn ``signal.clean`` of ROI signals (t, n): confound regression, censoring, band-pass (Hz).

    Returns the kept volumes only (``len(sample_mask)`` rows when censoring).
    """
    return signal.clean(np.asarray(signals, float), confounds=confounds, sample_mask=sample_mask, t_r=t_r,
                        low_pass=low_pass, high_pass=high_pass, detrend=True, standardize=None,
                        filter="butterworth")


def fisher_z_connectivity(clean_signals: np.ndarray, roi_names: Sequence[str]) -> pd.DataFrame:
    """Pearson correlation (empirical, no shrinkage) between ROI signals, Fisher z = arctanh(r).

    ROIs with NaN or constant signals give NaN rows/columns; the diagonal is NaN.
    """
    x = np.asarray(clean_signals, float)
    names = list(roi_names)
    out = np.full((len(names), len(names)), np.nan)
    ok = np.all(np.isfinite(x), axis=0) & (np.nanstd(x, axis=0) > 0)
    if ok.sum() >= 2:
        r = np.corrcoef(x[:, ok], rowvar=False)
        np.fill_diagonal(r, np.nan)
        out[np.ix_(ok, ok)] = np.arctanh(np.clip(r, -1 + 1e-12, 1 - 1e-12))
    return pd.DataFrame(out, index=names, columns=names)
