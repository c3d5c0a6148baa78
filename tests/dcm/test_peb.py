"""PEB, BMR search/BMA, session change (PEB of PEBs) and leave-one-out prediction.

Synthetic groups follow the PEB generative model exactly: subject parameters are drawn
from a between-subject GLM with random effects, and each subject's "DCM posterior" is the
exact posterior of a direct Gaussian observation of its parameters (known likelihood
covariance) under the DCM prior — a Bayesian GLM, so the Laplace assumption holds.
"""

import numpy as np
import pytest

from ptsd_bidsapp.dcm import peb as peb_module
from ptsd_bidsapp.dcm.bmr import reduced_free_energy
from ptsd_bidsapp.dcm.peb import (
    bmr_search,
    fit_peb,
    fit_session_change,
    loo_predict,
    select_parameters,
)

PARAM_NAMES = ["A_amygdala-vmpfc", "A_vmpfc-amygdala", "B_fearful_amygdala-vmpfc", "B_fearful_vmpfc-amygdala"]
#: spm_dcm_fmri_priors-like variances: between-region A 1/64, B 1.
PRIOR_VAR = np.array([1 / 64, 1 / 64, 1.0, 1.0])
COVARIATES = ["mean", "improvement", "drug", "improvement_x_drug"]
GROUP_MEAN = np.array([0.1, -0.1, 0.3, -0.2])
RANDOM_EFFECT_SD = np.array([0.03, 0.03, 0.15, 0.15])
LIKELIHOOD_SD = np.array([0.04, 0.04, 0.15, 0.15])
#: Planted effects (parameter index, covariate index) -> size: improvement lowers the
#: fearful modulation of amygdala→vmPFC; improvement × drug makes vmPFC→amygdala more negative.
PLANTED = {(2, 1): -0.4, (3, 3): -0.8}


def centred_design(rng, n_subjects):
    """[1, improvement (z), drug (±½, centred), improvement × drug (centred)]."""
    improvement = rng.normal(size=n_subjects)
    improvement = (improvement - improvement.mean()) / improvement.std(ddof=1)
    drug = np.where(np.arange(n_subjects) % 2 == 0, 0.5, -0.5)
    drug = drug - drug.mean()
    interaction = improvement * drug
    interaction = interaction - interaction.mean()
    return np.column_stack([np.ones(n_subjects), improvement, drug, interaction])


def exact_posteriors(rng, theta, likelihood_sd, prior_var=PRIOR_VAR):
    """Posterior of θ_i from y_i = θ_i + e, e ~ N(0, diag(sd²)), prior N(0, diag(prior_var))."""
    pE = np.zeros(len(prior_var))
    pC = np.diag(prior_var)
    Ep, Cp = [], []
    for th in np.atleast_2d(theta):
        y = th + rng.normal(size=th.size) * likelihood_sd
        qP = np.diag(1 / likelihood_sd**2) + np.diag(1 / prior_var)
        qC = np.linalg.inv(qP)
        Ep.append(qC @ (y / likelihood_sd**2))
        Cp.append(qC)
    return Ep, Cp, pE, pC


def simulate_group(seed, n_subjects=24, planted=PLANTED):
    rng = np.random.default_rng(seed)
    X = centred_design(rng, n_subjects)
    effects = np.zeros((len(PARAM_NAMES), X.shape[1]))
    effects[:, 0] = GROUP_MEAN
    for (p, c), value in planted.items():
        effects[p, c] = value
    theta = X @ effects.T + rng.normal(size=(n_subjects, len(PARAM_NAMES))) * RANDOM_EFFECT_SD
    Ep, Cp, pE, pC = exact_posteriors(rng, theta, LIKELIHOOD_SD)
    return X, effects, Ep, Cp, pE, pC


def _objective(Ep, Cp, pE, pC, X, monkeypatch):
    captured = {}
    original = peb_module._PEBObjective

    class Capture(original):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            captured["objective"] = self

    monkeypatch.setattr(peb_module, "_PEBObjective", Capture)
    result = fit_peb(Ep, Cp, pE, pC, X, PARAM_NAMES, COVARIATES)
    return result, captured["objective"]


