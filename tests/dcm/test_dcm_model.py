"""Priors, state equations, integrator and simulator of the DCM engine (analytic checks)."""

from __future__ import annotations

import numpy as np
import pytest

from ptsd_bidsapp.dcm import (DCMSpec, as_parameter_dict, dcm_fmri_priors, pack_parameters, parameter_names,
                              simulate_dcm, unpack_parameters)
from ptsd_bidsapp.dcm import model
from ptsd_bidsapp.dcm.integrate import make_schedule
from tests.dcm.dcm_fixtures import (ALPHA, E0, GAMMA, INPUTS, REGIONS, TE, TR, faces_spec, published_bireduce,
                                 published_bold)

PARAMS = {"A": [[0.1, -0.3], [0.4, -0.1]], "B": {"fearful": [[0, -0.2], [0.3, 0]]}, "C": [[0.6, 0], [0, 0]],
          "transit": [0.05, -0.05], "decay": 0.02, "epsilon": 0.05}


def test_priors_follow_spm_dcm_fmri_priors():
    a = np.array([[1, 0], [1, 1]])
    b = np.zeros((1, 2, 2))
    b[0, 1, 0] = 1
    c = np.array([[1], [0]])
    pE, pC = dcm_fmri_priors(a, b, c)
    np.testing.assert_array_equal(pE["A"], [[0, 0], [1 / 128, 0]])          # extrinsic mean 1/128
    np.testing.assert_array_equal(pC["A"], [[1 / 64, 0], [1 / 64, 1 / 64]])  # self-connections always free
    np.testing.assert_array_equal(pC["B"][0], [[0, 0], [1, 0]])
    np.testing.assert_array_equal(pC["C"], [[1], [0]])
    assert np.all(pC["transit"] == 1 / 256) and np.all(pC["decay"] == 1 / 256) and pC["epsilon"] == 1 / 256
    assert all(np.all(np.asarray(pE[k]) == 0) for k in ("B", "C", "transit", "decay", "epsilon"))


def test_parameter_vector_roundtrip_and_names_match_the_contract():
    from ptsd_bidsapp import contracts

    spec = faces_spec()
    vec = pack_parameters(PARAMS, 2, 2, INPUTS)
    back = unpack_parameters(vec, 2, 2)
    np.testing.assert_array_equal(back["A"], PARAMS["A"])
    np.testing.assert_array_equal(back["B"][1], PARAMS["B"]["fearful"])
    np.testing.assert_array_equal(back["B"][0], np.zeros((2, 2)))
    assert parameter_names(REGIONS, INPUTS) == contracts.dcm_parameter_names(REGIONS, INPUTS) \
        == spec.parameter_names()
    # SPM12 r7771 spm_dcm_fmri_priors: one decay for all regions -> 20 parameters for 2 regions
    # with one driving and one modulatory input (the 2016 revision had 21)
    assert vec.size == 20 == len(spec.parameter_names())
    assert spec.parameter_names()[-2:] == ["decay", "epsilon"] and back["decay"] == PARAMS["decay"]
    names = spec.parameter_names()
    # A[to][from]: A[1][0] is amygdala -> vmpfc
    assert vec[names.index("A_amygdala-vmpfc")] == PARAMS["A"][1][0]
    assert vec[names.index("B_fearful_vmpfc-amygdala")] == PARAMS["B"]["fearful"][0][1]


def test_rest_is_a_fixed_point_and_gives_zero_bold():
    P = as_parameter_dict(faces_spec(), PARAMS)
    x0 = np.zeros((2, 5))
    np.testing.assert_array_equal(model.fx(x0, np.zeros(2), P), 0.0)
    np.testing.assert_array_equal(model.gx(x0, 0.3, TE), 0.0)
    spec = faces_spec()
    spec.u = np.zeros_like(spec.u)
    y, x = simulate_dcm(spec, PARAMS)
    assert np.all(y == 0) and np.all(x == 0)


def _forward_difference_jacobian(P, h):
    """d flow / d state at rest by forward differences of the nonlinear flow ``fx``."""
    x0 = np.zeros((2, 5))
    f0 = model.fx(x0, np.zeros(2), P).T.ravel()
    num = np.zeros((10, 10))
    for k in range(10):
        dx = np.zeros(10)
        dx[k] = h
        num[:, k] = (model.fx(x0 + dx.reshape(5, 2).T, np.zeros(2), P).T.ravel() - f0) / h
    return num


