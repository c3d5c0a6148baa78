"""BMR over group effects and BMA (``spm_dcm_bmr_all`` / ``spm_dcm_peb_bmc``)."""

import numpy as np
import pytest

from ptsd_bidsapp.peb import bmr_search, fit_peb, reduced_free_energy
from ptsd_bidsapp.peb.reduce import regularised_reduced_free_energy
from tests.peb.peb_fixtures import COVARIATES, PARAM_NAMES, PLANTED, simulate_group


def test_planted_covariate_effects_on_B_are_recovered():
    X, effects, Ep, Cp, pE, pC = simulate_group(4)
    result = fit_peb(Ep, Cp, pE, pC, X, PARAM_NAMES, COVARIATES)
    bma = bmr_search(result)
    for (p, c), value in PLANTED.items():
        assert bma.Pp[p, c] > 0.95
        sd = np.sqrt(np.diag(bma.Cp).reshape(bma.Ep.shape, order="F")[p, c])
        # Within 3 posterior SDs of the planted value (two-sided 0.27% per effect).
        assert abs(bma.Ep[p, c] - value) < 3 * sd
    table = bma.table()
    assert list(table.columns) == ["parameter", "covariate", "Ep", "Cp", "Pp_sign", "Pp"]
    assert len(table) == len(PARAM_NAMES) * len(COVARIATES)


def _false_positive_counts(seeds):
    planted_hits = unplanted_hits = planted_total = unplanted_total = 0
    for seed in seeds:
        X, _, Ep, Cp, pE, pC = simulate_group(1000 + seed)
        bma = bmr_search(fit_peb(Ep, Cp, pE, pC, X, PARAM_NAMES, COVARIATES))
        for p in range(len(PARAM_NAMES)):
            for c in range(1, len(COVARIATES)):  # covariate effects (column 0 is the mean)
                if (p, c) in PLANTED:
                    planted_total += 1
                    planted_hits += bma.Pp[p, c] > 0.95
                else:
                    unplanted_total += 1
                    unplanted_hits += bma.Pp[p, c] > 0.95
    return planted_hits, planted_total, unplanted_hits, unplanted_total


@pytest.mark.slow
def test_false_positive_rate_over_seeds():
    """Across 20 simulated groups: planted effects found, unplanted ones rarely (≤ 10%)."""
    planted_hits, planted_total, unplanted_hits, unplanted_total = _false_positive_counts(range(20))
    print(f"planted Pp>0.95: {planted_hits}/{planted_total}; unplanted Pp>0.95: {unplanted_hits}/{unplanted_total}")
    assert unplanted_hits / unplanted_total <= 0.10
    assert planted_hits / planted_total >= 0.9


def test_null_group_finds_no_covariate_effects():
    """With nothing planted, no covariate effect should reach Pp > 0.95 (fixed seed)."""
    X, _, Ep, Cp, pE, pC = simulate_group(5, planted={})
    bma = bmr_search(fit_peb(Ep, Cp, pE, pC, X, PARAM_NAMES, COVARIATES))
    assert np.all(bma.Pp[:, 1:] < 0.95)
    assert np.all(bma.Pp[:, 0] > 0.95)  # the planted group means are found


@pytest.mark.parametrize("seed", range(3))
def test_bmr_of_a_null_covariate_matches_refitting_the_peb_without_it(seed):
    """PEB-level identity: removing the (unplanted) drug column by BMR vs re-fitting.

    BMR keeps the full model's random-effects precisions while re-fitting re-optimises
    them, so the identity is exact only to the extent γ does not move; for a null
    covariate it moves little. Measured |difference| ≤ 0.06 nats over seeds 0–4
    (reduced F ≈ +9 nats); tolerance 0.1 nats. Posterior means agree to 1e-2.
    """
    X, _, Ep, Cp, pE, pC = simulate_group(seed)
    full = fit_peb(Ep, Cp, pE, pC, X, PARAM_NAMES, COVARIATES)
    keep = [0, 1, 3]
    refit = fit_peb(Ep, Cp, pE, pC, X[:, keep], PARAM_NAMES, [COVARIATES[j] for j in keep])
    present = np.ones(full.Ep.size)
    present[2 * 4:3 * 4] = 0.0
    R = np.diag(present)
    dF, sE, _ = reduced_free_energy(full.Ep.ravel(order="F"), full.Cp, full.prior_mean, full.prior_cov,
                                    R @ full.prior_mean, R @ full.prior_cov @ R)
    assert dF == pytest.approx(refit.F - full.F, abs=0.1)
    # 1e-2: SPM's scheme (default) returns β after its last step, short of the mode (measured ≤ 0.0055)
    np.testing.assert_allclose(sE.reshape(full.Ep.shape, order="F")[:, keep], refit.Ep, atol=1e-2)


