"""Units of ``peb/fit.py`` pinned to SPM12's conventions (spm_svd $Id 6110, spm_dx $Id 7144,
spm_logdet $Id 6321, spm_find_pC, spm_dcm_peb r7720) and to analytic values: the principal
subspace, the local-linearisation step, the VL loop's bookkeeping, the probability of an
effect's sign, and fit_peb's handling of designs, defaults and outputs."""

import math
import warnings

import numpy as np
import pytest

from ptsd_bidsapp.peb import fit as fit_module
from ptsd_bidsapp.peb import fit_peb, posterior_probability_nonzero, select_parameters
from ptsd_bidsapp.peb.fit import _precision_components, _spm_dx, _variational_laplace, principal_basis
from tests.peb.peb_fixtures import (COVARIATES, GROUP_MEAN, PARAM_NAMES, PRIOR_VAR, RANDOM_EFFECT_SD,
                                    exact_posteriors, simulate_group)

pytestmark = pytest.mark.unit

PHI_1 = 0.5 * (1.0 + math.erf(1.0 / math.sqrt(2.0)))   # standard normal cdf at 1 (0.8413)


# ------------------------------------------------------------------ posterior_probability_nonzero
def test_probability_of_the_sign_is_the_normal_cdf_of_the_standardised_mean():
    """Φ(|Ep|/sd): every entry here is one standard deviation from zero, on either side, with
    standard deviations above and below 1. A fixed effect (variance 0, or a round-off negative
    variance) is certain of its sign, without numpy warnings for the divisions by sd = 0."""
    Ep = np.array([1.0, -2.0, 0.5, 0.03])
    Cp = np.array([1.0, 4.0, 0.25, 0.0009])
    np.testing.assert_allclose(posterior_probability_nonzero(Ep, Cp), PHI_1, rtol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fixed = posterior_probability_nonzero(np.array([0.3, 0.0, -0.1]), np.array([0.0, 0.0, -1e-18]))
    np.testing.assert_array_equal(fixed, 1.0)


# ------------------------------------------------------------------ principal_basis (spm_svd)
def test_principal_basis_of_a_diagonal_covariance_keeps_the_original_order():
    """spm_svd on a diagonal matrix: unit vectors (SPM sorts them by variance, we keep the order)."""
    np.testing.assert_array_equal(principal_basis(np.diag([3.0, 1.0, 2.0])), np.eye(3))
    np.testing.assert_array_equal(principal_basis(np.array([[2.0]])), np.ones((1, 1)))
    # small variances (DCM A priors 1/64, 1/128): the threshold is relative, all kept
    np.testing.assert_array_equal(principal_basis(np.diag([1 / 64, 1 / 128])), np.eye(2))


def test_principal_basis_threshold_is_on_normalised_squared_singular_values():
    """spm_svd(C, u): keep the singular vectors whose s²·n/Σs² > u (strictly), s = singular values.
    diag(10, 3e-2, 1e-2, 1e-3), u = 1e-6: s²·4/Σs² = 4, 3.6e-5, 4.0e-6, 4.0e-8 -> the first three.
    (s instead of s² keeps all four, s³ only the first, ·n·Σ instead of ·n/Σ all four, /n/Σ two.)
    diag(3, 1) at u = 0.2: s²·2/Σs² = 1.8 and exactly 0.2, not above u -> the first only."""
    np.testing.assert_array_equal(principal_basis(np.diag([10.0, 3e-2, 1e-2, 1e-3])), np.eye(4)[:, :3])
    np.testing.assert_array_equal(principal_basis(np.diag([3.0, 1.0]), threshold=0.2), np.eye(2)[:, :1])


def test_principal_basis_of_a_rank_one_covariance_is_its_eigenvector():
    """[[1, 1], [1, 1]] has eigenvalues 2 and 0: one direction, (1, 1)/√2 (up to sign)."""
    U = principal_basis(np.array([[1.0, 1.0], [1.0, 1.0]]))
    assert U.shape == (2, 1)
    np.testing.assert_allclose(np.abs(U[:, 0]), [1 / np.sqrt(2)] * 2, rtol=1e-12)


def test_principal_basis_of_nothing_is_empty():
    assert principal_basis(np.zeros((0, 0))).shape == (0, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # no 0/0 on a zero covariance
        assert principal_basis(np.zeros((2, 2))).shape == (2, 0)


# ------------------------------------------------------------------ _spm_dx
def test_spm_dx_is_the_local_linearisation_step():
    """spm_dx(J, g, {t}): dx = (e^{τJ} − I)J⁻¹g with τ = e^t/|J|^{1/n}, |J| over the nonzero
    singular values (spm_logdet); along a zero curvature the step is τg. Worked by hand:
    J = −2 (n = 1), t = 0: τ = 1/2, dx = (e^{−1} − 1)/(−2). J = diag(−1, 0), t = 0: |J| = 1, τ = 1,
    dx = (1 − e^{−1}, 1)·g. J = 0: no nonzero singular value, |J| = 1, dx = e^t·g."""
    np.testing.assert_allclose(_spm_dx(np.array([[-2.0]]), np.array([1.0]), 0.0), [(np.exp(-1) - 1) / -2],
                               rtol=1e-12)
    np.testing.assert_allclose(_spm_dx(np.diag([-1.0, 0.0]), np.array([1.0, 1.0]), 0.0),
                               [1 - np.exp(-1), 1.0], rtol=1e-12)
    np.testing.assert_allclose(_spm_dx(np.zeros((2, 2)), np.array([1.0, 2.0]), 0.3), np.exp(0.3) * np.array([1, 2]),
                               rtol=1e-12)
    assert _spm_dx(np.zeros((0, 0)), np.zeros(0), 0.0).shape == (0,)


def test_spm_dx_uses_the_pseudo_inverse_only_above_e16():
    """spm_dx: ``if min(t) > exp(16)`` → −pinv(J)·g, else the matrix exponential. J = diag(−1, 0)
    (|J| = 1, so τ = e^t): at τ = e^16 exactly the zero-curvature direction still moves by τg;
    at τ = e^16.5 the pseudo-inverse leaves it (0) and moves the other by −g/(−1) = g."""
    J, g = np.diag([-1.0, 0.0]), np.array([1.0, 1.0])
    np.testing.assert_allclose(_spm_dx(J, g, 16.0), [1.0, np.exp(16.0)], rtol=1e-12)
    np.testing.assert_allclose(_spm_dx(J, g, 16.5), [1.0, 0.0], rtol=1e-12, atol=0)


def test_spm_dx_pseudo_inverse_step_inverts_each_kept_curvature():
    """Above τ = e^16 the step is −J⁺g (spm_dx), worked by hand on diagonal J (t = 20, so τ > e^16 in
    every case): J = diag(−2, −0.25, 0), g = (1, 2, 3) gives (1/2, 8, 0); the same J rotated by an
    orthogonal Q, with gradient Q·g, gives Q·(1/2, 8, 0). The cut of the module's docstring, a
    curvature kept when its magnitude exceeds 1e-12 × the largest: with the largest 0.5, −7e-13 is
    inverted (−g/λ), −5e-13 (exactly at the cut) and −3e-13 are not."""
    g = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(_spm_dx(np.diag([-2.0, -0.25, 0.0]), g, 20.0), [0.5, 8.0, 0.0], rtol=1e-12, atol=0)
    Q, _ = np.linalg.qr(np.array([[1.0, 2.0, 0.5], [0.3, -1.0, 2.0], [2.0, 0.1, -1.0]]))
    J = Q @ np.diag([-2.0, -0.25, 0.0]) @ Q.T
    np.testing.assert_allclose(_spm_dx(J, Q @ g, 20.0), Q @ np.array([0.5, 8.0, 0.0]), rtol=1e-9, atol=1e-9)
    g2 = np.array([1.0, 1.0])
    np.testing.assert_allclose(_spm_dx(np.diag([-0.5, -7e-13]), g2, 20.0), [2.0, 1 / 7e-13], rtol=1e-12)
    for small in (-1e-12 * 0.5, -3e-13):
        np.testing.assert_allclose(_spm_dx(np.diag([-0.5, small]), g2, 20.0), [2.0, 0.0], rtol=1e-12, atol=0)


# ------------------------------------------------------------------ _precision_components
def test_manual_precision_components_are_the_prior_precision_on_each_masks_parameters():
    """spm_dcm_peb with M.Q given as masks: each component is the prior precision restricted to the
    parameters the mask selects (a 0/1 vector, or a matrix whose diagonal is that vector), then
    projected on U (U'·Q·U); a mask that selects nothing adds no component. Worked by hand on a
    3-parameter precision with off-diagonal terms."""
    pq = np.array([[4.0, 1.0, 0.5], [1.0, 3.0, 0.2], [0.5, 0.2, 2.0]])
    fields = ["A", "A", "B"]
    masks = [np.array([1, 0, 1]), np.diag([0.0, 1.0, 0.0]), np.zeros(3)]
    first, second = _precision_components(pq, fields, masks, np.eye(3))
    np.testing.assert_array_equal(first, [[4.0, 0.0, 0.5], [0.0, 0.0, 0.0], [0.5, 0.0, 2.0]])
    np.testing.assert_array_equal(second, [[0.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 0.0]])
    U = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])   # keeps the first two parameters
    (projected,) = _precision_components(pq, fields, [np.array([1, 1, 0])], U)
    np.testing.assert_array_equal(projected, [[4.0, 1.0], [1.0, 3.0]])