def test_subject_reduction_matches_bmr():
    """The PEB's fast per-subject BMR equals ``reduced_free_energy`` (1e-9: same algebra)."""
    _, _, Ep, Cp, pE, pC = simulate_group(0)
    subject = peb_module._prepare_subject(Ep[0], Cp[0], pE, pC)
    rE = np.array([0.05, -0.05, 0.2, -0.1])
    rC = np.diag(PRIOR_VAR / 16)
    rP = np.linalg.inv(rC)
    dF, sE, sC = peb_module._reduce(subject, rE, rP, np.linalg.slogdet(rP)[1])
    dF_ref, sE_ref, sC_ref = reduced_free_energy(Ep[0], Cp[0], pE, pC, rE, rC)
    assert dF == pytest.approx(dF_ref, abs=1e-9)
    np.testing.assert_allclose(sE, sE_ref, atol=1e-9)
    np.testing.assert_allclose(sC, sC_ref, atol=1e-9)


def test_gradient_and_curvature_match_finite_differences(monkeypatch):
    """Analytic ∂L/∂(β,γ) and ∂²L (Friston et al. 2016, eq. A.11) vs central differences.

    L is the variational energy (F without the log-determinant term). Step 1e-6; tolerance
    relative 1e-5 of the largest entry (difference error O(h²)·L''' and round-off ε/h).
    """
    X, _, Ep, Cp, pE, pC = simulate_group(1)
    _, objective = _objective(Ep, Cp, pE, pC, X, monkeypatch)
    rng = np.random.default_rng(2)
    b = objective.prior_mean + rng.normal(size=objective.n_b) * 0.1
    g = rng.normal(size=objective.n_hyper) * 0.5
    n = objective.n_b + objective.n_hyper

    def energy(point):
        out = objective(point[: objective.n_b], point[objective.n_b:])
        logdet = np.sum(np.log(np.abs(np.linalg.eigvalsh(out["hess"]))))
        return out["F"] - 0.5 * (objective.logdet_joint_prior_prec - logdet)

    point = np.concatenate([b, g])
    reference = objective(b, g)
    h = 1e-6
    numeric_grad = np.zeros(n)
    numeric_hess = np.zeros((n, n))
    for k in range(n):
        step = np.zeros(n)
        step[k] = h
        numeric_grad[k] = (energy(point + step) - energy(point - step)) / (2 * h)
        up = objective((point + step)[: objective.n_b], (point + step)[objective.n_b:])["grad"]
        down = objective((point - step)[: objective.n_b], (point - step)[objective.n_b:])["grad"]
        numeric_hess[k] = (up - down) / (2 * h)
    assert np.max(np.abs(numeric_grad - reference["grad"])) < 1e-5 * np.max(np.abs(reference["grad"]))
    assert np.max(np.abs(numeric_hess - reference["hess"])) < 1e-5 * np.max(np.abs(reference["hess"]))


def test_group_effects_are_the_empirical_bayes_glm_solution():
    """Given the estimated random-effects covariance, β's posterior is exact and closed-form.

    Each subject's reduced free energy is quadratic in its empirical prior mean, so
    Cp⁻¹ = bP + Σ x_i x_i' ⊗ (rP − rP sC rP) and Ep = Cp(bP bE + Σ x_i ⊗ rP sC η_i).
    At convergence fit_peb must agree (tolerance 1e-6: the VL stops when F gains < 1e-4).
    """
    X, _, Ep, Cp, pE, pC = simulate_group(3)
    result = fit_peb(Ep, Cp, pE, pC, X, PARAM_NAMES, COVARIATES)
    assert result.converged
    rP = np.linalg.inv(result.Ce)
    precision = np.linalg.inv(result.prior_cov)
    linear = precision @ result.prior_mean
    for qE, qC, x in zip(Ep, Cp, X):
        qC = np.linalg.inv(np.linalg.inv(qC) + np.linalg.inv(pC) / 16)  # SPM's shrinkage
        qP, pP = np.linalg.inv(qC), np.linalg.inv(pC)
        sC = np.linalg.inv(qP - pP + rP)
        precision += np.kron(np.outer(x, x), rP - rP @ sC @ rP)
        linear += np.kron(x, rP @ sC @ (qP @ qE - pP @ pE))
    cov = np.linalg.inv(precision)
    np.testing.assert_allclose(result.Ep.ravel(order="F"), cov @ linear, atol=1e-6)
    np.testing.assert_allclose(result.Cp, cov, rtol=1e-6, atol=1e-12)


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


