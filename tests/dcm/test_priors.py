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


# ------------------------------------------------------------------ SPM's own priors
@pytest.mark.parametrize("case", ["block2", "event3", "selfmod2"])
def test_priors_are_spm_dcm_fmri_priors_element_by_element(case):
    """pE and diag(pC) as SPM12 r7771 wrote them, rebuilt from the same a, b, c masks
    (SPM layout b(to, from, input) handed over as is: the (n, n, m) form is accepted when n != m)."""
    ref = json.loads((DATA / f"dcm_{case}.json").read_text())
    inp, out = ref["inputs"], ref["outputs"]
    n = int(inp["n"])
    m = len(inp["U_name"]) if isinstance(inp["U_name"], list) else 1
    a = np.asarray(inp["a"], dtype=float).reshape(n, n)
    b_spm = np.asarray(inp["b"], dtype=float).reshape(n, n, m)
    c = np.asarray(inp["c"], dtype=float).reshape(n, m)
    b = b_spm if n != m else np.moveaxis(b_spm, 2, 0)
    pE, pC = priors.dcm_fmri_priors(a, b, c)
    assert priors.n_parameters(n, m) == len(out["pE"]) == len(out["param_names"])
    # exact: every SPM value is a power of two (1/128, 1/64, 1, 1/256) or zero
    assert priors.pack_parameters(pE, n, m).tolist() == out["pE"]
    assert priors.pack_parameters(pC, n, m).tolist() == out["pC_diag"]


def test_published_prior_constants():
    # spm_dcm_fmri_priors one-state defaults: pA = 64, pE.A = A/128, haemodynamic variances 1/256
    assert priors.CONNECTION_PRECISION == 64.0
    assert priors.EXTRINSIC_PRIOR_MEAN == 1 / 128
    assert priors.HEMODYNAMIC_VARIANCE == 1 / 256


def test_three_region_priors_typed_in():
    # matrix branch: the diagonal of a is ignored (self-connections free at 1/64 even where a_ii = 0),
    # any non-zero entry switches a connection on; B and C variances are the masks (logical)
    a = np.array([[0, 0, 2], [1, 0, 0], [0, -1, 1]])
    b = {"mod": [[0, 0, 0], [0.5, 0, 0], [0, 0, 1]]}
    c = np.array([[1, 0], [0, 0], [0, 3]])
    pE, pC = priors.dcm_fmri_priors(a, b, c, input_names=["drive", "mod"])
    e = 1 / 128
    assert pE["A"].tolist() == [[0, 0, e], [e, 0, 0], [0, e, 0]]
    v = 1 / 64
    assert pC["A"].tolist() == [[v, 0, v], [v, v, 0], [0, v, v]]
    assert pC["B"].tolist() == [[[0] * 3] * 3, [[0, 0, 0], [1, 0, 0], [0, 0, 1]]]
    assert pC["C"].tolist() == [[1, 0], [0, 0], [0, 1]]
    assert pE["B"].shape == (2, 3, 3) and not pE["B"].any() and pE["C"].shape == (3, 2) and not pE["C"].any()
    assert pE["transit"].tolist() == [0, 0, 0] and pE["decay"] == 0 and pE["epsilon"] == 0
    assert pC["transit"].tolist() == [1 / 256] * 3 and pC["decay"] == 1 / 256 and pC["epsilon"] == 1 / 256
    # one shared decay and one epsilon (r7771): plain numbers, not arrays
    assert isinstance(pC["decay"], float) and isinstance(pE["decay"], float)
    assert isinstance(pC["epsilon"], float) and isinstance(pE["epsilon"], float)
    # a flat c is read as (regions, inputs)
    _, pC1 = priors.dcm_fmri_priors(np.ones((2, 2)), None, [1, 0])
    assert pC1["C"].tolist() == [[1], [0]] and pC1["B"].shape == (1, 2, 2)