# ------------------------------------------------------------------ _variational_laplace
def _scripted(F_values, n_b=1):
    """An objective whose F on the k-th call is F_values[k] (zero gradient, unit curvature)."""
    calls = {"n": 0}

    def evaluate(b, g):
        F = F_values[min(calls["n"], len(F_values) - 1)]
        calls["n"] += 1
        return {"F": F, "grad": np.zeros(n_b), "hess": -np.eye(n_b), "dFdbb": -np.eye(n_b),
                "dFdgg": np.zeros((0, 0))}

    return evaluate, calls


def test_vl_stops_after_more_than_four_iterations_when_the_gain_is_below_tolerance():
    """spm_dcm_peb: stop when ``dF < 1e-4 && n > 4``: a flat F stops at the 5th iteration; a gain
    of exactly the tolerance (2⁻¹⁰ here, so that F's increments are exact) never stops it, and the
    loop ends at ``max_iter`` evaluations, not converged."""
    evaluate, calls = _scripted([0.0])
    _, _, _, n, stopped = _variational_laplace(evaluate, np.zeros(1), np.zeros(0), max_iter=64)
    assert (n, calls["n"], stopped) == (5, 5, True)


def test_vl_gain_equal_to_the_tolerance_does_not_stop(monkeypatch):
    monkeypatch.setattr(fit_module, "_TOL_DF", 2.0 ** -10)
    evaluate, calls = _scripted([k * 2.0 ** -10 for k in range(20)])
    _, _, _, n, stopped = _variational_laplace(evaluate, np.zeros(1), np.zeros(0), max_iter=8)
    assert (n, calls["n"]) == (8, 8)
    assert stopped is False


