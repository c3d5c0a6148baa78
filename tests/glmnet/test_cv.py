"""cv.glmnet: agreement with R glmnet 4.1.6 (scripts/glmnet_reference.R, tests/data/glmnet/), errors."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ptsd_bidsapp.glmnet import GlmnetCV, TooFewSubjectsError

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "glmnet"
CASES = ["basic", "penaltyfactor", "wide"]


def _case(name):
    data = pd.read_csv(REFERENCE / f"case-{name}_data.tsv", sep="\t")
    y = data.pop("y").to_numpy()
    pf = np.ones(data.shape[1])
    if name == "penaltyfactor":
        pf[-1] = 0.0
    summary = pd.read_csv(REFERENCE / f"case-{name}_summary.tsv", sep="\t").set_index("key")["value"]
    path = pd.read_csv(REFERENCE / f"case-{name}_path.tsv", sep="\t")
    coef = pd.read_csv(REFERENCE / f"case-{name}_coef.tsv", sep="\t")
    return data.to_numpy(), y, pf, summary, path, coef


@pytest.mark.parametrize("name", CASES)
def test_agrees_with_r_glmnet(name):
    """cv.glmnet(nfolds = n, grouped = FALSE) values from scripts/glmnet_reference.R (coefficients
    within 2e-5 relative: R's convergence threshold)."""
    X, y, pf, summary, path, coef = _case(name)
    cv = GlmnetCV(alpha=float(summary["alpha"]), penalty_factor=pf).fit(X, y)
    assert len(cv.lambdas_) == int(summary["n_lambda"])  # same early stop of the path
    np.testing.assert_allclose(cv.lambdas_, path["lambda"], rtol=1e-10)
    np.testing.assert_allclose(cv.cvm_, path["cvm"], rtol=1e-4)
    np.testing.assert_allclose(cv.cvsd_, path["cvsd"], rtol=1e-4)
    assert cv.index_min_ + 1 == int(summary["index_min"])
    assert cv.index_1se_ + 1 == int(summary["index_1se"])
    assert cv.lambda_min_ == pytest.approx(float(summary["lambda_min"]), rel=1e-8)
    assert cv.lambda_1se_ == pytest.approx(float(summary["lambda_1se"]), rel=1e-8)
    ours = np.r_[cv.intercept_, cv.coef_]
    ref = coef["coef_lambda_min"].to_numpy()
    assert np.array_equal(ours == 0, ref == 0)  # same retained features
    # R glmnet stops its coordinate descent at thresh = 1e-7 (relative change of the objective):
    # measured agreement 2.7e-7 of the largest coefficient, 2.2e-6 relative per coefficient;
    # bounds 10x that (the former 1 % would hide a wrong penalty scaling of a few per cent)
    scale = np.abs(ref).max()
    np.testing.assert_allclose(ours, ref, rtol=0, atol=3e-6 * scale)
    nonzero = ref != 0
    assert np.max(np.abs(ours[nonzero] / ref[nonzero] - 1)) < 2e-5


def test_coefficient_path_agrees_with_r_glmnet():
    X, y, pf, summary, path, coef = _case("basic")
    beta = pd.read_csv(REFERENCE / "case-basic_betapath.tsv", sep="\t").set_index("term").to_numpy()
    cv = GlmnetCV(alpha=0.5).fit(X, y)
    np.testing.assert_allclose(cv.coef_path_.T, beta, atol=1e-5 * np.abs(beta).max())


def test_fewer_than_three_subjects_cannot_be_cross_validated():
    with pytest.raises(TooFewSubjectsError, match="at least 3 subjects"):
        GlmnetCV().fit(np.arange(4.0).reshape(2, 2), np.array([1.0, 2.0]))


@pytest.mark.parametrize("name", CASES)
def test_lambda_1se_fit_nonzero_counts_and_predictions_agree_with_r_glmnet(name):
    """The rest of what cv.glmnet reports, against the same R glmnet 4.1.6 reference: the
    coefficients at λ_1se (``coef(cv, s = "lambda.1se")``), the number of non-zero coefficients at
    every λ (``cv$nzero``), and predictions = intercept + X β at λ_min / any λ index. The
    per-SD coefficients are the raw ones times the 1/n SD of each predictor."""
    X, y, pf, summary, path, coef = _case(name)
    cv = GlmnetCV(alpha=float(summary["alpha"]), penalty_factor=pf).fit(X, y)
    ref = coef["coef_lambda_1se"].to_numpy()
    i = cv.index_1se_
    ours = np.r_[cv.intercept_path_[i], cv.coef_path_[i]]
    assert np.array_equal(ours == 0, ref == 0)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=3e-6 * np.abs(ref).max())
    np.testing.assert_array_equal(cv.nzero_, path["nzero"].to_numpy())
    np.testing.assert_allclose(cv.x_mean_, X.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(cv.x_sd_, X.std(axis=0), rtol=1e-12)
    np.testing.assert_allclose(cv.coef_per_sd_, cv.coef_ * X.std(axis=0), rtol=1e-12, atol=1e-15)
    assert (cv.n_, cv.p_) == X.shape
    ref_min = coef["coef_lambda_min"].to_numpy()
    np.testing.assert_allclose(cv.predict(X), ref_min[0] + X @ ref_min[1:], rtol=0,
                               atol=3e-5 * np.abs(y).max())
    np.testing.assert_allclose(cv.predict(X, index=i), ref[0] + X @ ref[1:], rtol=0, atol=3e-5 * np.abs(y).max())


def _kfold_cvm(X, y, fold_ids, alpha, ratio):
    """cv.glmnet with the given fold of each row (the K-fold route of ``_cv_batch``): λ path, cvm,
    cvsd, index of λ_min and of λ_1se. ``ratio`` None: glmnet's default lambda.min.ratio per fit."""
    from ptsd_bidsapp.glmnet.cv import _cv_batch
    from ptsd_bidsapp.glmnet.solver import _penalty_factor, _prescale

    n, p = X.shape
    x0, _, _ = _prescale(X)
    one = np.zeros(1, dtype=int)
    full, cvm, cvsd, i_min, i_1se = _cv_batch(x0, np.ones((1, n)), one, y[None, :], one, _penalty_factor(None, p),
                                              alpha, 100, ratio, np.asarray(fold_ids)[None, :])
    L = int(full["n_used"][0])
    return full["lam"][0, :L], cvm[0, :L], cvsd[0, :L], int(i_min[0]), int(i_1se[0])


def test_kfold_cv_of_replicated_subjects_is_r_glmnets_leave_one_out():
    """Every subject of the R reference case three times, folds = the three copies of a subject:
    each fold's training set is the other subjects, each with weight 3 (the same standardised fit
    as leave-one-out), so K-fold cross-validation with three held-out rows per fold (coefficients
    interpolated in λ, then predicted) must give R glmnet's leave-one-out cvm; cvsd scales by
    sqrt((n − 1) / (3n − 1)) (3n errors instead of n)."""
    X, y, pf, summary, path, _ = _case("basic")
    n = len(y)
    X3, y3 = np.repeat(X, 3, axis=0), np.repeat(y, 3)
    lam, cvm, cvsd, i_min, _ = _kfold_cvm(X3, y3, np.repeat(np.arange(n), 3), float(summary["alpha"]), 1e-4)
    np.testing.assert_allclose(lam, path["lambda"], rtol=1e-10)
    np.testing.assert_allclose(cvm, path["cvm"], rtol=1e-4)
    np.testing.assert_allclose(cvsd, path["cvsd"] * np.sqrt((n - 1) / (3 * n - 1)), rtol=1e-4)
    assert i_min + 1 == int(summary["index_min"])


def _foldratio_case(name):
    """A fold ratio case (fold n < p <= full n) with its folds (0-based; leave-one-out without a file)."""
    X, y, _, summary, path, _ = _case(name)
    foldid = REFERENCE / f"case-{name}_foldid.tsv"
    folds = pd.read_csv(foldid, sep="\t")["foldid"].to_numpy() - 1 if foldid.exists() else np.arange(len(y))
    return X, y, folds, summary, path


def _assert_cv_agrees_with_r(lam, cvm, cvsd, i_min, i_1se, path, summary):
    """λ path, cvm, cvsd, λ_min and λ_1se of one cross-validation against R's.

    cvm and cvsd within 1e-4 relative, the bound of test_agrees_with_r_glmnet; measured on the
    fold ratio cases 9.2e-6 (cvm) and 6.2e-6 (cvsd) at worst, while the full data's ratio in
    every fold (the rule before) is 4.8e-2 and 2.4e-2 away (leave-one-out) and 4.1e-3, 3.0e-3
    (K-fold)."""
    assert len(lam) == len(path)  # same early stop of the full-data path
    np.testing.assert_allclose(lam, path["lambda"], rtol=1e-10)
    np.testing.assert_allclose(cvm, path["cvm"], rtol=1e-4)
    np.testing.assert_allclose(cvsd, path["cvsd"], rtol=1e-4)
    assert (i_min + 1, i_1se + 1) == (int(summary["index_min"]), int(summary["index_1se"]))
    assert lam[i_min] == pytest.approx(float(summary["lambda_min"]), rel=1e-8)
    assert lam[i_1se] == pytest.approx(float(summary["lambda_1se"]), rel=1e-8)


def test_each_leave_one_out_fold_takes_its_own_default_lambda_min_ratio_as_r_glmnet():
    """n = p = 10: the full data take lambda.min.ratio 1e-4, each leave-one-out fold (9 < 10
    subjects) 1e-2, because cv.glmnet calls glmnet(lambda = NULL) on the fold's rows (glmnet 4.1.6,
    cv.glmnet.raw). GlmnetCV against R's cv.glmnet(nfolds = n, grouped = FALSE)
    (scripts/glmnet_reference.R, case foldratio-loo)."""
    X, y, _, summary, path = _foldratio_case("foldratio-loo")
    assert X.shape == (10, 10)
    cv = GlmnetCV(alpha=float(summary["alpha"])).fit(X, y)
    _assert_cv_agrees_with_r(cv.lambdas_, cv.cvm_, cv.cvsd_, cv.index_min_, cv.index_1se_, path, summary)
    assert (cv.lambda_min_, cv.lambda_1se_) == (cv.lambdas_[cv.index_min_], cv.lambdas_[cv.index_1se_])


def test_each_kfold_fold_takes_its_own_default_lambda_min_ratio_as_r_glmnet():
    """n = 9, p = 7, given folds of 3, 2 and 4 subjects: training sets of 6, 7 and 5 subjects take
    lambda.min.ratio 1e-2, 1e-4 and 1e-2, the full data 1e-4 (R: cv.glmnet(foldid = ...,
    grouped = FALSE), case foldratio-kfold)."""
    X, y, folds, summary, path = _foldratio_case("foldratio-kfold")
    assert X.shape == (9, 7) and np.bincount(folds).tolist() == [3, 2, 4]
    got = _kfold_cvm(X, y, folds, float(summary["alpha"]), None)
    _assert_cv_agrees_with_r(*got, path, summary)


@pytest.mark.parametrize("name", ["foldratio-loo", "foldratio-kfold"])
def test_a_given_lambda_min_ratio_applies_to_every_fold_as_in_r_glmnet(name):
    """The same cases cross-validated with lambda.min.ratio = 1e-4 given: R's folds all use it
    (case-<name>_ratio1e-4_*.tsv), and so must ours — the user's value, not the fold's default."""
    X, y, folds, summary, _ = _foldratio_case(name)
    path = pd.read_csv(REFERENCE / f"case-{name}_ratio1e-4_path.tsv", sep="\t")
    given = pd.read_csv(REFERENCE / f"case-{name}_ratio1e-4_summary.tsv", sep="\t").set_index("key")["value"]
    alpha = float(summary["alpha"])
    if name == "foldratio-loo":
        cv = GlmnetCV(alpha=alpha, lambda_min_ratio=1e-4).fit(X, y)
        got = cv.lambdas_, cv.cvm_, cv.cvsd_, cv.index_min_, cv.index_1se_
    else:
        got = _kfold_cvm(X, y, folds, alpha, 1e-4)
    _assert_cv_agrees_with_r(*got, path, given)
    # and the default rule gives other numbers here (else the two tests would not tell them apart)
    default = pd.read_csv(REFERENCE / f"case-{name}_path.tsv", sep="\t")
    assert np.max(np.abs(path["cvm"] / default["cvm"] - 1)) > 1e-3


def test_kfold_cv_does_not_depend_on_the_order_of_subjects():
    """Folds of unequal size (3, 4, 4: the first padded internally): cvm and cvsd are averages over
    subjects, so listing the subjects in another order (each keeping its fold) changes nothing."""
    rng = np.random.default_rng(7)
    n = 11
    X = rng.normal(size=(n, 4))
    y = X[:, 0] - 0.5 * X[:, 1] + rng.normal(size=n)
    folds = np.array([2, 1, 0, 2, 1, 0, 2, 1, 0, 2, 1])
    a = _kfold_cvm(X, y, folds, 0.5, 1e-4)
    for order in (np.arange(n)[::-1], rng.permutation(n)):
        b = _kfold_cvm(X[order], y[order], folds[order], 0.5, 1e-4)
        np.testing.assert_allclose(b[0], a[0], rtol=1e-12)
        np.testing.assert_allclose(b[1], a[1], rtol=1e-10)
        np.testing.assert_allclose(b[2], a[2], rtol=1e-10)


def test_cross_validation_does_not_depend_on_batching(monkeypatch):
    """Problems are independent: two responses cross-validated together (one stack, as the
    permutation test does) give each one's own cvm/cvsd/λ_min, with or without the SDs (cvsd
    zeros then), and so do tiny batch limits that split the fold fits and the prediction errors
    into many batches (K-fold, three held-out rows per fold, and leave-one-out)."""
    from ptsd_bidsapp.glmnet import cv as glmnet_cv
    from ptsd_bidsapp.glmnet import solver as glmnet_solver

    rng = np.random.default_rng(17)
    n = 12
    X = rng.normal(size=(n, 4))
    y1 = X[:, 0] + rng.normal(size=n)
    y2 = -0.5 * X[:, 2] + rng.normal(size=n)
    x0, _, _ = glmnet_solver._prescale(X)
    pf = glmnet_solver._penalty_factor(None, 4)
    loo = np.arange(n)
    kfold = np.arange(n) % 4

    def run(Y, folds, with_sd=True):
        B = Y.shape[0]
        return glmnet_cv._cv_batch(x0, np.ones((1, n)), np.zeros(B, dtype=int), Y, np.arange(B), pf, 0.5, 100, 1e-4,
                                   np.broadcast_to(folds, (B, n)).copy(), with_sd=with_sd)

    for folds in (loo, kfold):
        single = [run(y[None, :], folds) for y in (y1, y2)]
        both = run(np.vstack([y1, y2]), folds)
        no_sd = run(np.vstack([y1, y2]), folds, with_sd=False)
        for b in range(2):
            L = int(single[b][0]["n_used"][0])
            np.testing.assert_allclose(both[1][b, :L], single[b][1][0, :L], rtol=1e-10)
            np.testing.assert_allclose(both[2][b, :L], single[b][2][0, :L], rtol=1e-10)
            np.testing.assert_allclose(no_sd[1][b, :L], single[b][1][0, :L], rtol=1e-10)
            assert both[3][b] == single[b][3][0] and both[4][b] == single[b][4][0]
        assert np.all(no_sd[2] == 0)
    reference = [run(np.vstack([y1, y2]), folds) for folds in (loo, kfold)]
    monkeypatch.setattr(glmnet_solver, "_BATCH_ELEMENTS", 3 * 16)      # 3 problems per batch (p = 4)
    monkeypatch.setattr(glmnet_solver, "_PATH_ELEMENTS", 3 * 100 * 4)
    monkeypatch.setattr(glmnet_cv, "_PREDICTION_ELEMENTS", 2 * 100 * 3)
    for folds, ref in zip((loo, kfold), reference):
        small = run(np.vstack([y1, y2]), folds)
        for k in (1, 2, 3, 4):
            np.testing.assert_allclose(small[k], ref[k], rtol=1e-12)


def test_interpolation_in_lambda_is_glmnets_lambda_interp():
    """predict.glmnet reads a path between its λs by linear interpolation in λ (lambda.interp), and
    at the path's end values outside it — np.interp on the path in increasing λ. Paths of 6 λs
    (log-spaced, ratio 0.1 or 0.5 per step), one stopped early after 2 or 4 (entries beyond its end
    are junk), one of a single λ; path arrays of 2 λs and 1 λ; targets above, below, on and between
    the λs."""
    from ptsd_bidsapp.glmnet.cv import _interpolate_in_lambda

    rng = np.random.default_rng(21)
    ratios = np.array([0.5, 0.1, 0.5, 0.1, 0.5])
    lam = 3.0 * ratios[:, None] ** np.arange(6)[None, :]
    n_used = np.array([6, 6, 4, 2, 1])
    values = rng.normal(size=(5, 6))
    junk = np.arange(6)[None, :] >= n_used[:, None]
    lam = np.where(junk, 1e3, lam)
    values = np.where(junk, 1e6, values)
    targets = np.array([5.0, 3.0, 2.0, 1.5, 0.6, 0.31, 0.3, 0.02, 1e-6])[None, :].repeat(5, axis=0)
    targets[1, 2] = lam[1, 2]                                    # exactly on a λ of the path
    expected = np.array([np.interp(t, lam[e, :n_used[e]][::-1], values[e, :n_used[e]][::-1])
                         for e, t in enumerate(targets)])
    np.testing.assert_allclose(_interpolate_in_lambda(values, lam, n_used, targets), expected, rtol=1e-12)
    # several predictions per path (E, r, L) and coefficient paths (E, L, p): the same weights
    stacked = np.stack([values, 2 * values, -values], axis=1)
    got = _interpolate_in_lambda(stacked, lam, n_used, targets)
    np.testing.assert_allclose(got, np.stack([expected, 2 * expected, -expected], axis=1), rtol=1e-12)
    got = _interpolate_in_lambda(stacked.transpose(0, 2, 1), lam, n_used, targets, axis=1)
    np.testing.assert_allclose(got, np.stack([expected, 2 * expected, -expected], axis=2), rtol=1e-12)
    # path arrays of two λs and of one λ
    n2 = np.minimum(n_used, 2)
    expected2 = np.array([np.interp(t, lam[e, :n2[e]][::-1], values[e, :n2[e]][::-1]) for e, t in enumerate(targets)])
    np.testing.assert_allclose(_interpolate_in_lambda(values[:, :2], lam[:, :2], n2, targets), expected2, rtol=1e-12)
    one = _interpolate_in_lambda(values[:, :1], lam[:, :1], np.ones(5, dtype=int), targets)
    np.testing.assert_allclose(one, np.repeat(values[:, :1], targets.shape[1], axis=1), rtol=1e-12)


def test_three_subjects_are_enough():
    """cv.glmnet needs nfolds ≥ 3, so leave-one-out works from 3 subjects on (2 are refused above)."""
    X = np.array([[0.0, 1.0], [1.0, 0.5], [2.0, 2.5]])
    cv = GlmnetCV().fit(X, np.array([0.5, 1.0, 3.0]))
    assert len(cv.lambdas_) >= 5 and np.all(np.isfinite(cv.cvm_))


def test_select_lambda_is_cv_glmnets_getoptcv():
    """getOptcv: λ_min = the largest λ (first index) with the smallest cvm, λ_1se = the largest λ
    whose cvm ≤ cvm_min + cvsd_min — λ_min itself when cvsd is 0; λs past a path's end ignored."""
    from ptsd_bidsapp.glmnet.cv import _select_lambda

    cvm = np.array([[3.0, 1.0, 1.0, 2.0, 0.1],
                    [3.0, 2.0, 1.2, 1.0, 1.5],
                    [3.0, 2.0, 1.2, 1.0, 1.5]])
    cvsd = np.array([[0.0, 0.0, 0.0, 0.0, 0.0],
                     [0.1, 0.1, 0.1, 0.3, 0.1],
                     [0.0, 0.0, 0.0, 0.0, 0.0]])
    i_min, i_1se = _select_lambda(cvm, cvsd, np.array([4, 5, 5]))
    np.testing.assert_array_equal(i_min, [1, 3, 3])
    np.testing.assert_array_equal(i_1se, [1, 2, 3])


def test_kfold_folds_are_seeded_balanced_splits_of_each_training_set():
    """``_kfold_cv_batch``: the subjects of each problem's training set (weight > 0; the others are
    in no fold) get folds arange(m) % K permuted by that problem's generator — the same
    cross-validation as ``_cv_batch`` with those folds written out here."""
    from ptsd_bidsapp.glmnet.cv import _cv_batch, _kfold_cv_batch
    from ptsd_bidsapp.glmnet.solver import _penalty_factor, _prescale

    rng = np.random.default_rng(23)
    n = 13
    X = rng.normal(size=(n, 3))
    y = X[:, 0] + rng.normal(size=n)
    x0, _, _ = _prescale(X)
    pf = _penalty_factor(None, 3)
    W = np.ones((2, n))
    W[1, [2, 7]] = 0.0                                   # training set 1 leaves two subjects out
    gidx = np.array([0, 1])
    Y, yidx = y[None, :], np.zeros(2, dtype=int)
    got = _kfold_cv_batch(x0, W, gidx, Y, yidx, pf, 0.5, 100, 1e-4, n_folds=3,
                          rngs=[np.random.default_rng(5), np.random.default_rng(6)])
    folds = np.full((2, n), -1)
    for b, seed in enumerate((5, 6)):
        members = np.flatnonzero(W[b] > 0)
        folds[b, members] = np.random.default_rng(seed).permutation(np.arange(members.size) % 3)
    expected = _cv_batch(x0, W, gidx, Y, yidx, pf, 0.5, 100, 1e-4, folds)
    for k in (1, 2, 3, 4):
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-12)
    loo = _kfold_cv_batch(x0, W, gidx, Y, yidx, pf, 0.5, 100, 1e-4)
    assert not np.allclose(loo[1], got[1])               # 3 folds are not leave-one-out
