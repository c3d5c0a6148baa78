"""Priors and the parameter vector of the one-state DCM (``ptsd_bidsapp.dcm.priors``).

Expected values are typed in from SPM12 r7771 ``spm_dcm_fmri_priors.m`` ($Id 7497; the values of
its one-state branch: ``pA = 64``, ``pE.A = A/128``, ``pC.A = A/pA + eye/pA``, ``pC.B = B``,
``pC.C = C``, haemodynamic variances 1/256, one ``decay``) or read from the reference outputs SPM
itself wrote (``tests/data/spm12/dcm_*.json``: ``pE`` and ``diag(pC)`` in ``spm_vec`` order, made by
``scripts/spm12_reference/make_dcm_reference.m``). No expected value is computed by the module.
Unit tier: each test reads at most one small JSON file.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest

from ptsd_bidsapp.dcm import priors

DATA = Path(__file__).resolve().parents[1] / "data" / "spm12"


# ------------------------------------------------------------------ one region (SPM's vector branch)
def test_one_region_with_a_self_connection_has_spm_prior_variance_one():
    # spm_dcm_fmri_priors r7771 ($Id 7497), one-state branch: isvector(A) is true for a 1x1 A
    # (MATLAB and Octave count a scalar as a vector), so pE.A = (A(:) - 1)*dA with dA = 1 and
    # pC.A = A(:): mean 0, variance 1 -- not the 1/64 of the matrix branch
    pE, pC = priors.dcm_fmri_priors([[1]], np.zeros((1, 1, 1)), [[1]])
    assert pE["A"].shape == (1, 1) and pC["A"].shape == (1, 1)
    assert pE["A"][0, 0] == 0.0
    assert pC["A"][0, 0] == 1.0
    assert pC["C"][0, 0] == 1.0 and pC["B"][0, 0, 0] == 0.0
    assert pC["transit"].tolist() == [1 / 256] and pC["decay"] == 1 / 256 and pC["epsilon"] == 1 / 256


def test_one_region_without_a_self_connection_is_fixed_at_minus_one():
    # same branch with A = 0: pE.A = (0 - 1)*1 = -1, pC.A = 0 (a fixed log self-inhibition)
    pE, pC = priors.dcm_fmri_priors([[0]], None, [[1]])
    assert pE["A"].tolist() == [[-1.0]]
    assert pC["A"].tolist() == [[0.0]]
    # any non-zero entry is a switch (logical(A))
    pE, pC = priors.dcm_fmri_priors([[0.5]], None, [[1]])
    assert pE["A"].tolist() == [[0.0]] and pC["A"].tolist() == [[1.0]]