def test_vl_runs_max_iter_evaluations_and_reports_not_converged():
    evaluate, calls = _scripted([float(k) for k in range(10)])      # F keeps rising by 1 nat
    _, _, _, n, stopped = _variational_laplace(evaluate, np.zeros(1), np.zeros(0), max_iter=3)
    assert (n, calls["n"]) == (3, 3)
    assert stopped is False


def _quadratic(nan_at=()):
    """F(b) = −|b − (1, −0.5)|²/2 with its exact gradient and curvature; F = NaN on the listed calls."""
    calls = {"n": 0}
    target = np.array([1.0, -0.5])

    def evaluate(b, g):
        calls["n"] += 1
        d = b - target
        F = -0.5 * d @ d if calls["n"] not in nan_at else np.nan
        return {"F": F, "grad": -d, "hess": -np.eye(2), "dFdbb": -np.eye(2), "dFdgg": np.zeros((0, 0))}

    return evaluate


@pytest.mark.parametrize("nan_at", [{1}, {3}])
def test_vl_treats_a_non_finite_free_energy_as_minus_infinity(nan_at):
    """A NaN F (e.g. an overflowing step) is worse than any finite F: at the first call it is the
    reference every later point beats, later it is a rejected point. Either way the ascent still
    reaches the optimum to the stopping rule's accuracy (gain < 1e-4 nats: |Δb| ~ 1e-2)."""
    _, b, _, _, _ = _variational_laplace(_quadratic(nan_at), np.zeros(2), np.zeros(0))
    np.testing.assert_allclose(b, [1.0, -0.5], atol=2e-2)


