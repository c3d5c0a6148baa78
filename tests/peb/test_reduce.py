"""Bayesian model reduction: the analytic reduced free energy equals re-estimation.

For a linear Gaussian model ``y = Aθ + e`` with known noise covariance the Laplace
assumption is exact, so the log evidence of any prior is available in closed form,
``ln N(y; A·m, A·C·A' + Σ)``, and the posterior too. BMR (``reduced_free_energy``) must
reproduce the re-estimated reduced model to floating-point precision. Tolerance: 1e-8
nats on evidences of magnitude ~10^1–10^2 (≈ 1e-10 relative; the computation involves a
handful of 5×5 inversions with condition numbers < 1e4, so round-off is ~1e-12).
"""

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from ptsd_bidsapp.peb.reduce import reduced_free_energy

TOL_F = 1e-8
TOL_MOMENTS = 1e-8


def _glm(seed, n_params=5, n_obs=12):
    rng = np.random.default_rng(seed)
    design = rng.normal(size=(n_obs, n_params))
    noise_cov = np.diag(rng.uniform(0.5, 2.0, n_obs))
    theta = rng.normal(size=n_params)
    y = design @ theta + rng.multivariate_normal(np.zeros(n_obs), noise_cov)
    return design, noise_cov, y


def _exact_log_evidence(design, noise_cov, y, mean, cov):
    return multivariate_normal(design @ mean, design @ cov @ design.T + noise_cov, allow_singular=False).logpdf(y)


def _exact_posterior(design, noise_cov, y, mean, cov):
    """Posterior of θ (works for singular prior covariance: fixed directions stay at mean)."""
    gain = cov @ design.T @ np.linalg.inv(design @ cov @ design.T + noise_cov)
    return mean + gain @ (y - design @ mean), cov - gain @ design @ cov


def _full_model(design, noise_cov, y, pE, pC):
    qE, qC = _exact_posterior(design, noise_cov, y, pE, pC)
    return qE, qC, _exact_log_evidence(design, noise_cov, y, pE, pC)


@pytest.mark.parametrize("seed", range(5))
def test_full_rank_reduced_prior_matches_reestimation(seed):
    design, noise_cov, y = _glm(seed)
    rng = np.random.default_rng(100 + seed)
    pE = rng.normal(size=5) * 0.3
    root = rng.normal(size=(5, 5))
    pC = root @ root.T / 5 + np.eye(5)
    qE, qC, F_full = _full_model(design, noise_cov, y, pE, pC)
    # Nested: reduced prior precision ≥ full prior precision; shifted mean.
    rC = np.linalg.inv(np.linalg.inv(pC) + np.diag(rng.uniform(0, 4, 5)))
    rE = pE + rng.normal(size=5) * 0.2
    dF, sE, sC = reduced_free_energy(qE, qC, pE, pC, rE, rC)
    F_reduced = _exact_log_evidence(design, noise_cov, y, rE, rC)
    exact_sE, exact_sC = _exact_posterior(design, noise_cov, y, rE, rC)
    assert dF == pytest.approx(F_reduced - F_full, abs=TOL_F)
    np.testing.assert_allclose(sE, exact_sE, atol=TOL_MOMENTS)
    np.testing.assert_allclose(sC, exact_sC, atol=TOL_MOMENTS)


def _switched_off(pE, pC, removed):
    """SPM's reduced prior with the ``removed`` parameters switched off: ``R pE``, ``R pC R``."""
    keep = np.ones(len(pE))
    keep[removed] = 0
    R = np.diag(keep)
    return R @ pE, R @ pC @ R


@pytest.mark.parametrize("removed", [[0], [1, 3], [0, 2, 4], [0, 1, 2, 3, 4]])
def test_switched_off_parameters_match_reestimation(removed):
    """Singular reduced prior (``rC = R pC R``, SPM's way of removing parameters)."""
    design, noise_cov, y = _glm(7)
    pE = np.zeros(5)
    pC = np.diag([1.0, 0.5, 2.0, 1.0, 0.25])
    qE, qC, F_full = _full_model(design, noise_cov, y, pE, pC)
    rE, rC = _switched_off(pE, pC, removed)
    dF, sE, sC = reduced_free_energy(qE, qC, pE, pC, rE, rC)
    F_reduced = _exact_log_evidence(design, noise_cov, y, rE, rC)
    exact_sE, exact_sC = _exact_posterior(design, noise_cov, y, rE, rC)
    assert dF == pytest.approx(F_reduced - F_full, abs=TOL_F)
    np.testing.assert_allclose(sE, exact_sE, atol=TOL_MOMENTS)
    np.testing.assert_allclose(sC, exact_sC, atol=TOL_MOMENTS)
    np.testing.assert_array_equal(sE[removed], 0.0)


