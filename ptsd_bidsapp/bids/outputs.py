"""Output naming and atomic writing for the derivative dataset (one place).

Compute steps describe each file they produce as a :class:`Derivative` (entities, suffix,
extension, content: a table, an image, a JSON mapping or arrays) and return it; the sink
(:mod:`ptsd_bidsapp.workflows.sink`) writes them with :func:`write_derivative`.
Every file the app writes goes through :func:`atomic_write_bytes` (directly or via
:func:`write_tsv`, :func:`write_json`, :func:`write_nifti`): data are written to a
temporary file in the destination folder and moved into place with
:func:`os.replace`, so a killed run never leaves a half-written file that a rerun
would trust.
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

#: Order of BIDS entities in file names (BIDS 1.11 schema, ``rules.entities``; note
#: ``atlas`` comes after ``space`` and before ``res``).
ENTITY_ORDER = (
    "sub", "tpl", "ses", "cohort", "sample", "task", "tracksys", "acq", "nuc", "voi", "ce", "trc", "stain",
    "rec", "dir", "run", "mod", "echo", "flip", "inv", "mt", "part", "proc", "hemi", "space", "split",
    "recording", "chunk", "atlas", "seg", "scale", "res", "den", "label", "desc",
)
#: Entities of derivative files that the BIDS 1.11 schema cannot name yet (``model-dcm``);
#: they go last, and files using them are listed in ``.bidsignore``.
DERIVATIVE_ENTITIES = ("model",)
_NAME_ORDER = ENTITY_ORDER + DERIVATIVE_ENTITIES

#: Long pybids entity names -> short file-name keys.
ENTITY_KEYS = {
    "subject": "sub",
    "session": "ses",
    "task": "task",
    "acquisition": "acq",
    "ceagent": "ce",
    "reconstruction": "rec",
    "direction": "dir",
    "run": "run",
    "echo": "echo",
    "space": "space",
    "resolution": "res",
    "density": "den",
    "atlas": "atlas",
    "hemisphere": "hemi",
    "model": "model",
    "description": "desc",
    "desc": "desc",
}


def bids_filename(entities: Mapping[str, Any], suffix: str, extension: str) -> str:
    """Build a BIDS file name from entities.

    Parameters
    ----------
    entities : mapping
        Entity values keyed by short (``sub``) or pybids long (``subject``) names.
        ``None`` values are skipped.
    suffix : str
        BIDS suffix, e.g. ``"timeseries"``.
    extension : str
        Extension with leading dot, e.g. ``".tsv"``.

    Returns
    -------
    str
        e.g. ``sub-01_ses-pre_task-faces_atlas-ptsdcircuit_timeseries.tsv``.
    """
    short = {}
    for key, value in entities.items():
        if value is None:
            continue
        short_key = ENTITY_KEYS.get(key, key)
        if short_key not in _NAME_ORDER:
            raise ValueError(f"unknown BIDS entity {key!r}")
        short[short_key] = value
    parts = [f"{k}-{short[k]}" for k in _NAME_ORDER if k in short]
    return "_".join(parts + [suffix]) + extension


_SUFFIX_EXT = re.compile(r"^(?P<suffix>[A-Za-z0-9]+)(?P<ext>(\.[A-Za-z0-9]+)*)$")


def parse_filename(name: str) -> tuple[dict[str, str], str, str]:
    """Inverse of :func:`bids_filename`: ``(entities by short key, suffix, extension)``.

    Raises ``ValueError`` when ``name`` is not ``key-value_..._suffix.ext`` with known keys in
    :data:`ENTITY_ORDER` (+ :data:`DERIVATIVE_ENTITIES`) order.
    """
    *pairs, last = str(name).split("_")
    match = _SUFFIX_EXT.match(last)
    if not match:
        raise ValueError(f"{name!r}: no BIDS suffix")
    entities = {}
    for pair in pairs:
        key, sep, value = pair.partition("-")
        if not sep or key not in _NAME_ORDER or not value.isalnum():
            raise ValueError(f"{name!r}: {pair!r} is not a known BIDS entity")
        entities[key] = value
    order = [_NAME_ORDER.index(k) for k in entities]
    if order != sorted(order):
        raise ValueError(f"{name!r}: entities out of BIDS order")
    return entities, match["suffix"], match["ext"]


def atomic_write_bytes(path: os.PathLike | str, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename).

    Parameters
    ----------
    path : path-like
        Destination; parent folders are created.
    data : bytes
        File content.

    Returns
    -------
    Path
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def ensure_writable_dir(path: os.PathLike | str, role: str) -> Path:
    """Create ``path`` (with parents) and prove a file can be written in it.

    Parameters
    ----------
    path : path-like
        Output or work folder.
    role : str
        What the folder is (``"output_dir"``, ``"work dir"``), for the message.

    Raises
    ------
    InputError
        Exit 73 (CANTCREAT) when the folder cannot be created or written (a parent is a regular
        file, permission denied, read-only file system), 74 (IOERR) for other I/O errors
        (disk full); the message names the folder and the reason.
    """
    from ptsd_bidsapp.errors import InputError, describe_os_error, os_error_exit_code

    path = Path(path)
    try:
        if path.exists() and not path.is_dir():
            raise NotADirectoryError(20, "exists and is not a folder", str(path))
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".ptsd_bidsapp-write-test.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise InputError(f"{role} {path} is not writable: {describe_os_error(err)}", path,
                         os_error_exit_code(err)) from err
    return path


def atomic_write_text(path: os.PathLike | str, text: str) -> Path:
    """Write UTF-8 text atomically (see :func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def to_json(obj: Any) -> str:
    """Serialise to deterministic JSON (sorted keys, NaN -> null)."""
    return json.dumps(_nan_to_none(obj), indent=2, sort_keys=True, default=_json_default) + "\n"


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, np.floating) and not np.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _nan_to_none(obj.tolist())
    return obj