@pytest.mark.parametrize("option, n_components", [("all", 4), ("fields", 2), ("single", 1)])
def test_precision_component_options(option, n_components):
    X, _, Ep, Cp, pE, pC = simulate_group(6)
    result = fit_peb(Ep, Cp, pE, pC, X, PARAM_NAMES, COVARIATES, random_effects=option)
    assert len(result.precision_components) == n_components
    assert result.converged
    assert np.isfinite(result.F)
    # random-effects SD of B (0.15 planted) is estimated within a factor of 2
    sd_B = np.sqrt(np.diag(result.Ce)[2:])
    if option == "all":
        assert np.all((sd_B > 0.075) & (sd_B < 0.3))


def test_select_parameters_between_only():
    names = ["A_amygdala-amygdala", "A_vmpfc-amygdala", "B_fearful_amygdala-vmpfc", "B_fearful_vmpfc-vmpfc",
             "C_faces_amygdala", "transit_amygdala"]
    assert select_parameters(names, fields=("A", "B"), between_only=True) == [1, 2]
    assert select_parameters(names, fields=("A", "B")) == [0, 1, 2, 3]
    assert select_parameters(names, fields=("B",), prior_variance=np.array([1, 1, 0, 1, 1, 1.0])) == [3]


def test_session_change_peb_of_pebs_recovers_change_effects():
    """Change post − pre depends on improvement (B amygdala→vmPFC) and on the interaction."""
    rng = np.random.default_rng(7)
    n = 24
    X = centred_design(rng, n)
    baseline = GROUP_MEAN + rng.normal(size=(n, 4)) * RANDOM_EFFECT_SD
    change_effects = np.zeros((4, 4))
    for (p, c), value in PLANTED.items():
        change_effects[p, c] = value
    change = X @ change_effects.T + rng.normal(size=(n, 4)) * RANDOM_EFFECT_SD / 2
    Ep_pre, Cp_pre, pE, pC = exact_posteriors(rng, baseline, LIKELIHOOD_SD)
    Ep_post, Cp_post, _, _ = exact_posteriors(rng, baseline + change, LIKELIHOOD_SD)
    result = fit_session_change(Ep_pre, Cp_pre, Ep_post, Cp_post, pE, pC, X, PARAM_NAMES, COVARIATES)
    assert len(result.within) == n
    assert result.within[0].covariate_names == ["mean", "change"]
    between = result.between
    assert between.param_names == [f"change:{name}" for name in PARAM_NAMES]
    bma = bmr_search(between)
    for (p, c), value in PLANTED.items():
        assert bma.Pp[p, c] > 0.95
        assert np.sign(bma.Ep[p, c]) == np.sign(value)
    # nothing was planted on the drug main effect of the change
    assert np.all(bma.Pp[:, 2] < 0.95)


def test_loo_prediction_of_improvement_from_baseline():
    """Baseline vmPFC→amygdala (A) lower with greater improvement → positive LOO correlation."""
    rng = np.random.default_rng(8)
    n = 20
    improvement = rng.normal(size=n)
    improvement -= improvement.mean()
    X = np.column_stack([np.ones(n), improvement])
    theta = np.zeros((n, 4))
    theta[:] = GROUP_MEAN
    theta[:, 1] += -0.05 * improvement
    theta[:, 3] += -0.3 * improvement
    theta += rng.normal(size=(n, 4)) * RANDOM_EFFECT_SD
    Ep, Cp, pE, pC = exact_posteriors(rng, theta, LIKELIHOOD_SD)
    result = loo_predict(Ep, Cp, pE, pC, X, PARAM_NAMES, ["mean", "improvement"], select=[1, 3])
    assert result.r > 0.5
    assert result.p < 0.01
    # predictions are in the units of the covariate (no systematic scale collapse)
    assert 0.3 < np.std(result.predicted) / np.std(improvement) < 2.0


def test_loo_on_unrelated_covariate_is_not_significant():
    rng = np.random.default_rng(9)
    n = 20
    X = np.column_stack([np.ones(n), rng.normal(size=n)])
    theta = GROUP_MEAN + rng.normal(size=(n, 4)) * RANDOM_EFFECT_SD
    Ep, Cp, pE, pC = exact_posteriors(rng, theta, LIKELIHOOD_SD)
    result = loo_predict(Ep, Cp, pE, pC, X, PARAM_NAMES, ["mean", "noise"], select=[1, 3])
    assert result.p > 0.05