def test_fixed_parameters_in_full_model_are_projected_out():
    """A parameter with zero prior variance in the full model (like SPM's fixed DCM entries)."""
    design, noise_cov, y = _glm(3)
    pE = np.array([0.0, 0.0, 0.5, 0.0, 0.0])
    pC = np.diag([1.0, 1.0, 0.0, 1.0, 1.0])
    qE, qC, F_full = _full_model(design, noise_cov, y, pE, pC)
    R = np.diag([1.0, 0.0, 1.0, 1.0, 1.0])
    rE, rC = R @ pE, R @ pC @ R
    dF, sE, _ = reduced_free_energy(qE, qC, pE, pC, rE, rC)
    assert dF == pytest.approx(_exact_log_evidence(design, noise_cov, y, rE, rC) - F_full, abs=TOL_F)
    assert sE[2] == pytest.approx(0.5)


def test_identical_prior_changes_nothing():
    design, noise_cov, y = _glm(11)
    pE, pC = np.zeros(5), np.eye(5)
    qE, qC, _ = _full_model(design, noise_cov, y, pE, pC)
    dF, sE, sC = reduced_free_energy(qE, qC, pE, pC, pE, pC)
    assert dF == pytest.approx(0.0, abs=1e-10)
    np.testing.assert_allclose(sE, qE, atol=1e-10)
    np.testing.assert_allclose(sC, qC, atol=1e-10)


def test_evidence_favours_removing_a_null_parameter_and_keeping_a_strong_one():
    """Savage–Dickey behaviour: a parameter estimated near 0 is pruned, one far from 0 kept."""
    rng = np.random.default_rng(0)
    design = rng.normal(size=(200, 2))
    y = design @ np.array([0.0, 1.0]) + rng.normal(size=200)
    pE, pC = np.zeros(2), np.eye(2)
    qE, qC, _ = _full_model(design, np.eye(200), y, pE, pC)
    dF_null, _, _ = reduced_free_energy(qE, qC, pE, pC, pE, np.diag([0.0, 1.0]))
    dF_strong, _, _ = reduced_free_energy(qE, qC, pE, pC, pE, np.diag([1.0, 0.0]))
    assert dF_null > 1.0
    assert dF_strong < -20.0


@pytest.mark.parametrize("changed_only", [True, False])
def test_regularised_form_is_the_exact_evidence_for_full_rank_priors(changed_only):
    """spm_log_evidence's regularised BMR (``regularised_reduced_free_energy``) on a linear Gaussian
    model, where the evidence of any prior is exact: for a full-rank reduced prior that shrinks and
    shifts two of five effects (prior factorising, so the changed effects' marginal is exact too)
    it is ln p(y | reduced) − ln p(y | full) up to its regularisation — 1e-9 nats with tol = 1e-14,
    1e-4 nats with SPM's e⁻¹⁶."""
    from ptsd_bidsapp.peb.reduce import regularised_reduced_free_energy

    design, noise_cov, y = _glm(21)
    pE = np.array([0.1, -0.2, 0.0, 0.3, 0.0])
    pC = np.diag([1.0, 0.5, 2.0, 1.0, 0.25])
    qE, qC, F_full = _full_model(design, noise_cov, y, pE, pC)
    rE, rC = pE.copy(), pC.copy()
    rE[[1, 3]] = [0.4, -0.1]
    rC[1, 1], rC[3, 3] = 0.1, 0.3
    expected = _exact_log_evidence(design, noise_cov, y, rE, rC) - F_full
    tight = regularised_reduced_free_energy(qE, qC, pE, pC, rE, rC, tol=1e-14, changed_only=changed_only)
    assert tight == pytest.approx(expected, abs=1e-9)
    spm = regularised_reduced_free_energy(qE, qC, pE, pC, rE, rC, changed_only=changed_only)
    assert spm == pytest.approx(expected, abs=1e-4)
    assert abs(expected) > 0.5  # the case is not trivially zero


def test_regularised_form_drops_parameters_fixed_in_the_full_model():
    """A parameter with prior variance 0 (≤ tol) in the full model is fixed: it is left out, so the
    score is that of the model without it (exact evidence difference of the linear Gaussian model)."""
    from ptsd_bidsapp.peb.reduce import regularised_reduced_free_energy

    design, noise_cov, y = _glm(22)
    pE = np.array([0.0, 0.0, 0.5, 0.0, 0.0])
    pC = np.diag([1.0, 1.0, 0.0, 1.0, 1.0])
    qE, qC, F_full = _full_model(design, noise_cov, y, pE, pC)
    rC = pC.copy()
    rC[0, 0] = 0.2
    expected = _exact_log_evidence(design, noise_cov, y, pE, rC) - F_full
    got = regularised_reduced_free_energy(qE, qC, pE, pC, pE, rC, tol=1e-14, changed_only=False)
    assert got == pytest.approx(expected, abs=1e-8)


