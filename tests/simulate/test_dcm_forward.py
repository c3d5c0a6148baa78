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


def test_engine_and_fallback_agree(faces_inputs):
    if not dcm_forward.dcm_engine_available():
        pytest.skip("ptsd_bidsapp.dcm.simulate_dcm not available")
    u, n, tr = faces_inputs
    params = generative.subject_parameters(2, 0, "ketamine")["dcm"]["pre"]
    y_engine, name = dcm_forward.simulate_faces_bold(params, u, tr, 0.03, 1.0, n, engine="dcm")
    y_fallback, name_fb = dcm_forward.simulate_faces_bold(params, u, tr, 0.03, 1.0, n, engine="fallback")
    assert name == "ptsd_bidsapp.dcm.simulate_dcm" and "fallback" in name_fb
    for region in range(2):
        assert np.corrcoef(y_engine[:, region], y_fallback[:, region])[0, 1] > 0.99
        assert y_fallback[:, region].std() == pytest.approx(y_engine[:, region].std(), rel=0.1)


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