def test_default_jacobian_is_spm_bireduce_forward_differences():
    # SPM12 r7771 spm_bireduce: spm_diff forward differences of spm_fx_fmri, step exp(-8)
    P = as_parameter_dict(faces_spec(), PARAMS)
    J0, J1, _ = model.jacobian_at_rest(P["A"], P["B"], P["C"], P["transit"], P["decay"])
    np.testing.assert_allclose(J0, _forward_difference_jacobian(P, np.exp(-8.0)), atol=1e-12)
    a = np.diag(np.asarray(P["A"]))
    for j in range(2):
        b = np.diag(P["B"][j])
        expected = -(np.exp(a + np.exp(-8.0) * b) - np.exp(a)) / (2 * np.exp(-8.0))
        np.testing.assert_allclose(np.diag(J1[j][:2, :2]), expected, atol=1e-12)
    J0a, _, _ = model.jacobian_at_rest(P["A"], P["B"], P["C"], P["transit"], P["decay"], method="analytic")
    assert 1e-5 < np.abs(J0 - J0a).max() < 1e-3      # O(exp(-8)) apart
    with pytest.raises(ValueError, match="method"):
        model.jacobian_at_rest(P["A"], P["B"], P["C"], P["transit"], P["decay"], method="exact")


def test_jacobian_at_rest_matches_finite_differences_of_the_nonlinear_flow():
    P = as_parameter_dict(faces_spec(), PARAMS)
    J0, J1, c = model.jacobian_at_rest(P["A"], P["B"], P["C"], P["transit"], P["decay"], method="analytic")
    h = 1e-6
    x0 = np.zeros((2, 5))
    num = np.zeros((10, 10))
    for k in range(10):
        dx = np.zeros(10)
        dx[k] = h
        plus = model.fx(x0 + dx.reshape(5, 2).T, np.zeros(2), P).T.ravel()
        minus = model.fx(x0 - dx.reshape(5, 2).T, np.zeros(2), P).T.ravel()
        num[:, k] = (plus - minus) / (2 * h)
    # central differences: error O(h^2 f''') ~ 1e-10; 1e-7 leaves room for rounding (1e-16/1e-6)
    np.testing.assert_allclose(J0, num, atol=1e-7)
    # bilinear term: d/du_j of the Jacobian (only the neuronal block, diagonal via log scaling)
    for j in range(2):
        u = np.zeros(2)
        u[j] = h
        Jp = model.effective_connectivity(P["A"], P["B"], u)
        Jm = model.effective_connectivity(P["A"], P["B"], -u)
        np.testing.assert_allclose(J1[j][:2, :2], (Jp - Jm) / (2 * h), atol=1e-7)
        np.testing.assert_allclose(c[j][:2], np.asarray(P["C"])[:, j] / 16)


def test_integrator_matches_a_fine_runge_kutta_solution_of_the_bilinear_system():
    spec = faces_spec(n_scans=60, delays=[0.25, 1.5])  # different sampling bins per region
    y, _ = simulate_dcm(spec, PARAMS)
    P = as_parameter_dict(spec, PARAMS)
    # the reference is built from the published model (spm_bireduce of spm_fx_fmri, spm_gx_fmri
    # written out in dcm_fixtures), not from the package's Jacobian or observer
    J0, J1, c = published_bireduce(P, 2, 2)
    u = spec.inputs
    bins = spec.schedule.sample_bins
    sub = 8
    h = spec.u_dt / sub
    x = np.zeros(10)
    ref = np.zeros_like(y)
    for t in range(u.shape[0]):
        for k, j in zip(*np.nonzero(bins == t)):
            ref[k, j] = published_bold(x.reshape(5, 2).T, P["epsilon"], TE)[j]
        M = J0 + np.tensordot(u[t], J1, axes=(0, 0))
        drive = u[t] @ c

        def f(z):
            return M @ z + drive

        for _ in range(sub):  # classical RK4, error O(h^4) ~ 1e-12 for h = 1/64 s
            k1 = f(x)
            k2 = f(x + h / 2 * k1)
            k3 = f(x + h / 2 * k2)
            k4 = f(x + h * k3)
            x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    assert np.abs(y).max() > 0.05
    np.testing.assert_allclose(y, ref, atol=1e-9)


def test_linear_single_region_reaches_the_analytic_steady_state(monkeypatch):
    # the fixed point below uses the exact derivatives: integrate with the analytic Jacobian
    analytic = model.jacobian_at_rest
    monkeypatch.setattr(model, "jacobian_at_rest", lambda *a: analytic(*a, method="analytic"))
    tr, n_scans = 2.0, 100
    u = np.ones((n_scans * 16, 1))
    spec = DCMSpec(np.ones((1, 1)), np.zeros((1, 1, 1)), np.ones((1, 1)), u, tr / 16, tr, TE,
                   centre_inputs=False, delays=tr)
    a_self, c_in = 0.3, 0.8
    y, x = simulate_dcm(spec, {"A": [[a_self]], "C": [[c_in]]})
    # dx/dt = -exp(a)/2 x + c/16 u = 0  ->  x = c / (8 exp(a))
    x_ss = c_in / (8 * np.exp(a_self))
    # linearised haemodynamics at rest: s = 0, log f = x/gamma, log v = alpha log f,
    # log q = (E0 + (1 - E0) ln(1 - E0))/E0 log f + (alpha - 1) log f
    # (published constants, dcm_fixtures: γ = 0.32, α = 0.32, E0 = 0.4 — not the module's)
    lf = x_ss / GAMMA
    lq = (E0 + (1 - E0) * np.log(1 - E0)) / E0 * lf + (ALPHA - 1) * lf
    expected = [x_ss, 0.0, lf, ALPHA * lf, lq]
    # after 200 s the slowest mode (neuronal, rate exp(0.3)/2 = 0.67/s; haemodynamic modes
    # >= 0.3/s) has decayed by more than e^-60: the states equal the fixed point to rounding
    np.testing.assert_allclose(x[-1, 0], expected, atol=1e-8)
    assert y[-1, 0] > 0  # positive BOLD for positive activity


