"""DCM conventions pinned against the published model, not against the module's own constants.

Constants are typed in here from the sources: the haemodynamic constants of SPM12 r7771
``spm_fx_fmri`` (``H = [0.64 0.32 2.00 0.32 0.4]``: signal decay κ, autoregulation γ, transit
time τ, Grubb's exponent α, resting oxygen extraction E0; Stephan et al. 2007, NeuroImage 38:387,
table 1) and the BOLD constants of Stephan et al. 2007 eqs. 12-14 / ``spm_gx_fmri`` (V0 = 4,
ν0 = 40.3 Hz, r0 = 25 Hz). ``scripts/named_survivors.py`` mutates each convention in the code
and checks that a test here fails.
"""

import numpy as np
import pytest

from ptsd_bidsapp.dcm import inversion, model

pytestmark = pytest.mark.unit

# Stephan et al. 2007 table 1 / SPM12 spm_fx_fmri H
KAPPA, GAMMA, TAU, ALPHA, E0 = 0.64, 0.32, 2.00, 0.32, 0.40
# Stephan et al. 2007 eqs. 12-14 / SPM12 spm_gx_fmri
V0, NU0, R0 = 4.0, 40.3, 25.0


def _published_flow(x, u, A, C, transit, decay):
    """Balloon model in log states (Stephan et al. 2008; spm_fx_fmri), one-state neuronal model, B = 0."""
    n = x.shape[0]
    J = np.array(A, dtype=float)
    J[np.diag_indices(n)] = -np.exp(np.diag(J)) / 2
    s, f, v, q = x[:, 1], np.exp(x[:, 2]), np.exp(x[:, 3]), np.exp(x[:, 4])
    kappa, tau = KAPPA * np.exp(decay), TAU * np.exp(transit)
    out = np.empty_like(x)
    out[:, 0] = J @ x[:, 0] + np.asarray(C) @ u / 16
    out[:, 1] = x[:, 0] - kappa * s - GAMMA * (f - 1)
    out[:, 2] = s / f
    out[:, 3] = (f - v ** (1 / ALPHA)) / (tau * v)
    extraction = (1 - (1 - E0) ** (1 / f)) / E0
    out[:, 4] = (f * extraction - v ** (1 / ALPHA) * q / v) / (tau * q)
    return out


def test_flow_uses_the_published_haemodynamic_constants():
    """fx away from rest (every state non-zero, transit and decay non-zero) equals the balloon
    model written with the published constants: a change of κ, γ, τ, α or E0 shows."""
    x = np.array([[0.3, 0.2, 0.15, 0.1, -0.12], [-0.1, -0.05, 0.08, 0.04, -0.06]])
    A = np.array([[0.1, -0.3], [0.4, -0.1]])
    C = np.array([[0.6], [0.0]])
    transit, decay = np.array([0.05, -0.05]), 0.02
    P = {"A": A, "B": np.zeros((1, 2, 2)), "C": C, "transit": transit, "decay": decay, "epsilon": 0.0}
    u = np.array([1.0])
    np.testing.assert_allclose(model.fx(x, u, P), _published_flow(x, u, A, C, transit, decay), rtol=1e-13,
                               atol=1e-15)


def test_haemodynamic_jacobian_at_rest_has_the_published_rates():
    """Analytic Jacobian at rest, one region: ds/ds = -κ, ds/dlogf = -γ, dlogv/dlogv = -1/(ατ),
    dlogq/dlogq = -1/τ, dlogq/dlogf = (E0 + (1-E0) ln(1-E0)) / (E0 τ) with the published values
    (τ = 2 s: 0.781 1/s, 0.5 1/s, ...)."""
    J0, _, _ = model.jacobian_at_rest(np.zeros((1, 1)), np.zeros((1, 1, 1)), np.zeros((1, 1)), np.zeros(1), 0.0,
                                      method="analytic")
    x, s, f, v, q = range(5)
    assert J0[s, s] == pytest.approx(-0.64, rel=1e-12)
    assert J0[s, f] == pytest.approx(-0.32, rel=1e-12)
    assert J0[v, f] == pytest.approx(1 / 2.0, rel=1e-12)
    assert J0[v, v] == pytest.approx(-1 / (0.32 * 2.0), rel=1e-12)
    assert J0[q, q] == pytest.approx(-1 / 2.0, rel=1e-12)
    assert J0[q, v] == pytest.approx((0.32 - 1) / (0.32 * 2.0), rel=1e-12)
    assert J0[q, f] == pytest.approx((0.4 + 0.6 * np.log(0.6)) / (0.4 * 2.0), rel=1e-12)
    assert J0[x, x] == pytest.approx(-0.5, rel=1e-12)          # self-inhibition prior mean -0.5 Hz


