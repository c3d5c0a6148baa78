"""Helpers of the DCM inversion (``ptsd_bidsapp.dcm.inversion``) against analytic values.

``spm_inv``, ``spm_logdet`` and ``spm_dx`` of SPM12 r7771 (rules stated in their docstrings and
in SPM's help text: a ridge of ``max(eps(norm(A, inf)) * n, exp(-32))``; the log-determinant of the
part of the diagonal that is non-zero, from singular values in (1e-16, 1e16); the step
``(expm(t J) - I) J^-1 f`` with ``t = exp(log_t - ln|J| / n)``), the data preparation of
``spm_dcm_estimate`` (mean-centred, scaled to a range of at most 4 %) and the Prais-Winsten
transform, each on small inputs with the expected value typed in or written in closed form.
The inversion itself is compared with SPM12 in ``test_spm12_reference.py``. Unit tier (no fit).
"""

from __future__ import annotations

import math
import os
import warnings

import numpy as np
import pytest

from ptsd_bidsapp.dcm import inversion, priors
from tests.dcm.dcm_fixtures import faces_spec

pytestmark = pytest.mark.unit


# --------------------------------------------------------------------------------- spm_inv
def test_spm_inv_adds_the_exp_minus_32_ridge_to_a_small_matrix():
    # ||0||_inf = 0: eps(0) * 2 is tiny, the ridge is exp(-32): inv(exp(-32) I) = exp(32) I
    np.testing.assert_allclose(inversion._spm_inv(np.zeros((2, 2))), math.exp(32) * np.eye(2), rtol=1e-12)
    np.testing.assert_allclose(inversion._spm_inv(np.diag([2.0, 4.0])), np.diag([0.5, 0.25]), rtol=1e-12)


def test_spm_inv_ridge_grows_with_the_matrix_norm():
    # [[1e6, 1e6], [1e6, 1e6]]: ||A||_inf = 2e6 in [2^20, 2^21), eps = 2^-32, ridge 2 * 2^-32 = 2^-31
    # (> exp(-32) = 1.3e-14); along the null direction [1, -1] the inverse is 1 / ridge = 2^31
    A = np.full((2, 2), 1e6)
    inv = inversion._spm_inv(A)
    # (condition number 4e15: only the dominant null-direction part is accurate, to ~1e-6)
    np.testing.assert_allclose(inv @ np.array([1.0, -1.0]), np.array([1.0, -1.0]) * 2.0 ** 31, rtol=1e-6)


# --------------------------------------------------------------------------------- spm_logdet
@pytest.mark.parametrize("matrix, expected", [
    (np.diag([2.0, 3.0]), math.log(6.0)),
    (np.array([[2.0, 1.0], [1.0, 2.0]]), math.log(3.0)),         # singular values 3 and 1
    (np.diag([-1.0, -2.0]), 0.0),                                  # SPM keeps only positive values
    (np.diag([-1.0, 5.0]), math.log(5.0)),
    (np.diag([0.0, 4.0]), math.log(4.0)),                          # zero rows/columns dropped
    (np.array([[0.0, 1.0], [1.0, 0.0]]), 0.0),                     # no non-zero diagonal at all
    (np.diag([1e-17, 5.0]), math.log(5.0)),                        # outside (1e-16, 1e16): dropped
    (np.diag([1e17, 5.0]), math.log(5.0)),
    (np.diag([2e-16, 5e15]), math.log(2e-16) + math.log(5e15)),    # just inside
    (np.diag([1e-16, 5.0]), math.log(5.0)),                        # the bounds themselves are out
    (np.diag([1e16, 5.0]), math.log(5.0)),
    (np.zeros((0, 0)), 0.0),
])
def test_spm_logdet(matrix, expected):
    assert inversion._spm_logdet(matrix) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_spm_logdet_of_a_full_matrix_with_a_zero_diagonal_entry_uses_the_rest():
    # row/column 1 has a zero diagonal: dropped with its off-diagonal entries
    m = np.array([[3.0, 7.0, 1.0], [7.0, 0.0, 7.0], [1.0, 7.0, 3.0]])
    # remaining [[3, 1], [1, 3]]: singular values 4 and 2
    assert inversion._spm_logdet(m) == pytest.approx(math.log(8.0), rel=1e-12)


