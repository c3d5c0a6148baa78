"""Voxel-level synthesis of fMRIPrep-like preprocessed BOLD runs and their confounds.

Everything here works on brain voxels only (a ``(T, V)`` float32 matrix, one run at a
time), so memory is bounded by one run. Noise model, in percent of the voxel baseline:

- voxel noise: AR(1) (phi = 0.3), 1 % SD;
- structured noise: 10 smooth spatial modes (Gaussian random fields, FWHM ~ 12 mm) with
  AR(1) (phi = 0.7) time courses, together ~ 1 % SD -- spatially and temporally
  correlated;
- physiological noise: 3 AR(1) components loading 4x more on CSF than on tissue;
- a global fluctuation, and slow drifts (removed by fMRIPrep's cosine regressors);
- residual head motion: the first-order intensity change ``-grad(B) . d(x, t)`` of the
  baseline image under the rigid displacement ``d`` of the motion parameters (scaled
  by 0.7: residual after realignment), plus a spin-history-like intensity drop of
  2.5 % per mm of framewise displacement at each volume;
- non-steady-state volumes at the start of some runs (T1 saturation).
"""

from __future__ import annotations

import gzip
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

HEAD_RADIUS_MM = 50.0  # Power et al. 2012: rotations -> arc length on a 50 mm sphere
N_STRUCTURED = 10
N_PHYSIO = 3
BASELINE = 8000.0
RESIDUAL_MOTION = 0.7  # fraction of the first-order motion intensity change left after realignment
SPIN_HISTORY_PCT_PER_MM = 2.5  # intensity drop (percent) per mm of framewise displacement


@dataclass
class SubjectSpace:
    """Grid, masks and spatial noise modes of one subject (shared by all runs)."""

    affine: np.ndarray
    shape: tuple
    mask: np.ndarray  # bool (X, Y, Z)
    xyz: np.ndarray  # (V, 3) world coordinates of brain voxels
    roi_index: np.ndarray  # (V,) atlas label (0 = none)
    roi_weight: np.ndarray  # (V,) loading of the ROI signal (mean 1 within an ROI)
    baseline: np.ndarray  # (V,) mean intensity
    motion_loading: np.ndarray  # (6, V) d intensity / d motion parameter
    structured: np.ndarray  # (N_STRUCTURED, V)
    physio: np.ndarray  # (N_PHYSIO, V)
    spin_history: np.ndarray  # (V,)
    drift: np.ndarray  # (2, V)
    csf: np.ndarray  # bool (V,)
    wm: np.ndarray  # bool (V,)


def _smooth_field(shape, sigma_vox, rng, mask):
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_vox)
    vals = field[mask]
    return (vals - vals.mean()) / vals.std()


def make_subject_space(mask_img, atlas_data: np.ndarray, rng: np.random.Generator) -> SubjectSpace:
    """Build the voxel-wise generative structure of one subject on a grid."""
    affine = mask_img.affine
    mask = np.asanyarray(mask_img.dataobj) > 0
    shape = mask.shape
    vox = float(abs(affine[0, 0]))
    ijk = np.argwhere(mask)
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
    roi_index = atlas_data[mask].astype(np.int16)
    roi_weight = np.ones(roi_index.size, dtype=np.float32)
    for k in np.unique(roi_index):
        if k == 0:
            continue
        sel = roi_index == k
        w = rng.uniform(0.7, 1.3, sel.sum())
        roi_weight[sel] = w / w.mean()

    x, y, z = xyz.T
    csf = (np.abs(x) >= 4) & (np.abs(x) <= 16) & (y >= -30) & (y <= 10) & (z >= 8) & (z <= 22) & (roi_index == 0)
    wm = (np.abs(x) >= 20) & (np.abs(x) <= 34) & (y >= -40) & (y <= 20) & (z >= 20) & (z <= 34) & (roi_index == 0)

    # baseline image: brain with soft edges, tissue texture and bright CSF
    sigma_mm = 5.0
    full = ndimage.gaussian_filter(mask.astype(np.float32), 2.0 / vox) * BASELINE
    texture = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_mm / vox)
    texture /= texture[mask].std()
    full *= 1.0 + 0.08 * texture
    csf_full = np.zeros(shape, dtype=np.float32)
    csf_full[tuple(ijk[csf].T)] = 1.0
    full += 3000.0 * ndimage.gaussian_filter(csf_full, 1.0 / vox)
    full[~mask] = np.maximum(full[~mask], 0)
    grads = np.stack(np.gradient(full, vox), axis=0)[:, mask]  # intensity per mm along x, y, z
    baseline = full[mask].astype(np.float32)
    gx, gy, gz = grads
    # dI = -grad . (t + w x r) for translations t (mm) and small rotations w (rad), r = position (mm)
    motion_loading = -np.stack([gx, gy, gz, gz * y - gy * z, gx * z - gz * x, gy * x - gx * y]).astype(np.float32)

    fwhm_mm = 12.0
    sig = fwhm_mm / 2.355 / vox
    structured = np.stack([_smooth_field(shape, sig, rng, mask) for _ in range(N_STRUCTURED)]).astype(np.float32)
    physio = np.stack([0.25 * _smooth_field(shape, sig, rng, mask) + np.where(csf, 1.0, 0.25)
                       for _ in range(N_PHYSIO)]).astype(np.float32)
    spin = np.abs(_smooth_field(shape, sig, rng, mask)).astype(np.float32) + 0.5
    drift = np.stack([_smooth_field(shape, 2 * sig, rng, mask) for _ in range(2)]).astype(np.float32)
    return SubjectSpace(affine, shape, mask, xyz.astype(np.float32), roi_index, roi_weight, baseline,
                        motion_loading, structured, physio, spin, drift, csf, wm)


