"""Readers of the SPM12 r7771 reference outputs in ``tests/data/spm12/`` shared by several test files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

SPM12_DATA = Path(__file__).resolve().parent / "data" / "spm12"


def load_reference(name: str) -> dict:
    """The JSON ``tests/data/spm12/<name>`` (skip the test when it is absent)."""
    path = SPM12_DATA / name
    if not path.exists():
        pytest.skip(f"SPM12 reference {path.name} not present")
    return json.loads(path.read_text())


def peb_first_level(ref: dict):
    """First-level inputs of ``peb_2region.json`` as ``fit_peb`` takes them.

    Returns ``Ep``, ``Cp`` (lists per subject), ``pE``, ``pC`` (matrix), the design ``X``,
    ``select`` (0-based indices of SPM's 1-based ``Pind``) and the subjects' free energies ``F``.
    """
    first = ref["first_level"]
    Ep = [np.asarray(e, dtype=float).ravel() for e in first["Ep"]]
    P = Ep[0].size
    Cp = [np.asarray(c, dtype=float).reshape(P, P) for c in first["Cp"]]
    pE = np.asarray(first["pE"], dtype=float)
    pC = np.diag(np.asarray(first["pC_diag"], dtype=float))
    X = np.asarray(ref["design"]["X"], dtype=float)
    select = [int(i) - 1 for i in np.atleast_1d(ref["peb"]["Pind"])]    # SPM is 1-based
    return Ep, Cp, pE, pC, X, select, np.asarray(first["F"], dtype=float)
