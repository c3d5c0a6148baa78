"""The search and averaging rules of ``spm_dcm_bmr_all`` (r7717), on PEBs whose reduced models
have closed forms.

With a factorised (diagonal) prior, switching off a set S of effects (prior mean and variance
0) has the Savage–Dickey log Bayes factor ``ΔF(S) = ln q_S(0) − ln p_S(0)`` (the marginal
posterior and prior densities of θ_S at 0), and the reduced posterior is the full posterior
conditioned on θ_S = 0 (Gaussian conditioning). Both are written out here with scipy and
plain linear algebra, not with :mod:`ptsd_bidsapp.peb.reduce`. With independent effects the
scores add up, ``ΔF(S) = Σ_{j∈S} g_j``, so the path of the greedy search can be worked out by
hand from the single-effect gains ``g_j``; the expected outcomes below are derived that way from
the rules of r7717 (free effects: prior variance > mean(prior variances < 1024)/1024;
``nmax = fix(max(n/4, 8))`` candidates ranked by a stable sort; bulk removal when
``G(1) − G(end) > nmax``; Occam's window 8 nats; ``Pp = C`` outside the last search).

The search scores models with SPM's regularised ``spm_log_evidence`` (e⁻¹⁶ added to the
diagonal of every covariance and precision it inverts). With posterior variances qC = 1e-3 × the
prior that perturbs each variance by ε = e⁻¹⁶/1e-3 ≈ 1.1e-4 relative, and a score
½ ln(pC/qC) − qE²/(2 qC) by ≲ 2ε(|score| + ½ ln 1000 + 1) ≲ 2e-3 nats for the single-effect
scores of −4 … +3 nats whose Pp is compared (0.02 nats on the −100-nat ones, far below the
≥ 0.5-nat margins the decisions below rest on); Pp moves by at most ¼ of that: ``PP_TOL``.
"""

import itertools

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from ptsd_bidsapp.peb import bmr_search
from ptsd_bidsapp.peb.fit import PEBResult

pytestmark = pytest.mark.unit

#: posterior variance / prior variance of every effect in the independent cases: the largest
#: gain of removing one effect (estimated at exactly 0) is then ½ ln 1000 = 3.45 nats
SHRINK = 1e-3
#: Pp of single effects under the regularised scores (module docstring): ¼ × 2e-3 nats
PP_TOL = 5e-4


def _peb(qE, qC, pE, pC, shape=None):
    """A PEB posterior with the given moments (only the fields ``bmr_search`` reads matter)."""
    qE = np.asarray(qE, dtype=float)
    shape = shape or (qE.size, 1)
    n_params, n_cov = shape
    return PEBResult(
        param_names=[f"p{i}" for i in range(n_params)], covariate_names=[f"c{j}" for j in range(n_cov)],
        X=np.ones((2, n_cov)), Ep=qE.reshape(shape, order="F"), Cp=np.asarray(qC, dtype=float),
        Eh=np.zeros(1), Ch=np.eye(1), Ce=np.eye(n_params), F=0.0,
        prior_mean=np.asarray(pE, dtype=float), prior_cov=np.asarray(pC, dtype=float),
        hE=0.0, hC=1.0, precision_components=[], subject_Ep=np.zeros((2, n_params)),
        subject_Cp=np.zeros((2, n_params, n_params)), subject_names=["s1", "s2"], n_iter=1, converged=True)


def _savage_dickey(qE, qC, pE, pC, removed):
    """ln q_S(0) − ln p_S(0) for a factorised prior (0 for S empty)."""
    S = np.asarray(sorted(removed), dtype=int)
    if S.size == 0:
        return 0.0
    zero = np.zeros(S.size)
    return (multivariate_normal(qE[S], qC[np.ix_(S, S)]).logpdf(zero)
            - multivariate_normal(pE[S], pC[np.ix_(S, S)]).logpdf(zero))