def _spm_dx_by_definition(curvature, gradient, log_time):
    """spm_dx's own definition: dx = expm([[0, 0], [τg, τJ]])[1:, 0], τ = e^t/|J|^{1/n} (|J| = |det J|)."""
    from scipy.linalg import expm

    n = gradient.size
    tau = np.exp(log_time - np.linalg.slogdet(curvature)[1] / n)
    augmented = np.zeros((n + 1, n + 1))
    augmented[1:, 0] = tau * gradient
    augmented[1:, 1:] = tau * curvature
    return expm(augmented)[1:, 0]


def test_vl_long_steps_use_the_block_diagonal_curvature_of_the_accepted_point():
    """spm_dcm_peb r7720: a step with |dp|₁ ≥ 8 is recomputed without the (β, γ) coupling, from the
    block curvatures saved at the last accepted point. One iteration from the prior (t = −4 + ¼)
    with joint curvature [[−1, 0.8], [0.8, −1]] and a gradient scaled so that the joint step has
    |dp|₁ = 8.5: β moves by the block step's β part, γ by tanh of its γ part."""
    joint = np.array([[-1.0, 0.8], [0.8, -1.0]])
    gradient = np.array([1.0, 1.0])
    gradient = gradient * 8.5 / np.abs(_spm_dx_by_definition(joint, gradient, -3.75)).sum()

    def evaluate(b, g):
        return {"F": 0.0, "grad": gradient, "hess": joint, "dFdbb": joint[:1, :1], "dFdgg": joint[1:, 1:]}

    _, b, g, _, _ = _variational_laplace(evaluate, np.zeros(1), np.zeros(1), max_iter=1)
    block = _spm_dx_by_definition(np.diag([-1.0, -1.0]), gradient, -3.75)
    np.testing.assert_allclose(b, block[:1], rtol=1e-9)
    np.testing.assert_allclose(g, np.tanh(block[1:]), rtol=1e-9)
    assert abs(_spm_dx_by_definition(joint, gradient, -3.75)[0] - block[0]) > 0.1   # the two steps differ


# ------------------------------------------------------------------ select_parameters
def test_parameter_field_ignores_the_effect_prefix_of_nested_peb_names():
    """PEB-of-PEB names are '<effect>:<parameter>' (PEBResult.effect_names)."""
    assert fit_module.parameter_field("change:B_fearful_amygdala-vmpfc") == "B"
    assert fit_module.parameter_field("A_amygdala-vmpfc") == "A"
    assert select_parameters(["change:A_a-b", "change:B_u_a-b", "change:C_u_a"], fields=("B",)) == [1]


def test_between_only_drops_self_connections_of_roi_labels_with_underscores():
    """ROI labels may contain '_' (the lateralized atlas: dacc_L, ...; contracts.check_label), so the
    region pair is not the last '_'-separated part of the name."""
    names = ["A_dacc_L-dacc_L", "A_dacc_L-vmpfc_R", "B_fearful_amygdala_R-amygdala_R", "B_fearful_dacc_L-dacc_R",
             "change:A_vmpfc_L-vmpfc_L", "C_faces_dacc_L"]
    assert select_parameters(names, fields=("A", "B", "C"), between_only=True) == [1, 3, 5]


