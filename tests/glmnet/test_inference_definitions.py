"""Nested CV, permutation test, bootstrap: their definitions written out independently (unit tier).

Each expected value here is computed without the function under test: prediction metrics from
their textbook formulas on hand-made numbers; nested leave-one-out by refitting ``GlmnetCV`` (the
cv.glmnet pinned against R in ``test_cv.py``) without each subject; the K-fold nested CV against R
glmnet's cv.glmnet run on each outer training set (scripts/glmnet_reference.R); the permutation null as the
nested R² of each permuted outcome, the permutation drawn from the documented seed stream; the
p-values by counting; the seed streams by their documented property (``SeedSequence.spawn``:
the first k streams do not depend on how many are drawn).
"""

import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ptsd_bidsapp.glmnet import (
    GlmnetCV,
    bootstrap_selection,
    nested_cv,
    permutation_test,
    prediction_metrics,
    sequential_p_value,
)
pytestmark = pytest.mark.unit

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "glmnet"


def _spawn(seed, key, count):
    """The documented seed streams, written out: ``SeedSequence(seed)`` with the task's CRC-32 as
    spawn key, one child per permutation / bootstrap resample (inference.py's module docstring)."""
    root = np.random.SeedSequence(entropy=seed, spawn_key=(zlib.crc32(key.encode()),))
    return [np.random.default_rng(child) for child in root.spawn(count)]

SOLVERS = ("numpy", "compiled")


def _data(n=9, p=4, seed=0, signal=2.0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p)) * np.array([1.0, 3.0, 0.5, 2.0, 1.0, 1.0][:p])  # unequal scales
    y = signal * X[:, 0] + rng.normal(size=n)
    return X, y


# ---------------------------------------------------------------------------------------
# prediction metrics on hand-made numbers


def test_prediction_metrics_by_hand():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    pred = np.array([1.5, 1.5, 3.5, 3.0])
    train_mean = (y.sum() - y) / 3  # leave-one-out means: 3, 8/3, 7/3, 2
    got = prediction_metrics(y, pred, train_mean)
    sse = 0.25 + 0.25 + 0.25 + 1.0
    sst = 4.0 + 4.0 / 9 + 4.0 / 9 + 4.0  # around the training means, not around mean(y) (= 5)
    assert got["r2"] == pytest.approx(1 - sse / sst, rel=1e-14)
    # Pearson r: y − 2.5 = (−1.5, −0.5, 0.5, 1.5), pred − 2.375 = (−0.875, −0.875, 1.125, 0.625)
    sxy = 1.5 * 0.875 + 0.5 * 0.875 + 0.5 * 1.125 + 1.5 * 0.625
    sxx = 2 * 1.5**2 + 2 * 0.5**2
    syy = 2 * 0.875**2 + 1.125**2 + 0.625**2
    assert got["pearson_r"] == pytest.approx(sxy / np.sqrt(sxx * syy), rel=1e-14)
    assert got["mae"] == pytest.approx(0.625, rel=1e-14)


def test_prediction_metrics_constant_prediction_and_rows():
    """A constant prediction has no correlation (r = 0, not NaN); rows of a stack are independent."""
    y = np.array([1.0, 2.0, 3.0, 4.0])
    flat = prediction_metrics(y, np.full(4, 2.0), np.full(4, 2.5))
    assert flat["pearson_r"] == 0.0
    assert flat["r2"] == pytest.approx(1 - (1 + 0 + 1 + 4) / 5.0, rel=1e-14)  # SST around 2.5 = 5
    assert flat["mae"] == pytest.approx(1.0, rel=1e-14)
    # three rows: the constant one, a second, and a third at 1/10 scale (r is scale-free, so its
    # r must be the second row's although its SDs are below 1)
    Y = np.stack([y, y[::-1] * 2.0, y[::-1] * 0.2])
    P = np.stack([np.full(4, 2.0), np.array([8.0, 5.0, 4.5, 1.0]), np.array([0.8, 0.5, 0.45, 0.1])])
    M = np.stack([np.full(4, 2.5), np.full(4, 5.0), np.full(4, 0.5)])
    stacked = prediction_metrics(Y, P, M)
    second = prediction_metrics(Y[1], P[1], M[1])
    for key in ("r2", "pearson_r", "mae"):
        assert stacked[key].shape == (3,)
        assert stacked[key][0] == pytest.approx(flat[key], rel=1e-14, abs=1e-15)
        assert stacked[key][1] == pytest.approx(second[key], rel=1e-14)
    assert stacked["r2"][2] == pytest.approx(second["r2"], rel=1e-12)
    assert stacked["pearson_r"][2] == pytest.approx(second["pearson_r"], rel=1e-12)
    assert stacked["mae"][2] == pytest.approx(second["mae"] / 10, rel=1e-12)
    # Pearson r of the second row by hand: y − 5 = (3, 1, −1, −3), pred − 4.625 = (3.375, 0.375, −0.125, −3.625)
    sxy = 3 * 3.375 + 1 * 0.375 + 1 * 0.125 + 3 * 3.625
    assert second["pearson_r"] == pytest.approx(sxy / np.sqrt(20 * (3.375**2 + 0.375**2 + 0.125**2 + 3.625**2)),
                                                rel=1e-14)
    # the second row by hand: y = (8, 6, 4, 2), pred = (8, 5, 4.5, 1), mean 5
    assert second["r2"] == pytest.approx(1 - (0 + 1 + 0.25 + 1) / (9 + 1 + 1 + 9), rel=1e-14)
    assert second["mae"] == pytest.approx((0 + 1 + 0.5 + 1) / 4, rel=1e-14)