# --------------------------------------------------------------------------------- spm_dx
def test_spm_dx_of_a_scalar_is_the_local_linearisation_step():
    # J = -2 (log|J| counts 0: negative), t = exp(log_t): dx = (exp(t J) - 1) / J f
    for log_t in (-3.0, 0.0, 2.0):
        t = math.exp(log_t)
        expected = (math.exp(-2.0 * t) - 1.0) / -2.0 * 3.0
        assert inversion.spm_dx(np.array([[-2.0]]), np.array([3.0]), log_t)[0] == pytest.approx(expected, rel=1e-12)


def test_spm_dx_time_is_relative_to_the_curvature():
    # J = diag(-4, -1) but t uses ln|J| of the positive part only (0 here); with J = diag(4, 1)
    # (positive), t = exp(log_t - ln(4)/2) = exp(log_t) / 2
    f = np.array([1.0, 2.0])
    J = np.diag([4.0, 1.0])
    t = math.exp(0.0) / 2.0
    expected = (np.exp(t * np.diag(J)) - 1.0) / np.diag(J) * f
    np.testing.assert_allclose(inversion.spm_dx(J, f, 0.0), expected, rtol=1e-12)


def test_spm_dx_beyond_exp16_is_the_newton_step():
    # t > exp(16): -pinv(J) f; a positive J would overflow expm, the Newton branch is exact
    J = np.array([[2.0, 1.0], [1.0, 3.0]])
    f = np.array([1.0, -1.0])
    np.testing.assert_allclose(inversion.spm_dx(J, f, 18.0), -np.linalg.solve(J, f), rtol=1e-12)
    # just past the switch: t = exp(16.5) (log_t = 16.5 + ln|J|/2, ln|J| = ln 5); expm(t J) of this
    # positive J would overflow, the Newton branch is exact
    np.testing.assert_allclose(inversion.spm_dx(J, f, 16.5 + math.log(5.0) / 2), -np.linalg.solve(J, f), rtol=1e-12)
    # a 2-D f is read as a vector
    np.testing.assert_allclose(inversion.spm_dx(J, f[:, None], 18.0), -np.linalg.solve(J, f), rtol=1e-12)


# --------------------------------------------------------------------------------- data preparation
def test_data_are_mean_centred_and_scaled_to_at_most_four_percent():
    spec = faces_spec(n_scans=20, y=np.zeros((20, 2)))
    y = np.zeros((20, 2))
    y[:, 0] = np.linspace(10.0, 18.0, 20)                          # range 8 -> scale 4/8
    y[:, 1] = 3.0
    spec.y = y
    prepared, scale, x0 = inversion._prepare_data(spec)
    assert scale == 0.5
    np.testing.assert_allclose(prepared[:, 0], (y[:, 0] - 14.0) * 0.5, atol=1e-12)
    assert np.all(prepared[:, 1] == 0)
    np.testing.assert_array_equal(x0, np.ones((20, 1)))            # no confounds: a constant
    # a range below 4 is left as it is (scale 1)
    spec.y = np.column_stack([np.linspace(0, 2, 20), np.linspace(0, -1, 20)])
    prepared, scale, _ = inversion._prepare_data(spec)
    assert scale == 1.0
    np.testing.assert_allclose(prepared.mean(axis=0), 0.0, atol=1e-15)
    # a range of exactly 4: scale 1
    spec.y = np.column_stack([np.linspace(0, 4, 20), np.zeros(20)])
    assert inversion._prepare_data(spec)[1] == 1.0
    # confounds given are used; an empty confound matrix becomes the constant
    spec.x0 = np.column_stack([np.ones(20), np.arange(20.0)])
    np.testing.assert_array_equal(inversion._prepare_data(spec)[2], spec.x0)
    spec.x0 = np.zeros((20, 0))
    np.testing.assert_array_equal(inversion._prepare_data(spec)[2], np.ones((20, 1)))


def test_data_preparation_refuses_missing_or_misshapen_data():
    spec = faces_spec(n_scans=20)
    with pytest.raises(ValueError, match=r"^estimate_dcm needs data: DCMSpec.y is None$"):
        inversion._prepare_data(spec)
    spec.y = np.zeros((19, 2))
    with pytest.raises(ValueError, match=r"^y has shape \(19, 2\); the model expects \(scans, regions\) = \(20, 2\)$"):
        inversion._prepare_data(spec)
    spec.y = np.zeros(40)
    with pytest.raises(ValueError, match=r"^y has shape \(40, 1\)"):
        inversion._prepare_data(spec)