def test_select_parameters_zero_variances_are_fixed_even_when_the_threshold_is_zero():
    """spm_find_pC: ``q > mean(q(q < 1024))/1024`` is strict: with variances (0, 2048) the mean of
    those below 1024 is 0, and the zero-variance parameter is not above it."""
    assert select_parameters(["A_a-b", "A_b-a"], fields=None, prior_variance=np.array([0.0, 2048.0])) == [1]


# ------------------------------------------------------------------ fit_peb: designs and defaults
def _small_group(n_subjects, seed=8):
    X, _, Ep, Cp, pE, pC = simulate_group(seed, n_subjects=n_subjects)
    return X, Ep, Cp, pE, pC


def test_design_vectors_and_columns_are_read_as_one_row_per_subject():
    """A 1-D design (one value per subject) is a column; an (Ns, 1) column is kept as it is;
    one subject with a one-row design is one subject. Default covariate names 'covariate<j>'."""
    _, Ep, Cp, pE, pC = _small_group(2)
    for design in (np.ones(2), np.ones((2, 1)), [[1], [1]]):
        result = fit_peb(Ep, Cp, pE, pC, design, PARAM_NAMES, max_iter=2)
        assert result.X.shape == (2, 1) and result.X.dtype == float
        np.testing.assert_array_equal(result.X, np.ones((2, 1)))
        assert result.covariate_names == ["covariate1"]
    one = fit_peb(Ep[:1], Cp[:1], pE, pC, [[1.0, 0.5]], PARAM_NAMES, max_iter=2)
    assert one.X.shape == (1, 2) and one.covariate_names == ["covariate1", "covariate2"]


def test_a_design_that_does_not_match_the_posteriors_is_refused():
    X, Ep, Cp, pE, pC = _small_group(4)
    with pytest.raises(ValueError, match="rows"):
        fit_peb(Ep, Cp[:3], pE, pC, X, PARAM_NAMES, COVARIATES)
    with pytest.raises(ValueError, match="rows"):
        fit_peb(Ep[:3], Cp, pE, pC, X, PARAM_NAMES, COVARIATES)


def test_default_selection_is_spm_find_pC_on_the_first_subjects_prior_over_all_fields():
    """``select=None``: every field (C and transit too, not only A and B) whose prior variance in the
    first subject's prior is free; the second subject's prior (under which B would be fixed: 1e-6 is
    below its mean/1024 = 3e-4) is not read."""
    rng = np.random.default_rng(9)
    names = ["A_a-b", "B_u_a-b", "C_u_a", "transit_a", "A_b-a"]
    variance = np.array([1 / 64, 1.0, 1.0, 1 / 256, 0.0])         # the last one fixed
    pC_first = np.diag(variance)
    pC_second = np.diag(np.array([1 / 64, 1e-6, 1.0, 1 / 256, 1 / 64]))
    Ep = [rng.normal(size=5) * np.sqrt(variance) for _ in range(3)]
    Cp = [np.diag(variance / 2) for _ in range(3)]
    pE = np.zeros(5)
    result = fit_peb(Ep, Cp, pE, [pC_first, pC_second, pC_first], np.ones((3, 1)), names, max_iter=2)
    assert result.param_names == ["A_a-b", "B_u_a-b", "C_u_a", "transit_a"]


def test_one_selected_parameter_is_a_valid_peb():
    X, Ep, Cp, pE, pC = _small_group(6)
    result = fit_peb(Ep, Cp, pE, pC, X, PARAM_NAMES, COVARIATES, select=[2], max_iter=3)
    assert result.Ep.shape == (1, 4) and result.param_names == [PARAM_NAMES[2]]


def test_random_effects_need_two_subjects():
    """spm_dcm_peb with one subject: no precision components (no γ, Ch is 0×0); two subjects: one."""
    _, Ep, Cp, pE, pC = _small_group(2)
    one = fit_peb(Ep[:1], Cp[:1], pE, pC, np.ones((1, 1)), PARAM_NAMES, max_iter=3)
    assert one.precision_components == [] and one.Eh.shape == (0,) and one.Ch.shape == (0, 0)
    two = fit_peb(Ep, Cp, pE, pC, np.ones((2, 1)), PARAM_NAMES, max_iter=3)
    assert len(two.precision_components) == 1 and two.Eh.shape == (1,) and two.Ch.shape == (1, 1)
    assert two.n_iter == 3 and not two.converged