# ---------------------------------------------------------------------------------------
# nested cross-validation


@pytest.mark.parametrize("solver", SOLVERS)
def test_nested_loo_is_cv_glmnet_refitted_without_each_subject(solver):
    """Outer LOO: subject i predicted by cv.glmnet (LOO) on the others at its λ_min, for both solvers.

    1e-8 relative: the same exact path solutions reached by a different batching (pair fits
    shared by two outer folds; the compiled inner-CV loop) — rounding only.
    """
    X, y = _data(n=9, p=4, seed=2)
    got = nested_cv(X, y, alpha=0.5, n_lambda=40, seed=0, solver=solver)
    other = SOLVERS[1 - SOLVERS.index(solver)]  # the reference refits with the other path solver
    n = len(y)
    predicted, train_mean = np.zeros(n), np.zeros(n)
    for i in range(n):
        keep = np.arange(n) != i
        cv = GlmnetCV(alpha=0.5, n_lambda=40, solver=other).fit(X[keep], y[keep])
        predicted[i] = cv.predict(X[i:i + 1])[0]
        train_mean[i] = y[keep].mean()
    np.testing.assert_allclose(got["predicted"], predicted, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(got["train_mean"], train_mean, rtol=1e-13)
    np.testing.assert_array_equal(got["observed"], y)
    np.testing.assert_array_equal(got["outer_folds"], np.arange(n))
    assert got["inner_folds"] == "loo"
    assert got["r2"] == pytest.approx(1 - np.sum((y - predicted) ** 2) / np.sum((y - train_mean) ** 2), rel=1e-8)
    assert got["pearson_r"] == pytest.approx(np.corrcoef(y, predicted)[0, 1], rel=1e-8)
    assert got["mae"] == pytest.approx(np.mean(np.abs(y - predicted)), rel=1e-8)


def test_nested_loo_penalty_factor_and_alpha_reach_the_inner_fits():
    """An unpenalised predictor, the lasso, a shorter λ path: the refit reference with the same options."""
    X, y = _data(n=8, p=4, seed=5, signal=0.7)
    pf = np.array([1.0, 0.0, 1.0, 2.0])
    got = nested_cv(X, y, alpha=1.0, penalty_factor=pf, n_lambda=30, lambda_min_ratio=0.05, seed=0)
    n = len(y)
    predicted = np.zeros(n)
    for i in range(n):
        keep = np.arange(n) != i
        cv = GlmnetCV(alpha=1.0, n_lambda=30, lambda_min_ratio=0.05, penalty_factor=pf,
                      solver="numpy").fit(X[keep], y[keep])
        predicted[i] = cv.predict(X[i:i + 1])[0]
    np.testing.assert_allclose(got["predicted"], predicted, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("p", [5, 6, 7])
def test_nested_loo_inner_folds_compute_their_own_lambda_path(p):
    """cv.glmnet (R glmnet 4.1.6, cv.glmnet.raw: "each call generates its own lambda sequence") fits
    each fold with glmnet's defaults for *that fold*: λ_max of the fold and lambda.min.ratio =
    1e-2 if its n < p else 1e-4. n = 7 subjects: the outer fits train on 6, the inner folds on 5,
    so p = 5, 6, 7 put the rule's switch between or on them. Written out: every fit by glmnet's
    own path (``GlmnetCV(...).lambdas_`` and ``predict`` along it, on the subset), the fold
    predictions interpolated linearly in λ at the outer fit's λs (lambda.interp, clamped at the
    fold path's ends), cvm averaged over the 6 inner folds, λ_min the first λ at the minimum."""
    rng = np.random.default_rng(4)
    n = 7
    X = rng.normal(size=(n, p))
    y = X[:, :3] @ np.array([1.5, -1.0, 0.7]) + rng.normal(size=n)
    got = nested_cv(X, y, n_lambda=30, seed=0)
    expected = np.zeros(n)
    for i in range(n):
        rest = np.flatnonzero(np.arange(n) != i)
        outer = GlmnetCV(n_lambda=30, solver="compiled").fit(X[rest], y[rest])
        errors = []
        for j in rest:
            keep = rest[rest != j]
            fold = GlmnetCV(n_lambda=30, solver="compiled").fit(X[keep], y[keep])
            along = [fold.predict(X[j:j + 1], index=k)[0] for k in range(fold.lambdas_.size)]
            interp = np.interp(outer.lambdas_, fold.lambdas_[::-1], np.array(along)[::-1])
            errors.append((y[j] - interp) ** 2)
        cvm = np.mean(errors, axis=0)
        i_min = int(np.flatnonzero(cvm <= cvm.min() * (1 + 1e-12))[0])
        expected[i] = outer.predict(X[i:i + 1], index=i_min)[0]
    # (at p = 6 the folds' own rule matters here: with the outer fits' ratio, 1e-4, for the folds
    # the predictions move by up to 0.99 — checked when the test was written)
    np.testing.assert_allclose(got["predicted"], expected, rtol=1e-8, atol=1e-10)


def test_kfold_nested_with_as_many_folds_as_subjects_is_the_loo_nested_cv():
    """Above ``nested_max_loo`` with K ≥ n: the K-fold code path has LOO outer and inner folds, so it
    must give the LOO path's predictions (two implementations of one definition)."""
    X, y = _data(n=9, p=4, seed=3)
    loo = nested_cv(X, y, seed=1)
    kfold = nested_cv(X, y, seed=1, nested_max_loo=8, nested_k_folds=9)
    assert kfold["inner_folds"] == 9
    np.testing.assert_array_equal(kfold["outer_folds"], np.arange(9))
    np.testing.assert_allclose(kfold["predicted"], loo["predicted"], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(kfold["train_mean"], loo["train_mean"], rtol=1e-13)


@pytest.mark.parametrize("max_loo", [9, 4])
def test_held_out_outcomes_do_not_reach_their_own_predictions(max_loo):
    """No leakage: changing the outcomes of one outer fold leaves that fold's predictions unchanged
    (LOO, and seeded 3-fold above ``nested_max_loo``: the folds depend on the seed only)."""
    X, y = _data(n=9, p=4, seed=4)
    kw = {"seed": 2, "nested_max_loo": max_loo, "nested_k_folds": 3}
    base = nested_cv(X, y, **kw)
    folds = base["outer_folds"]
    held = folds == folds[0]
    y2 = y.copy()
    y2[held] += np.array([5.0, -3.0, 8.0])[: held.sum()]  # folds of 1 (LOO) or 3 subjects
    moved = nested_cv(X, y2, **kw)
    np.testing.assert_array_equal(moved["outer_folds"], folds)
    np.testing.assert_allclose(moved["predicted"][held], base["predicted"][held], rtol=1e-10, atol=1e-12)
    assert not np.allclose(moved["predicted"][~held], base["predicted"][~held])  # the others did see them


def test_leave_one_out_up_to_and_including_nested_max_loo():
    X, y = _data(n=9, p=3, seed=22)
    at = nested_cv(X, y, seed=1, nested_max_loo=9, nested_k_folds=3)
    above = nested_cv(X, y, seed=1, nested_max_loo=8, nested_k_folds=3)
    assert at["inner_folds"] == "loo" and at["outer_folds"].tolist() == list(range(9))
    assert above["inner_folds"] == 3 and sorted(np.bincount(above["outer_folds"]).tolist()) == [3, 3, 3]


def test_kfold_outer_folds_and_training_means():
    """n = 10 above ``nested_max_loo``, K = 3: balanced folds (4, 3, 3), each subject held out once;
    the reference of the R² is the mean of y outside the subject's fold."""
    X, y = _data(n=10, p=3, seed=6)
    got = nested_cv(X, y, seed=4, nested_max_loo=9, nested_k_folds=3)
    folds = got["outer_folds"]
    assert got["inner_folds"] == 3
    assert sorted(np.bincount(folds).tolist()) == [3, 3, 4]
    # the split: fold labels 0, 1, 2, 0, 1, ... permuted by the "outer-folds" stream of the seed
    np.testing.assert_array_equal(folds, _spawn(4, "outer-folds", 1)[0].permutation(np.arange(10) % 3))
    expected_mean = np.array([y[folds != folds[i]].mean() for i in range(10)])
    np.testing.assert_allclose(got["train_mean"], expected_mean, rtol=1e-13)
    pred = got["predicted"]
    assert np.all(np.isfinite(pred))
    assert got["r2"] == pytest.approx(1 - np.sum((y - pred) ** 2) / np.sum((y - expected_mean) ** 2), rel=1e-12)


def test_kfold_nested_is_kfold_cv_glmnet_on_each_outer_training_set():
    """Outer fold f (in order) trains on the others: cv.glmnet with K folds over its m training
    subjects, fold labels 0..K−1 repeated and permuted by the "inner-folds" stream (one generator,
    drawn outer fold after outer fold); the held-out subjects are predicted at that λ_min.
    The reference fits each training set on its own (``cv._cv_batch``, pinned against R glmnet
    in test_cv.py), scaled on the training set only: the same fits up to rounding (1e-8)."""
    from ptsd_bidsapp.glmnet import cv as glmnet_cv
    from ptsd_bidsapp.glmnet import solver as S

    X, y = _data(n=10, p=3, seed=19)
    k, seed = 3, 8
    got = nested_cv(X, y, seed=seed, nested_max_loo=9, nested_k_folds=k, lambda_min_ratio=0.01, n_lambda=40)
    folds = got["outer_folds"]
    inner_rng = _spawn(seed, "inner-folds", 1)[0]
    predicted = np.zeros(10)
    for f in range(k):
        train = folds != f
        m = int(train.sum())
        ids = inner_rng.permutation(np.arange(m) % k)
        mean, sd = X[train].mean(axis=0), X[train].std(axis=0)
        x0 = (X[train] - mean) / sd
        one = np.zeros(1, dtype=int)
        full, _, _, i_min, _ = glmnet_cv._cv_batch(x0, np.ones((1, m)), one, y[train][None, :], one,
                                                   S._penalty_factor(None, 3), 0.5, 40, 0.01, ids[None, :],
                                                   with_sd=False, solver="numpy")
        z = ((X[~train] - mean) / sd - full["xm"][0]) / full["xs"][0]
        predicted[~train] = full["ym"][0] + full["ys"][0] * z @ full["beta"][0, i_min[0]]
    np.testing.assert_allclose(got["predicted"], predicted, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("name", ["nested-outer", "nested-inner"])
def test_kfold_nested_agrees_with_r_cv_glmnet_on_each_outer_training_set(name):
    """The K-fold nested CV against real R: for each outer fold, R's cv.glmnet(foldid = the inner
    folds, grouped = FALSE) on the outer training set alone, the held-out subjects predicted at
    its lambda.min (scripts/glmnet_reference.R, R 4.2.2 / glmnet 4.1.6; the folds are the
    documented seed streams, written out by scripts/make_glmnet_reference_data.py). R's glmnet
    computes every outer fit's and every inner fold's default lambda.min.ratio from that fit's own
    number of subjects: n = 11, outer training sets of 7, 7, 8 and inner ones of 4-6 subjects.
    ``nested-outer`` (p = 8): the outer fits of 7 subjects take 1e-2, that of 8 takes 1e-4;
    ``nested-inner`` (p = 7): outer fits 1e-4, inner folds 1e-2. The first outer fold's ratio
    for every fit (the rule before) moves the predictions by 9e-3 and 2.5e-2 of max |y|.

    Tolerance 3e-5 · max |y| on the predictions, the bound of the R prediction test in
    test_cv.py (R's coefficients agree to ~3e-6 of the largest); measured 4.2e-6 and 1.1e-7.
    The R² then lies within the bound that this prediction error allows."""
    data = pd.read_csv(REFERENCE / f"case-{name}_data.tsv", sep="\t")
    y = data.pop("y").to_numpy()
    X = data.to_numpy()
    folds = pd.read_csv(REFERENCE / f"case-{name}_folds.tsv", sep="\t")
    ref = pd.read_csv(REFERENCE / f"case-{name}_nested.tsv", sep="\t")
    per_fold = pd.read_csv(REFERENCE / f"case-{name}_nestedfolds.tsv", sep="\t")
    assert X.shape == (11, {"nested-outer": 8, "nested-inner": 7}[name])
    assert per_fold["n_train"].tolist() == [7, 7, 8]
    got = nested_cv(X, y, seed=5, nested_max_loo=10, nested_k_folds=3)
    assert got["inner_folds"] == 3
    np.testing.assert_array_equal(got["outer_folds"] + 1, folds["outer"])
    # the inner folds R used are the "inner-folds" stream, outer fold after outer fold
    inner_rng = _spawn(5, "inner-folds", 1)[0]
    for f in range(3):
        train = folds["outer"].to_numpy() != f + 1
        drawn = inner_rng.permutation(np.arange(train.sum()) % 3) + 1
        np.testing.assert_array_equal(folds[f"inner_{f + 1}"].to_numpy()[train], drawn)
    atol = 3e-5 * np.abs(y).max()
    np.testing.assert_allclose(got["predicted"], ref["predicted"], rtol=0, atol=atol)
    train_mean = np.array([y[folds["outer"] != folds["outer"][i]].mean() for i in range(len(y))])
    residual = np.abs(y - ref["predicted"].to_numpy())
    sst = np.sum((y - train_mean) ** 2)
    r2 = 1 - np.sum(residual**2) / sst
    # |Δ SSE| <= Σ (2 |e_i| atol + atol²) when every prediction moves by at most atol
    assert got["r2"] == pytest.approx(r2, rel=0, abs=np.sum(2 * residual * atol + atol**2) / sst)


# ---------------------------------------------------------------------------------------
# permutation test


@pytest.mark.parametrize("solver", SOLVERS)
def test_permutation_null_is_the_nested_r2_of_each_seeded_permutation(solver):
    """null_r2[b] = nested-CV R² of y permuted by the b-th generator of the "permutations" stream
    (several permutations share one batch of fits: both solvers' inner-CV steps);
    p = (1 + #{null ≥ observed}) / (1 + B), a tie counting as reaching the observed."""
    X, y = _data(n=8, p=3, seed=7)
    B, seed = 5, 11
    rngs = _spawn(seed, "permutations", B)
    null = np.array([nested_cv(X, rng.permutation(y), seed=seed, solver=solver)["r2"] for rng in rngs])
    observed = float(np.sort(null)[2])  # the third smallest: 3 null values reach it (itself a tie)
    got = permutation_test(X, y, observed, n_permutations=B, seed=seed, solver=solver)
    np.testing.assert_allclose(got["null_r2"], null, rtol=1e-8, atol=1e-10)
    assert got["p_value"] == (1 + 3) / (1 + B)
    assert got["n_permutations"] == B and got["n_permutations_max"] == B and got["sequential_h"] is None
    # above every null value: the smallest p the test can give
    assert permutation_test(X, y, null.max() + 1e-6, n_permutations=B, seed=seed, solver=solver)["p_value"] == 1 / (1 + B)


def test_permutation_streams_do_not_depend_on_how_many_are_drawn_or_on_chunks():
    X, y = _data(n=7, p=3, seed=8)
    five = permutation_test(X, y, 0.0, n_permutations=5, seed=3, chunk_size=2)
    three = permutation_test(X, y, 0.0, n_permutations=3, seed=3)
    np.testing.assert_array_equal(five["null_r2"][:3], three["null_r2"])
    other_seed = permutation_test(X, y, 0.0, n_permutations=3, seed=4)
    assert not np.array_equal(other_seed["null_r2"], three["null_r2"])


def test_permutation_test_edge_cases():
    X, y = _data(n=7, p=3, seed=9)
    none = permutation_test(X, y, 0.3, n_permutations=0)
    assert none["n_permutations"] == 0 and none["p_value"] is None and none["null_r2"].size == 0
    assert none["n_permutations_max"] == 0 and none["sequential_h"] is None
    for bad in (0, -1):
        with pytest.raises(ValueError, match="sequential_h must be a positive integer"):
            permutation_test(X, y, 0.3, n_permutations=4, sequential_h=bad)


def test_sequential_permutation_test_reads_the_fixed_sequence():
    """h = 1 stops at the first null R² reaching the observed: p = 1 / L (Besag & Clifford)."""
    X, y = _data(n=7, p=3, seed=10)
    fixed = permutation_test(X, y, -0.5, n_permutations=6, seed=2)
    first = int(np.flatnonzero(fixed["null_r2"] >= -0.5)[0])
    seq = permutation_test(X, y, -0.5, n_permutations=6, seed=2, sequential_h=1)
    assert seq["n_permutations"] == first + 1 and seq["p_value"] == 1 / (first + 1)
    assert seq["sequential_h"] == 1 and seq["n_permutations_max"] == 6
    np.testing.assert_array_equal(seq["null_r2"], fixed["null_r2"][: first + 1])


# ---------------------------------------------------------------------------------------
# sequential p-value: the boundaries


def test_sequential_p_value_boundaries():
    null = np.array([0.1, 0.5, 0.2, 0.6])  # reaching 0.45 at positions 2 and 4 (1-based)
    assert sequential_p_value(null, 0.45, 2, 4) == (2 / 4, 4)  # the h-th reaching one is the last allowed
    assert sequential_p_value(null, 0.45, 2, 3) == ((1 + 1) / (1 + 3), 3)  # it lies beyond n_max: fixed p
    assert sequential_p_value(null, 0.45, 1, 1) == ((1 + 0) / (1 + 1), 1)
    assert sequential_p_value(null, 0.45, 1, 2) == (1 / 2, 2)
    # a sequential stop needs no more statistics than it read; the fixed test needs n_max of them
    assert sequential_p_value(null, 0.45, 1, 10) == (1 / 2, 2)
    with pytest.raises(ValueError, match="4 null statistics for a test of 10"):
        sequential_p_value(null, 0.45, 3, 10)
    with pytest.raises(ValueError, match="4 null statistics for a test of 5"):
        sequential_p_value(null, 0.45, None, 5)


def test_sequential_p_value_ties_within_rounding():
    """A null statistic equal to the observed up to 1e-12 (rounding of equal R²) reaches it."""
    null = np.array([0.3, 0.5 - 5e-13, 0.1])
    assert sequential_p_value(null, 0.5, None, 3) == ((1 + 1) / 4, 3)
    assert sequential_p_value(null, 0.5, 1, 3) == (1 / 2, 2)
    null = np.array([0.3, 0.5 - 1e-9, 0.1])  # a real difference does not
    assert sequential_p_value(null, 0.5, None, 3) == (1 / 4, 3)
    assert sequential_p_value(null, 0.5, 1, 3) == (1 / 4, 3)


# ---------------------------------------------------------------------------------------
# bootstrap


def test_bootstrap_streams_and_empty_request():
    X, y = _data(n=10, p=4, seed=12)
    cv = GlmnetCV(solver="numpy").fit(X, y)
    eight = bootstrap_selection(X, y, cv.lambdas_, cv.index_min_, n_bootstrap=8, seed=5)
    five = bootstrap_selection(X, y, cv.lambdas_, cv.index_min_, n_bootstrap=5, seed=5)
    np.testing.assert_allclose(eight["beta_per_sd"][:5], five["beta_per_sd"], rtol=1e-12, atol=1e-15)  # batch rounding
    assert eight["n_bootstrap"] == 8
    # the frequency is the share of resamples with a non-zero coefficient
    np.testing.assert_array_equal(eight["frequency"], (eight["beta_per_sd"] != 0).sum(axis=0) / 8)
    assert 0 < eight["frequency"].sum() < 4
    empty = bootstrap_selection(X, y, cv.lambdas_, cv.index_min_, n_bootstrap=0)
    assert empty["n_bootstrap"] == 0 and empty["beta_per_sd"].shape == (0, 4)
    assert np.all(np.isnan(empty["frequency"])) and empty["frequency"].shape == (4,)


def test_bootstrap_resample_equals_duplicated_rows_at_the_full_data_lambdas():
    """Resample b = rows drawn by the b-th generator of the "bootstrap" stream; its fit along the
    full-data λs down to λ_min equals glmnet on the duplicated rows (GlmnetCV's path solver on
    those rows, given the same λs), read at λ_min, per full-data SD."""
    from ptsd_bidsapp.glmnet import solver as S

    X, y = _data(n=10, p=4, seed=13)
    cv = GlmnetCV(solver="numpy").fit(X, y)
    k = cv.index_min_
    got = bootstrap_selection(X, y, cv.lambdas_, k, n_bootstrap=4, seed=6)
    for b, rng in enumerate(_spawn(6, "bootstrap", 4)):
        rows = rng.integers(0, 10, 10)
        Xb, yb = X[rows], y[rows]
        x0, _, _ = S._prescale(Xb)
        fit = S._fit_given_paths(x0, np.ones((1, 10)), np.zeros(1, dtype=int), yb[None, :], np.zeros(1, dtype=int),
                                 S._penalty_factor(None, 4), 0.5, cv.lambdas_[None, : k + 1].copy(),
                                 np.array([k + 1]), solver="numpy")
        per_unit = fit["ys"][0] * fit["beta"][0, k] / fit["xs"][0] / Xb.std(axis=0)  # x0 is per resample SD
        np.testing.assert_allclose(got["beta_per_sd"][b], per_unit * X.std(axis=0), rtol=1e-8, atol=1e-12)


# ---------------------------------------------------------------------------------------
# permutation test: options, work done, progress lines


def test_permutation_options_reach_every_permutation():
    """α, the λ path (length, smallest ratio) and the penalty factors of the permutation test are
    those of the nested CV it permutes: null_r2[b] = nested R² of permutation b with the same options."""
    X, y = _data(n=8, p=3, seed=14)
    options = {"alpha": 1.0, "n_lambda": 20, "lambda_min_ratio": 0.05, "penalty_factor": [1.0, 0.0, 2.0]}
    B, seed = 3, 21
    null = np.array([nested_cv(X, rng.permutation(y), seed=seed, **options)["r2"]
                     for rng in _spawn(seed, "permutations", B)])
    got = permutation_test(X, y, 0.0, n_permutations=B, seed=seed, **options)
    np.testing.assert_allclose(got["null_r2"], null, rtol=1e-8, atol=1e-10)
    default = permutation_test(X, y, 0.0, n_permutations=B, seed=seed)
    assert not np.allclose(default["null_r2"], null)  # the options do change the null


def test_kfold_permutations_draw_their_own_inner_folds():
    """Above ``nested_max_loo`` each permutation runs the seeded K-fold nested CV (its generator
    draws the permutation, then its inner folds): finite R², not the LOO null, chunking-invariant."""
    X, y = _data(n=9, p=3, seed=15)
    kfold = {"nested_max_loo": 6, "nested_k_folds": 3}
    a = permutation_test(X, y, 0.0, n_permutations=4, seed=2, **kfold)
    b = permutation_test(X, y, 0.0, n_permutations=4, seed=2, chunk_size=1, **kfold)
    loo = permutation_test(X, y, 0.0, n_permutations=4, seed=2)
    assert np.all(np.isfinite(a["null_r2"])) and a["null_r2"].shape == (4,)
    np.testing.assert_array_equal(a["null_r2"], b["null_r2"])
    assert not np.allclose(a["null_r2"], loo["null_r2"])


def test_each_permutation_is_run_once(monkeypatch):
    """The fixed-size test runs every permutation exactly once, in order, whatever the chunks; the
    sequential test stops after the chunk in which the h-th reaching statistic appears."""
    from ptsd_bidsapp.glmnet import inference

    X, y = _data(n=7, p=3, seed=16)
    runs = []
    original = inference._permutation_chunk

    def spy(*args):
        values = original(*args)
        runs.append(len(values))
        return values

    monkeypatch.setattr(inference, "_permutation_chunk", spy)
    fixed = permutation_test(X, y, -0.3, n_permutations=7, seed=1, chunk_size=3)
    assert runs == [3, 3, 1] and fixed["null_r2"].size == 7
    runs.clear()
    seq = permutation_test(X, y, -0.3, n_permutations=7, seed=1, sequential_h=1, chunk_size=2)
    first = int(np.flatnonzero(fixed["null_r2"] >= -0.3)[0])  # 0-based: in chunk first // 2
    assert seq["n_permutations"] == first + 1
    assert sum(runs) == 2 * (first // 2 + 1) and all(r == 2 for r in runs)


def test_one_permutation_and_the_progress_lines(caplog):
    X, y = _data(n=7, p=3, seed=17)
    with caplog.at_level("INFO", logger="ptsd_bidsapp.progress"):
        one = permutation_test(X, y, -10.0, n_permutations=1, seed=0)
        permutation_test(X, y, -10.0, n_permutations=2, seed=0, progress="model all: permutations")
    assert one["p_value"] == (1 + 1) / (1 + 1) and one["null_r2"].size == 1  # R² ≥ −10: reached
    lines = [r.getMessage() for r in caplog.records if r.name == "ptsd_bidsapp.progress"]
    assert any(line.startswith("permutation test: 1/1 done") for line in lines)
    assert any(line.startswith("model all: permutations: 2/2 done") for line in lines)


# ---------------------------------------------------------------------------------------
# bootstrap options; defaults


def test_bootstrap_one_resample_and_unpenalised_predictor():
    """An unpenalised predictor is in every resample's model; a single resample is a valid request."""
    X, y = _data(n=10, p=4, seed=18, signal=0.3)
    pf = np.array([1.0, 1.0, 0.0, 1.0])
    cv = GlmnetCV(penalty_factor=pf, solver="numpy").fit(X, y)
    boot = bootstrap_selection(X, y, cv.lambdas_, cv.index_min_, n_bootstrap=6, penalty_factor=pf, seed=3)
    assert boot["frequency"][2] == 1.0
    plain = bootstrap_selection(X, y, cv.lambdas_, 0, n_bootstrap=6, seed=3)  # λ_max, all penalised
    assert plain["frequency"][2] < 1.0
    one = bootstrap_selection(X, y, cv.lambdas_, cv.index_min_, n_bootstrap=1, penalty_factor=pf, seed=3)
    assert one["n_bootstrap"] == 1 and one["beta_per_sd"].shape == (1, 4)
    # the same resample fitted in a batch of 1 instead of 6: rounding only
    np.testing.assert_allclose(one["beta_per_sd"][0], boot["beta_per_sd"][0], rtol=1e-12, atol=1e-15)


def test_function_defaults_are_the_packaged_configuration():
    """Called without options, the inference functions use the documented defaults (the packaged
    configuration; README: 1000 permutations, 500 bootstrap resamples, α = 0.5, 100 λs, LOO up
    to 30 subjects, then 10 folds)."""
    import inspect

    from ptsd_bidsapp.config import load_config

    en = load_config(None)["elastic_net"]
    expected = {"alpha": en["alpha"], "n_lambda": en["n_lambda"], "nested_max_loo": en["nested_max_loo"],
                "nested_k_folds": en["nested_k_folds"], "n_permutations": en["n_permutations"],
                "n_bootstrap": en["n_bootstrap"], "lambda_min_ratio": en.get("lambda_min_ratio"),
                "solver": en["solver"], "n_jobs": 1, "seed": 0, "sequential_h": en.get("sequential_h")}
    assert (en["alpha"], en["n_permutations"], en["n_bootstrap"]) == (0.5, 1000, 500)
    for function in (nested_cv, permutation_test, bootstrap_selection):
        for name, parameter in inspect.signature(function).parameters.items():
            if name in expected:
                assert parameter.default == expected[name], (function.__name__, name)


def test_defaults_in_use():
    """The defaults as the functions apply them (not only as their signatures state): seed 0,
    LOO up to 30 subjects then 10 folds, 1000 permutations, 500 bootstrap resamples."""
    X, y = _data(n=31, p=2, seed=23)
    kfold = nested_cv(X, y, n_lambda=20)
    assert kfold["inner_folds"] == 10 and np.unique(kfold["outer_folds"]).size == 10
    np.testing.assert_array_equal(kfold["predicted"], nested_cv(X, y, n_lambda=20, seed=0)["predicted"])
    # a sequential test stopped at its first permutation still reports its planned size
    first = permutation_test(X, y, -np.inf, n_lambda=20, sequential_h=1, chunk_size=1)
    assert first["n_permutations"] == 1 and first["n_permutations_max"] == 1000
    Xs, ys = X[:8], y[:8]
    np.testing.assert_array_equal(permutation_test(Xs, ys, 0.0, n_permutations=3, n_lambda=20)["null_r2"],
                                  permutation_test(Xs, ys, 0.0, n_permutations=3, n_lambda=20, seed=0)["null_r2"])
    cv = GlmnetCV(n_lambda=20).fit(Xs, ys)
    boot = bootstrap_selection(Xs, ys, cv.lambdas_, min(cv.index_min_, 3))
    assert boot["n_bootstrap"] == 500 and boot["beta_per_sd"].shape == (500, 2)
    seeded = bootstrap_selection(Xs, ys, cv.lambdas_, min(cv.index_min_, 3), n_bootstrap=20, seed=0)
    np.testing.assert_allclose(boot["beta_per_sd"][:20], seeded["beta_per_sd"], rtol=1e-12, atol=1e-15)