# ------------------------------------------------------------------ spm_vec order
def test_pack_follows_spm_vec_order_typed_in():
    # n = 2, m = 2: A column-major (A11 A21 A12 A22), B input by input column-major, C column-major,
    # transit (2), decay, epsilon: 4 + 8 + 4 + 2 + 1 + 1 = 20
    params = {"A": [[1, 3], [2, 4]],
              "B": {"u1": [[5, 7], [6, 8]], "u2": [[9, 11], [10, 12]]},
              "C": [[13, 15], [14, 16]],
              "transit": [17, 18], "decay": 19, "epsilon": 20}
    vec = priors.pack_parameters(params, input_names=["u1", "u2"])
    assert vec.tolist() == list(range(1, 21))
    assert vec.dtype == np.float64
    back = priors.unpack_parameters(vec, 2, 2)
    assert back["A"].tolist() == [[1, 3], [2, 4]]
    assert back["B"].tolist() == [[[5, 7], [6, 8]], [[9, 11], [10, 12]]]
    assert back["C"].tolist() == [[13, 15], [14, 16]]
    assert back["transit"].tolist() == [17, 18]
    assert back["decay"] == 19 and back["epsilon"] == 20
    assert isinstance(back["decay"], float) and isinstance(back["epsilon"], float)
    assert set(back) == {"A", "B", "C", "transit", "decay", "epsilon"}


def test_pack_reads_b_in_every_accepted_layout():
    A = np.zeros((2, 2))
    B = np.arange(1, 9, dtype=float).reshape(2, 2, 2)            # [input, to, from]
    C = np.zeros((2, 2))
    ours = priors.pack_parameters({"A": A, "B": B, "C": C})
    assert ours[4:12].tolist() == [1, 3, 2, 4, 5, 7, 6, 8]        # B[0] column-major, then B[1]
    # (n, n, m) SPM layout, accepted when n != m: 3 regions, 2 inputs
    B3 = np.zeros((2, 3, 3))
    B3[1, 2, 0] = 7.0                                              # input 2, from region 1 to region 3
    spm_layout = np.moveaxis(B3, 0, 2)                             # b(to, from, input)
    vec = priors.pack_parameters({"A": np.zeros((3, 3)), "B": spm_layout, "C": np.zeros((3, 2))})
    assert vec.size == 9 + 18 + 6 + 3 + 2 and np.flatnonzero(vec).tolist() == [9 + 9 + 2]
    # one input: a 2-D (n, n) B is that input's matrix
    vec1 = priors.pack_parameters({"A": A, "B": [[0, 2], [0, 0]], "C": [[1], [0]]})
    assert vec1.tolist() == [0, 0, 0, 0, 0, 0, 2, 0, 1, 0, 0, 0, 0, 0]
    # a mapping may leave inputs out (zero) or give None; an empty array is no modulation
    vec2 = priors.pack_parameters({"A": A, "B": {"u2": [[0, 0], [3, 0]], "u1": None}, "C": C},
                                  input_names=["u1", "u2"])
    assert np.flatnonzero(vec2).tolist() == [9] and vec2[9] == 3
    vec3 = priors.pack_parameters({"A": A, "B": [], "C": C})
    assert vec3.size == 20 and not vec3.any()


def test_pack_infers_the_number_of_inputs_and_zero_fills():
    A = [[1, 0], [0, 1]]
    # from input_names, without C: B and C zero
    v = priors.pack_parameters({"A": A}, input_names=["u1", "u2", "u3"])
    assert v.size == priors.n_parameters(2, 3) == 4 + 12 + 6 + 2 + 2
    assert v.tolist() == [1, 0, 0, 1] + [0] * 22
    # from C's columns
    assert priors.pack_parameters({"A": A, "C": [[1, 2, 3], [4, 5, 6]]}).size == 4 + 12 + 6 + 4
    # neither: no inputs; transit broadcast from one value
    v0 = priors.pack_parameters({"A": A, "transit": 0.5, "decay": 0.25, "epsilon": -1})
    assert v0.tolist() == [1, 0, 0, 1, 0.5, 0.5, 0.25, -1]
    # explicit n and m win over the arrays' shapes
    v4 = priors.pack_parameters({"A": np.eye(2), "C": [[1, 0]]}, n=2, m=1)
    assert v4.size == priors.n_parameters(2, 1) and v4[4 + 4:4 + 4 + 2].tolist() == [1, 0]


