"""DCM group glue: read participant DCM JSONs, build designs, run PEB models, write outputs."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ptsd_bidsapp import contracts
from ptsd_bidsapp.dcm.priors import pack_parameters
from ptsd_bidsapp.group import dcm_group
from ptsd_bidsapp.group.dcm_group import (
    peb_design,
    read_dcm_posterior,
    run_dcm_group,
)

REGIONS = ["amygdala", "vmpfc"]
INPUTS = ["faces", "fearful"]
CONFIG = {
    "sessions": {"pre": "pre", "post": "post"},
    "dcm": {"task": "faces", "regions": REGIONS},
    "peb": {"fields": ["A", "B"], "between_only": True, "covariates": ["improvement", "drug", "improvement_x_drug"],
            "n_permutations": 500},
    "clinical": {"group_column": "group", "active_group": "ketamine", "reference_group": "midazolam"},
}


def _prior_variances():
    """spm_dcm_fmri_priors-like: A 1/64, B/C 1 where switched on, hemodynamics 1/256."""
    return {
        "A": [[1 / 64, 1 / 64], [1 / 64, 1 / 64]],
        "B": {"faces": [[0, 0], [0, 0]], "fearful": [[0, 1.0], [1.0, 0]]},
        "C": [[1.0, 0.0], [0.0, 0.0]],
        "transit": [1 / 256, 1 / 256],
        "decay": 1 / 256,
        "epsilon": 1 / 256,
    }


def _write_posterior(path, subject, session, theta, prior_var, rng):
    """Exact posterior of a direct Gaussian observation of θ (free parameters only)."""
    free = prior_var > 0
    lik_var = np.where(np.isin(np.arange(theta.size), np.flatnonzero(free)), (0.2 * np.sqrt(prior_var)) ** 2, 1.0)
    Cp = np.zeros((theta.size, theta.size))
    Ep = np.zeros(theta.size)
    y = theta + rng.normal(size=theta.size) * np.sqrt(lik_var)
    post_var = 1 / (1 / lik_var[free] + 1 / prior_var[free])
    Cp[free, free] = post_var
    Ep[free] = post_var * y[free] / lik_var[free]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"subject": subject, "session": session, "region_names": REGIONS,
                                "input_names": INPUTS, "F": -100.0, "pE": [0.0] * theta.size,
                                "pC": _prior_variances()}))
    np.savez(path.with_suffix(".npz"), Ep=Ep, Cp=Cp)


@pytest.fixture(scope="module")
def trial(tmp_path_factory):
    """20 subjects; change of B(fearful) amygdala→vmPFC falls with improvement (both arms);
    change of A vmPFC→amygdala falls with improvement under ketamine only (interaction)."""
    root = tmp_path_factory.mktemp("dcmgroup")
    rng = np.random.default_rng(42)
    names = contracts.dcm_parameter_names(REGIONS, INPUTS)
    prior_var = pack_parameters(_prior_variances(), 2, 2, INPUTS)
    idx_b = names.index("B_fearful_amygdala-vmpfc")
    idx_a = names.index("A_vmpfc-amygdala")
    rows = []
    for k in range(20):
        subject = f"{k + 1:02d}"
        group = "ketamine" if k % 2 == 0 else "midazolam"
        z = rng.normal()
        base = np.where(prior_var > 0, rng.normal(size=prior_var.size) * 0.1 * np.sqrt(prior_var), 0.0)
        base[idx_b] += 0.4
        base[idx_a] += -0.25
        change = np.where(prior_var > 0, rng.normal(size=prior_var.size) * 0.05 * np.sqrt(prior_var), 0.0)
        change[idx_b] += -0.4 * z
        change[idx_a] += (-0.15 if group == "ketamine" else 0.0) * z
        for session, theta in (("pre", base), ("post", base + change)):
            path = (root / f"sub-{subject}" / f"ses-{session}" / "func" /
                    f"sub-{subject}_ses-{session}_task-faces_space-MNI152NLin2009cAsym_model-dcm_dcm.json")
            _write_posterior(path, subject, session, theta, prior_var, rng)
        rows.append({"subject": subject, "group": group, "improvement": 10 + 9 * z})
    clinical = pd.DataFrame(rows).set_index("subject")
    return root, clinical


def test_parameter_vector_order_matches_names():
    params = {"A": [[1, 2], [3, 4]], "B": {"fearful": [[0, 5], [6, 0]]}, "C": [[7, 0], [0, 0]],
              "transit": [8, 9], "decay": 10, "epsilon": 12}
    vector = pack_parameters(params, 2, 2, INPUTS)
    named = dict(zip(contracts.dcm_parameter_names(REGIONS, INPUTS), vector))
    assert named["A_vmpfc-amygdala"] == 2  # a[to=amygdala][from=vmpfc]
    assert named["A_amygdala-vmpfc"] == 3
    assert named["B_fearful_amygdala-vmpfc"] == 6
    assert named["B_fearful_vmpfc-amygdala"] == 5
    assert named["C_faces_amygdala"] == 7
    assert named["decay"] == 10 and named["epsilon"] == 12
    assert len(vector) == 20  # SPM12 r7771: one decay shared by the two regions


def test_design_coding():
    clinical = pd.DataFrame({"improvement": [0.0, 10.0, 20.0, 30.0], "group": ["ketamine", "midazolam"] * 2},
                            index=["01", "02", "03", "04"])
    design = peb_design(clinical, ["improvement", "drug", "improvement_x_drug"])
    assert list(design.columns) == ["mean", "improvement", "drug", "improvement_x_drug"]
    np.testing.assert_allclose(design.iloc[:, 1:].mean(), 0.0, atol=1e-12)
    assert design["improvement"].std(ddof=1) == pytest.approx(1.0)
    np.testing.assert_allclose(design["drug"], [0.5, -0.5, 0.5, -0.5])
    # one-arm subsets: the constant drug column is dropped
    assert "drug" not in peb_design(clinical.iloc[[0, 2]], ["improvement", "drug"]).columns


def test_read_posterior_combines_json_and_npz(trial):
    root, _ = trial
    path = next(root.glob("sub-01/ses-pre/func/*_dcm.json"))
    posterior = read_dcm_posterior(path)
    assert posterior.subject == "01" and posterior.session == "pre"
    assert posterior.Cp.shape == (20, 20)
    index = posterior.param_names.index("B_fearful_amygdala-vmpfc")
    assert posterior.pC[index, index] == 1.0
    assert posterior.Cp[index, index] > 0


def test_run_dcm_group_writes_tables_and_recovers_planted_change(trial, tmp_path):
    root, clinical = trial
    results = run_dcm_group(root, tmp_path, clinical, CONFIG, figures=True)
    out = tmp_path / "group" / "dcm"
    for name in ("change", "baseline"):
        table = pd.read_csv(out / f"model-{name}_peb.tsv", sep="\t")
        assert list(table.columns) == ["parameter", "effect", "covariate", "Ep", "Cp", "Pp_sign", "Ep_bma", "Cp_bma",
                                       "Pp", "z", "p_rnd", "p_rnd_fwe", "rnd_method", "finding"]
        sidecar = json.loads((out / f"model-{name}_peb.json").read_text())
        assert sidecar["NumberOfSubjects"] == 20
        assert set(table["parameter"]) == {"A_amygdala-vmpfc", "A_vmpfc-amygdala", "B_fearful_amygdala-vmpfc",
                                           "B_fearful_vmpfc-amygdala"}
        assert results["models"][name]["figures"]["effects"].startswith("data:image/png;base64,")
        assert results["models"][name]["figures"]["network"].startswith("data:image/png;base64,")
    change = pd.read_csv(out / "model-change_peb.tsv", sep="\t").set_index(["parameter", "covariate"])
    planted_b = change.loc[("B_fearful_amygdala-vmpfc", "improvement")]
    planted_a = change.loc[("A_vmpfc-amygdala", "improvement_x_drug")]
    assert planted_b["Pp"] > 0.95 and planted_b["Ep_bma"] < 0
    assert planted_a["Pp"] > 0.95 and planted_a["Ep_bma"] < 0
    # both planted effects survive the re-randomisation (1000 re-randomisations)
    assert planted_b["finding"] and planted_a["finding"]
    assert planted_b["p_rnd"] < 0.01 and planted_b["p_rnd_fwe"] < 0.05
    assert (change.loc[(slice(None), "drug"), "Pp"] < 0.95).all()
    assert not change.loc[(slice(None), "drug"), "finding"].any()
    assert set(change["rnd_method"]) == {"permutation", "sign-flip"}
    summary = json.loads((out / "dcm_group_summary.json").read_text())
    assert set(summary["LOO"]) == {"loo-all", "loo-ketamine"}
    # the LOO table a user reads: one row per subject, observed = improvement z-scored within the
    # subset (an exact affine map of the clinical column), and the sidecar's r / one-sided p / df
    # are those of the table's own columns (Pearson r; t = r sqrt(df / (1 - r²)), df = n - 2)
    loo = pd.read_csv(out / "model-loo-all_loo.tsv", sep="\t", dtype={"subject": str})
    assert list(loo.columns) == ["subject", "observed", "predicted", "predicted_sd"]
    assert list(loo["subject"]) == sorted(clinical.index)
    improvement = clinical.loc[loo["subject"], "improvement"].to_numpy(float)
    # (the TSV keeps ~10 significant digits: rounding of 1e-10)
    assert np.corrcoef(loo["observed"], improvement)[0, 1] == pytest.approx(1.0, abs=1e-9)
    assert loo["observed"].mean() == pytest.approx(0.0, abs=1e-8)
    assert loo["observed"].std(ddof=1) == pytest.approx(1.0, rel=0.03)     # 1 with ddof 1 or 0 (n = 20)
    assert (loo["predicted_sd"] > 0).all() and loo["predicted"].notna().all()
    loo_json = json.loads((out / "model-loo-all_loo.json").read_text())
    r = np.corrcoef(loo["observed"], loo["predicted"])[0, 1]
    assert loo_json["PearsonR"] == pytest.approx(r, abs=1e-6)
    assert loo_json["DegreesOfFreedom"] == 18
    assert loo_json["PValueOneSided"] == pytest.approx(stats.t.sf(r * np.sqrt(18 / (1 - r ** 2)), 18), rel=1e-4)


def test_loo_parameters_from_config(trial, tmp_path):
    root, clinical = trial
    config = {**CONFIG, "peb": {**CONFIG["peb"], "loo_parameters": ["A_vmpfc-amygdala"]}}
    run_dcm_group(root, tmp_path, clinical, config, figures=False)
    sidecar = json.loads((tmp_path / "group" / "dcm" / "model-loo-all_loo.json").read_text())
    assert sidecar["Parameters"] == ["A_vmpfc-amygdala"]


def test_subject_without_clinical_score_is_excluded(trial, tmp_path):
    root, clinical = trial
    results = run_dcm_group(root, tmp_path, clinical.drop(index="03"), CONFIG, figures=False)
    assert results["excluded"]["03"] == "no clinical improvement score"
    sidecar = json.loads((tmp_path / "group" / "dcm" / "model-baseline_peb.json").read_text())
    assert "03" not in sidecar["Subjects"] and sidecar["NumberOfSubjects"] == 19


def test_missing_arrays_are_reported_with_the_file(tmp_path):
    path = tmp_path / "sub-01_ses-pre_task-faces_dcm.json"
    path.write_text(json.dumps({"region_names": REGIONS, "input_names": INPUTS}))
    with pytest.raises(ValueError, match="sub-01_ses-pre_task-faces_dcm.json.*lacks Ep, Cp, pE, pC"):
        read_dcm_posterior(path)
    assert dcm_group.PP_THRESHOLD == 0.95


def test_a_session_without_dcm_is_excluded_with_the_participant_level_reason(trial, tmp_path):
    """The participant level did not fit sub-05's pre DCM nor sub-06's post DCM and wrote why in the
    notes of their n/a dcm_* rows: the group DCM exclusions carry that reason (was: 'no DCM' only)."""
    import shutil

    root, clinical = trial
    copy = tmp_path / "participants"
    shutil.copytree(root, copy)
    why = {("05", "pre"): "DCM of sub-05 ses-pre not fitted: all 4 'fearful' event(s) lie outside the scan",
           ("06", "post"): "DCM for sub-06 ses-post failed: the faces run failed: BOLD is empty"}
    for (subject, session), note in why.items():
        for path in (copy / f"sub-{subject}" / f"ses-{session}" / "func").glob("*_dcm.*"):
            path.unlink()
        pd.DataFrame([{"measure": "dcm_faces_A_vmpfc-amygdala", "value": "n/a", "task": "faces", "kind": "dcm",
                       "qc_pass": False, "note": note}]).to_csv(
            copy / f"sub-{subject}" / f"ses-{session}" /
            f"sub-{subject}_ses-{session}_space-MNI152NLin2009cAsym_atlas-ptsdcircuit_desc-measures_features.tsv",
            sep="\t", index=False)
    results = run_dcm_group(copy, tmp_path / "out", clinical, dict(CONFIG, peb=dict(CONFIG["peb"], n_permutations=19)),
                            figures=False)
    assert results["excluded"]["05"] == f"no DCM for session pre: {why[('05', 'pre')]}"
    assert results["excluded"]["06"] == f"no DCM for session post (baseline models only): {why[('06', 'post')]}"
