"""Variational Laplace inversion of the DCM: recovery, model selection, SPM bookkeeping."""

from __future__ import annotations


import numpy as np
import pytest

from ptsd_bidsapp.dcm import estimate_dcm, simulate_dcm
from ptsd_bidsapp.dcm.api import parameter_vector
from ptsd_bidsapp.dcm.inversion import spm_dx
from tests.dcm.dcm_fixtures import faces_spec, random_faces_parameters

PARAMS = {"A": [[0.1, -0.3], [0.4, -0.1]], "B": {"fearful": [[0, -0.2], [0.3, 0]]}, "C": [[0.6, 0], [0, 0]],
          "transit": [0.05, -0.05], "decay": 0.02, "epsilon": 0.05}


def _fit(params, snr=None, rng=None, with_b=True, **spec_kwargs):
    y, _ = simulate_dcm(faces_spec(), params, snr=snr, rng=rng)
    return estimate_dcm(faces_spec(y=y, with_b=with_b, **spec_kwargs)), y


def _connection_indices(result):
    """Free A, B, C parameters (the ones with non-zero prior variance)."""
    return [i for i, name in enumerate(result.param_names) if name[0] in "ABC" and result.pC[i, i] > 0]


def test_noise_free_data_recover_the_generating_parameters():
    # SPM's default hyperprior (hE = 6, hC = 1/128) says "the noise SD is about exp(-3) %",
    # so on noise-free data the default posterior is still shrunk towards the prior. The
    # estimator itself is tested with a hyperprior that allows near-noise-free data
    # (hE = 12: expected noise SD exp(-6) = 0.0025 %), as one would set
    # options.hE in SPM. Every free parameter (connections and haemodynamics) must then be
    # within 0.02 of the truth (issue 4 acceptance).
    result, _ = _fit(PARAMS, hE=12.0)
    truth = parameter_vector(result.spec, PARAMS)
    free = np.diag(result.pC) > 0
    error = np.abs(result.Ep_vector - truth)[free]
    assert result.converged
    assert error.max() < 0.02, dict(zip(np.array(result.param_names)[free], error.round(4)))
    # fixed parameters stay exactly at their prior mean with zero posterior variance
    np.testing.assert_array_equal(result.Ep_vector[~free], result.pE[~free])
    assert np.all(np.diag(result.Cp)[~free] == 0)


def test_default_hyperprior_noise_free_fit_is_close_and_explains_the_data():
    result, _ = _fit(PARAMS)
    truth = parameter_vector(result.spec, PARAMS)
    idx = _connection_indices(result)
    # shrinkage towards the prior with the default hyperprior is modest for connections
    assert np.abs(result.Ep_vector[idx] - truth[idx]).max() < 0.1
    assert result.explained_variance > 99


