"""The DCM integrator (``ptsd_bidsapp.dcm.integrate``, SPM12 ``spm_int``) against independent truth.

* Linear systems with closed-form solutions: the bilinear operators the integrator propagates are
  swapped for hand-made ones (``model.jacobian_at_rest`` monkeypatched), so the states it returns
  must equal the textbook solutions of ``dz/dt = (J0 + sum_j u_j J_j) z + sum_j u_j c_j`` at the
  sampling times of ``spm_int`` written out here (``ceil(k u / v) + D_j - 1``, MATLAB rounding).
* SPM12 r7771 itself: ``spm_int`` + ``spm_gx_fmri`` at SPM's posterior means reproduce the
  predicted BOLD ``DCM.y`` that SPM wrote (``tests/data/spm12``), regional delays included.
* The BOLD observation applied to the returned states is the published equation
  (``tests/dcm/dcm_fixtures.published_bold``, Stephan et al. 2007 eqs. 12-14).

Tolerances: ``scipy.linalg.expm`` (Padé with scaling and squaring) and the chained products over
at most a few hundred events lose ~1e-15 relative per step; states here are O(1), so 1e-10 is a
margin of > 10^3 over the round-off and far below any convention error (one microtime bin of
timing moves the states by > 1e-3).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ptsd_bidsapp.dcm import integrate, model
from tests.dcm.dcm_fixtures import published_bold

pytestmark = pytest.mark.unit

STATE_ATOL = 1e-10


# --------------------------------------------------------------------------------- helpers
def _sample_bins(n_bins: int, n_scans: int, delays_in_bins: list[int]) -> np.ndarray:
    """spm_int's sampling bins, 0-based: ceil(k u / v) + D_j - 1 (integer arithmetic)."""
    s = [-(-k * n_bins // n_scans) for k in range(n_scans)]        # exact integer ceil
    return np.array([[sk + D - 1 for D in delays_in_bins] for sk in s])


def _params(scales, n: int, m: int, epsilon):
    """A batch of parameter dicts; ``A[b, 0, 0]`` carries a per-batch rate scale for the fake operators."""
    b = len(scales)
    A = np.zeros((b, n, n))
    A[:, 0, 0] = scales
    return {"A": A, "B": np.zeros((b, m, n, n)), "C": np.zeros((b, n, m)), "transit": np.zeros((b, n)),
            "decay": np.zeros((b, 1)), "epsilon": np.asarray(epsilon, dtype=float).reshape(b)}


def _use_operators(monkeypatch, J0, J1, c):
    """Make the integrator propagate ``scale_b * (J0, J1)`` and ``c`` instead of the DCM's operators."""
    def operators(A, B, C, transit, decay):
        scale = np.asarray(A)[:, 0, 0]
        b = scale.size
        return (scale[:, None, None] * J0[None], scale[:, None, None, None] * J1[None],
                np.broadcast_to(c, (b,) + c.shape).copy())

    monkeypatch.setattr(model, "jacobian_at_rest", operators)


def _diagonal_solution(u, dt, rates, gains, drives):
    """States at the start of every bin of ``dz_i/dt = -(r_i + sum_j u_j g_ji) z_i + sum_j u_j c_ji``,
    ``z(0) = 0``, input constant within a bin: per bin z <- z_ss + (z - z_ss) exp(-r dt)."""
    z = np.zeros(rates.size)
    out = [z.copy()]
    for row in u:
        r = rates + row @ gains
        z_ss = (row @ drives) / r
        z = z_ss + (z - z_ss) * np.exp(-r * dt)
        out.append(z.copy())
    return np.array(out)                                           # (bins + 1, d)


# --------------------------------------------------------------------------------- timing
def test_matlab_round_takes_halves_away_from_zero():
    got = integrate._matlab_round([0.5, 1.5, 2.5, -0.5, -2.5, 0.49, 2.51, -1.49, 0.0])
    assert got.tolist() == [1.0, 2.0, 3.0, -1.0, -3.0, 0.0, 3.0, -1.0, 0.0]


def test_schedule_samples_each_region_at_spm_int_bins():
    # 40 bins over 10 scans, dt = 0.25 s (exact in binary); delays -> D = max(round(delay/dt), 1):
    # 0 s -> 1; 0.125 s = 0.5 bin -> 1; 0.375 s = 1.5 bins -> 2; 0.625 s = 2.5 bins -> 3 (MATLAB
    # rounds halves away from zero; numpy's round-half-even would give 2)
    u = np.zeros((40, 1))
    sched = integrate.make_schedule(u, 0.25, 10, [0.0, 0.125, 0.375, 0.625])
    # s_k = ceil(4k) = 4k exactly (the -1e-9 guard must not push exact integers up)
    np.testing.assert_array_equal(sched.sample_bins, _sample_bins(40, 10, [1, 1, 2, 3]))
    assert sched.sample_bins[:3].tolist() == [[0, 0, 1, 2], [4, 4, 5, 6], [8, 8, 9, 10]]
    assert sched.n_regions == 4 and sched.n_scans == 10 and sched.u_dt == 0.25
    assert sched.sample_scan.tolist() == [k for k in range(10) for _ in range(4)]
    assert sched.sample_region.tolist() == [0, 1, 2, 3] * 10


def test_schedule_rounds_fractional_scan_starts_up():
    # 25 bins, 10 scans: s_k = ceil(2.5 k) = 0, 3, 5, 8, 10, 13, 15, 18, 20, 23
    sched = integrate.make_schedule(np.zeros(25), 0.1, 10, 0.1)
    assert sched.sample_bins[:, 0].tolist() == [0, 3, 5, 8, 10, 13, 15, 18, 20, 23]


def test_schedule_events_are_input_changes_and_samples():
    # 12 bins, input on over bins 2..5, 3 scans of 4 bins, D = 1: samples at bins 0, 4, 8;
    # changes at 0, 2, 6 -> events 0, 2, 4, 6, 8; the 1-D input is one column
    u = np.zeros(12)
    u[2:6] = 1.0
    sched = integrate.make_schedule(u, 0.5, 3, 0.5)
    assert sched.sample_bins[:, 0].tolist() == [0, 4, 8]
    assert sched.patterns.tolist() == [[0.0], [1.0]]
    # the update after each event: (pattern, bins to the next event); the last event has none
    steps = [tuple(sched.step_keys[k]) if k >= 0 else None for k in sched.event_key]
    assert steps == [(0, 2), (1, 2), (1, 2), (0, 2), None]
    assert sched.sample_event.tolist() == [0, 2, 4]


def test_schedule_without_input_changes_has_only_the_samples():
    sched = integrate.make_schedule(np.ones((8, 2)), 1.0, 4, [1.0, 2.0])
    assert sched.patterns.tolist() == [[1.0, 1.0]]
    assert sched.sample_bins.tolist() == [[0, 1], [2, 3], [4, 5], [6, 7]]
    steps = [tuple(sched.step_keys[k]) if k >= 0 else None for k in sched.event_key]
    assert steps == [(0, 1)] * 7 + [None]
    assert sched.sample_event.tolist() == list(range(8))


def test_schedule_refuses_samples_after_the_inputs_and_empty_designs():
    with pytest.raises(ValueError, match=r"a response sample falls after the last input bin \(bin 10 of 10\): "
                                         r"the inputs must cover every scan plus the regional delays"):
        integrate.make_schedule(np.zeros(10), 1.0, 5, [3.0])      # last scan: s = 8, D = 3 -> bin 10
    with pytest.raises(ValueError, match=r"^need at least one scan and one microtime bin$"):
        integrate.make_schedule(np.zeros((0, 1)), 1.0, 1, [1.0])
    with pytest.raises(ValueError, match=r"^need at least one scan and one microtime bin$"):
        integrate.make_schedule(np.zeros(4), 1.0, 0, [1.0])
    # the last bin itself is allowed (D = 2 -> bin 9)
    assert integrate.make_schedule(np.zeros(10), 1.0, 5, [2.0]).sample_bins.max() == 9


def test_one_scan_of_one_bin_is_rest():
    """The smallest design spm_int accepts: one scan, one microtime bin, one event (the sample at
    bin 0) and no update at all; the state is rest, so the BOLD is 0."""
    sched = integrate.make_schedule(np.ones((1, 1)), 0.5, 1, [0.25])
    assert sched.sample_bins.tolist() == [[0]]
    assert sched.step_keys.shape == (0, 2) and sched.step_keys.dtype.kind == "i"
    assert sched.event_key.tolist() == [-1] and sched.sample_event.tolist() == [0]
    params = _params([1.0], 1, 1, [0.2])
    params["A"][:] = -0.5
    params["C"][:] = 1.0
    y, x = integrate.integrate(params, sched, 0.04, return_states=True)
    assert y.tolist() == [[[0.0]]] and x.tolist() == [[[[0.0] * 5]]]
    # two scans of one bin each: the second sample is after one bin of input
    two = integrate.make_schedule(np.ones((2, 1)), 0.5, 2, [0.25])
    assert two.sample_bins.tolist() == [[0], [1]]
    assert [tuple(two.step_keys[k]) if k >= 0 else None for k in two.event_key] == [(0, 1), None]


def test_schedule_bins_are_integers_and_inputs_of_any_numeric_type_are_read_alike():
    u = np.zeros((40, 2), dtype=bool)
    u[5:17, 0] = True
    u[9:30, 1] = True
    reference = integrate.make_schedule(u.astype(float), 0.25, 10, [0.5, 0.75])
    for inputs in (u, u.astype(int)):
        sched = integrate.make_schedule(inputs, 0.25, 10, [0.5, 0.75])
        np.testing.assert_array_equal(sched.patterns, reference.patterns)
        np.testing.assert_array_equal(sched.step_keys, reference.step_keys)
        np.testing.assert_array_equal(sched.event_key, reference.event_key)
    # bins and event indices index arrays: integer dtype
    for name in ("sample_bins", "step_keys", "event_key", "sample_event", "sample_scan", "sample_region"):
        assert getattr(reference, name).dtype.kind == "i", name
    assert reference.sample_bins.tolist()[:2] == [[1, 2], [5, 6]]   # D = 2 and 3


# --------------------------------------------------------------------------------- linear systems
def test_bilinear_diagonal_system_equals_its_closed_form_at_every_sample(monkeypatch):
    """Two regions, two inputs switching on and off between samples (overlapping), bilinear
    rates, regional delays, a batch of two rate scales with their own epsilon."""
    n, m, dt, v = 2, 2, 0.25, 12
    d = 5 * n
    n_bins = 60
    u = np.zeros((n_bins, m))
    u[3:21, 0] = 1.0
    u[13:34, 1] = 0.5
    u[41:47, 0] = 2.0
    rng = np.random.default_rng(3)
    rates = rng.uniform(0.2, 1.5, d)
    gains = rng.uniform(0.0, 0.6, (m, d))
    drives = rng.uniform(-0.3, 0.3, (m, d))
    _use_operators(monkeypatch, -np.diag(rates), np.stack([-np.diag(g) for g in gains]), drives)
    delays = [0.25, 0.875]                                         # 1 bin; 3.5 bins -> 4 (away from zero)
    sched = integrate.make_schedule(u, dt, v, delays)
    bins = _sample_bins(n_bins, v, [1, 4])
    np.testing.assert_array_equal(sched.sample_bins, bins)
    scales, eps, te = [1.0, 0.7], [0.1, -0.2], 0.035
    y, x = integrate.integrate(_params(scales, n, m, eps), sched, te, return_states=True)
    assert y.shape == (2, v, n) and x.shape == (2, v, n, 5)
    for b, scale in enumerate(scales):
        z = _diagonal_solution(u, dt, scale * rates, scale * gains, drives)
        for j in range(n):
            expected = z[bins[:, j]][:, [k * n + j for k in range(5)]]   # (scans, 5) of region j
            np.testing.assert_allclose(x[b, :, j], expected, rtol=0, atol=STATE_ATOL)
            np.testing.assert_allclose(y[b, :, j], published_bold(expected, eps[b], te), rtol=0, atol=STATE_ATOL)
        assert np.abs(x[b]).max() > 0.05                           # the inputs did drive the states
    # without return_states only the BOLD array comes back
    y_only = integrate.integrate(_params(scales, n, m, eps), sched, te)
    assert isinstance(y_only, np.ndarray)
    np.testing.assert_array_equal(y_only, y)


def test_rotation_is_integrated_in_the_right_direction(monkeypatch):
    """p' = w q + c u, q' = -w p from rest under a constant input: p = (c/w) sin(wt),
    q = (c/w)(cos(wt) - 1) -- a transposed propagator flips the sign of q."""
    w, c_in, dt, v = 0.8, 0.5, 0.1, 20
    J0 = np.zeros((5, 5))
    J0[0, 1], J0[1, 0] = w, -w
    J0[2, 2] = J0[3, 3] = J0[4, 4] = -1.0
    drive = np.zeros((1, 5))
    drive[0, 0] = c_in
    _use_operators(monkeypatch, J0, np.zeros((1, 5, 5)), drive)
    n_bins = 100
    sched = integrate.make_schedule(np.ones((n_bins, 1)), dt, v, [dt])
    _, x = integrate.integrate(_params([1.0], 1, 1, [0.0]), sched, 0.04, return_states=True)
    t = np.arange(v) * (n_bins // v) * dt
    np.testing.assert_allclose(x[0, :, 0, 0], c_in / w * np.sin(w * t), rtol=0, atol=STATE_ATOL)
    np.testing.assert_allclose(x[0, :, 0, 1], c_in / w * (np.cos(w * t) - 1), rtol=0, atol=STATE_ATOL)
    np.testing.assert_allclose(x[0, :, 0, 2:], 0.0, rtol=0, atol=STATE_ATOL)
    assert np.abs(x[0, :, 0, 1]).max() > 0.5


def test_state_blowing_past_norm_1e6_stops_the_integration(monkeypatch):
    """spm_int: once norm([1; x], 1) > 1e6 integration stops and that and every later sample is
    zero. Neuronal, vasodilatory and flow states grow, z_i' = r z_i + c_i (z_i = c_i (e^{rt} - 1) / r
    from rest); volume and deoxyhaemoglobin decay, z_i' = -z_i + c_i (z_i = c_i (1 - e^{-t})), so
    the BOLD stays finite and non-zero and the first sample past the threshold is known in closed
    form, for each set of a batch (one stops before the other)."""
    r, dt, v = 0.9, 0.25, 40
    n = 2
    drive = np.array([0.3, 0.1, 0.2, 0.05, 0.05, 0.3, 0.1, 0.2, 0.05, 0.05])
    rates = np.where(np.arange(5 * n) < 3 * n, r, -1.0)            # spm_vec order: x, s, log f | log v, log q
    _use_operators(monkeypatch, np.diag(rates), np.zeros((1, 10, 10)), drive[None])
    n_bins = 4 * v
    sched = integrate.make_schedule(np.ones((n_bins, 1)), dt, v, [dt, dt])
    # a batch of two: the second set has every rate scaled by 0.6 and blows up 9 samples later
    scales = [1.0, 0.6]
    y, x = integrate.integrate(_params(scales, n, 1, [0.0, 0.0]), sched, 0.04, return_states=True)
    t = np.arange(v) * 4 * dt
    for b, scale in enumerate(scales):
        k = scale * rates
        z = drive * (np.exp(np.outer(t, k)) - 1.0) / k                # (scans, d)
        norm = 1.0 + np.abs(z).sum(axis=1)
        first = int(np.flatnonzero(norm > 1e6)[0])
        # the threshold falls clearly between two samples, and a 1e5 or 1e7 threshold would move
        # `first` (measured: 8.1e5 / 2.0e6 for scale 1, 7.9e5 / 1.4e6 for 0.6)
        assert 5 < first < v - 2 and 1e5 < norm[first - 1] < 0.99e6 and 1.01e6 < norm[first] < 1e7
        got = x[b, :first].transpose(0, 2, 1).reshape(first, 10)
        np.testing.assert_allclose(got, z[:first], rtol=1e-9)
        assert np.all(x[b, first:] == 0) and np.all(y[b, first:] == 0)
        assert np.all(y[b, 1:first] != 0) and np.all(np.isfinite(y[b]))    # y = 0 at rest (t = 0)


def test_blow_up_threshold_is_1e6_exactly(monkeypatch):
    """A state growing linearly, z' = c (J = 0): z(t) = c t exactly, so the norm 1 + c t at a
    sample can be put 0.5 above or below 1e6: above stops the integration there, below does not."""
    dt, v = 1.0, 4
    sched = integrate.make_schedule(np.ones((4, 1)), dt, v, [dt])   # samples at t = 0, 1, 2, 3 s
    for norm_at_2s, stopped in ((1e6 + 0.5, True), (1e6 - 0.5, False)):
        drive = np.zeros((1, 5))
        drive[0, 0] = (norm_at_2s - 1.0) / 2.0
        _use_operators(monkeypatch, np.zeros((5, 5)), np.zeros((1, 5, 5)), drive)
        _, x = integrate.integrate(_params([1.0], 1, 1, [0.0]), sched, 0.04, return_states=True)
        assert x[0, 1, 0, 0] == pytest.approx(drive[0, 0], rel=1e-12)
        if stopped:
            assert np.all(x[0, 2:] == 0)
        else:
            assert x[0, 2, 0, 0] == pytest.approx(2 * drive[0, 0], rel=1e-12) and np.all(x[0, 3] == 0)


# --------------------------------------------------------------------------------- SPM12 itself
@pytest.mark.parametrize("case", ["block2", "event3", "selfmod2"])
def test_predicted_bold_at_spm_posterior_is_spm_int_number_for_number(case):
    """SPM12 r7771 spm_int + spm_gx_fmri at SPM's Ep give DCM.y (measured agreement: <= 1.3e-12;
    event3 has three regions sampled at different delays, 0.2/0.7/1.2 s on a 0.094 s grid)."""
    from tests.dcm.test_spm12_reference import _load, _spec_from_reference

    ref = _load(f"dcm_{case}.json")
    spec = _spec_from_reference(ref)
    y_spm = np.asarray(ref["outputs"]["y"], dtype=float).reshape(-1, spec.n_regions)
    y = spec.predict(np.asarray(ref["outputs"]["Ep"], dtype=float))
    assert y.shape == y_spm.shape
    np.testing.assert_allclose(y, y_spm, rtol=0, atol=1e-10)
    assert np.abs(y_spm).max() > 0.4
