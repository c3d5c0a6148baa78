"""Helpers of the DCM inversion (``ptsd_bidsapp.dcm.inversion``) against analytic values.

``spm_inv``, ``spm_logdet`` and ``spm_dx`` of SPM12 r7771 (rules stated in their docstrings and
in SPM's help text: a ridge of ``max(eps(norm(A, inf)) * n, exp(-32))``; the log-determinant of the
part of the diagonal that is non-zero, from singular values in (1e-16, 1e16); the step
``(expm(t J) - I) J^-1 f`` with ``t = exp(log_t - ln|J| / n)``), the data preparation of
``spm_dcm_estimate`` (mean-centred, scaled to a range of at most 4 %) and the Prais-Winsten
transform, each on small inputs with the expected value typed in or written in closed form.
The inversion itself is compared with SPM12 in ``test_spm12_reference.py``; the rules of its ascent
(spm_nlsi_GN's log ascent rate, back-off from a diverging prediction, divergence guard, four-in-a-row
convergence) are checked here on a stand-in generative model whose trajectory is written down by hand.
Unit tier (no fit).
"""

from __future__ import annotations

import math
import os
import time
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


# --------------------------------------------------------------------------------- the ascent's rules
# spm_nlsi_GN (r7771, $Id 7279) on a generative model whose trajectory can be written down by hand.
# Data all zero and a model that predicts zero whatever the parameters: the data carry no
# information, e = 0, the confound coefficients start and stay at 0, and the free energy's
# gradient and curvature in the parameters are those of the prior alone, g = -ipC p and
# H = -ipC - (confound block): both diagonal. spm_logdet of a negative diagonal matrix is 0 (it
# keeps only positive values), so spm_dx's time is t = exp(v) and its step is, per parameter,
# dp = (exp(t H_ii) - 1) / H_ii g_i = (exp(-exp(v) / pC_i) - 1) p_i: every accepted step shrinks the
# deviation from the prior mean by the factor exp(-exp(v) / pC_i). The free energy's parameter term
# -p' ipC p / 2 grows with each such step, so every evaluated point is accepted unless the
# prediction there is not finite (then spm_nlsi_GN backs off from the last accepted point).
def _prior_only_model(monkeypatch, n_scans=16, jacobian_row_sum=None, nan_calls=(), offset_calls=(),
                      fixed_prediction=None, data=None, **options):
    """A stand-in for the integrator (the prediction as a function of the parameter vector):
    zero, or linear with every row of the Jacobian summing to ``jacobian_row_sum`` over the free
    parameters; all-NaN on the call numbers (1-based) in ``nan_calls``, as a blown-up integration,
    and 10 (a finite prediction far from the zero data) on those in ``offset_calls``; plus
    ``fixed_prediction`` (scans, regions) on every call if given. Returns the
    spec (zero data) and the list of the expansion points the inversion asked for (row 0 of each batch)."""
    from ptsd_bidsapp.dcm import api
    from ptsd_bidsapp.dcm import integrate as integrate_module

    options = {"max_iter": 11, "tolerance": 1e-12, **options}   # no convergence stop unless asked
    spec = faces_spec(y=np.zeros((n_scans, 2)) if data is None else data, n_scans=n_scans, **options)
    pE_d, pC_d = spec.priors()
    pE, pC = priors.pack_parameters(pE_d, 2, 2), priors.pack_parameters(pC_d, 2, 2)
    free = np.flatnonzero(pC > 0)
    slope = np.zeros(pE.size)
    if jacobian_row_sum is not None:
        slope[free] = jacobian_row_sum / free.size
    points = []

    def predict(batch, schedule, te, return_states=False):
        batch = np.atleast_2d(batch)
        points.append(batch[0].copy())
        lin = (batch - pE) @ slope                                 # the same value in every scan and region
        out = np.repeat(lin[:, None, None], n_scans, axis=1).repeat(2, axis=2)
        if fixed_prediction is not None:
            out = out + fixed_prediction
        if len(points) in offset_calls:
            out = out + 10.0
        return np.full_like(out, np.nan) if len(points) in nan_calls else out

    # the integrator receives the stacked parameter vectors as they are
    monkeypatch.setattr(inversion, "_batch_dict", lambda vectors, n, m: vectors)
    monkeypatch.setattr(api, "_batch_dict", lambda vectors, n, m: vectors)
    monkeypatch.setattr(integrate_module, "integrate", predict)
    return spec, pE, pC, free, points