def ar1(n: int, phi: float, rng: np.random.Generator, size: int = 1) -> np.ndarray:
    """(n, size) unit-variance stationary AR(1) series (float32, computed in place)."""
    x = rng.standard_normal((n, size), dtype=np.float32)
    scale = np.float32(np.sqrt(1.0 - phi ** 2))
    x[1:] *= scale
    for t in range(1, n):
        x[t] += np.float32(phi) * x[t - 1]
    return x


def simulate_motion(n_volumes: int, level_mm: float, rng: np.random.Generator, spikes: bool) -> tuple[np.ndarray, list[int]]:
    """Realignment parameters (T, 6): trans_x/y/z in mm, rot_x/y/z in radians.

    Slow drift + small jitter scaled by ``level_mm``; with ``spikes``, 1-4 sudden head
    movements (0.6-2.5 mm displacement, returning after 1-2 volumes).
    """
    # jitter scaled so that the mean FD is about level_mm (6 parameters, differences of white noise)
    steps = rng.standard_normal((n_volumes, 6)) * level_mm * 0.15
    steps[:, 3:] /= HEAD_RADIUS_MM
    drift = np.cumsum(rng.standard_normal((n_volumes, 6)) * level_mm * 0.04, axis=0)
    drift[:, 3:] /= HEAD_RADIUS_MM
    params = drift + np.cumsum(steps, axis=0) * 0.2 + steps
    spike_vols: list[int] = []
    if spikes and n_volumes > 20:
        n_spikes = int(rng.integers(1, 5))
        candidates = rng.choice(np.arange(8, n_volumes - 4), size=n_spikes, replace=False)
        for t0 in sorted(int(c) for c in candidates):
            size = rng.uniform(0.6, 2.5)
            direction = rng.standard_normal(6)
            direction[3:] /= HEAD_RADIUS_MM
            direction *= size / (np.abs(direction[:3]).sum() + HEAD_RADIUS_MM * np.abs(direction[3:]).sum())
            length = int(rng.integers(1, 3))
            params[t0:t0 + length] += direction
            spike_vols.append(t0)
    params -= params[0]
    return params, spike_vols


def framewise_displacement(motion: np.ndarray) -> np.ndarray:
    """Power et al. 2012 FD (mm): sum |d trans| + 50 mm * sum |d rot|; first volume NaN."""
    d = np.abs(np.diff(motion, axis=0))
    fd = d[:, :3].sum(axis=1) + HEAD_RADIUS_MM * d[:, 3:].sum(axis=1)
    return np.r_[np.nan, fd]