def test_parameter_counts_typed_in():
    # n^2 (1 + m) + n m + n + 2 (r7771: one decay)
    assert [priors.n_parameters(n, m) for n, m in [(1, 0), (1, 1), (2, 1), (2, 2), (3, 2), (6, 3)]] == \
        [4, 6, 14, 20, 38, 36 * 4 + 18 + 8]


def test_unpack_of_no_inputs_and_copies():
    v = np.array([1.0, 2.0, 3.0, 4.0, 0.1, 0.2, 0.3, 0.4])
    out = priors.unpack_parameters(v, 2, 0)
    assert out["B"].shape == (0, 2, 2) and out["C"].shape == (2, 0)
    assert out["A"].tolist() == [[1, 3], [2, 4]] and out["transit"].tolist() == [0.1, 0.2]
    # the dict owns its arrays: editing it leaves the vector alone
    out["A"][0, 0] = 99.0
    out["transit"][0] = 99.0
    assert v.tolist() == [1.0, 2.0, 3.0, 4.0, 0.1, 0.2, 0.3, 0.4]
    v2 = np.arange(14.0)
    out2 = priors.unpack_parameters(v2, 2, 1)
    out2["B"][0, 0, 0] = -1.0
    out2["C"][0, 0] = -1.0
    assert v2.tolist() == list(range(14))
    # a row vector is flattened
    assert priors.unpack_parameters(v2[None, :], 2, 1)["epsilon"] == 13.0


def test_wrong_sizes_and_names_are_refused_with_their_messages():
    with pytest.raises(ValueError, match=r"^expected 20 parameters for 2 regions and 2 inputs, got 19$"):
        priors.unpack_parameters(np.zeros(19), 2, 2)
    with pytest.raises(ValueError, match=r"^DCM parameter 'decay' is one value shared by all regions "
                                         r"\(SPM12 r7771\), got 2 values$"):
        priors.pack_parameters({"A": np.eye(2), "decay": [0.1, 0.2]})
    with pytest.raises(ValueError, match=r"^DCM parameter 'epsilon' is one value"):
        priors.pack_parameters({"A": np.eye(2), "epsilon": [0.1, 0.2]})
    with pytest.raises(ValueError, match=r"^B given by input name needs input_names$"):
        priors.dcm_fmri_priors(np.eye(2), {"u1": np.eye(2)}, [[1], [0]])
    with pytest.raises(ValueError, match=r"^B names unknown inputs \['angry', 'sad'\]; inputs are \['u1'\]$"):
        priors.dcm_fmri_priors(np.eye(2), {"sad": np.eye(2), "angry": np.eye(2), "u1": np.eye(2)},
                               [[1], [0]], input_names=["u1"])
    with pytest.raises(ValueError, match=r"^B must have shape \(inputs, to, from\) = \(2, 2, 2\), got \(3, 2, 2\)$"):
        priors.dcm_fmri_priors(np.eye(2), np.zeros((3, 2, 2)), np.zeros((2, 2)))
    # decay given as a one-element array is that one value
    assert priors.pack_parameters({"A": np.eye(2), "decay": [0.3]})[-2] == 0.3


def test_parameter_names_are_the_contract_names_typed_in():
    names = priors.parameter_names(["amy", "vmpfc"], ["faces"])
    assert len(names) == priors.n_parameters(2, 1) == 14
    assert names[-4:] == ["transit_amy", "transit_vmpfc", "decay", "epsilon"]
    assert names[1] == "A_amy-vmpfc"          # A[1, 0]: from amy (column 0) to vmpfc (row 1)


def test_integer_inputs_come_back_as_float_arrays():
    # the masks and vectors are float64 whatever the caller passed: an integer array handed back
    # would truncate any later in-place update (e.g. a prior override of 0.5 written into A)
    out = priors.unpack_parameters(np.arange(14), 2, 1)
    for key in ("A", "B", "C", "transit"):
        assert out[key].dtype == np.float64, key
    out["A"][0, 0] = 0.5
    assert out["A"][0, 0] == 0.5
    b = priors._as_b_array(np.ones((1, 2, 2), dtype=int), 2, 1)
    assert b.dtype == np.float64
    b[0, 0, 0] = 0.5
    assert b[0, 0, 0] == 0.5
    assert priors._as_b_array([[[True, False], [False, True]]], 2, 1).dtype == np.float64
