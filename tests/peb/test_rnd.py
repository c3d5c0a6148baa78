"""Re-randomisation tests of PEB group effects: the GLS statistic, exactness under the null, power."""

import numpy as np
import pytest

from ptsd_bidsapp.peb.rnd import gls_effects, rerandomisation_test


def _subjects(rng, n, p, effect=None, x=None, obs_sd=0.3, between_sd=0.5, prior_var=1.0):
    """Exact Gaussian posteriors of direct noisy observations of θ_i under the prior N(0, prior_var)."""
    theta = between_sd * rng.standard_normal((n, p))
    if effect is not None:
        theta += np.outer(x, effect)
    y = theta + obs_sd * rng.standard_normal((n, p))
    post_var = 1.0 / (1.0 / obs_sd**2 + 1.0 / prior_var)
    qE = [post_var * yi / obs_sd**2 for yi in y]
    qC = [np.eye(p) * post_var for _ in range(n)]
    return qE, qC, np.zeros(p), np.eye(p) * prior_var


def test_gls_with_equal_weights_is_ordinary_least_squares():
    rng = np.random.default_rng(0)
    n, p = 15, 3
    X = np.column_stack([np.ones(n), rng.standard_normal(n)])
    qE, qC, pE, pC = _subjects(rng, n, p, effect=np.array([0.5, 0.0, -0.3]), x=X[:, 1])
    L = np.stack([np.linalg.inv(c) - np.linalg.inv(pC) for c in qC])
    b = np.stack([np.linalg.inv(c) @ e for c, e in zip(qC, qE)])
    beta, z = gls_effects(L, b, X, np.eye(p) * 0.25)
    m = np.stack([np.linalg.solve(Li, bi) for Li, bi in zip(L, b)])   # the likelihood means
    ols = np.linalg.lstsq(X, m, rcond=None)[0].T
    np.testing.assert_allclose(beta, ols, atol=1e-10)
    # equal weights: var(beta) = (0.3^2 + 0.25) (X'X)^-1
    sd = np.sqrt((0.3**2 + 0.25) * np.diag(np.linalg.inv(X.T @ X)))
    np.testing.assert_allclose(z, ols / sd[None, :], rtol=1e-8)


def test_false_positive_rate_under_the_null_is_at_most_nominal():
    # 200 null trials, 4 parameters: the family-wise p < 0.05 for 'cov' in about 5 % of trials
    rng = np.random.default_rng(1)
    hits, hits_mean, n_trials = 0, 0, 200
    for t in range(n_trials):
        n, p = 16, 4
        x = rng.standard_normal(n)
        X = np.column_stack([np.ones(n), x - x.mean()])
        qE, qC, pE, pC = _subjects(rng, n, p)
        res = rerandomisation_test(qE, qC, pE, pC, X, [f"P{i}" for i in range(p)], ["mean", "cov"],
                                   {"mean": np.eye(p) * 0.25, "cov": np.eye(p) * 0.25}, permute=["cov"],
                                   sign_flip=["mean"], n_permutations=99, seed=t)
        hits += bool((res.p_fwe[:, 1] < 0.05).any())
        hits_mean += bool((res.p_fwe[:, 0] < 0.05).any())
        assert np.all(res.p_fwe >= res.p - 1e-12)  # the family-wise p is never smaller
    # binomial(200, 0.05): mean 10, SD 3.1 -> a calibrated test stays below 19 with p > 0.99
    assert hits <= 18 and hits_mean <= 18