def test_estimation_bookkeeping_matches_spm_outputs():
    result, y = _fit(PARAMS, snr=4, rng=3)
    spec = result.spec
    n_scans, n = y.shape
    assert result.y_pred.shape == result.residuals.shape == (n_scans, n)
    # data as modelled: mean-centred, scaled only when the range exceeds 4 %
    np.testing.assert_allclose(result.y, (y - y.mean(axis=0)) * result.scale)
    assert result.scale == pytest.approx(4 / max(np.ptp(y - y.mean(axis=0)), 4))
    # residuals have the confounds (here the constant) removed
    np.testing.assert_allclose(result.residuals.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(result.F, result.F_terms.sum())
    assert result.n_iter == len(result.history) and result.converged
    # F reported is the best accepted free energy in the history
    assert result.F == pytest.approx(max(h["F"] for h in result.history if h["accepted"]))
    Cp = result.Cp
    np.testing.assert_allclose(Cp, Cp.T)
    assert np.linalg.eigvalsh(Cp).min() > -1e-12
    assert np.all((result.Pp_vector >= 0) & (result.Pp_vector <= 1))
    # Pp = 1 - Phi((pE - |Ep|)/sd): recompute for one extrinsic connection (pE = 1/128)
    from scipy.stats import norm
    i = result.param_names.index("A_amygdala-vmpfc")
    assert result.pE[i] == pytest.approx(1 / 128)
    assert result.Pp_vector[i] == pytest.approx(1 - norm.cdf(1 / 128, abs(result.Ep_vector[i]), np.sqrt(Cp[i, i])))
    assert result.Ep["A"][1, 0] == result.Ep_vector[i] and result.pp["A"][1, 0] == result.Pp_vector[i]
    np.testing.assert_allclose(result.Ce, np.exp(-result.Eh))
    assert spec.n_scans == n_scans


def test_confounds_absorb_a_drift():
    rng = np.random.default_rng(5)
    y, _ = simulate_dcm(faces_spec(), PARAMS, snr=4, rng=rng)
    drift = np.linspace(-1, 1, y.shape[0])[:, None]
    plain = estimate_dcm(faces_spec(y=y))
    drifting = y + drift * np.array([[0.3, -0.2]])
    with_x0 = estimate_dcm(faces_spec(y=drifting, x0=np.hstack([np.ones_like(drift), drift])))
    without_x0 = estimate_dcm(faces_spec(y=drifting))
    idx = _connection_indices(plain)
    close = np.abs(with_x0.Ep_vector[idx] - plain.Ep_vector[idx]).max()
    far = np.abs(without_x0.Ep_vector[idx] - plain.Ep_vector[idx]).max()
    # modelling the drift recovers the drift-free estimates (up to the data scaling and the
    # extra confound degrees of freedom), ignoring it does not
    assert close < 0.05 and close < far / 2
    assert with_x0.beta.shape == (2, 2)
    np.testing.assert_allclose(with_x0.beta[1] / with_x0.scale, [0.3, -0.2], atol=0.05)


def test_free_energy_prefers_the_true_model_over_a_model_without_modulation():
    # 20 simulations at SNR 4 with fearful modulation of both extrinsic connections of at
    # least 0.3 Hz (an effect the design can resolve). The wrong reduced model lacks B.
    # Acceptance: the true model wins in >= 90 % of simulations.
    wins = []
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        params = random_faces_parameters(rng, b_min=0.3)
        y, _ = simulate_dcm(faces_spec(), params, snr=4, rng=rng)
        full = estimate_dcm(faces_spec(y=y))
        reduced = estimate_dcm(faces_spec(y=y, with_b=False))
        wins.append(full.F > reduced.F)
    print(f"true model preferred in {np.mean(wins):.0%} of {len(wins)} simulations")
    assert np.mean(wins) >= 0.9, f"true model preferred in {np.mean(wins):.0%}"


def test_spm_dx_interpolates_between_gradient_and_newton_steps():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 4))
    H = -(X.T @ X + np.eye(4))          # negative-definite curvature of an objective
    g = rng.standard_normal(4)
    newton = -np.linalg.solve(H, g)
    np.testing.assert_allclose(spm_dx(H, g, 32.0), newton, rtol=1e-10)  # t > exp(16): Newton
    np.testing.assert_allclose(spm_dx(H, g, 8.0), newton, rtol=1e-6)   # expm(tH) ~ 0
    small = spm_dx(H, g, -12.0)         # short integration time: a gradient step t*g
    t = np.exp(-12.0 - np.sum(np.log(np.abs(np.linalg.eigvalsh(H)))) / 4)
    np.testing.assert_allclose(small, t * g, rtol=1e-3)