def test_steady_state_of_the_linearised_balloon_model_from_published_constants():
    """Constant neuronal activity x: the linearised flow's fixed point is s = 0, log f = x/γ,
    log v = α log f, log q = ((E0 + (1-E0) ln(1-E0))/E0 + α - 1) log f. With γ = 0.32, α = 0.32,
    E0 = 0.4: log f = 3.125 x, log v = 1.0 x, log q = 0.1092 x (Friston et al. 2000 at rest)."""
    J0, _, _ = model.jacobian_at_rest(np.zeros((1, 1)), np.zeros((1, 1, 1)), np.zeros((1, 1)), np.zeros(1), 0.0,
                                      method="analytic")
    x_level = 0.2
    haemo = J0[1:, 1:]
    drive = J0[1:, 0] * x_level
    steady = np.linalg.solve(haemo, -drive)
    log_f = x_level / 0.32
    log_q = ((0.4 + 0.6 * np.log(0.6)) / 0.4 + 0.32 - 1) * log_f
    np.testing.assert_allclose(steady, [0.0, log_f, 0.32 * log_f, log_q], rtol=1e-12, atol=1e-15)


def test_bold_coefficients_are_stephan_2007_with_the_model_te():
    """k1 = 4.3 ν0 E0 TE, k2 = ε r0 E0 TE, k3 = 1 - ε (ε = exp(epsilon)), TE in seconds."""
    for te in (0.025, 0.03, 0.04):
        for eps in (0.0, 0.2):
            k1, k2, k3 = model.bold_coefficients(eps, te)
            assert k1 == pytest.approx(4.3 * 40.3 * 0.4 * te, rel=1e-14)
            assert k2 == pytest.approx(np.exp(eps) * 25.0 * 0.4 * te, rel=1e-14)
            assert k3 == pytest.approx(1 - np.exp(eps), rel=1e-14, abs=1e-15)


def test_bold_signal_is_exactly_linear_in_te_when_epsilon_is_zero():
    """With ε = 1 (epsilon = 0) k3 = 0 and y = V0 (k1 (1-q) + k2 (1-q/v)) is proportional to TE:
    1.5 x TE gives exactly 1.5 x the signal (the old 20 % tolerance hid a TE-free k2)."""
    x = np.zeros((2, 5))
    x[:, 3], x[:, 4] = [0.02, 0.05], [-0.05, -0.02]
    y30, y45 = model.gx(x, 0.0, 0.03), model.gx(x, 0.0, 0.045)
    np.testing.assert_allclose(y45, 1.5 * y30, rtol=1e-13)
    v, q = np.exp(x[:, 3]), np.exp(x[:, 4])
    te = 0.03
    expected = V0 * (4.3 * NU0 * E0 * te * (1 - q) + R0 * E0 * te * (1 - q / v))
    np.testing.assert_allclose(y30, expected, rtol=1e-13)


def _published_bold(v, q, epsilon, te):
    """Stephan et al. 2007 eqs. 12-14 with ε = exp(epsilon) and the published constants."""
    eps = np.exp(epsilon)
    return V0 * (4.3 * NU0 * E0 * te * (1 - q) + eps * R0 * E0 * te * (1 - q / v) + (1 - eps) * (1 - v))