def test_bmr_pp_is_the_family_posterior_over_all_reduced_models():
    """``Pp`` follows ``spm_dcm_bmr_all``: with ≤ 8 free effects the search is exhaustive and
    Pp(effect) = Σ p(m) over the models that keep it, p(m) ∝ exp(ΔF_m) with ΔF_m the
    reduced free energy of switching off the others (prior mean and variance set to 0), scored
    as spm_log_evidence (regularised, e⁻¹⁶). Checked against a brute-force enumeration of all
    2⁸ models (tolerance 1e-10), and the exact-limit scores against it (0.05 nats, 0.01 in Pp)."""
    X, _, Ep, Cp, pE, pC = simulate_group(4)
    peb = fit_peb(Ep, Cp, pE, pC, X, PARAM_NAMES, COVARIATES, select=[2, 3])  # 2 parameters × 4 covariates
    bma = bmr_search(peb)
    qE, n = peb.Ep.ravel(order="F"), peb.Ep.size
    assert n == 8
    models = np.array(list(np.ndindex(*(2,) * n)), dtype=bool)  # True = effect kept
    def family_pp(F):
        posterior = np.exp(F - F.max())
        posterior /= posterior.sum()
        return np.array([posterior[models[:, j]].sum() for j in range(n)])

    F = np.array([regularised_reduced_free_energy(qE, peb.Cp, peb.prior_mean, peb.prior_cov,
                                                  np.diag(m * 1.0) @ peb.prior_mean,
                                                  np.diag(m * 1.0) @ peb.prior_cov @ np.diag(m * 1.0)) for m in models])
    np.testing.assert_allclose(bma.Pp.ravel(order="F"), family_pp(F), atol=1e-10)
    assert bma.best_model_F == pytest.approx(F.max(), abs=1e-10)
    exact = np.array([reduced_free_energy(qE, peb.Cp, peb.prior_mean, peb.prior_cov, np.diag(m * 1.0) @ peb.prior_mean,
                                          np.diag(m * 1.0) @ peb.prior_cov @ np.diag(m * 1.0))[0] for m in models])
    assert np.abs(exact - F).max() < 0.05
    np.testing.assert_allclose(family_pp(exact), family_pp(F), atol=0.01)
    exact_search = bmr_search(peb, exact_scores=True)
    np.testing.assert_allclose(exact_search.Pp.ravel(order="F"), family_pp(exact), atol=1e-10)


def test_model_space_is_spm_perm_mtx_order():
    """Row 0 removes everything, the last row nothing, column 0 varies slowest (spm_perm_mtx)."""
    from ptsd_bidsapp.peb.bmr import model_space

    K = model_space(3)
    assert K.shape == (8, 3)
    assert K[0].all() and not K[-1].any()
    np.testing.assert_array_equal(K[:, 0], [True] * 4 + [False] * 4)
    np.testing.assert_array_equal(K[:, 2], [True, False] * 4)


def test_greedy_search_sizes_follow_r7717():
    """36 effects: nmax = fix(max(36/4, 8)) = 9 candidates ranked, last search over ≤ 8."""
    X, _, Ep, Cp, pE, pC = simulate_group(4)
    peb = fit_peb(Ep, Cp, pE, pC, X, PARAM_NAMES, COVARIATES)
    bma = bmr_search(peb)
    assert bma.model_space.shape == (2 ** bma.searched.size, bma.searched.size)
    assert bma.searched.size <= 8
    # effects outside the last search are either removed (0) or kept (1)
    outside = np.setdiff1d(np.arange(bma.Pp.size), bma.searched)
    assert set(np.unique(bma.Pp.ravel(order="F")[outside])) <= {0.0, 1.0}