@pytest.mark.parametrize("seed", range(3))
def test_bmr_of_a_null_covariate_matches_refitting_the_peb_without_it(seed):
    """PEB-level identity: removing the (unplanted) drug column by BMR vs re-fitting.

    BMR keeps the full model's random-effects precisions while re-fitting re-optimises
    them, so the identity is exact only to the extent γ does not move; for a null
    covariate it moves little. Measured |difference| ≤ 0.06 nats over seeds 0–4
    (reduced F ≈ +9 nats); tolerance 0.1 nats. Posterior means agree to 1e-3.
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
    np.testing.assert_allclose(sE.reshape(full.Ep.shape, order="F")[:, keep], refit.Ep, atol=1e-3)


def test_bmr_pp_is_the_family_posterior_over_all_reduced_models():
    """``Pp`` follows ``spm_dcm_bmr_all``: with ≤ 8 free effects the search is exhaustive and
    Pp(effect) = Σ p(m) over the models that keep it, p(m) ∝ exp(ΔF_m) with ΔF_m the
    reduced free energy of switching off the others (prior mean and variance set to 0).
    Checked against a brute-force enumeration of all 2⁸ models (tolerance 1e-10)."""
    X, _, Ep, Cp, pE, pC = simulate_group(4)
    peb = fit_peb(Ep, Cp, pE, pC, X, PARAM_NAMES, COVARIATES, select=[2, 3])  # 2 parameters × 4 covariates
    bma = bmr_search(peb)
    qE, n = peb.Ep.ravel(order="F"), peb.Ep.size
    assert n == 8
    models = np.array(list(np.ndindex(*(2,) * n)), dtype=bool)  # True = effect kept
    F = np.array([reduced_free_energy(qE, peb.Cp, peb.prior_mean, peb.prior_cov, np.diag(m * 1.0) @ peb.prior_mean,
                                      np.diag(m * 1.0) @ peb.prior_cov @ np.diag(m * 1.0))[0] for m in models])
    posterior = np.exp(F - F.max())
    posterior /= posterior.sum()
    family = np.array([posterior[models[:, j]].sum() for j in range(n)])
    np.testing.assert_allclose(bma.Pp.ravel(order="F"), family, atol=1e-10)
    assert bma.best_model_F == pytest.approx(F.max(), abs=1e-10)


def test_inference_is_invariant_to_covariate_units():
    """The prior of each group effect is scaled by N / Σx² (``spm_dcm_peb``), so rescaling a
    covariate (e.g. CAPS-5 points instead of SD units) rescales its effects and changes
    neither the free energy nor the posterior of anything else. This needs the fit to end
    at the mode of the variational energy, not wherever F stopped rising along the
    optimisation path (which depends on the scaling: F differed by up to 0.1 nats).

    BMR inherits SPM's rule that effects with prior variance below mean/1024 are fixed
    (``spm_dcm_bmr_all``), which is not unit-invariant for extreme rescalings (×9 shrinks
    the prior variance of an A effect 81-fold, below that threshold); it is checked at ×3.
    """
    X, _, Ep, Cp, pE, pC = simulate_group(4)
    reference = fit_peb(Ep, Cp, pE, pC, X, PARAM_NAMES, COVARIATES)
    for factor in (9.0, 1 / 9, 3.0, 1 / 3):
        scaled = X.copy()
        scaled[:, 1] *= factor
        result = fit_peb(Ep, Cp, pE, pC, scaled, PARAM_NAMES, COVARIATES)
        assert result.converged
        assert result.F == pytest.approx(reference.F, abs=1e-6)
        np.testing.assert_allclose(result.Eh, reference.Eh, atol=1e-5)
        np.testing.assert_allclose(result.Ep[:, 1] * factor, reference.Ep[:, 1], atol=1e-6)
        np.testing.assert_allclose(result.Pp_sign, reference.Pp_sign, atol=1e-6)
        if factor in (3.0, 1 / 3):
            np.testing.assert_allclose(bmr_search(result).Pp, bmr_search(reference).Pp, atol=1e-6)