def test_bold_signal_with_nonzero_epsilon_is_the_published_equation():
    """epsilon = ±0.3 makes k3 = 1 - ε non-zero: the volume term V0 k3 (1 - v) enters with a plus sign."""
    x = np.zeros((2, 5))
    x[:, 3], x[:, 4] = [0.08, -0.03], [-0.05, 0.04]
    v, q = np.exp(x[:, 3]), np.exp(x[:, 4])
    for epsilon in (0.3, -0.3):
        np.testing.assert_allclose(model.gx(x, epsilon, 0.04), _published_bold(v, q, epsilon, 0.04), rtol=1e-13)
    # k3 (1 - v) alone: v = 1.1, q = v keeps only the volume term; ε = e^0.3 gives k3 = -0.35
    only_v = np.zeros((1, 5))
    only_v[0, 3] = only_v[0, 4] = np.log(1.1)
    expected = V0 * (4.3 * NU0 * E0 * 0.04 * (1 - 1.1) + (1 - np.exp(0.3)) * (1 - 1.1))
    assert model.gx(only_v, 0.3, 0.04)[0] == pytest.approx(expected, rel=1e-13)


def test_bold_signal_takes_one_epsilon_per_batch_of_regions():
    """x (batch, n, 5) with epsilon (batch,): each batch element uses its own ε for all its regions."""
    rng = np.random.default_rng(0)
    x = 0.05 * rng.standard_normal((3, 2, 5))
    epsilon = np.array([-0.2, 0.0, 0.4])
    got = model.gx(x, epsilon, 0.04)
    assert got.shape == (3, 2)
    for b in range(3):
        v, q = np.exp(x[b, :, 3]), np.exp(x[b, :, 4])
        np.testing.assert_allclose(got[b], _published_bold(v, q, epsilon[b], 0.04), rtol=1e-13)


def test_flow_of_integer_states_and_inputs_is_not_truncated():
    """Integer arrays (a state at rest, an on/off input) give the float flow, not an integer-truncated one."""
    P = {"A": np.array([[0.0, 0.2], [0.4, 0.0]]), "B": np.zeros((1, 2, 2)), "C": np.array([[1.0], [0.0]]),
         "transit": np.zeros(2), "decay": 0.0, "epsilon": 0.0}
    x_int = np.zeros((2, 5), dtype=int)
    x_int[0, 0] = 1
    flow = model.fx(x_int, np.array([1]), P)
    expected = _published_flow(x_int.astype(float), np.array([1.0]), P["A"], P["C"], P["transit"], 0.0)
    assert flow.dtype == float
    np.testing.assert_allclose(flow, expected, rtol=1e-13)
    # neuronal row of region 0: -exp(0)/2 x 1 + 1/16 = -0.4375 (Friston et al. 2003 with C/16)
    assert flow[0, 0] == pytest.approx(-0.5 + 1 / 16, rel=1e-13)


def test_neuronal_flow_is_bilinear_in_the_inputs():
    """dx/dt = (A + Σ_j u_j B_j) x + C u / 16 with log-scaled self-connections (Friston et al. 2003
    eq. 1; spm_fx_fmri): written out for two regions and two inputs, modulation on and off."""
    A = np.array([[-0.2, 0.1], [0.4, 0.3]])
    B = np.array([[[0.0, 0.0], [0.0, 0.0]], [[0.5, -0.3], [0.6, -0.4]]])
    C = np.array([[0.8, 0.0], [0.0, 0.2]])
    P = {"A": A, "B": B, "C": C, "transit": np.zeros(2), "decay": 0.0, "epsilon": 0.0}
    x = np.zeros((2, 5))
    x[:, 0] = [0.3, -0.2]
    for u in (np.array([1.0, 0.0]), np.array([1.0, 1.0]), np.array([0.0, 2.0])):
        M = A + u[1] * B[1]
        M[0, 0], M[1, 1] = -np.exp(M[0, 0]) / 2, -np.exp(M[1, 1]) / 2
        expected = M @ x[:, 0] + C @ u / 16
        np.testing.assert_allclose(model.fx(x, u, P)[:, 0], expected, rtol=1e-13)
    # the modulatory input changes the flow: off vs on differs by B_1 x off the diagonal
    off, on = model.fx(x, np.array([1.0, 0.0]), P)[:, 0], model.fx(x, np.array([1.0, 1.0]), P)[:, 0]
    assert abs((on - off)[0] - (-0.3 * -0.2 + (-np.exp(-0.2 + 0.5) + np.exp(-0.2)) / 2 * 0.3 + 0.0)) < 1e-12