def test_a_zero_covariate_column_keeps_the_unscaled_prior():
    """The third-level prior of covariate j is scaled by N/Σx² (spm_dcm_peb); a column of zeros
    (e.g. a covariate constant in this group, after centring) gets the scale 1, i.e. PC/α (SPM:
    N/0 = Inf)."""
    X, Ep, Cp, pE, pC = _small_group(6)
    X = X.copy()
    X[:, 2] = 0.0
    result = fit_peb(Ep, Cp, pE, pC, X, PARAM_NAMES, COVARIATES, max_iter=2)
    block = result.prior_cov[8:12, 8:12]
    np.testing.assert_allclose(block, np.diag(PRIOR_VAR), rtol=1e-12)


def test_reduced_subjects_free_energies_add_up_to_the_peb_free_energy():
    """SPM's reduced DCMs: DCM.F = ΔF_i + F_i − F_c/Ns, with F = Σ(ΔF_i + F_i) − F_c at the same point;
    without the posterior shrinkage (the reduced DCMs use the unshrunk posteriors) they sum to F."""
    X, Ep, Cp, pE, pC = _small_group(6)
    F_first = np.array([-120.0, -95.5, -130.25, -101.0, -99.0, -140.0])
    result = fit_peb(Ep, Cp, pE, pC, X, PARAM_NAMES, COVARIATES, F_list=F_first, shrink_posteriors=False,
                     max_iter=6)
    assert result.subject_F.sum() == pytest.approx(result.F, abs=1e-9)   # sums of ~1e2: round-off 1e-12


def test_joint_covariance_is_a_covariance_whose_marginals_exceed_the_conditionals():
    """joint_cov = (−H)⁻¹ over (β, γ) lifted to the parameter space. Marginal variances of β and γ
    are at least their conditional variances (Cp = (−H_ββ)⁻¹, Ch = (−H_γγ)⁻¹): Λ_ββ − Λ_βγΛ_γγ⁻¹Λ_γβ
    ≤ Λ_ββ. Also with a selected parameter of negligible prior variance (U drops its direction)."""
    X, Ep, Cp, pE, pC = _small_group(6)
    for select in (None, [0, 1, 2, 3]):
        prior = pC.copy()
        if select is not None:
            prior[1, 1] = 1e-6          # s²·n/Σs² ~ 4e-12 < 1e-6: principal_basis drops it
        result = fit_peb(Ep, Cp, pE, prior, X, PARAM_NAMES, COVARIATES, select=select,
                         random_effects="fields", max_iter=6)
        n_b = result.Cp.shape[0]
        joint = result.joint_cov
        assert joint.shape == (n_b + 2, n_b + 2)
        np.testing.assert_allclose(joint, joint.T, atol=1e-12)
        assert np.all(np.isfinite(joint))
        assert np.all(np.diag(joint)[:n_b] >= np.diag(result.Cp) * (1 - 1e-9))
        assert np.all(np.diag(joint)[n_b:] >= np.diag(result.Ch) * (1 - 1e-9))
        assert np.all(np.linalg.eigvalsh(joint) > -1e-12)


# ------------------------------------------------------------------ _PEBObjective
class _Captured(Exception):
    pass


def _objective_before_the_vl(monkeypatch, X, Ep, Cp, pE, pC, **options):
    """fit_peb's objective as built, without running the VL."""
    def capture(objective, b, g, max_iter):
        raise _Captured(objective)

    monkeypatch.setattr(fit_module, "_variational_laplace", capture)
    with pytest.raises(_Captured) as caught:
        fit_peb(Ep, Cp, pE, pC, X, PARAM_NAMES, COVARIATES, **options)
    return caught.value.args[0]


