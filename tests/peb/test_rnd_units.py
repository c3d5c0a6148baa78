"""Re-randomisation test of PEB effects, piece by piece against values worked by hand.

(tests/peb/test_rnd.py checks the test's calibration and power over simulated groups; rank-based
p-values are blind to many errors in the statistic, which these pin.)
"""

import numpy as np
import pytest

from ptsd_bidsapp.peb.rnd import _likelihoods, _min_p_fwe, gls_effects, rerandomisation_test

pytestmark = pytest.mark.unit


def test_likelihood_precision_and_information_remove_the_prior():
    """L_i = qC_i⁻¹ − pC⁻¹ and b_i = qC_i⁻¹·qE_i − pC⁻¹·pE_i (the subject's likelihood as a Gaussian
    in natural parameters), with pC given by its diagonal: qC = diag(1/2, 1/4), pC = diag(1, 2),
    qE = (1, 2), pE = (1/2, 1) give L = diag(2 − 1, 4 − 1/2) = diag(1, 7/2) and
    b = (2 − 1/2, 8 − 1/2) = (3/2, 15/2); a full qC (inverse worked by hand) is symmetrised."""
    L, b = _likelihoods([np.array([1.0, 2.0])], [np.diag([0.5, 0.25])], np.array([[0.5, 1.0]]), np.array([1.0, 2.0]))
    np.testing.assert_allclose(L, [np.diag([1.0, 3.5])], rtol=1e-12)
    np.testing.assert_allclose(b, [[1.5, 7.5]], rtol=1e-12)
    # qC = [[2, 1], [1, 1]]: inverse [[1, −1], [−1, 2]]; pC = I
    L, b = _likelihoods([np.array([1.0, 1.0])], [np.array([[2.0, 1.0], [1.0, 1.0]])], np.zeros((1, 2)), np.eye(2))
    np.testing.assert_allclose(L, [[[0.0, -1.0], [-1.0, 1.0]]], atol=1e-12)
    np.testing.assert_allclose(b, [[0.0, 1.0]], atol=1e-12)