def _start(pE, pC, free):
    # one prior SD (pC = 1/64, 1, 1/256) off the prior mean, alternating in sign
    p0 = pE.copy()
    p0[free] += np.sqrt(pC[free]) * np.where(np.arange(free.size) % 2, -1.0, 1.0)
    return p0


def test_back_off_trajectory_is_spm_nlsi_gn_rule(monkeypatch):
    """The log ascent rate v starts at -4 and rises by 1/2 with each accepted step (at most 4); a
    non-finite prediction makes spm_nlsi_GN retry from the last accepted point with
    v = min(v - 2, -4) (up to four times) and carry on from the first retry that is finite."""
    spec, pE, pC, free, points = _prior_only_model(monkeypatch, nan_calls={3, 11})
    p0 = _start(pE, pC, free)
    result = inversion.estimate_dcm(spec, P0=p0)

    def shrink(p, v):
        out = p.copy()
        out[free] = pE[free] + (p[free] - pE[free]) * np.exp(-math.exp(v) / pC[free])
        return out

    c1 = p0                                 # iteration 1
    c2 = shrink(c1, -3.5)                   # iteration 2 (v = -4 + 1/2)
    c3 = shrink(c2, -3.0)                   # iteration 3: NaN
    c4 = shrink(c2, -5.0)                   # retry from c2 with v = min(-3 - 2, -4) = -5: finite, accepted
    c5 = shrink(c4, -4.5)                   # iterations 4-9, v rising by 1/2
    c6 = shrink(c5, -4.0)
    c7 = shrink(c6, -3.5)
    c8 = shrink(c7, -3.0)
    c9 = shrink(c8, -2.5)
    c10 = shrink(c9, -2.0)
    c11 = shrink(c10, -1.5)                 # iteration 10: NaN
    c12 = shrink(c10, -4.0)                 # retry from c10 with v = min(-1.5 - 2, -4) = -4 (the cap)
    c13 = shrink(c12, -3.5)                 # iteration 11 (the last)
    expected = [c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c13]   # + the final prediction at Ep
    assert len(points) == len(expected)
    # expm (Pade, scaling and squaring) is accurate to ~1e-15 relative: 1e-12 on deviations <= 1
    for k, (got, want) in enumerate(zip(points, expected), start=1):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, err_msg=f"call {k}")
    assert [h["log_ascent_rate"] for h in result.history] == [-3.5, -3.0, -4.5, -4.0, -3.5, -3.0, -2.5,
                                                              -2.0, -1.5, -3.5, -3.0]
    assert all(h["accepted"] for h in result.history)
    assert result.n_iter == 11 and result.converged is False
    np.testing.assert_allclose(result.Ep_vector, c13, rtol=0, atol=1e-12)


def test_back_off_gives_up_after_four_retries(monkeypatch):
    """Every prediction from iteration 3 on is NaN: four retries from the last accepted point, at
    v = -5, -7, -9, -11, then 'convergence failure' (spm_nlsi_GN: for i = 1:4)."""
    spec, pE, pC, free, points = _prior_only_model(monkeypatch, nan_calls=set(range(3, 100)))
    p0 = _start(pE, pC, free)
    with pytest.raises(inversion.DCMConvergenceError, match=r"^DCM integration diverged"):
        inversion.estimate_dcm(spec, P0=p0)
    c2 = p0.copy()
    c2[free] = pE[free] + (p0[free] - pE[free]) * np.exp(-math.exp(-3.5) / pC[free])
    assert len(points) == 7
    for k, v in zip(range(3, 8), (-3.0, -5.0, -7.0, -9.0, -11.0)):
        want = pE + (c2 - pE) * np.exp(-math.exp(v) / np.where(pC > 0, pC, 1.0))
        np.testing.assert_allclose(points[k - 1], want, rtol=0, atol=1e-12, err_msg=f"call {k}")