def _conditioned(qE, qC, removed):
    """Full posterior conditioned on θ_S = 0: mean and covariance (zero on S)."""
    S = np.asarray(sorted(removed), dtype=int)
    if S.size == 0:
        return qE.copy(), qC.copy()
    gain = qC[:, S] @ np.linalg.inv(qC[np.ix_(S, S)])
    mean = qE - gain @ qE[S]
    cov = qC - gain @ qC[S, :]
    mean[S] = 0.0
    cov[S, :] = 0.0
    cov[:, S] = 0.0
    return mean, cov


def _independent(gains, shrink=SHRINK, prior_var=None):
    """Independent effects (diagonal prior and posterior, prior mean 0) whose single removal
    gains exactly ``gains`` nats: g = ½ ln(pC/qC) − qE²/(2 qC)."""
    gains = np.asarray(gains, dtype=float)
    pC = np.ones(gains.size) if prior_var is None else np.asarray(prior_var, dtype=float)
    qC = shrink * pC
    qE = np.sqrt(2 * qC * (0.5 * np.log(pC / qC) - gains))
    return qE, np.diag(qC), np.zeros(gains.size), np.diag(pC)


def _sigmoid_keep(gain):
    """Posterior probability of keeping one independent effect: 1 / (1 + e^g)."""
    return 1.0 / (1.0 + np.exp(gain))


def test_savage_dickey_gains_of_the_independent_cases():
    """The construction of :func:`_independent` (checked once so the cases below mean what they say)."""
    gains = [3.0, 0.5, -1.0, -5.0, -100.0]
    qE, qC, pE, pC = _independent(gains)
    for j, g in enumerate(gains):
        assert _savage_dickey(qE, qC, pE, pC, [j]) == pytest.approx(g, abs=1e-9)
    assert _savage_dickey(qE, qC, pE, pC, [0, 2, 3]) == pytest.approx(3.0 - 1.0 - 5.0, abs=1e-9)


# ---------------------------------------------------------------------------------------
# exhaustive search (≤ 8 free effects): Pp and BMA against the closed forms
# ---------------------------------------------------------------------------------------
def _correlated_case():
    """Four effects, diagonal prior (variances 1, 0.5, 1, 2), correlated posterior."""
    pE = np.zeros(4)
    pC = np.diag([1.0, 0.5, 1.0, 2.0])
    corr = np.array([[1.0, 0.3, -0.2, 0.1],
                     [0.3, 1.0, 0.25, 0.0],
                     [-0.2, 0.25, 1.0, -0.3],
                     [0.1, 0.0, -0.3, 1.0]])
    sd = np.array([0.15, 0.1, 0.2, 0.12])
    qC = corr * np.outer(sd, sd)
    qE = np.array([0.05, 0.6, -0.35, 0.02])
    return qE, qC, pE, pC


