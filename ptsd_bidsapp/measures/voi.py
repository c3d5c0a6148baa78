"""VOIs for DCM: first eigenvariate per ROI, adjusted for confounds (SPM ``spm_regions.m``).

SPM12 spm_regions: y = voxel data (t x v) adjusted (confounds removed) and mean-corrected;
``[u s v] = svd(y*y')`` (or ``y'*y`` when v < t), ``Y = u(:,1)`` (first left singular vector),
voxel loadings ``v``, sign chosen so that ``sum(v) > 0`` (positive loading on the mean), and
the eigenvariate scaled as ``u1 * sqrt(s1 / n_voxels)`` (s1 the first eigenvalue of y y') so its
scale is that of the data (per-voxel units).
"""

from __future__ import annotations

import numpy as np

from ptsd_bidsapp.measures.errors import MeasureError


def first_eigenvariate(voxels: np.ndarray, confounds: np.ndarray | None = None) -> np.ndarray:
    """First eigenvariate of an ROI's voxel time series, SPM convention.

    Parameters
    ----------
    voxels : ndarray (t, n_voxels)
        ROI voxel signals; voxels with any non-finite value are dropped.
    confounds : ndarray (t, k), optional
        Regressed out (with an intercept) before the SVD.

    Returns
    -------
    ndarray (t,)
        ``u1 * sqrt(s1 / n_voxels)`` with ``s1`` the first eigenvalue of ``y y'``, signed so that
        the voxel loadings sum positive (spm_regions: ``d = sign(sum(v)); u = u*d``).
    """
    y = np.asarray(voxels, float)
    y = y[:, np.all(np.isfinite(y), axis=0)]
    if y.shape[1] == 0:
        raise MeasureError("ROI has no finite voxel: no eigenvariate")
    t = y.shape[0]
    x0 = np.ones((t, 1)) if confounds is None else np.column_stack([np.ones(t), confounds])
    y = y - x0 @ np.linalg.lstsq(x0, y, rcond=None)[0]
    # As spm_regions: eigen-decompose the smaller Gram matrix (y y' or y' y) rather than an SVD
    # of y (LAPACK gesdd can fail to converge on some real ROI blocks; eigh does not).
    if t <= y.shape[1]:
        values, vectors = np.linalg.eigh(y @ y.T)
        s1, u1 = values[-1], vectors[:, -1]
        loadings = y.T @ u1
    else:
        values, vectors = np.linalg.eigh(y.T @ y)
        s1, loadings = values[-1], vectors[:, -1]
        u1 = y @ loadings / np.sqrt(max(s1, np.finfo(float).tiny))
    sign = np.sign(loadings.sum()) or 1.0
    return u1 * sign * np.sqrt(max(s1, 0.0) / y.shape[1])