def test_a_planted_covariate_effect_is_found_and_only_there():
    rng = np.random.default_rng(2)
    n, p = 20, 4
    x = rng.standard_normal(n)
    X = np.column_stack([np.ones(n), x - x.mean()])
    qE, qC, pE, pC = _subjects(rng, n, p, effect=np.array([0.0, 0.8, 0.0, 0.0]), x=X[:, 1])
    res = rerandomisation_test(qE, qC, pE, pC, X, ["a", "b", "c", "d"], ["mean", "cov"],
                               {"mean": np.eye(p) * 0.25, "cov": np.eye(p) * 0.25}, permute=["cov"],
                               sign_flip=["mean"], n_permutations=499, seed=0)
    assert res.p_fwe[1, 1] < 0.01 and res.z[1, 1] > 0
    assert res.p[[0, 2, 3], 1].min() > 0.01
    table = res.table()
    assert list(table.columns) == ["parameter", "covariate", "z", "p_rnd", "p_rnd_fwe", "rnd_method"]
    assert set(table["rnd_method"]) == {"permutation", "sign-flip"}


def test_seeded_and_validated():
    rng = np.random.default_rng(3)
    X = np.column_stack([np.ones(10), rng.standard_normal(10)])
    qE, qC, pE, pC = _subjects(rng, 10, 2)
    cov = {"mean": np.eye(2) * 0.2, "cov": np.eye(2) * 0.2}
    a = rerandomisation_test(qE, qC, pE, pC, X, ["a", "b"], ["mean", "cov"], cov, permute=["cov"], seed=4,
                             n_permutations=50)
    b = rerandomisation_test(qE, qC, pE, pC, X, ["a", "b"], ["mean", "cov"], cov, permute=["cov"], seed=4,
                             n_permutations=50)
    np.testing.assert_array_equal(a.p, b.p)
    assert np.isnan(a.p[:, 0]).all()  # the mean was not tested
    with pytest.raises(ValueError, match="not design columns"):
        rerandomisation_test(qE, qC, pE, pC, X, ["a", "b"], ["mean", "cov"], cov, permute=["age"])


def test_model_family_holds_the_family_wise_rate_over_all_covariates():
    # 200 null trials, 3 covariates x 4 parameters: with family='model' any p_fwe < 0.05 among all
    # 12 covariate effects in about 5 % of trials; per covariate family the model-wide rate is
    # about 1 - 0.95^3 = 14 %
    rng = np.random.default_rng(5)
    hits_model, hits_cov, n_trials = 0, 0, 200
    names = ["mean", "c1", "c2", "c3"]
    for t in range(n_trials):
        n, p = 16, 4
        Z = rng.standard_normal((n, 3))
        X = np.column_stack([np.ones(n), Z - Z.mean(axis=0)])
        qE, qC, pE, pC = _subjects(rng, n, p)
        cov = {c: np.eye(p) * 0.25 for c in names}
        kwargs = dict(permute=["c1", "c2", "c3"], n_permutations=99, seed=t)
        model = rerandomisation_test(qE, qC, pE, pC, X, [f"P{i}" for i in range(p)], names, cov, family="model",
                                     **kwargs)
        per_cov = rerandomisation_test(qE, qC, pE, pC, X, [f"P{i}" for i in range(p)], names, cov, **kwargs)
        np.testing.assert_array_equal(model.p, per_cov.p)               # same re-randomisations
        assert np.all(model.p_fwe[:, 1:] >= per_cov.p_fwe[:, 1:] - 1e-12)  # a larger family is never easier
        hits_model += bool((model.p_fwe[:, 1:] < 0.05).any())
        hits_cov += bool((per_cov.p_fwe[:, 1:] < 0.05).any())
    # binomial(200, 0.05): a calibrated model-wide test stays below 19 with p > 0.99; per covariate
    # the model-wide rate is near 14 % (28 of 200), far above it
    assert hits_model <= 18, hits_model
    assert hits_cov > hits_model


def test_family_is_validated():
    rng = np.random.default_rng(3)
    X = np.column_stack([np.ones(10), rng.standard_normal(10)])
    qE, qC, pE, pC = _subjects(rng, 10, 2)
    with pytest.raises(ValueError, match="family"):
        rerandomisation_test(qE, qC, pE, pC, X, ["a", "b"], ["mean", "cov"], {"cov": np.eye(2)}, permute=["cov"],
                             family="voxel")
