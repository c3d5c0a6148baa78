"""The faces DCM forward model used by the simulator."""

import numpy as np
import pytest

from ptsd_bidsapp.simulate import dcm_forward, design, generative


@pytest.fixture(scope="module")
def faces_inputs():
    rng = np.random.default_rng(1)
    n, tr = 120, 2.0
    events = design.faces_events(n, tr, rng)
    u = design.boxcar(events, ["fearful", "neutral"], n, tr)
    return np.stack([u["fearful"] + u["neutral"], u["fearful"]], axis=1), n, tr


# An independent forward-Euler integration of the nonlinear balloon model (the engine
# integrates SPM's bilinear expansion with matrix exponentials): the two must agree.
def _euler_reference(params: dict, u: np.ndarray, dt: float, te: float, sample_idx: np.ndarray) -> np.ndarray:
    a = np.array(params["A"], dtype=float)
    n = a.shape[0]
    eff_a = a.copy()
    eff_a[np.diag_indices(n)] = -np.exp(np.diag(a)) / 2.0
    b = np.array([params["B"][name] for name in dcm_forward.INPUTS], dtype=float)  # (inputs, to, from)
    c = np.array(params["C"], dtype=float) / 16.0  # SPM12 units: the flow receives C u / 16
    kappa = 0.64 * np.exp(np.array(params["decay"], dtype=float))
    gamma, alpha, e0 = 0.32, 0.32, 0.4
    tau = 2.0 * np.exp(np.array(params["transit"], dtype=float))
    ep = np.exp(float(params.get("epsilon", 0.0)))
    v0, nu0, r0 = 4.0, 40.3, 25.0
    k1, k2, k3 = 4.3 * nu0 * e0 * te, ep * r0 * e0 * te, 1.0 - ep

    x = np.zeros(n)
    s = np.zeros(n)
    lf = np.zeros(n)
    lv = np.zeros(n)
    lq = np.zeros(n)
    y = np.zeros((u.shape[0], n))
    sub = 2  # Euler sub-steps per microtime bin (stable for the haemodynamic time constants)
    h = dt / sub
    for t in range(u.shape[0]):
        ut = u[t]
        jac = eff_a + np.tensordot(ut, b, axes=(0, 0))
        drive = c @ ut
        for _ in range(sub):
            f, v, q = np.exp(lf), np.exp(lv), np.exp(lq)
            dx = jac @ x + drive
            ds = x - kappa * s - gamma * (f - 1.0)
            fv = v ** (1.0 / alpha)
            ff = (1.0 - (1.0 - e0) ** (1.0 / f)) / e0
            dlf = s / f
            dlv = (f - fv) / (tau * v)
            dlq = (f * ff - fv * q / v) / (tau * q)
            x = x + h * dx
            s = s + h * ds
            lf, lv, lq = lf + h * dlf, lv + h * dlv, lq + h * dlq
        v, q = np.exp(lv), np.exp(lq)
        y[t] = v0 * (k1 * (1.0 - q) + k2 * (1.0 - q / v) + k3 * (1.0 - v))
    return y[sample_idx]


def dcm_engine_available() -> bool:
    try:
        from ptsd_bidsapp.dcm import DCMSpec, simulate_dcm  # noqa: F401
    except Exception:
        return False
    return True


def test_engine_agrees_with_independent_euler_integration(faces_inputs):
    u, n, tr = faces_inputs
    params = generative.subject_parameters(2, 0, "ketamine")["dcm"]["pre"]
    assert np.ndim(params["decay"]) == 0  # one decay shared by the regions (SPM12 r7771)
    y_engine, name = dcm_forward.simulate_faces_bold(params, u, tr, 0.03, 1.0, n)
    assert name == "ptsd_bidsapp.dcm.simulate_dcm"
    dt = tr / design.MICROTIME
    uu = u - u.mean(axis=0)
    idx = np.clip(np.rint((np.arange(n) * tr + 1.0) / dt).astype(int), 0, uu.shape[0] - 1)
    y_euler = _euler_reference(params, uu, dt, 0.03, idx)
    for region in range(2):
        assert np.corrcoef(y_engine[:, region], y_euler[:, region])[0, 1] > 0.99
        assert y_euler[:, region].std() == pytest.approx(y_engine[:, region].std(), rel=0.1)


def test_planted_dcm_amplitudes_and_modulation(faces_inputs):
    u, n, tr = faces_inputs
    params = generative.subject_parameters(2, 0, "ketamine")["dcm"]["pre"]
    y, _ = dcm_forward.simulate_faces_bold(params, u, tr, 0.03, 1.0, n)
    assert 0.4 < y[:, 0].std() < 2.0  # amygdala BOLD, percent signal change
    assert y[:, 1].std() > 0.1
    faces_reg = design.convolve_and_sample(u[:, 0], tr, 1.0, n)
    assert np.corrcoef(y[:, 0], faces_reg)[0, 1] > 0.8
    # stronger fearful modulation of amygdala -> vmPFC raises vmPFC's fearful response
    strong = {**params, "B": {"faces": params["B"]["faces"],
                              "fearful": [[0.0, params["B"]["fearful"][0][1]], [0.8, 0.0]]}}
    y_strong, _ = dcm_forward.simulate_faces_bold(strong, u, tr, 0.03, 1.0, n)
    fearful_reg = design.convolve_and_sample(u[:, 1], tr, 1.0, n)
    slope = lambda y: np.polyfit(fearful_reg, y, 1)[0]  # noqa: E731
    assert slope(y_strong[:, 1]) > slope(y[:, 1])