def test_convergence_needs_four_small_predicted_increases_in_a_row(monkeypatch):
    """From the prior mean the predicted increase g' dp is 0 at every iteration (g = 0); spm_nlsi_GN's
    criterion starts as four 'false' and needs dF < tolerance four times in a row: iteration 4."""
    spec, pE, pC, free, points = _prior_only_model(monkeypatch, tolerance=0.1)
    result = inversion.estimate_dcm(spec)
    assert result.converged is True and result.n_iter == 4
    assert [h["dF_predicted"] for h in result.history] == [0.0] * 4
    np.testing.assert_array_equal(result.Ep_vector, pE)


# (the stable case's Gauss-Newton step after iteration 1, never evaluated with max_iter = 1, overflows
# expm's squaring for curvatures ~1e29: RuntimeWarnings, not the subject here)
@pytest.mark.filterwarnings("ignore:overflow encountered in matmul:RuntimeWarning",
                            "ignore:invalid value encountered in matmul:RuntimeWarning")
@pytest.mark.parametrize("row_sum, diverged", [
    # norm(dfdp, 'inf') is the largest row sum: 0.5 exp(32) per row is stable, although the 32 rows
    # together sum to 16 exp(32)
    (0.5 * math.exp(32), False),
    # 2 exp(32) > exp(32): a divergence, at iteration 1 a convergence failure (no accepted point to
    # back off to)
    (2.0 * math.exp(32), True),
])
def test_divergence_guard_is_the_infinity_norm_of_the_jacobian_above_exp32(monkeypatch, row_sum, diverged):
    spec, pE, pC, free, points = _prior_only_model(monkeypatch, jacobian_row_sum=row_sum, max_iter=1)
    if diverged:
        with pytest.raises(inversion.DCMConvergenceError, match=r"^DCM integration diverged"):
            inversion.estimate_dcm(spec)
        assert len(points) == 1
    else:
        result = inversion.estimate_dcm(spec)
        assert result.n_iter == 1 and len(points) == 2


def test_a_worse_free_energy_is_rejected_from_iteration_3_on(monkeypatch, capsys):
    """Iterations 1 and 2 are always accepted; from iteration 3 a point whose free energy is lower
    than the last accepted one (here a finite prediction 10 away from every datum) is rejected:
    parameters and log precisions go back to the last accepted point, v = min(v - 2, -4), and the
    next step is taken from there with the gradients of that point (spm_nlsi_GN, 'EM:(-)')."""
    spec, pE, pC, free, points = _prior_only_model(monkeypatch, offset_calls={3}, max_iter=4)
    p0 = _start(pE, pC, free)
    result = inversion.estimate_dcm(spec, P0=p0, verbose=True)

    def shrink(p, v):
        return pE + (p - pE) * np.exp(-math.exp(v) / np.where(pC > 0, pC, 1.0))

    c2 = shrink(p0, -3.5)
    c3 = shrink(c2, -3.0)                   # iteration 3: rejected
    c4 = shrink(c2, -5.0)                   # from c2 again, v = min(-3 - 2, -4) = -5
    expected = [p0, c2, c3, c4, c4]         # + the final prediction at Ep (iteration 4 accepted)
    assert len(points) == len(expected)
    for k, (got, want) in enumerate(zip(points, expected), start=1):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, err_msg=f"call {k}")
    history = result.history
    assert [h["accepted"] for h in history] == [True, True, False, True]
    assert [h["log_ascent_rate"] for h in history] == [-3.5, -3.0, -5.0, -4.5]
    assert history[2]["F"] < history[1]["F"]
    assert history[2]["h"] == history[1]["h"]           # the log precisions went back too
    out = capsys.readouterr().out.splitlines()
    assert [line[:10] for line in out] == ["EM:(+)   1", "EM:(+)   2", "EM:(-)   3", "EM:(+)   4"]