def test_variational_energy_gradient_with_nonzero_prior_means(monkeypatch):
    """L (the log joint, complexity centred on the prior means) has the analytic gradient (eq. A.11)
    also when the prior means are not zero (the fixtures' are): first-level prior mean 0.05, hE = 0.5.
    Central differences, step 1e-6, tolerance 1e-5 of the largest entry (as the zero-mean test)."""
    X, _, Ep, Cp, pE, pC = simulate_group(1, n_subjects=8)
    objective = _objective_before_the_vl(monkeypatch, X, Ep, Cp, pE + 0.05, pC, random_effects="fields", hE=0.5)
    assert np.abs(objective.prior_mean).max() > 0.01 and np.all(objective.hyper_mean == 0.5)
    rng = np.random.default_rng(3)
    b = objective.prior_mean + rng.normal(size=objective.n_b) * 0.1
    g = objective.hyper_mean + rng.normal(size=objective.n_hyper) * 0.3
    grad = objective(b, g)["grad"]
    h = 1e-6
    point = np.concatenate([b, g])
    numeric = np.zeros_like(point)
    for k in range(point.size):
        step = np.zeros_like(point)
        step[k] = h
        up, down = point + step, point - step
        numeric[k] = (objective(up[: b.size], up[b.size:])["L"] - objective(down[: b.size], down[b.size:])["L"]) / (2 * h)
    assert np.max(np.abs(numeric - grad)) < 1e-5 * np.max(np.abs(grad))


def test_free_energy_is_the_variational_energy_plus_the_laplace_terms(monkeypatch):
    """spm_dcm_peb r7720: F = Σ(ΔF_i + F_i) − ½b'bPb − ½g'gPg + ½ln|ipC·Cp|, Cp = (−H)⁻¹, while
    L = Σ(ΔF_i + F_i) − ½(b−bE)'bP(b−bE) − ½(g−gE)'gP(g−gE). So F − L is known from the priors and
    ln|−H| (spm_logdet: the product of the singular values). A covariate in small units (×1e-2) gives
    curvatures below 1, where ln|λ| is negative."""
    X, _, Ep, Cp, pE, pC = simulate_group(1)
    X = X.copy()
    X[:, 1] *= 1e-2
    objective = _objective_before_the_vl(monkeypatch, X, Ep, Cp, pE + 0.05, pC, random_effects="fields", hE=0.5)
    rng = np.random.default_rng(4)
    b = objective.prior_mean + rng.normal(size=objective.n_b) * 0.1
    g = objective.hyper_mean + rng.normal(size=objective.n_hyper) * 0.3
    out = objective(b, g)
    assert np.min(np.abs(np.linalg.eigvalsh(out["hess"]))) < 0.1      # measured 0.046
    bP, gP, bE, gE = objective.prior_prec, objective.hyper_prec, objective.prior_mean, objective.hyper_mean
    laplace = 0.5 * (np.linalg.slogdet(bP)[1] + np.linalg.slogdet(gP)[1] - np.linalg.slogdet(-out["hess"])[1])
    expected = (out["L"] + 0.5 * (b - bE) @ bP @ (b - bE) - 0.5 * b @ bP @ b
                + 0.5 * (g - gE) @ gP @ (g - gE) - 0.5 * g @ gP @ g + laplace)
    # F ~ 1e2 nats from sums of ~50 terms: round-off ~1e-12; 1e-8 leaves margin
    assert out["F"] == pytest.approx(expected, abs=1e-8)