def test_estimation_refuses_a_model_without_driving_input_and_warns_for_nine_regions():
    spec = faces_spec(n_scans=20)
    spec.c = np.zeros_like(spec.c)
    with pytest.raises(ValueError, match=r"^a deterministic DCM needs at least one driving input \(non-zero c and u\)$"):
        inversion.estimate_dcm(spec)
    spec = faces_spec(n_scans=20)
    spec.u = np.zeros_like(spec.u)
    with pytest.raises(ValueError, match="needs at least one driving input"):
        inversion.estimate_dcm(spec)
    # nine regions: SPM would project the A prior on 8 modes (warned), then the data are checked
    from ptsd_bidsapp.dcm import DCMSpec

    big = DCMSpec(np.ones((9, 9)), None, np.ones((9, 1)), np.ones((40, 1)), 0.5, 2.0, 0.03, centre_inputs=False)
    with pytest.warns(UserWarning, match=r"^9 regions: SPM12 would constrain the A prior to 8 principal modes "
                                         r"\(options\.maxnodes\); this implementation uses the full prior$") as record:
        with pytest.raises(ValueError, match="needs data"):
            inversion.estimate_dcm(big)
    # attributed to the caller's line (stacklevel), not to the package -- except under mutmut, whose
    # trampolines add frames between the caller and the package (MUTANT_UNDER_TEST is mutmut's variable)
    if "MUTANT_UNDER_TEST" not in os.environ:
        assert [w.filename for w in record] == [__file__]
    # eight regions are within SPM's maxnodes: no warning
    eight = DCMSpec(np.ones((8, 8)), None, np.ones((8, 1)), np.ones((40, 1)), 0.5, 2.0, 0.03, centre_inputs=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="needs data"):
            inversion.estimate_dcm(eight)


def test_starting_point_and_verbose_output(capsys):
    """P0 is where the ascent starts (SPM options.P): after one iteration the best accepted point is
    still the expansion point, so the posterior mean returned is P0 itself (the prior mean without
    P0); verbose prints one spm_nlsi_GN line per iteration, and nothing is printed by default."""
    from ptsd_bidsapp.dcm import simulate_dcm

    truth = {"A": [[-0.1, -0.3], [0.4, 0.0]], "B": {"fearful": [[0.0, 0.0], [0.3, 0.0]]},
             "C": [[0.5, 0.0], [0.0, 0.0]]}
    clean, _ = simulate_dcm(faces_spec(n_scans=60), truth)
    spec = faces_spec(y=clean, max_iter=1)
    from_prior = inversion.estimate_dcm(spec)
    from_truth = inversion.estimate_dcm(spec, P0=truth)
    np.testing.assert_array_equal(from_prior.Ep_vector, from_prior.pE)
    # one iteration cannot meet the four-in-a-row criterion
    assert from_prior.converged is False and from_truth.converged is False and from_prior.n_iter == 1
    expected = priors.pack_parameters(truth, 2, 2, spec.input_names)
    np.testing.assert_allclose(from_truth.Ep_vector, expected, rtol=0, atol=1e-15)
    # the same start given as a vector
    np.testing.assert_allclose(inversion.estimate_dcm(spec, P0=expected).Ep_vector, expected, rtol=0, atol=1e-15)
    assert capsys.readouterr().out == ""
    inversion.estimate_dcm(faces_spec(y=clean, max_iter=2), verbose=True)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[0].startswith("EM:(+)   1  F: ") and out[1].startswith("EM:(+)   2  F: ")


# --------------------------------------------------------------------------------- Prais-Winsten
def test_whitener_typed_in():
    whiten, log_det = inversion._whitener(np.array([0.6, -0.8]), 3)
    x = np.array([1.0, 2.0, 4.0, 1.0, 1.0, 2.0])                  # region 1: 1 2 4; region 2: 1 1 2
    # (W x)_0 = sqrt(1 - rho^2) x_0, (W x)_t = x_t - rho x_(t-1)
    np.testing.assert_allclose(whiten(x), [0.8, 2.0 - 0.6, 4.0 - 1.2, 0.6, 1.0 + 0.8, 2.0 + 0.8], rtol=1e-12)
    assert log_det == pytest.approx(math.log(0.8) + math.log(0.6), rel=1e-12)
    cols = whiten(np.column_stack([x, 2 * x]))
    np.testing.assert_allclose(cols[:, 1], 2 * cols[:, 0], rtol=1e-12)
    identity, zero = inversion._whitener(None, 3)
    assert identity(x) is x and zero == 0.0


def test_constants_are_spm_nlsi_gn():
    # spm_diff step exp(-8); confound prior variance 1e8 (spm_nlsi_GN: uC = speye/1e-8)
    assert inversion.FD_STEP == math.exp(-8.0)
    assert inversion.CONFOUND_PRIOR_VARIANCE == 1e8