def write_json(path: os.PathLike | str, obj: Any) -> Path:
    """Write a JSON file atomically with sorted keys; NaN/inf become ``null``."""
    return atomic_write_text(path, to_json(obj))


def tsv_text(table: pd.DataFrame, index: bool = False, float_format: str = "%.8g") -> str:
    """The text :func:`write_tsv` writes: tab-separated, ``n/a`` for missing values, floats at
    ``float_format`` (8 significant digits by default)."""
    return table.to_csv(sep="\t", na_rep="n/a", index=index, float_format=float_format, lineterminator="\n")


def as_written(table: pd.DataFrame, index: bool = False) -> pd.DataFrame:
    """``table`` as a reader of its TSV sees it (:func:`write_tsv` then ``pandas.read_csv``).

    The DCM is fitted to, and the report plots, the values of the derivative files (8 significant
    digits), so both can be reproduced from the derivatives alone.
    """
    if table.shape[1] == 0 and not index:
        return table.copy()
    return pd.read_csv(io.StringIO(tsv_text(table, index=index)), sep="\t", na_values="n/a")


def write_tsv(
    path: os.PathLike | str,
    table: pd.DataFrame,
    sidecar: Mapping[str, Any] | None = None,
    index: bool = False,
    float_format: str = "%.8g",
) -> Path:
    """Write a BIDS TSV atomically; missing values as ``n/a``.

    Parameters
    ----------
    path : path-like
        Destination ``.tsv``.
    table : DataFrame
        Table to write.
    sidecar : mapping, optional
        If given, written as JSON next to the TSV (same stem, ``.json``).
    index : bool
        Write the DataFrame index as first column.
    float_format : str
        printf format for floats (deterministic text output).
    """
    out = atomic_write_text(path, tsv_text(table, index=index, float_format=float_format))
    if sidecar is not None:
        write_json(Path(str(out)[: -len(".tsv")] + ".json"), dict(sidecar))
    return out


def write_nifti(path: os.PathLike | str, img) -> Path:
    """Write a nibabel image atomically (``.nii`` or ``.nii.gz`` by extension)."""
    import nibabel as nib

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else ".nii"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".part{suffix}", dir=path.parent)
    os.close(fd)
    try:
        nib.save(img, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """``numpy.savez`` content with fixed zip timestamps (1980-01-01): equal arrays, equal bytes.

    ``numpy.savez`` stamps each member with the wall-clock time, so a rerun would change the file.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for key, value in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0)), member.getvalue())
    return buffer.getvalue()


@dataclass
class Derivative:
    """One derivative file, as a compute step returns it (nothing written yet).

    Attributes
    ----------
    entities : dict
        BIDS entities of the name (short or pybids keys; ``sub`` and ``ses`` also place the file).
    suffix, extension : str
        e.g. ``"timeseries"``, ``".tsv"``.
    content : DataFrame, nibabel image, mapping or mapping of arrays
        By extension: ``.tsv`` a table, ``.nii.gz``/``.nii`` an image, ``.json`` a JSON mapping,
        ``.npz`` named arrays.
    sidecar : mapping, optional
        JSON sidecar written next to the file (same stem, ``.json``).
    datatype : str or None
        Folder below ``sub-<s>/ses-<t>/`` (``"func"``), None for the session folder itself.
    index : bool
        ``.tsv`` only: write the table's index as the first column.
    """

    entities: dict
    suffix: str
    extension: str
    content: Any
    sidecar: Mapping[str, Any] | None = None
    datatype: str | None = "func"
    index: bool = False

    @property
    def name(self) -> str:
        return bids_filename(self.entities, self.suffix, self.extension)

    def relative_path(self) -> Path:
        """``sub-<s>[/ses-<t>][/<datatype>]/<name>`` inside the derivative dataset."""
        ents = {ENTITY_KEYS.get(k, k): v for k, v in self.entities.items() if v is not None}
        folder = Path(f"sub-{ents['sub']}")
        if ents.get("ses"):
            folder = folder / f"ses-{ents['ses']}"
        if self.datatype:
            folder = folder / self.datatype
        return folder / self.name


def write_derivative(root: os.PathLike | str, derivative: Derivative) -> list[Path]:
    """Write one :class:`Derivative` under ``root`` atomically, its sidecar first.

    Returns
    -------
    list of Path
        The written files (sidecar, then the file).
    """
    path = Path(root) / derivative.relative_path()
    written = []
    if derivative.sidecar is not None:
        stem = path.name[: -len(derivative.extension)]
        written.append(write_json(path.with_name(stem + ".json"), dict(derivative.sidecar)))
    ext = derivative.extension
    if ext == ".tsv":
        written.append(write_tsv(path, derivative.content, index=derivative.index))
    elif ext in (".nii.gz", ".nii"):
        written.append(write_nifti(path, derivative.content))
    elif ext == ".json":
        written.append(write_json(path, derivative.content))
    elif ext == ".npz":
        written.append(atomic_write_bytes(path, npz_bytes(derivative.content)))
    else:
        raise ValueError(f"{derivative.name}: no writer for {ext!r}")
    return written