def test_bilinear_operators_take_integer_modulation_and_any_batch_axes():
    """J1's neuronal block is B_j off the diagonal and -exp(A_ii)/2 B_j,ii on it (d/du of the
    log-scaled self-inhibition): exact for an integer B, and per element for two leading batch axes."""
    A = np.array([[0.0, 0.0], [0.5, np.log(3.0)]])
    B = np.array([[[1, 2], [0, -1]]])                      # integer modulation, diagonal included
    C = np.array([[1], [0]])
    _, J1, c = model.jacobian_at_rest(A, B, C, np.zeros(2), 0.0, method="analytic")
    np.testing.assert_allclose(J1[0, :2, :2], [[-0.5 * 1, 2.0], [0.0, -1.5 * -1]], rtol=1e-13)
    np.testing.assert_allclose(c[0, :2], [1 / 16, 0.0], rtol=1e-13)
    # SPM12 spm_bireduce takes d/du of -exp(a + u b)/2 by a forward difference with step exp(-8)
    h = np.exp(-8.0)
    B_float = np.array([[[0.7, 0.2], [0.0, -0.9]]])
    B_before = B_float.copy()
    _, J1_spm, _ = model.jacobian_at_rest(A, B_float, C, np.zeros(2), 0.0)
    a = np.diag(A)
    expected_diag = -(np.exp(a + h * np.diag(B_before[0])) - np.exp(a)) / (2 * h)
    np.testing.assert_allclose(np.diag(J1_spm[0, :2, :2]), expected_diag, rtol=1e-12)
    assert J1_spm[0, 0, 1] == 0.2
    np.testing.assert_array_equal(B_float, B_before)       # the caller's B is left alone
    rng = np.random.default_rng(1)
    As = 0.2 * rng.standard_normal((2, 3, 2, 2))
    Bs = 0.2 * rng.standard_normal((2, 3, 1, 2, 2))
    Cs = rng.standard_normal((2, 3, 2, 1))
    transit, decay = 0.1 * rng.standard_normal((2, 3, 2)), 0.1 * rng.standard_normal((2, 3, 2))
    J0s, J1s, cs = model.jacobian_at_rest(As, Bs, Cs, transit, decay)
    for i in range(2):
        for j in range(3):
            J0, J1, c = model.jacobian_at_rest(As[i, j], Bs[i, j], Cs[i, j], transit[i, j], decay[i, j])
            np.testing.assert_allclose(J0s[i, j], J0, rtol=1e-14)
            np.testing.assert_allclose(J1s[i, j], J1, rtol=1e-14)
            np.testing.assert_allclose(cs[i, j], c, rtol=1e-14)


def test_effective_connectivity_of_integer_and_batched_matrices():
    """A's diagonal is a log self-inhibition: -exp(A_ii)/2 Hz (SPM12 spm_fx_fmri), also for an
    integer A; B without inputs is no modulation; two leading batch axes are handled per element."""
    J = model.effective_connectivity(np.array([[0, 1], [2, 0]]))
    np.testing.assert_allclose(J, [[-0.5, 1.0], [2.0, -0.5]], rtol=1e-15)
    B = np.ones((1, 2, 2))
    np.testing.assert_allclose(model.effective_connectivity(np.zeros((2, 2)), B, None), [[-0.5, 0], [0, -0.5]])
    rng = np.random.default_rng(2)
    A = rng.standard_normal((2, 3, 2, 2))
    batched = model.effective_connectivity(A)
    for i in range(2):
        for j in range(3):
            expected = A[i, j].copy()
            expected[[0, 1], [0, 1]] = -np.exp(np.diag(A[i, j])) / 2
            np.testing.assert_allclose(batched[i, j], expected, rtol=1e-14)


def test_finite_difference_steps_are_spm_diffs():
    """SPM12 spm_diff (used by spm_nlsi_GN for dy/dθ and by spm_bireduce for the Jacobian) steps
    by exp(-8); the inversion's Jacobian of the prediction is the forward difference at that step."""
    assert inversion.FD_STEP == np.exp(-8.0)
    assert model.SPM_FD_STEP == np.exp(-8.0)