@pytest.mark.parametrize("exact_scores", [False, True])
def test_exhaustive_search_pp_and_bma_are_the_closed_forms(exact_scores):
    """≤ 8 free effects: every subset is scored; Pp(j) = Σ p(m) over the models keeping j,
    p(m) ∝ exp ΔF(S_m); the BMA averages the models within 8 nats of the best, each with the
    winner's removals applied as well (r7717), weighted by softmax of their ΔF, with the exact
    mixture mean and covariance of the conditioned posteriors."""
    qE, qC, pE, pC = _correlated_case()
    bma = bmr_search(_peb(qE, qC, pE, pC, shape=(2, 2)), exact_scores=exact_scores)
    n = 4
    subsets = [set(s) for r in range(n + 1) for s in itertools.combinations(range(n), r)]
    F = np.array([_savage_dickey(qE, qC, pE, pC, s) for s in subsets])
    p = np.exp(F - F.max())
    p /= p.sum()
    expected_pp = np.array([p[[j not in s for s in subsets]].sum() for j in range(n)])
    # regularised scores: ≤ e⁻¹⁶/0.01 relative on posterior variances ≥ 0.01 (measured 4e-6 in Pp)
    tol = 1e-9 if exact_scores else 1e-4
    np.testing.assert_allclose(bma.Pp.ravel(order="F"), expected_pp, atol=tol)
    assert bma.best_model_F == pytest.approx(F.max(), abs=1e-8 if exact_scores else 1e-3)
    np.testing.assert_array_equal(bma.searched, np.arange(n))
    assert bma.model_space.shape == (16, 4)
    for row, G in zip(bma.model_space, bma.free_energies):
        assert G == pytest.approx(_savage_dickey(qE, qC, pE, pC, np.flatnonzero(row)),
                                  abs=1e-8 if exact_scores else 1e-3)

    winner = subsets[int(np.argmax(F))]
    assert 0.5 < len(winner) < n, "the case must remove some effects and keep others"
    in_window = [s for s, f in zip(subsets, F) if f > F.max() - 8.0]
    assert all(abs(f - (F.max() - 8.0)) > 0.01 for f in F), "no model at the window's edge"
    averaged = [s | winner for s in in_window]
    F_avg = np.array([_savage_dickey(qE, qC, pE, pC, s) for s in averaged])
    w = np.exp(F_avg - F_avg.max())
    w /= w.sum()
    moments = [_conditioned(qE, qC, s) for s in averaged]
    mean = sum(wi * m for wi, (m, _) in zip(w, moments))
    second = sum(wi * (c + np.outer(m, m)) for wi, (m, c) in zip(w, moments))
    assert bma.n_models_averaged == len(in_window) > 1
    np.testing.assert_allclose(np.sort(bma.averaged_free_energies), np.sort(F_avg), atol=1e-8)
    np.testing.assert_allclose(bma.Ep.ravel(order="F"), mean, atol=1e-10)
    np.testing.assert_allclose(bma.Cp, second - np.outer(mean, mean), atol=1e-10)
    assert np.all(bma.Ep.ravel(order="F")[sorted(winner)] == 0.0)


def test_bma_of_a_clear_winner_is_its_conditioned_posterior():
    """Effects 1 and 2 far from 0 (removing either costs > 8 nats), 0 and 3 null: the models in
    Occam's window differ only in effects 0 and 3, which the winner removes; with the winner's
    removals applied (r7717) all of them are the winner, so the BMA is its reduced posterior,
    the full posterior conditioned on θ0 = θ3 = 0."""
    qE, qC, pE, pC = _correlated_case()
    qE = np.array([0.0, 0.9, -0.9, 0.0])           # effects 0 and 3 null, 1 and 2 far from 0
    qC = qC / 4
    bma = bmr_search(_peb(qE, qC, pE, pC))
    assert bma.n_models_averaged == 4
    np.testing.assert_allclose(bma.averaged_free_energies, _savage_dickey(qE, qC, pE, pC, {0, 3}), atol=1e-8)
    mean, cov = _conditioned(qE, qC, {0, 3})
    np.testing.assert_allclose(bma.Ep.ravel(), mean, atol=1e-10)
    np.testing.assert_allclose(bma.Cp, cov, atol=1e-12)
    np.testing.assert_allclose(bma.Pp.ravel()[[1, 2]], 1.0, atol=1e-9)
    assert bma.best_model_F == pytest.approx(_savage_dickey(qE, qC, pE, pC, {0, 3}), abs=1e-3)


# ---------------------------------------------------------------------------------------
# which effects are free (searched)
# ---------------------------------------------------------------------------------------
def test_effects_below_1_1024_of_the_mean_prior_variance_are_fixed():
    """Prior variances (1, 1, 1, 1e-4): threshold mean(1, 1, 1, 1e-4)/1024 ≈ 7.3e-4, so the
    last effect is never searched and gets Pp = 0 (SPM: ``Pp = C``), the others are searched."""
    qE, qC, pE, pC = _independent([-2.0, 1.0, -4.0, 0.0], prior_var=[1.0, 1.0, 1.0, 1e-4])
    bma = bmr_search(_peb(qE, qC, pE, pC))
    np.testing.assert_array_equal(bma.searched, [0, 1, 2])
    assert bma.Pp.ravel()[3] == 0.0
    np.testing.assert_allclose(bma.Pp.ravel()[:3], _sigmoid_keep(np.array([-2.0, 1.0, -4.0])), atol=PP_TOL)


