"""The elastic net's safety net: when the active-set iterations do not settle, batched coordinate
descent finishes the path — with the same solution (the problem is strictly convex for α < 1)."""

import numpy as np

from ptsd_bidsapp.glmnet import GlmnetCV, solver


def test_coordinate_descent_fallback_gives_the_active_set_solution(monkeypatch):
    rng = np.random.default_rng(4)
    X = rng.normal(size=(20, 6))
    y = X[:, 0] - 0.5 * X[:, 1] + rng.normal(size=20)
    exact = GlmnetCV(alpha=0.5).fit(X, y)
    monkeypatch.setattr(solver, "_MAX_ACTIVE_SET_ROUNDS", 1)     # every problem "stuck" after one round
    fallback = GlmnetCV(alpha=0.5).fit(X, y)
    np.testing.assert_allclose(fallback.lambdas_, exact.lambdas_, rtol=1e-12)
    np.testing.assert_allclose(fallback.coef_path_, exact.coef_path_, atol=1e-8)
    assert fallback.index_min_ == exact.index_min_