# ------------------------------------------------------------------ posterior shrinkage
def _conditional_group_effects(result, Ep, Cp, pE, pC, X, shrink):
    """β's posterior given Ce (Friston et al. 2016, eq. A.11 solved: ΔF is quadratic in rE):
    Cp⁻¹ = bP + Σ x_i x_i' ⊗ (rP − rP sC rP), Ep = Cp(bP bE + Σ x_i ⊗ rP sC (qP qE − pP pE))."""
    rP = np.linalg.inv(result.Ce)
    precision = np.linalg.inv(result.prior_cov)
    linear = precision @ result.prior_mean
    pP = np.linalg.inv(pC)
    for qE, qC, x in zip(Ep, Cp, np.atleast_2d(X)):
        qP = np.linalg.inv(qC) + (pP / 16 if shrink else 0)     # spm_dcm_peb's shrinkage, Ns > 1
        sC = np.linalg.inv(qP - pP + rP)
        precision += np.kron(np.outer(x, x), rP - rP @ sC @ rP)
        linear += np.kron(x, rP @ sC @ (qP @ qE - pP @ pE))
    return np.linalg.solve(precision, linear)


@pytest.mark.parametrize("n_subjects, shrink", [(1, True), (2, False), (2, True)])
def test_posteriors_are_shrunk_only_for_groups_and_on_request(n_subjects, shrink):
    """spm_dcm_peb shrinks qC ← (qC⁻¹ + pC⁻¹/16)⁻¹ when Ns > 1; ``shrink_posteriors=False`` turns it
    off; one subject is never shrunk. At the mode (``polish``) β is the conditional solution (1e-6,
    as the 24-subject case in test_fit.py)."""
    # weakly informative first-level data (likelihood variance 4× the prior's): shrinkage matters
    rng = np.random.default_rng(10)
    theta = GROUP_MEAN + rng.normal(size=(n_subjects, 4)) * RANDOM_EFFECT_SD
    Ep, Cp, pE, pC = exact_posteriors(rng, theta, 2 * np.sqrt(PRIOR_VAR))
    # a nonzero prior mean c: shifting θ, y and the prior mean by c shifts the exact posterior mean by c
    Ep, pE = [e + 0.1 for e in Ep], pE + 0.1
    X = np.ones((n_subjects, 1))
    result = fit_peb(Ep, Cp, pE, pC, X, PARAM_NAMES, shrink_posteriors=shrink, polish=True)
    expected = _conditional_group_effects(result, Ep, Cp, pE, pC, X, shrink and n_subjects > 1)
    np.testing.assert_allclose(result.Ep.ravel(order="F"), expected, atol=1e-6)
    other = _conditional_group_effects(result, Ep, Cp, pE, pC, X, not (shrink and n_subjects > 1))
    assert np.abs(other - expected).max() > 1e-4                # the case tells the two apart
    # SPM's reduced DCMs: the unshrunk posterior under the empirical prior N(x_i ⊗ Ep, Ce) of the
    # point evaluated last (with ``polish``, the returned Ep): sC = (qP − pP + rP)⁻¹,
    # sE = sC(qP qE − pP pE + rP rE)
    rP, pP = np.linalg.inv(result.Ce), np.linalg.inv(pC)
    for i, (qE, qC, x) in enumerate(zip(Ep, Cp, X)):
        qP = np.linalg.inv(qC)
        sC = np.linalg.inv(qP - pP + rP)
        rE = np.kron(x, np.eye(4)) @ result.Ep.ravel(order="F")
        np.testing.assert_allclose(result.subject_Cp[i], sC, rtol=1e-9, atol=1e-15)
        np.testing.assert_allclose(result.subject_Ep[i], sC @ (qP @ qE - pP @ pE + rP @ rE), atol=1e-9)


def test_result_names_the_subjects_and_the_precision_option():
    _, Ep, Cp, pE, pC = _small_group(3)
    X = np.ones((3, 1))
    default = fit_peb(Ep, Cp, pE, pC, X, PARAM_NAMES, max_iter=2)
    assert default.subject_names == ["subject1", "subject2", "subject3"]
    assert default.random_effects == "single"
    masks = [[1, 1, 0, 0], [0, 0, 1, 1]]
    named = fit_peb(Ep, Cp, pE, pC, X, PARAM_NAMES, subject_names=("sub-01", "sub-02", "sub-03"),
                    random_effects=masks, max_iter=2)
    assert named.subject_names == ["sub-01", "sub-02", "sub-03"]
    assert named.random_effects == "manual" and len(named.precision_components) == 2
