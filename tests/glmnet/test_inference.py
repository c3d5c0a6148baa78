"""Nested CV, permutation test, bootstrap selection: definitions, seeds, n_jobs."""

import numpy as np
import pytest

from ptsd_bidsapp.glmnet import GlmnetCV, bootstrap_selection, nested_cv, permutation_test


# ---------------------------------------------------------------------------------------
# nested CV, permutations, bootstrap: definitions, seeds, n_jobs


def _planted(n=20, p=10, seed=1, noise=False):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    y = rng.normal(size=n) if noise else 2.0 * X[:, 0] + rng.normal(size=n)
    return X, y


def test_nested_loo_equals_refitting_cv_glmnet_without_each_subject():
    """Nested LOO by brute force: cv.glmnet (LOO) on the n − 1 others, predict the left-out subject
    at that fit's λ_min; R², r and MAE by their documented definitions."""
    X, y = _planted(n=12, p=8, seed=2)
    nested = nested_cv(X, y, alpha=0.5, seed=0)
    n = len(y)
    predicted, train_mean = np.zeros(n), np.zeros(n)
    for i in range(n):
        keep = np.arange(n) != i
        cv = GlmnetCV(alpha=0.5).fit(X[keep], y[keep])
        predicted[i] = cv.predict(X[i : i + 1])[0]
        train_mean[i] = y[keep].mean()
    np.testing.assert_allclose(nested["predicted"], predicted, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(nested["train_mean"], train_mean, rtol=1e-12)
    assert nested["r2"] == pytest.approx(1 - np.sum((y - predicted) ** 2) / np.sum((y - train_mean) ** 2))
    assert nested["pearson_r"] == pytest.approx(np.corrcoef(y, predicted)[0, 1])
    assert nested["mae"] == pytest.approx(np.mean(np.abs(y - predicted)))


def test_same_seed_gives_identical_results_and_other_seeds_differ():
    X, y = _planted(n=16, p=6, seed=4)
    kfold = {"nested_max_loo": 8, "nested_k_folds": 4}  # 16 > 8 subjects: seeded 4-fold outer and inner
    a, b, c = (nested_cv(X, y, seed=s, **kfold) for s in (7, 7, 8))
    np.testing.assert_array_equal(a["predicted"], b["predicted"])
    np.testing.assert_array_equal(a["outer_folds"], b["outer_folds"])
    assert not np.array_equal(a["outer_folds"], c["outer_folds"])

    cv = GlmnetCV().fit(X, y)
    boot = [bootstrap_selection(X, y, cv.lambdas_, cv.index_min_, n_bootstrap=40, seed=s)["frequency"]
            for s in (7, 7, 8)]
    np.testing.assert_array_equal(boot[0], boot[1])
    assert not np.array_equal(boot[0], boot[2])

    perm = [permutation_test(X[:10], y[:10], 0.0, n_permutations=8, seed=s)["null_r2"] for s in (7, 7, 8)]
    np.testing.assert_array_equal(perm[0], perm[1])
    assert not np.array_equal(perm[0], perm[2])


def test_permutation_null_does_not_depend_on_n_jobs_or_chunking():
    X, y = _planted(n=10, p=6, seed=6)
    runs = [permutation_test(X, y, 0.1, n_permutations=12, seed=3, n_jobs=jobs, chunk_size=chunk)
            for jobs, chunk in ((1, None), (1, 1), (2, 3))]
    for other in runs[1:]:
        np.testing.assert_array_equal(runs[0]["null_r2"], other["null_r2"])
        assert other["p_value"] == runs[0]["p_value"]
    null = runs[0]["null_r2"]
    assert runs[0]["p_value"] == pytest.approx((1 + np.sum(null >= 0.1)) / 13)


def test_planted_predictor_is_selected_and_significant_noise_is_not():
    X, y = _planted(n=20, p=10, seed=1)
    nested = nested_cv(X, y, seed=0)
    assert nested["r2"] > 0.5
    perm = permutation_test(X, y, nested["r2"], n_permutations=39, seed=0)
    assert perm["p_value"] <= 0.05
    cv = GlmnetCV().fit(X, y)
    freq = bootstrap_selection(X, y, cv.lambdas_, cv.index_min_, n_bootstrap=100, seed=0)["frequency"]
    assert freq[0] >= 0.95
    assert freq[0] > freq[1:].max()

    X, y = _planted(n=20, p=10, seed=1, noise=True)
    nested = nested_cv(X, y, seed=0)
    perm = permutation_test(X, y, nested["r2"], n_permutations=39, seed=0)
    assert nested["r2"] < 0.2
    assert perm["p_value"] > 0.1
    assert np.median(perm["null_r2"]) < 0.1  # permuted outcomes are not predictable out of sample


def test_unpenalised_predictor_is_selected_in_every_bootstrap():
    X, y = _planted(n=15, p=5, seed=9, noise=True)
    pf = np.array([1.0, 1.0, 0.0, 1.0, 1.0])
    cv = GlmnetCV(penalty_factor=pf).fit(X, y)
    freq = bootstrap_selection(X, y, cv.lambdas_, cv.index_min_, n_bootstrap=30, penalty_factor=pf, seed=0)
    assert freq["frequency"][2] == 1.0
    assert freq["n_bootstrap"] == 30