def test_prior_variance_of_exactly_1024_is_left_out_of_the_mean():
    """Only variances strictly below 1024 enter the mean: (1024, 1, 1, 0.01) gives the threshold
    mean(1, 1, 0.01)/1024 ≈ 6.5e-4, so the 0.01 effect is free (with 1024 in the mean it would be
    0.25 and the effect fixed). Its variance is below spm_svd's 1e-6 cut of the prior, so no score
    depends on it: its removal is worth exactly 0 nats and its Pp is ½."""
    qE, qC, pE, pC = _independent([-2.0, 1.0, -4.0, 0.0], prior_var=[1024.0, 1.0, 1.0, 0.01])
    bma = bmr_search(_peb(qE, qC, pE, pC))
    np.testing.assert_array_equal(bma.searched, [0, 1, 2, 3])
    assert bma.Pp.ravel()[3] == pytest.approx(0.5, abs=1e-12)


def test_an_effect_exactly_at_the_threshold_is_fixed():
    """Variances (511.75, 0.25): mean 256, threshold 256/1024 = 0.25 exactly; only effects
    strictly above it are free, so one effect is searched (and a single free effect works)."""
    qE, qC, pE, pC = _independent([-2.0, 0.0], prior_var=[511.75, 0.25])
    bma = bmr_search(_peb(qE, qC, pE, pC))
    np.testing.assert_array_equal(bma.searched, [0])
    assert bma.model_space.shape == (2, 1)
    assert bma.Pp.ravel()[1] == 0.0
    assert bma.Pp.ravel()[0] == pytest.approx(_sigmoid_keep(-2.0), abs=PP_TOL)


def test_without_prior_variances_below_1024_every_effect_with_a_prior_is_free():
    """r7717: with no variance below 1024, ``C = q > 0``."""
    qE, qC, pE, pC = _independent([-2.0, 1.0], prior_var=[2048.0, 4096.0])
    bma = bmr_search(_peb(qE, qC, pE, pC))
    np.testing.assert_array_equal(bma.searched, [0, 1])
    np.testing.assert_allclose(bma.Pp.ravel(), _sigmoid_keep(np.array([-2.0, 1.0])), atol=PP_TOL)


def test_no_free_effect_is_an_error():
    qE, qC, pE, pC = _independent([0.0, 0.0])
    with pytest.raises(ValueError, match=r"^the PEB has no free group effects to reduce$"):
        bmr_search(_peb(qE, qC, pE, np.zeros((2, 2))))


# ---------------------------------------------------------------------------------------
# the greedy stage
# ---------------------------------------------------------------------------------------
def test_bulk_removal_of_nmax_candidates_takes_a_present_effect_with_it():
    """36 independent effects: gains +3 (8 effects), −5 (one), −100 (27). nmax = fix(36/4) = 9:
    the 9 candidates are the eight +3 effects and the −5 one; removing all 9 gains
    24 − 5 = 19 > 9 nats, so they go at once (SPM's bulk step), the −5 effect included: Pp 0.
    (Ranking 8 or comparing models one at a time would keep it: Pp = 1/(1 + e⁻⁵) = 0.993.)
    The next search (27 effects, nmax 8) removes none of the −100 effects: Pp 1."""
    gains = np.array([3.0] * 8 + [-5.0] + [-100.0] * 27)
    order = np.random.default_rng(0).permutation(gains.size)   # not in index order
    qE, qC, pE, pC = _independent(gains[order])
    bma = bmr_search(_peb(qE, qC, pE, pC, shape=(9, 4)))
    Pp = bma.Pp.ravel(order="F")
    where = {g: np.flatnonzero(gains[order] == g) for g in (3.0, -5.0, -100.0)}
    np.testing.assert_array_equal(Pp[where[3.0]], 0.0)
    assert Pp[where[-5.0]][0] == 0.0
    np.testing.assert_allclose(Pp[where[-100.0]], 1.0, atol=1e-12)
    assert bma.searched.size == 8 and set(bma.searched) <= set(where[-100.0])