def test_with_uninformative_data_the_posterior_is_the_prior(monkeypatch):
    """Zero data and a prediction that does not depend on the parameters: Bayes' rule returns the
    prior (Ep = pE, Cp = pC); SPM's Pp = 1 - Phi(pE; |Ep|, sqrt(Vp)) is then 1 - Phi(0) = 1/2 for
    every free parameter (0 for fixed ones); no residuals, no confound effect. Also the
    bookkeeping: F is the sum of its three terms, and each history entry has the documented keys."""
    spec, pE, pC, free, points = _prior_only_model(monkeypatch, tolerance=0.1)
    wall = time.perf_counter()
    result = inversion.estimate_dcm(spec)
    wall = time.perf_counter() - wall
    np.testing.assert_array_equal(result.Ep_vector, pE)
    prior_mean = priors.unpack_parameters(pE, 2, 2)
    for field in ("A", "B", "C", "transit", "decay", "epsilon"):
        np.testing.assert_array_equal(result.Ep[field], prior_mean[field])
    # spm_inv's ridge, eps(||Pp + ipC||_inf) * 13 = eps(~16 exp(6)) * 13 = 1.2e-11, against prior
    # precisions 1..256: at most 1.2e-11 relative
    np.testing.assert_allclose(result.Cp, np.diag(pC), rtol=2e-11, atol=0)
    np.testing.assert_allclose(result.Vp["B"], priors.unpack_parameters(pC, 2, 2)["B"], rtol=2e-11, atol=0)
    np.testing.assert_allclose(result.Pp_vector, np.where(pC > 0, 0.5, 0.0), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(result.pC, np.diag(pC))
    np.testing.assert_array_equal(result.y, np.zeros((16, 2)))
    np.testing.assert_array_equal(result.y_pred, np.zeros((16, 2)))
    np.testing.assert_array_equal(result.residuals, np.zeros((16, 2)))
    assert result.region_names == ["amygdala", "vmpfc"] and result.input_names == ["faces", "fearful"]
    np.testing.assert_array_equal(result.beta, np.zeros((1, 2)))
    assert result.scale == 1.0                                   # a range of 0 is scaled by 4 / max(0, 4)
    assert math.isnan(result.explained_variance)                 # 0 / 0: no signal, no residual
    assert result.F_terms.shape == (3,) and result.F == pytest.approx(result.F_terms.sum(), rel=1e-12)
    np.testing.assert_allclose(result.Ce, np.exp(-result.Eh), rtol=1e-15)
    history = result.history
    assert [h["iteration"] for h in history] == [1, 2, 3, 4]
    assert all(set(h) == {"iteration", "F", "accepted", "log_ascent_rate", "dF_predicted", "h", "seconds"}
               for h in history)
    assert all(0 <= h["seconds"] <= result.seconds for h in history) and result.seconds <= wall
    assert history[-1]["F"] == result.F and history[-1]["h"] == result.Eh.tolist()


def test_residuals_are_the_prediction_error_with_the_confounds_projected_out(monkeypatch):
    """SPM's DCM.R: y - y_pred minus its least-squares fit on the confounds X0; explained variance
    100 * sum(y_pred^2) / (sum(y_pred^2) + sum(R^2)) (spm_dcm_fmri_check). Data: 0 in region 1,
    +-0.15 alternating in region 2 (mean 0, range 0.3 < 4: left as they are); prediction: a quadratic
    in time in region 1, 0 in region 2; X0 = [1, t]. R is what a straight line does not explain of
    y - y_pred (computed here with numpy's lstsq); the residuals outweigh the prediction."""
    t = np.arange(16.0)
    data = np.column_stack([np.zeros(16), 0.15 * (-1.0) ** t])
    prediction = np.column_stack([(t - 4.0) ** 2 / 500.0, np.zeros(16)])
    x0 = np.column_stack([np.ones(16), t])
    spec, pE, pC, free, points = _prior_only_model(monkeypatch, fixed_prediction=prediction, data=data,
                                                   max_iter=1, x0=x0)
    result = inversion.estimate_dcm(spec)
    error = data - prediction
    expected_r = error - x0 @ np.linalg.lstsq(x0, error, rcond=None)[0]
    np.testing.assert_array_equal(result.y, data)
    np.testing.assert_array_equal(result.y_pred, prediction)
    np.testing.assert_allclose(result.residuals, expected_r, rtol=0, atol=1e-12)
    pss, rss = np.sum(prediction ** 2), np.sum(expected_r ** 2)
    assert pss < rss < 1                                         # (sums of squares below 1, too)
    assert result.explained_variance == pytest.approx(100 * pss / (pss + rss), rel=1e-10)


def test_posterior_probability_is_spm_pp_of_the_posterior_mean(monkeypatch):
    """One iteration from P0, one prior SD off the prior mean: the returned mean is P0 (the only
    accepted point) and the covariance the prior's (uninformative data), so SPM's
    Pp = 1 - Phi((pE - |Ep|) / sqrt(Vp)) = erfc(x / sqrt(2)) / 2 is known in closed form."""
    spec, pE, pC, free, points = _prior_only_model(monkeypatch, max_iter=1)
    p0 = _start(pE, pC, free)
    result = inversion.estimate_dcm(spec, P0=p0)
    np.testing.assert_array_equal(result.Ep_vector, p0)
    expected = np.zeros(pE.size)
    for i in free:
        x = (pE[i] - abs(p0[i])) / math.sqrt(pC[i])
        expected[i] = math.erfc(x / math.sqrt(2.0)) / 2.0
    # free parameters: Phi(1) = 0.841 (x = -1) and, for A off-diagonal below its prior mean 1/128,
    # x = (1/128 - |1/128 - 1/8|) * 8 = -0.875; spm_inv's ridge moves sqrt(Vp) by < 1e-11 relative
    np.testing.assert_allclose(result.Pp_vector, expected, rtol=1e-10, atol=0)
    by_field = priors.unpack_parameters(expected, 2, 2)
    for field in ("A", "B", "C", "transit", "decay", "epsilon"):
        np.testing.assert_allclose(result.pp[field], by_field[field], rtol=1e-10, atol=0)
    assert result.param_names == spec.parameter_names() and len(result.param_names) == pE.size


def test_log_ascent_rate_rises_by_one_half_per_accepted_step_up_to_4(monkeypatch):
    """v = min(v + 1/2, 4) after each accepted step (spm_nlsi_GN): from -4, the cap is reached at
    iteration 16 and held. One parameter (C, faces -> amygdala) with prior variance 1e6 starts one
    SD off its mean: each step removes only 1 - exp(-exp(v) / 1e6) of the deviation, so the free
    energy keeps rising by ~1e-6 exp(v) >= 1e-8 nats (far above rounding) and every step is accepted."""
    spec, pE, pC, free, points = _prior_only_model(monkeypatch, max_iter=18,
                                                   prior_variance={"C_faces_amygdala": 1e6})
    i = spec.parameter_names().index("C_faces_amygdala")
    p0 = pE.copy()
    p0[i] += 1e3
    result = inversion.estimate_dcm(spec, P0=p0)
    assert all(h["accepted"] for h in result.history)
    assert [h["log_ascent_rate"] for h in result.history] == [min(-4.0 + 0.5 * k, 4.0) for k in range(1, 19)]