@pytest.mark.slow
def test_recovery_over_seeds_at_snr_4():
    # Issue 4 acceptance: >= 20 simulations at SNR ~ 4; posterior means of the free A, B, C
    # parameters correlate with the truth (r > 0.9) and 90 % credible intervals cover the
    # truth roughly nominally. Signal amplitude is chosen so that the noise SD (signal SD/4,
    # ~0.05 %) matches SPM's hyperprior (hE = 6: noise SD exp(-3) = 0.05 %); with much louder
    # or quieter signals the fixed hyperprior mis-states the noise and the intervals are
    # too narrow or too wide, by design of the SPM priors. Coverage of 400 intervals with
    # nominal 0.9 has SD 0.015; [0.8, 0.97] allows for the Laplace approximation.
    truth, mean, sd = [], [], []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        params = random_faces_parameters(rng, c_range=(0.15, 0.45))
        y, _ = simulate_dcm(faces_spec(), params, snr=4, rng=rng)
        result = estimate_dcm(faces_spec(y=y))
        idx = _connection_indices(result)
        truth += list(parameter_vector(result.spec, params)[idx])
        mean += list(result.Ep_vector[idx])
        sd += list(np.sqrt(np.diag(result.Cp)[idx]))
    truth, mean, sd = map(np.asarray, (truth, mean, sd))
    r = np.corrcoef(truth, mean)[0, 1]
    coverage = np.mean(np.abs(mean - truth) <= 1.6449 * sd)
    print(f"r = {r:.3f}, 90% CI coverage = {coverage:.3f}, RMSE = {np.sqrt(np.mean((mean - truth) ** 2)):.3f}")
    assert r > 0.9
    assert 0.8 <= coverage <= 0.97


def test_a_model_without_driving_input_is_refused():
    y, _ = simulate_dcm(faces_spec(), PARAMS, snr=4, rng=0)
    spec = faces_spec(y=y)
    spec.c = np.zeros_like(spec.c)
    with pytest.raises(ValueError, match="driving input"):
        estimate_dcm(spec)


def test_prior_overrides_switch_a_connection_off_and_shrink_another():
    from ptsd_bidsapp.dcm.priors import pack_parameters

    overrides = dict(prior_variance={"A_vmpfc-amygdala": 0.0, "B_fearful_amygdala-vmpfc": 0.01},
                     prior_mean={"A_vmpfc-amygdala": -0.2})
    result, _ = _fit(PARAMS, snr=4, rng=np.random.default_rng(3), **overrides)
    names = result.param_names
    pE, pC = result.spec.priors()
    mean, var = pack_parameters(pE, 2, 2), pack_parameters(pC, 2, 2)
    assert mean[names.index("A_vmpfc-amygdala")] == -0.2 and var[names.index("A_vmpfc-amygdala")] == 0.0
    assert var[names.index("B_fearful_amygdala-vmpfc")] == 0.01
    # a parameter with zero prior variance stays at its prior mean, without posterior variance
    assert result.Ep_vector[names.index("A_vmpfc-amygdala")] == -0.2
    assert np.abs(result.Cp[names.index("A_vmpfc-amygdala")]).max() == 0.0
    # the shrunk modulation cannot reach its true value 0.3 (prior SD 0.1), the free one can
    default, _ = _fit(PARAMS, snr=4, rng=np.random.default_rng(3))
    b = names.index("B_fearful_amygdala-vmpfc")
    assert abs(result.Ep_vector[b]) < abs(default.Ep_vector[b])
    with pytest.raises(ValueError, match="unknown DCM parameters"):
        faces_spec(prior_variance={"A_vmpfc-insula": 0.0})


def test_max_iter_and_tolerance_are_honoured():
    capped, _ = _fit(PARAMS, snr=4, rng=np.random.default_rng(5), max_iter=3)
    assert capped.n_iter == 3 and not capped.converged
    loose, _ = _fit(PARAMS, snr=4, rng=np.random.default_rng(5), tolerance=1e6)
    # a tolerance no predicted increase exceeds: the four-iteration rule is met as soon as it can be
    assert loose.converged and loose.n_iter == 4
    strict, _ = _fit(PARAMS, snr=4, rng=np.random.default_rng(5))
    assert strict.converged and strict.n_iter > 4