def test_bulk_step_compares_against_the_current_model():
    """20 independent effects: +3 (8), +0.5 (7), −1 (one), −100 (4). First search (nmax 8):
    the eight +3 effects go in bulk (24 > 8 nats). Second (12 effects, nmax 8): candidates the
    seven +0.5 and the −1 effect; removing all of them gains 3.5 − 1 = 2.5 nats over the current
    model (the one that already lacks the +3 effects), not > 8: no bulk step, the exhaustive
    search removes the +0.5 effects only. The −1 effect stays to the last search: Pp = σ(1)."""
    gains = np.array([3.0] * 8 + [0.5] * 7 + [-1.0] + [-100.0] * 4)
    order = np.random.default_rng(1).permutation(gains.size)
    qE, qC, pE, pC = _independent(gains[order])
    bma = bmr_search(_peb(qE, qC, pE, pC, shape=(5, 4)))
    Pp = bma.Pp.ravel(order="F")
    g = gains[order]
    np.testing.assert_array_equal(Pp[(g == 3.0) | (g == 0.5)], 0.0)
    assert Pp[g == -1.0][0] == pytest.approx(_sigmoid_keep(-1.0), abs=PP_TOL)
    np.testing.assert_allclose(Pp[g == -100.0], 1.0, atol=1e-12)
    assert set(bma.searched) == set(np.flatnonzero(g < 0))
    # the last search's scores are relative to the full model: the 15 removed effects' gains included
    assert bma.best_model_F == pytest.approx(24.0 + 3.5, abs=0.01)


def test_ties_in_the_ranking_keep_the_parameter_order():
    """MATLAB's ``sort`` is stable: 17 effects, nine of them (at indices 0 and 4–11) tied at a
    gain of −1 and the rest at −100. nmax = fix(max(17/4, 8)) = 8 candidates: the first 8 tied
    ones in index order, 0, 4, …, 10; no bulk step (−8 nats); the exhaustive search over them
    keeps them all (Pp = σ(1)); index 11 is outside the last search (Pp = 1)."""
    gains = np.full(17, -100.0)
    gains[[0, *range(4, 12)]] = -1.0
    qE, qC, pE, pC = _independent(gains)
    bma = bmr_search(_peb(qE, qC, pE, pC))
    np.testing.assert_array_equal(bma.searched, [0, 4, 5, 6, 7, 8, 9, 10])
    np.testing.assert_allclose(bma.Pp.ravel()[bma.searched], _sigmoid_keep(-1.0), atol=PP_TOL)
    assert bma.Pp.ravel()[11] == 1.0


def test_hundreds_of_nats_of_evidence_do_not_overflow():
    """40 null effects (estimated at 0, posterior variance 1e-8 × prior): each removal gains
    ½ ln 1e8 = 9.21 nats, 368 nats in all, beyond exp's float range (709.8) once doubled. The
    greedy search removes them in bulk (nmax = 10, then 8: 40 → 30 → 22 → 14 → 6 left), then
    all 6 of the last search; those have Pp = 1/(1 + e^9.21); the models keeping one of them are
    9.21 nats behind, outside Occam's window, so the BMA is the winner alone: 0, finite moments. Exact scores (the regularised ones would cap the gains near ½ ln(1/e⁻¹⁶) = 8 nats)."""
    n = 40
    qE, qC, pE, pC = _independent(np.zeros(n), shrink=1e-8)
    qE[:] = 0.0
    gain = 0.5 * np.log(1e8)
    bma = bmr_search(_peb(qE, qC, pE, pC, shape=(10, 4)), exact_scores=True)
    Pp = bma.Pp.ravel(order="F")
    assert bma.best_model_F == pytest.approx(n * gain, rel=1e-9)
    assert bma.searched.size == 6
    np.testing.assert_allclose(Pp[bma.searched], _sigmoid_keep(gain), rtol=1e-6)
    np.testing.assert_array_equal(np.delete(Pp, bma.searched), 0.0)
    assert np.all(np.isfinite(bma.Cp)) and np.all(bma.Ep == 0.0)
    np.testing.assert_allclose(bma.averaged_free_energies, [n * gain], rtol=1e-9)
