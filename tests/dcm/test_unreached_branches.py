"""Failure-handling branches no other test reached: the DCM inversion's back-off from a diverging
integration (spm_nlsi_GN), its give-up, and the integrator's blow-up stop (spm_int)."""

import numpy as np
import pytest

from ptsd_bidsapp.dcm import estimate_dcm, integrate, inversion, simulate_dcm
from tests.dcm.dcm_fixtures import faces_spec

PARAMS = {"A": [[0.1, -0.3], [0.4, -0.1]], "B": {"fearful": [[0, -0.2], [0.3, 0]]}, "C": [[0.6, 0], [0, 0]]}


def _data():
    clean, _ = simulate_dcm(faces_spec(n_scans=60), PARAMS)
    return faces_spec(y=clean + 0.01 * np.random.default_rng(0).standard_normal(clean.shape), max_iter=6)


def _diverging(calls_to_fail, monkeypatch):
    """integrate() returning NaN on the given call numbers (1-based), as a blown-up model would."""
    original = integrate.integrate
    count = {"n": 0}

    def flaky(*args, **kwargs):
        count["n"] += 1
        out = original(*args, **kwargs)
        return np.full_like(out, np.nan) if count["n"] in calls_to_fail else out

    monkeypatch.setattr(inversion.integrate, "integrate", flaky)
    return count


def test_divergence_backs_off_to_the_last_accepted_point_and_recovers(monkeypatch):
    """A NaN prediction after iteration 2 is not accepted: the step is retried from the best point
    with a smaller ascent rate (log rate lowered by 2), and the inversion carries on."""
    count = _diverging({3}, monkeypatch)
    result = estimate_dcm(_data())
    assert count["n"] >= 4 and np.isfinite(result.F)
    rates = [h["log_ascent_rate"] for h in result.history]
    assert len(result.history) >= 3
    assert rates[2] <= -4.0            # the back-off lowered the rate (floor -4) before iteration 3 went on
    assert np.all(np.isfinite(result.Ep_vector))


def test_divergence_that_does_not_recover_raises(monkeypatch):
    """Four increasingly regularised retries all diverge: DCMConvergenceError (spm_nlsi_GN's
    'convergence failure'), not NaN estimates."""
    _diverging(set(range(3, 100)), monkeypatch)
    with pytest.raises(inversion.DCMConvergenceError,
                       match=r"^DCM integration diverged \(spm_nlsi_GN: convergence failure\)$"):
        estimate_dcm(_data())


def test_divergence_at_the_first_iteration_raises_without_a_back_off(monkeypatch):
    """spm_nlsi_GN backs off only from an accepted point: a NaN prediction at the prior mean
    (iteration 1) is a convergence failure at once (one integration, no retry)."""
    data = _data()
    count = _diverging({1}, monkeypatch)
    with pytest.raises(inversion.DCMConvergenceError, match=r"^DCM integration diverged"):
        estimate_dcm(data)
    assert count["n"] == 1


def test_integrator_stops_a_blown_up_state_and_leaves_later_samples_zero():
    """spm_int: once norm(x, 1) > 1e6 the integration stops and later samples stay zero; a stable
    parameter set in the same batch is unaffected."""
    spec = faces_spec(n_scans=60)
    stable, _ = simulate_dcm(spec, PARAMS)
    explosive = dict(PARAMS, A=[[0.1, 6.0], [6.0, -0.1]])   # eigenvalue ~ +5.5 /s: grows e^5.5 per s
    y, _ = simulate_dcm(spec, explosive)
    assert np.all(np.isfinite(y))
    blown = np.flatnonzero(np.any(y != 0, axis=1))
    last = blown.max()
    assert last < spec.n_scans - 1 and np.all(y[last + 1:] == 0)
    np.testing.assert_allclose(simulate_dcm(spec, PARAMS)[0], stable)
