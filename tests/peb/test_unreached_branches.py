"""Branches of the PEB optimiser no other test reached: a rejected step (spm_dcm_peb restores the
last accepted point and shortens the time step) and the block-diagonal fallback for long steps."""

import numpy as np

from ptsd_bidsapp.peb import fit as peb_fit


def _quadratic(worse_at=(), optimum=(1.0, -0.5)):
    """F(b) = -|b - optimum|² / 2 with exact gradient/curvature; F = NaN on the listed calls."""
    calls = {"n": 0}
    target = np.asarray(optimum)

    def evaluate(b, g):
        calls["n"] += 1
        d = b - target
        F = -0.5 * d @ d if calls["n"] not in worse_at else np.nan
        return {"F": F, "grad": -d, "hess": -np.eye(b.size), "dFdbb": -np.eye(b.size), "dFdgg": np.zeros((0, 0))}

    return evaluate, calls


def test_rejected_step_restores_the_last_accepted_point():
    evaluate, calls = _quadratic(worse_at={3})
    last, b, g, n, stopped = peb_fit._variational_laplace(evaluate, np.zeros(2), np.zeros(0))
    reference = _quadratic()[0]
    _, b_ref, _, n_ref, _ = peb_fit._variational_laplace(reference, np.zeros(2), np.zeros(0))
    assert n > n_ref                                             # the rejected step cost iterations
    # still ascends to the optimum, to the stopping rule's accuracy (gain < 1e-4 nats per step)
    np.testing.assert_allclose(b, [1.0, -0.5], atol=2e-3)
    assert np.isfinite(last["F"])


def test_long_steps_fall_back_to_the_block_diagonal_curvature():
    """|dp|₁ ≥ 8 (an optimum far away): the step uses the saved block curvatures; the ascent still
    converges to the optimum."""
    evaluate, _ = _quadratic(optimum=(40.0, -30.0))
    _, b, _, _, _ = peb_fit._variational_laplace(evaluate, np.zeros(2), np.zeros(0), max_iter=256)
    np.testing.assert_allclose(b, [40.0, -30.0], atol=1e-3)