def test_sampling_times_follow_spm_int():
    u = np.zeros((10 * 16, 1))
    sched = make_schedule(u, 0.125, 10, [1.0, 0.0, 0.06])
    # scan k of region j at bin ceil(k*16) + max(round(delay/dt), 1) - 1
    np.testing.assert_array_equal(sched.sample_bins[:, 0], 16 * np.arange(10) + 7)
    np.testing.assert_array_equal(sched.sample_bins[:, 1], 16 * np.arange(10))
    np.testing.assert_array_equal(sched.sample_bins[:, 2], 16 * np.arange(10))
    with pytest.raises(ValueError, match="after the last input bin"):
        make_schedule(u, 0.125, 10, [2.5])


def test_regional_delays_change_only_that_region():
    y_a, _ = simulate_dcm(faces_spec(n_scans=80, delays=[0.125, 0.125]), PARAMS)
    y_b, _ = simulate_dcm(faces_spec(n_scans=80, delays=[0.125, 1.0]), PARAMS)
    np.testing.assert_allclose(y_a[:, 0], y_b[:, 0], atol=1e-12)  # extra evaluation times: rounding only
    # 0.875 s later in a response that changes by ~0.1 %/s during block transitions
    assert np.abs(y_a[:, 1] - y_b[:, 1]).max() > 0.01


def test_bold_coefficients_depend_on_te():
    k1, k2, k3 = model.bold_coefficients(0.0, 0.04)
    assert k1 == pytest.approx(4.3 * 40.3 * 0.4 * 0.04) and k2 == pytest.approx(25 * 0.4 * 0.04) and k3 == 0
    x = np.zeros((1, 5))
    x[0, 3], x[0, 4] = 0.02, -0.05  # more volume, less deoxyhaemoglobin -> positive BOLD
    assert model.gx(x, 0.0, 0.03)[0] > 0
    # epsilon = 0: k3 = 0 and both remaining terms are proportional to TE -> exactly linear
    # (the former 20 % tolerance let a TE-free k2 pass)
    assert model.gx(x, 0.0, 0.045)[0] == pytest.approx(1.5 * model.gx(x, 0.0, 0.03)[0], rel=1e-12)


def test_inputs_are_mean_centred_by_default():
    spec = faces_spec()
    np.testing.assert_allclose(spec.inputs.mean(axis=0), 0, atol=1e-12)
    assert np.array_equal(faces_spec(centre_inputs=False).inputs, spec.u)


def test_simulated_noise_has_the_requested_snr_and_is_reproducible():
    spec = faces_spec()
    clean, _ = simulate_dcm(spec, PARAMS)
    y1, _ = simulate_dcm(spec, PARAMS, snr=4, rng=1)
    y2, _ = simulate_dcm(spec, PARAMS, snr=4, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(y1, y2)
    ratio = clean.std(axis=0, ddof=1) / (y1 - clean).std(axis=0, ddof=1)
    # 200 scans: the sample SD of the noise is within ~10% of its expectation (SE ~ 5%)
    np.testing.assert_allclose(ratio, 4, rtol=0.15)


def test_spec_validates_shapes():
    u = np.zeros((160, 2))
    with pytest.raises(ValueError, match="c must have shape"):
        DCMSpec(np.ones((2, 2)), None, np.ones((3, 2)), u, 0.125, 2.0, TE)
    with pytest.raises(ValueError, match="B must have shape"):
        DCMSpec(np.ones((2, 2)), np.ones((3, 3, 3)), np.ones((2, 2)), u, 0.125, 2.0, TE)
    with pytest.raises(ValueError, match="unknown inputs"):
        DCMSpec(np.ones((2, 2)), {"angry": np.ones((2, 2))}, np.ones((2, 2)), u, 0.125, 2.0, TE,
                input_names=["faces", "fearful"])
    assert DCMSpec(np.ones((2, 2)), None, np.ones((2, 2)), u, 0.125, 2.0, TE).n_scans == 10