def test_range_basis_spans_the_positive_eigenspace():
    """Orthonormal columns spanning the eigenvectors whose eigenvalue exceeds rtol × the largest."""
    from ptsd_bidsapp.peb import range_basis

    B = range_basis(np.diag([2.0, 0.0, 1.0]))
    assert B.shape == (3, 2)
    np.testing.assert_allclose(B.T @ B, np.eye(2), atol=1e-12)
    np.testing.assert_allclose(B @ B.T, np.diag([1.0, 0.0, 1.0]), atol=1e-12)   # projector on e0, e2
    assert range_basis(np.diag([1.0, 1e-13])).shape == (2, 1)                     # below 1e-12 × max
    assert range_basis(np.diag([1.0, 1e-13]), rtol=1e-14).shape == (2, 2)
    assert range_basis(np.diag([1.0, 1e-12])).shape == (2, 1)                     # exactly at the threshold: out
    assert range_basis(np.zeros((3, 3))).shape == (3, 0)
    np.testing.assert_allclose(np.abs(range_basis(np.array([[2.0]]))), [[1.0]])
    # the threshold is relative to the largest eigenvalue, whatever the units
    assert range_basis(np.diag([1e-3, 1e-14])).shape == (2, 2)                    # 1e-14 > 1e-12 × 1e-3
    assert range_basis(np.diag([1e-3, 1e-16])).shape == (2, 1)
    assert range_basis(np.zeros((0, 0))).shape == (0, 0)
    # only the symmetric part counts
    assert range_basis(np.array([[1.0, 5.0], [-5.0, 1.0]])).shape == (2, 2)


@pytest.mark.parametrize("scale", [1.0, 1e3])
@pytest.mark.parametrize("removed", [[1], [1, 3]])
def test_switched_off_parameters_of_a_correlated_prior_match_reestimation(removed, scale):
    """``rC = R pC R`` with a full (correlated) pC: the removed directions of rC are zero only up to
    round-off in its eigen-decomposition, and must still be recognised as removed (threshold
    relative to pC's scale) — the evidence and posterior are those of re-estimation."""
    design, noise_cov, y = _glm(31)
    rng = np.random.default_rng(131)
    root = rng.normal(size=(5, 5))
    pC = scale * (root @ root.T / 5 + 0.5 * np.eye(5))
    pE = rng.normal(size=5) * 0.2
    qE, qC, F_full = _full_model(design, noise_cov, y, pE, pC)
    rE, rC = _switched_off(pE, pC, removed)
    dF, sE, sC = reduced_free_energy(qE, qC, pE, pC, rE, rC)
    exact_sE, exact_sC = _exact_posterior(design, noise_cov, y, rE, rC)
    # × sqrt(scale): round-off grows with the scale of the prior
    assert dF == pytest.approx(_exact_log_evidence(design, noise_cov, y, rE, rC) - F_full, abs=TOL_F * np.sqrt(scale))
    np.testing.assert_allclose(sE, exact_sE, atol=TOL_MOMENTS * np.sqrt(scale))
    np.testing.assert_allclose(sC, exact_sC, atol=TOL_MOMENTS * scale)


def test_inadmissible_empirical_prior_has_minus_infinite_evidence():
    """spm_dcm_peb's per-subject reduction: when the first-level posterior is less precise than its
    prior (an approximate posterior) and the empirical prior is wide, the reduced posterior
    precision qP − pP + rP is not positive definite; that prior is inadmissible (ΔF = −∞)."""
    from ptsd_bidsapp.peb.reduce import _prepare_subject, _reduce

    pE, pC = np.zeros(3), np.eye(3)
    qE, qC = np.array([0.1, 0.2, -0.1]), 2.0 * np.eye(3)      # posterior wider than the prior
    rP = 0.1 * np.eye(3)                                      # qP − pP + rP = −0.4 I
    dF, _, _ = _reduce(_prepare_subject(qE, qC, pE, pC), np.zeros(3), rP, np.linalg.slogdet(rP)[1])
    assert dF == -np.inf