def synthesize_run(space: SubjectSpace, roi_signals: dict[int, np.ndarray], motion: np.ndarray,
                   n_dummy: int, rng: np.random.Generator) -> np.ndarray:
    """Intensity matrix (T, V) float32 of one run.

    ``roi_signals`` maps atlas index -> (T,) signal in percent signal change.
    """
    n = motion.shape[0]
    V = space.baseline.size
    pct = ar1(n, 0.3, rng, V)  # voxel noise, 1 % SD
    pct += (ar1(n, 0.7, rng, N_STRUCTURED) * 0.2) @ space.structured
    pct += (ar1(n, 0.9, rng, N_PHYSIO) * 0.3) @ space.physio
    pct += ar1(n, 0.8, rng, 1) * 0.3
    t = np.linspace(-1, 1, n, dtype=np.float32)[:, None]
    pct += (np.hstack([t, t ** 2 - 1 / 3]) * rng.uniform(0.2, 0.8, 2).astype(np.float32)) @ space.drift
    for k, sig in roi_signals.items():
        sel = space.roi_index == k
        if sel.any():
            pct[:, sel] += np.asarray(sig, dtype=np.float32)[:, None] * space.roi_weight[sel][None, :]
    fd = np.nan_to_num(framewise_displacement(motion))
    pct -= (SPIN_HISTORY_PCT_PER_MM * fd.astype(np.float32))[:, None] * space.spin_history[None, :]
    data = space.baseline[None, :] * (1.0 + pct / 100.0)
    del pct
    centred = (motion - motion.mean(axis=0)).astype(np.float32)
    data += RESIDUAL_MOTION * centred @ space.motion_loading
    for k in range(n_dummy):
        data[k] *= 1.0 + 0.25 / (k + 1)
    return data


def cosine_basis(n_volumes: int, tr: float, period_cut: float = 128.0) -> np.ndarray:
    """fMRIPrep/nilearn DCT high-pass basis without the constant (``cosine_XX``)."""
    order = int(np.floor(2 * n_volumes * tr / period_cut))
    times = np.arange(n_volumes)
    cols = [np.sqrt(2.0 / n_volumes) * np.cos(np.pi / n_volumes * (times + 0.5) * k) for k in range(1, order)]
    return np.stack(cols, axis=1) if cols else np.zeros((n_volumes, 0))


def _expansions(name: str, x: np.ndarray) -> dict[str, np.ndarray]:
    d = np.r_[np.nan, np.diff(x)]
    return {name: x, f"{name}_derivative1": d, f"{name}_power2": x ** 2, f"{name}_derivative1_power2": d ** 2}


def confounds_table(space: SubjectSpace, data: np.ndarray, motion: np.ndarray, tr: float,
                    n_dummy: int) -> tuple[pd.DataFrame, dict]:
    """fMRIPrep-style ``desc-confounds_timeseries`` table and its JSON metadata."""
    n = data.shape[0]
    cols: dict[str, np.ndarray] = {}
    gs = data.mean(axis=1)
    csf = data[:, space.csf].mean(axis=1)
    wm = data[:, space.wm].mean(axis=1)
    cols.update(_expansions("global_signal", gs))
    cols.update(_expansions("csf", csf))
    cols.update(_expansions("white_matter", wm))
    cols["csf_wm"] = data[:, space.csf | space.wm].mean(axis=1)

    # DVARS (Power 2012) and standardised DVARS (Nichols 2013, as nipype ComputeDVARS)
    keep = np.arange(n) >= n_dummy
    # volume by volume: no (T, V) temporaries (memory stays at one run)
    dvars = np.array([np.sqrt(np.mean((data[t] - data[t - 1]) ** 2)) for t in range(1, n)])
    kept = np.flatnonzero(keep)
    mean = data[kept].mean(axis=0)
    var = np.zeros(data.shape[1])
    lag = np.zeros(data.shape[1])
    for j, t in enumerate(kept):
        centred_t = data[t] - mean
        var += centred_t ** 2
        if j:
            lag += centred_t * previous
        previous = centred_t
    var = np.maximum(var / len(kept), 1e-6)
    lag1 = lag / len(kept) / var
    expected = np.sqrt(np.mean(var * 2 * (1 - np.clip(lag1, -1, 1))))
    cols["std_dvars"] = np.r_[np.nan, dvars / expected]
    cols["dvars"] = np.r_[np.nan, dvars]
    fd = framewise_displacement(motion)
    cols["framewise_displacement"] = fd

    # anatomical CompCor on WM + CSF voxels, after removing the cosine basis (as fMRIPrep)
    cos = cosine_basis(n, tr)
    y = data[:, space.csf | space.wm].astype(np.float64)
    y = y[keep]
    basis = np.hstack([np.ones((keep.sum(), 1)), cos[keep]]) if cos.size else np.ones((keep.sum(), 1))
    y -= basis @ np.linalg.lstsq(basis, y, rcond=None)[0]
    y /= np.maximum(y.std(axis=0), 1e-6)
    # left singular vectors from the (T x T) Gram matrix: cheaper than an SVD of (T x voxels)
    evals, evecs = np.linalg.eigh(y @ y.T)
    order = np.argsort(evals)[::-1]
    evals = np.clip(evals[order], 0, None)
    u = evecs[:, order]
    u *= np.where(u[np.abs(u).argmax(axis=0), np.arange(u.shape[1])] < 0, -1.0, 1.0)  # deterministic sign
    s = np.sqrt(evals)
    var = evals / evals.sum()
    cum = np.cumsum(var)
    n_keep = max(1, int(np.searchsorted(cum, 0.5) + 1))
    meta: dict = {}
    for k in range(n_keep):
        comp = np.zeros(n)
        comp[keep] = u[:, k]
        cols[f"a_comp_cor_{k:02d}"] = comp
    for k in range(n_keep):  # nilearn's load_confounds reads every combined component listed here
        meta[f"a_comp_cor_{k:02d}"] = {
            "CumulativeVarianceExplained": float(cum[k]),
            "Mask": "combined",
            "Method": "aCompCor",
            "Retained": bool(k < n_keep),
            "SingularValue": float(s[k]),
            "VarianceExplained": float(var[k]),
        }
    for k in range(cos.shape[1]):
        cols[f"cosine_{k:02d}"] = cos[:, k]
    for k in range(n_dummy):
        col = np.zeros(n)
        col[k] = 1.0
        cols[f"non_steady_state_outlier_{k:02d}"] = col
    names = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]
    for j, name in enumerate(names):
        cols.update(_expansions(name, motion[:, j]))
    # fMRIPrep: motion outliers where FD > 0.5 mm or std DVARS > 1.5
    outliers = np.where((np.nan_to_num(fd) > 0.5) | (np.nan_to_num(cols["std_dvars"]) > 1.5))[0]
    for k, t in enumerate(outliers):
        col = np.zeros(n)
        col[t] = 1.0
        cols[f"motion_outlier_{k:02d}"] = col
    table = pd.DataFrame(cols)
    # fMRIPrep's confounds JSON describes the CompCor and cosine columns
    for k in range(cos.shape[1]):
        meta[f"cosine_{k:02d}"] = {"Method": "Discrete cosine basis", "Cutoff": 128.0}
    return table, meta


