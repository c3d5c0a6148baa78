"""Participant-level DCM: inputs from events, config mapping, JSON derivative readable by PEB."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ptsd_bidsapp.config import load_default_config
from ptsd_bidsapp.dcm import simulate_dcm
from ptsd_bidsapp.dcm.participant import (build_inputs, dcm_measure_ids, dcm_measures, dcm_result_to_json,
                                          fit_session_dcm, plot_dcm_fit, session_spec)

TR = 2.0
N_SCANS = 200


def _faces_events() -> pd.DataFrame:
    rows, onset, k = [], 10.0, 0
    while onset + 20 < N_SCANS * TR - 4:
        rows.append({"onset": onset, "duration": 20.0, "trial_type": ["fearful", "neutral"][k % 2]})
        onset += 30.0
        k += 1
    return pd.DataFrame(rows)


def test_inputs_follow_spm_get_ons():
    events = pd.DataFrame({"onset": [10.0, 40.0, 3.0, 7.0], "duration": [16.0, 16.0, 0.0, 0.0],
                           "trial_type": ["fearful", "neutral", "flash", "flash"]})
    u, dt = build_inputs(events, {"faces": ["fearful", "neutral"], "fearful": ["fearful"], "flash": ["flash"]},
                         n_scans=40, tr=TR)
    assert dt == TR / 16 and u.shape == (640, 3)
    # block: bins round(10/dt) .. round(10/dt) + round(16/dt) inclusive (129 bins of height 1)
    on = np.flatnonzero(u[:, 1])
    assert on[0] == 80 and on[-1] == 80 + 128 and np.all(u[on, 1] == 1)
    assert u[:, 0].sum() == 2 * 129  # pooled input: both blocks
    # zero-duration events: one bin of height 1/dt, so that sum(u dt) = number of events
    assert np.flatnonzero(u[:, 2]).tolist() == [24, 56]
    assert u[:, 2].sum() * dt == pytest.approx(2)


def test_session_spec_maps_the_default_config():
    cfg = load_default_config()["dcm"]
    voi = pd.DataFrame(np.zeros((N_SCANS, 2)), columns=["vmpfc", "amygdala"])
    spec = session_spec(voi, _faces_events(), TR, cfg, slice_timing_ref=0.9)
    assert spec.region_names == ["amygdala", "vmpfc"] and spec.input_names == ["faces", "fearful"]
    np.testing.assert_array_equal(spec.c, [[1, 0], [0, 0]])          # faces drive the amygdala
    np.testing.assert_array_equal(spec.b[1], [[0, 1], [1, 0]])        # fearful modulates both extrinsic
    np.testing.assert_array_equal(spec.b[0], np.zeros((2, 2)))
    np.testing.assert_array_equal(spec.delays, [0.9, 0.9])
    assert spec.te == cfg["te"] and spec.centre_inputs and spec.max_iter == cfg["max_iterations"]
    assert session_spec(voi, _faces_events(), TR, cfg).delays.tolist() == [1.0, 1.0]  # TR/2 default
    with pytest.raises(ValueError, match="lacks region"):
        session_spec(voi.drop(columns="vmpfc"), _faces_events(), TR, cfg)
    with pytest.raises(ValueError, match="slice_timing_ref"):
        session_spec(voi, _faces_events(), TR, cfg, slice_timing_ref=900.0)


def test_te_follows_spm12_by_default_and_the_sidecar_on_request():
    # SPM12 r7771 spm_gx_fmri ($Id 6262) uses TE = 0.04 s whatever DCM.TE says
    cfg = load_default_config()["dcm"]
    voi = pd.DataFrame(np.zeros((N_SCANS, 2)), columns=["amygdala", "vmpfc"])
    assert cfg["te"] == 0.04
    assert session_spec(voi, _faces_events(), TR, cfg, echo_time=0.025).te == 0.04
    sidecar = {**cfg, "te": "sidecar"}
    assert session_spec(voi, _faces_events(), TR, sidecar, echo_time=0.025).te == 0.025
    with pytest.raises(ValueError, match="EchoTime"):
        session_spec(voi, _faces_events(), TR, sidecar)


def test_prior_overrides_and_options_reach_the_model():
    cfg = {**load_default_config()["dcm"], "priors": {"A_vmpfc-amygdala": {"variance": 0}},
           "tolerance": 0.5, "max_iterations": 7, "hC": 0.25, "microtime_bins": 8}
    voi = pd.DataFrame(np.zeros((N_SCANS, 2)), columns=["amygdala", "vmpfc"])
    spec = session_spec(voi, _faces_events(), TR, cfg)
    assert spec.prior_variance == {"A_vmpfc-amygdala": 0} and spec.prior_mean == {}
    assert (spec.tolerance, spec.max_iter, spec.hC, spec.u_dt) == (0.5, 7, 0.25, TR / 8)


def test_fit_session_dcm_recovers_the_planted_modulation_and_writes_a_peb_readable_json(tmp_path):
    from ptsd_bidsapp.group.dcm_group import read_dcm_posterior

    cfg = load_default_config()["dcm"]
    events = _faces_events()
    blank = pd.DataFrame(np.zeros((N_SCANS, 2)), columns=["amygdala", "vmpfc"])
    spec = session_spec(blank, events, TR, cfg, slice_timing_ref=1.0)
    truth = {"A": [[0.0, -0.3], [0.4, 0.0]], "B": {"fearful": [[0.0, -0.2], [0.4, 0.0]]},
             "C": [[0.3, 0.0], [0.0, 0.0]]}
    y, _ = simulate_dcm(spec, truth, snr=4, rng=7)
    rng = np.random.default_rng(0)
    motion = rng.standard_normal((N_SCANS, 2))
    y = y + motion @ np.array([[0.05, 0.0], [0.0, 0.03]])
    voi = pd.DataFrame(y, columns=["amygdala", "vmpfc"])
    result = fit_session_dcm(voi, events, TR, cfg, confounds=motion, slice_timing_ref=1.0)
    assert result.converged
    # SNR 4 and 200 scans: posterior SDs of the extrinsic/modulatory parameters ~0.05-0.1;
    # 0.2 is > 2 SD and still excludes a sign error (|truth| >= 0.2)
    names = result.param_names
    for name, value in [("A_amygdala-vmpfc", 0.4), ("A_vmpfc-amygdala", -0.3),
                        ("B_fearful_amygdala-vmpfc", 0.4), ("B_fearful_vmpfc-amygdala", -0.2)]:
        assert result.Ep_vector[names.index(name)] == pytest.approx(value, abs=0.2), name

    content = dcm_result_to_json(result, subject="01", session="pre", task="faces")
    text = json.dumps(content, allow_nan=False)  # strictly valid JSON
    assert content["parameters"]["B_fearful_amygdala-vmpfc"]["free"]
    assert not content["parameters"]["B_faces_amygdala-vmpfc"]["free"]
    assert content["posterior"]["B"]["fearful"][1][0] == content["parameters"]["B_fearful_amygdala-vmpfc"]["mean"]
    assert len(content["timeseries"]["predicted"]) == N_SCANS
    path = tmp_path / "sub-01_ses-pre_task-faces_space-MNI152NLin2009cAsym_model-dcm_dcm.json"
    path.write_text(text)
    posterior = read_dcm_posterior(path)
    assert posterior.subject == "01" and posterior.session == "pre"
    assert posterior.param_names == names
    np.testing.assert_allclose(posterior.Ep, result.Ep_vector)
    np.testing.assert_allclose(posterior.Cp, result.Cp)
    np.testing.assert_allclose(posterior.pC, result.pC)
    assert posterior.F == pytest.approx(result.F)

    measures = dcm_measures(result, "faces")
    assert "dcm_faces_B_fearful_amygdala-vmpfc" in measures and "dcm_faces_A_vmpfc-amygdala" in measures
    assert "dcm_faces_B_faces_amygdala-vmpfc" not in measures  # switched off by the model
    # the n/a rows of a session whose DCM cannot be fitted name exactly these measures, in this order
    assert dcm_measure_ids("faces", cfg) == list(measures)
    fig = plot_dcm_fit(result)
    assert len(fig.axes) == 2


def test_confounds_enter_as_an_orthonormal_basis_of_the_same_space():
    rng = np.random.default_rng(0)
    cfg = load_default_config()["dcm"]
    voi = pd.DataFrame(rng.standard_normal((N_SCANS, 2)), columns=["amygdala", "vmpfc"])
    raw = np.column_stack([np.cumsum(rng.standard_normal(N_SCANS)), rng.standard_normal(N_SCANS) * 50 + 3,
                           np.zeros(N_SCANS)])                          # drifting, offset and empty columns
    x0 = session_spec(voi, _faces_events(), TR, cfg, confounds=raw).x0
    assert x0.shape == (N_SCANS, 3)                                    # constant + 2 non-empty columns
    np.testing.assert_allclose(x0.T @ x0 / N_SCANS, np.eye(3), atol=1e-10)
    np.testing.assert_allclose(x0[:, 0], 1.0)
    full = np.column_stack([np.ones(N_SCANS), raw[:, :2]])
    # same column space: projecting the raw confounds on x0 reproduces them
    np.testing.assert_allclose(x0 @ np.linalg.lstsq(x0, full, rcond=None)[0], full, atol=1e-8)


def test_dcm_measure_ids_follow_the_masks_and_prior_overrides():
    """Free A, B, C of the default model read off its config by hand; a prior variance of 0 removes one."""
    cfg = load_default_config()["dcm"]
    expected = ["dcm_faces_A_amygdala-amygdala", "dcm_faces_A_amygdala-vmpfc", "dcm_faces_A_vmpfc-amygdala",
                "dcm_faces_A_vmpfc-vmpfc", "dcm_faces_B_fearful_amygdala-vmpfc", "dcm_faces_B_fearful_vmpfc-amygdala",
                "dcm_faces_C_faces_amygdala"]
    assert dcm_measure_ids("faces", cfg) == expected
    cfg["priors"] = {"B_fearful_vmpfc-amygdala": {"variance": 0.0}}
    assert dcm_measure_ids("faces", cfg) == [m for m in expected if m != "dcm_faces_B_fearful_vmpfc-amygdala"]