def _prior_changed_on(pE, pC, changed, rE_k, rC_kk):
    """Joint prior whose marginal on ``changed`` is N(rE_k, rC_kk) and whose conditional of the
    other effects given the changed ones is the full prior's (Gaussian conditioning)."""
    k = np.asarray(changed)
    o = np.setdiff1d(np.arange(len(pE)), k)
    B = pC[np.ix_(o, k)] @ np.linalg.inv(pC[np.ix_(k, k)])          # regression of others on changed
    residual = pC[np.ix_(o, o)] - B @ pC[np.ix_(k, o)]
    mean = np.empty(len(pE))
    cov = np.empty_like(pC)
    mean[k], mean[o] = rE_k, pE[o] + B @ (rE_k - pE[k])
    cov[np.ix_(k, k)] = rC_kk
    cov[np.ix_(o, k)] = B @ rC_kk
    cov[np.ix_(k, o)] = cov[np.ix_(o, k)].T
    cov[np.ix_(o, o)] = residual + B @ rC_kk @ B.T
    return mean, cov


def test_changed_only_score_is_the_evidence_of_the_changed_effects_marginal():
    """spm_log_evidence keeps only the effects whose prior changes (``changed_only``, the
    default): it scores the marginal of those effects. For a correlated (non-factorised) full
    prior that is the exact evidence of the reduced model whose prior is the new one on the
    changed effects and the full prior's conditional for the others — not of the prior passed
    in (whose off-diagonal blocks are the full prior's), which ``changed_only=False`` scores.
    Linear Gaussian model, exact evidences (tol 1e-14: regularisation below 1e-9 nats)."""
    from ptsd_bidsapp.peb.reduce import regularised_reduced_free_energy

    design, noise_cov, y = _glm(41)
    rng = np.random.default_rng(141)
    root = rng.normal(size=(5, 5))
    pC = root @ root.T / 5 + 0.5 * np.eye(5)
    pE = rng.normal(size=5) * 0.2
    qE, qC, F_full = _full_model(design, noise_cov, y, pE, pC)
    changed = [1, 3]
    rE, rC = pE.copy(), pC.copy()
    rE[changed] = [0.4, -0.1]
    rC[np.ix_(changed, changed)] = [[0.2, 0.05], [0.05, 0.3]]
    marginal_prior = _prior_changed_on(pE, pC, changed, rE[changed], rC[np.ix_(changed, changed)])
    expected_marginal = _exact_log_evidence(design, noise_cov, y, *marginal_prior) - F_full
    expected_whole = _exact_log_evidence(design, noise_cov, y, rE, rC) - F_full
    assert abs(expected_marginal - expected_whole) > 0.05, "the case must tell the two apart"
    got = regularised_reduced_free_energy(qE, qC, pE, pC, rE, rC, tol=1e-14)
    assert got == pytest.approx(expected_marginal, abs=1e-9)
    whole = regularised_reduced_free_energy(qE, qC, pE, pC, rE, rC, tol=1e-14, changed_only=False)
    assert whole == pytest.approx(expected_whole, abs=1e-9)
    # a prior mean change alone also marks an effect as changed
    rE_only = pE.copy()
    rE_only[2] += 0.3
    marginal_prior = _prior_changed_on(pE, pC, [2], rE_only[[2]], pC[np.ix_([2], [2])])
    got = regularised_reduced_free_energy(qE, qC, pE, pC, rE_only, pC, tol=1e-14)
    assert got == pytest.approx(_exact_log_evidence(design, noise_cov, y, *marginal_prior) - F_full, abs=1e-9)


def test_regularised_form_drops_a_prior_variance_exactly_at_the_tolerance():
    """spm_log_evidence keeps the parameters whose prior variance exceeds tol: one at exactly tol
    (e⁻¹⁶) is dropped, so the score equals that of the model without it (4 of 5 effects)."""
    from ptsd_bidsapp.peb.reduce import regularised_reduced_free_energy

    tol = float(np.exp(-16))
    design, noise_cov, y = _glm(23)
    pE = np.zeros(5)
    pC = np.diag([1.0, 0.5, tol, 1.0, 0.25])
    qE, qC, _ = _full_model(design, noise_cov, y, pE, pC)
    rC = pC.copy()
    rC[0, 0] = 0.2
    keep = [0, 1, 3, 4]
    got = regularised_reduced_free_energy(qE, qC, pE, pC, pE, rC, changed_only=False)
    without = regularised_reduced_free_energy(qE[keep], qC[np.ix_(keep, keep)], pE[keep], pC[np.ix_(keep, keep)],
                                              pE[keep], rC[np.ix_(keep, keep)], changed_only=False)
    assert got == without
