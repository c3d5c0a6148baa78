"""Read only the voxels the measures need from a 4D BOLD, decompressing the file once.

Every participant measure works on ROI voxels (ROI means, eigenvariates); none needs the rest
of the brain. Materialising the whole float32 4D series (865 MB for one 2 mm run of 200
volumes) costs memory and several passes over it; instead the gzip stream is read forward
once, volume by volume (NIfTI stores each volume contiguously, x fastest), and each volume's
wanted voxels are gathered by their flat index into a small ``(n_voxels, n_volumes)`` array.

nibabel does the header work (data offset, on-disk dtype and byte order, shape, the
``scl_slope``/``scl_inter`` scaling through :func:`nibabel.volumeutils.apply_read_scaling`, the
same function its array proxy uses), so the gathered values equal, element by element, those
of ``np.asarray(nib.load(path).dataobj, dtype=np.float32)`` at the same voxels. The gzip
stream is decompressed by ISA-L (``isal.igzip``, PyPI wheels; about 2x zlib) when it is
installed, else by the standard library's :mod:`gzip` (zlib); both give the same bytes.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.volumeutils import apply_read_scaling

from ptsd_bidsapp.measures.errors import MeasureError

try:  # optional accelerator: same bytes as zlib, faster inflate
    from isal import igzip as _fast_gzip
except ImportError:  # pragma: no cover - isal has wheels for the platforms the app runs on
    _fast_gzip = None

#: decompressed bytes read per call in the default mode (a whole number of volumes, at least one). On a 2 mm
#: run (4.3 MB volumes) 16 MB reads cost the CPU time of one-volume reads and 64 MB reads 1.7x more (cache
#: misses, larger copies); ``low_mem`` reads one volume whatever its size
BLOCK_BYTES = 16 * 2**20


def gzip_module(accelerate: bool = True):
    """The gzip implementation used for ``.nii.gz``: ``isal.igzip`` when installed and ``accelerate``, else gzip."""
    return _fast_gzip if (accelerate and _fast_gzip is not None) else gzip


def volumes_per_block(volume_bytes: int, n_volumes: int, low_mem: bool = False) -> int:
    """Volumes decompressed per read: one with ``low_mem`` (bounded memory), else up to :data:`BLOCK_BYTES`.

    Parameters
    ----------
    volume_bytes : int
        Bytes of one volume on disk.
    n_volumes : int
    low_mem : bool

    Returns
    -------
    int
        Between 1 and ``n_volumes``.
    """
    if low_mem:
        return 1
    return int(max(1, min(n_volumes, BLOCK_BYTES // max(volume_bytes, 1))))


def _scale_factors(proxy) -> tuple[np.ndarray, np.ndarray]:
    """``scl_slope``, ``scl_inter`` as nibabel's array proxy prepares them for a read without a target dtype
    (the intercept takes the slope's dtype where that cast is safe), so the scaling is the same."""
    slope, inter = np.asanyarray(proxy.slope), np.asanyarray(proxy.inter)
    if np.can_cast(inter, slope.dtype):
        inter = inter.astype(slope.dtype)
    return slope, inter


def _open_stream(path: Path, accelerate: bool):
    if path.name.endswith(".gz"):
        return gzip_module(accelerate).open(str(path), "rb")
    return open(path, "rb")


def read_bold_voxels(bold_path: str | Path, voxels: np.ndarray, low_mem: bool = False,
                     accelerate: bool = True, mean_image: bool = False):
    """Time series of selected voxels of a 4D BOLD, from one forward pass over the file.

    Parameters
    ----------
    bold_path : path
        4D NIfTI-1/2 (``.nii`` or ``.nii.gz``).
    voxels : ndarray of bool, shape (x, y, z)
        The voxels to keep (e.g. every ROI voxel inside the brain mask).
    low_mem : bool
        Decompress one volume at a time (extra memory: one volume) instead of blocks of up to
        :data:`BLOCK_BYTES`.
    accelerate : bool
        Use ISA-L for gzip when installed (same bytes).
    mean_image : bool
        Also return the temporal mean of every voxel (the whole grid, e.g. a report underlay),
        accumulated in float64 from the same pass.

    Returns
    -------
    ndarray, float32, shape (n_selected, t)
        Rows in C order of the selected voxels (the order of ``data[voxels]`` for an in-memory
        ``(x, y, z, t)`` array), values scaled as nibabel scales them, then cast to float32.
    ndarray, float32, shape (x, y, z)
        Only with ``mean_image``: the temporal mean of the scaled values.

    Raises
    ------
    MeasureError
        Not 4D, grid differs from ``voxels``, unreadable or truncated file, or every value zero.
    """
    path = Path(bold_path)
    try:
        img = nib.load(str(path))
    except Exception as err:  # bad header, not NIfTI
        raise MeasureError(f"cannot read BOLD {path}: {err}") from err
    proxy = img.dataobj
    shape = tuple(int(s) for s in proxy.shape)
    if len(shape) != 4:
        raise MeasureError(f"BOLD {path} is not 4D (shape {shape})")
    voxels = np.asarray(voxels, bool)
    if voxels.shape != shape[:3]:
        raise MeasureError(f"BOLD {path}: voxel selection grid {voxels.shape} differs from the BOLD grid {shape[:3]}")
    if getattr(proxy, "order", "F") != "F":
        raise MeasureError(f"BOLD {path}: unsupported array order {proxy.order!r}")
    dtype = np.dtype(proxy.dtype)
    slope, inter = _scale_factors(proxy)
    scaled = not (slope == 1 and inter == 0)
    # NIfTI volumes are Fortran-ordered; the rows follow np.nonzero's C order of the selection
    flat = np.ravel_multi_index(np.nonzero(voxels), shape[:3], order="F")
    n_vox, n_t = int(np.prod(shape[:3])), shape[3]
    volume_bytes = n_vox * dtype.itemsize
    per_block = volumes_per_block(volume_bytes, n_t, low_mem)
    raw = np.empty((flat.size, n_t), dtype=dtype)
    buffer = bytearray(per_block * volume_bytes)
    view = memoryview(buffer)
    any_nonzero = False
    total = np.zeros(n_vox) if mean_image else None
    try:
        with _open_stream(path, accelerate) as stream:
            stream.seek(int(proxy.offset))
            t = 0
            while t < n_t:
                count = min(per_block, n_t - t)
                want = count * volume_bytes
                got = 0
                while got < want:
                    n = stream.readinto(view[got:want])
                    if not n:
                        raise MeasureError(f"BOLD {path} is truncated: volume {t + got // volume_bytes + 1} of {n_t} "
                                           "ends early")
                    got += n
                block = np.frombuffer(buffer, dtype=dtype, count=count * n_vox).reshape(count, n_vox)
                raw[:, t:t + count] = block[:, flat].T
                if total is not None:
                    total += block.sum(axis=0, dtype=np.float64)
                if not any_nonzero:  # every value zero is an error; a real run stops checking at volume 1
                    any_nonzero = bool(np.any(apply_read_scaling(block, slope, inter) if scaled else block))
                t += count
    except MeasureError:
        raise
    except Exception as err:  # truncated gzip (EOFError), bad CRC, I/O
        raise MeasureError(f"cannot read BOLD {path}: {err}") from err
    if not any_nonzero:
        raise MeasureError(f"BOLD {path} is all zeros")
    values = np.asarray(apply_read_scaling(raw, slope, inter) if scaled else raw, dtype=np.float32)
    if total is None:
        return values
    mean = total / n_t
    mean = apply_read_scaling(mean, slope, inter) if scaled else mean   # the scaling is linear
    return values, np.asarray(mean, dtype=np.float32).reshape(shape[:3], order="F")