def nifti_bytes_gz(header: nib.Nifti1Header, volumes, compresslevel: int = 1) -> bytes:
    """Deterministic .nii.gz bytes (gzip mtime 0) streaming volumes in NIfTI order."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=compresslevel) as gz:
        hdr = header.copy()
        hdr.set_data_offset(352)
        gz.write(hdr.binaryblock)
        gz.write(b"\x00" * (352 - len(hdr.binaryblock)))
        for vol in volumes:
            gz.write(np.asarray(vol).tobytes(order="F"))
    return buf.getvalue()


def write_nifti_gz(path: Path, img_or_header, volumes=None, compresslevel: int = 1) -> Path:
    """Write a .nii.gz deterministically and atomically.

    ``img_or_header`` is a Nifti1Image (3D/4D, data taken from it) or a header with
    ``volumes`` an iterable of 3D arrays of the header's dtype.
    """
    from ptsd_bidsapp.bids.outputs import atomic_write_bytes

    if isinstance(img_or_header, nib.Nifti1Image):
        img = img_or_header
        data = np.asanyarray(img.dataobj).astype(img.get_data_dtype())
        header = img.header.copy()
        header.set_data_shape(data.shape)
        header.set_data_dtype(data.dtype)
        if data.ndim == 4:
            volumes = (data[..., k] for k in range(data.shape[3]))
        else:
            volumes = [data]
    else:
        header = img_or_header
    return atomic_write_bytes(path, nifti_bytes_gz(header, volumes, compresslevel))


def bold_header(affine: np.ndarray, shape: tuple, n_volumes: int, tr: float) -> nib.Nifti1Header:
    """int16 4D header (scl_slope 1) on ``affine`` with TR in pixdim[4] (seconds)."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(tuple(shape) + (n_volumes,))
    hdr.set_data_dtype(np.int16)
    hdr.set_qform(affine, code=4)
    hdr.set_sform(affine, code=4)
    zooms = tuple(float(abs(affine[i, i])) for i in range(3))
    hdr.set_zooms(zooms + (float(tr),))
    hdr.set_xyzt_units("mm", "sec")
    hdr["scl_slope"] = 1.0
    hdr["scl_inter"] = 0.0
    return hdr


def volumes_from_matrix(data: np.ndarray, mask: np.ndarray):
    """Yield int16 full volumes from a (T, V) matrix (zero outside the mask)."""
    vol = np.zeros(mask.shape, dtype=np.int16)
    for t in range(data.shape[0]):
        vol[mask] = np.clip(np.rint(data[t]), -32768, 32767).astype(np.int16)
        yield vol