def _group(seed=3, n=12, p=2, mean=(0.0, 0.0), slope=(0.0, 0.0), prior_mean=(0.0, 0.0)):
    """Exact Gaussian posteriors of direct observations (SD 0.3) of θ_i under N(prior_mean, I)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    x -= x.mean()
    theta = np.asarray(mean) + np.outer(x, slope) + 0.4 * rng.standard_normal((n, p))
    y = theta + 0.3 * rng.standard_normal((n, p))
    post_var = 1.0 / (1.0 / 0.09 + 1.0)
    pE = np.asarray(prior_mean, dtype=float)
    qE = [post_var * (yi / 0.09 + pE) for yi in y]
    qC = [np.eye(p) * post_var for _ in range(n)]
    X = np.column_stack([np.ones(n), x])
    return qE, qC, pE, np.eye(p), X


def _natural(qE, qC, pE):
    """L_i = qC_i⁻¹ − I and b_i = qC_i⁻¹·qE_i − pE (prior N(pE, I)), written out."""
    iqC = [np.linalg.inv(c) for c in qC]
    return np.stack([ic - np.eye(len(pE)) for ic in iqC]), np.stack([ic @ e - pE for ic, e in zip(iqC, qE)])


def test_observed_z_is_the_gls_z_of_the_likelihoods_under_a_nonzero_prior_mean():
    """The reported z of each effect is the GLS z (gls_effects, itself checked against OLS in
    test_rnd.py) on the likelihoods written out here from the posteriors and a prior mean ≠ 0."""
    qE, qC, pE, pC, X = _group(mean=(0.3, -0.2), slope=(0.5, 0.0), prior_mean=(0.25, -0.5))
    Sigma = np.eye(2) * 0.16
    result = rerandomisation_test(qE, qC, pE, pC, X, ["a", "b"], ["mean", "x"], {"mean": Sigma, "x": Sigma},
                                  permute=["x"], sign_flip=["mean"], n_permutations=19, seed=1)
    _, z = gls_effects(*_natural(qE, qC, pE), X, Sigma)
    np.testing.assert_allclose(result.z, z, rtol=1e-10)


def test_table_names_untested_covariates_method_na():
    qE, qC, pE, pC, X = _group()
    X = np.column_stack([X, np.arange(12.0) % 2])
    Sigma = np.eye(2) * 0.16
    result = rerandomisation_test(qE, qC, pE, pC, X, ["a", "b"], ["mean", "x", "site"], {"x": Sigma},
                                  permute=["x"], n_permutations=9, seed=0)
    table = result.table()
    assert list(table.columns) == ["parameter", "covariate", "z", "p_rnd", "p_rnd_fwe", "rnd_method"]
    assert table.set_index("covariate")["rnd_method"].to_dict() == {"mean": "n/a", "x": "permutation", "site": "n/a"}
    assert table.loc[table["covariate"] == "site", ["z", "p_rnd"]].isna().all().all()
    assert list(table["parameter"]) == ["a", "b"] * 3


def test_a_tested_covariate_needs_a_design_column_and_a_covariance():
    qE, qC, pE, pC, X = _group()
    Sigma = np.eye(2) * 0.16
    for permute, covariances in ((["age"], {"age": Sigma}), (["x"], {"mean": Sigma})):
        with pytest.raises(ValueError, match="not design columns"):
            rerandomisation_test(qE, qC, pE, pC, X, ["a", "b"], ["mean", "x"], covariances, permute=permute,
                                 n_permutations=9)


def test_sign_flips_are_about_the_given_centre():
    """A planted group mean of (0.6, 0.6) with prior mean 0: flipping the subjects about the prior mean
    (the default, or given explicitly: the same p) finds it (p = 1/200, the smallest possible); flipping
    about the true mean does not (every flipped group then has a mean near it, as the observed one)."""
    qE, qC, pE, pC, X = _group(mean=(0.6, 0.6))
    Sigma = np.eye(2) * 0.16
    args = (qE, qC, pE, pC, X[:, :1], ["a", "b"], ["mean"], {"mean": Sigma})
    kwargs = {"permute": [], "sign_flip": ["mean"], "n_permutations": 199, "seed": 4}
    default = rerandomisation_test(*args, **kwargs)
    explicit = rerandomisation_test(*args, flip_centre=np.zeros(2), **kwargs)
    np.testing.assert_array_equal(default.p, explicit.p)
    np.testing.assert_array_equal(default.p, [[1 / 200], [1 / 200]])
    about_truth = rerandomisation_test(*args, flip_centre=np.full(2, 0.6), **kwargs)
    assert (about_truth.p > 0.2).all(), about_truth.p
    np.testing.assert_array_equal(about_truth.z, default.z)   # the observed statistic does not move
    # and with no group mean, the default centre finds nothing
    qE0, qC0, pE0, pC0, X0 = _group(mean=(0.0, 0.0))
    null_mean = rerandomisation_test(qE0, qC0, pE0, pC0, X0[:, :1], ["a", "b"], ["mean"], {"mean": Sigma}, **kwargs)
    assert (null_mean.p > 0.2).all(), null_mean.p


def test_min_p_family_wise_p_worked_by_hand():
    """Westfall–Young min-p with ties, 4 re-randomisations, 2 effects. Null |z|: effect 1 (1, 2, 2, 4),
    effect 2 (3, 3, 1, 2); observed (2, 3), per-effect p (1 + #null ≥ observed)/5 = (4/5, 3/5).
    Each null value's p in its effect's null, the observed value among the 5 (ties count as ≥):
    effect 1 (5, 4, 4, 1)/5, effect 2 (3, 3, 5, 4)/5; minimum per re-randomisation (3, 3, 4, 1)/5;
    family-wise p = (1 + #min ≤ p)/5 = (1 + 4)/5 and (1 + 3)/5."""
    null = np.array([[1.0, 3.0], [2.0, 3.0], [2.0, 1.0], [4.0, 2.0]])
    observed = np.array([2.0, 3.0])
    p = np.array([0.8, 0.6])
    np.testing.assert_allclose(_min_p_fwe(null, observed, p), [1.0, 0.8], rtol=1e-12)


def _exact_p(null_abs_z, observed_abs_z):
    """Share of all re-randomisations whose |z| reaches the observed (the identity included)."""
    return (null_abs_z >= observed_abs_z[None, :] - 1e-10 * np.maximum(observed_abs_z, 1.0)).mean(axis=0)


def test_permutation_p_is_the_exact_p_of_all_permutations():
    """With 1999 random permutations of 4 subjects the p of each effect is, within 3 binomial SDs
    (0.034), the share of the 24 permutations, enumerated here with gls_effects, whose |z| reaches the
    observed one; the identity permutation (a tie with the observed |z|) counts."""
    import itertools

    qE, qC, pE, pC, X = _group(seed=5, n=4, slope=(0.8, 0.0))
    Sigma = np.eye(2) * 0.16
    result = rerandomisation_test(qE, qC, pE, pC, X, ["a", "b"], ["mean", "x"], {"x": Sigma}, permute=["x"],
                                  n_permutations=1999, seed=2)
    L, b = _natural(qE, qC, pE)
    observed = np.abs(gls_effects(L, b, X, Sigma)[1][:, 1])
    null = np.array([np.abs(gls_effects(L, b, np.column_stack([X[:, 0], X[list(order), 1]]), Sigma)[1][:, 1])
                     for order in itertools.permutations(range(4))])
    np.testing.assert_allclose(result.p[:, 1], _exact_p(null, observed), atol=0.034)


def test_sign_flip_p_is_the_exact_p_of_all_sign_patterns():
    """The same for sign flips of 5 subjects' information about the prior mean (b_i → L_i·pE +
    s_i·(b_i − L_i·pE)): 1999 random patterns against all 32, enumerated with gls_effects; the
    all-plus and all-minus patterns tie with the observed |z|."""
    import itertools

    qE, qC, pE, pC, X = _group(seed=6, n=5, mean=(0.25, 0.1), prior_mean=(0.1, -0.2))
    Sigma = np.eye(2) * 0.16
    ones = X[:, :1]
    result = rerandomisation_test(qE, qC, pE, pC, ones, ["a", "b"], ["mean"], {"mean": Sigma}, permute=[],
                                  sign_flip=["mean"], n_permutations=1999, seed=3)
    L, b = _natural(qE, qC, pE)
    b_centre = np.einsum("ipq,q->ip", L, pE)
    observed = np.abs(gls_effects(L, b, ones, Sigma)[1][:, 0])
    null = np.array([np.abs(gls_effects(L, b_centre + np.array(s)[:, None] * (b - b_centre), ones, Sigma)[1][:, 0])
                     for s in itertools.product((-1.0, 1.0), repeat=5)])
    np.testing.assert_allclose(result.p[:, 0], _exact_p(null, observed), atol=0.034)


def test_result_records_its_settings_and_reports_progress(caplog):
    import logging

    qE, qC, pE, pC, X = _group()
    Sigma = np.eye(2) * 0.16
    with caplog.at_level(logging.INFO, logger="ptsd_bidsapp.progress"):
        result = rerandomisation_test(qE, qC, pE, pC, X, ["a", "b"], ["mean", "x"], {"x": Sigma}, permute=["x"],
                                      n_permutations=9, seed=7, family="model")
    assert (result.n_permutations, result.seed, result.family) == (9, 7, "model")
    assert result.method == {"mean": None, "x": "permutation"}
    assert any(r.getMessage().startswith("re-randomisation test (x, permutation): 9/9 done") for r in caplog.records), \
        [r.getMessage() for r in caplog.records]


def test_an_effect_without_information_has_z_zero():
    """A design column of zeros: its effects are not estimable (zero precision, zero pseudo-inverse
    variance): z = 0, not a division by zero."""
    qE, qC, pE, pC, X = _group()
    L, b = _natural(qE, qC, pE)
    _, z = gls_effects(L, b, np.column_stack([X, np.zeros(len(X))]), np.eye(2) * 0.16)
    np.testing.assert_array_equal(z[:, 2], 0.0)
    assert np.all(np.abs(z[:, 0]) > 0)
