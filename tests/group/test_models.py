"""The configured group models: designs, the minimum-subjects rule, planted effects recovered.

Ground truth: the fabricated trial's subject parameters (arms, clinical scores) and the planted
effects of ``ptsd_bidsapp.simulate.generative.EFFECTS``.
"""

import numpy as np
import pandas as pd
import pytest

from ptsd_bidsapp.group.changes import build_change_table
from ptsd_bidsapp.glmnet import TooFewSubjectsError
from ptsd_bidsapp.group.models import fit_model, model_design, model_seed
from ptsd_bidsapp.simulate.generative import EFFECTS
from tests.group.conftest import fabricate, fast_config

MODELS = ("all", "drug_interaction", "depression_covariate", "ketamine_only")
# 12 subjects; ketamine: 01 02 05 06 07 09, midazolam: 03 04 08 10 11 12
MISSING = {"02": "session", "04": "score"}


@pytest.fixture(scope="module")
def trial12(tmp_path_factory):
    bids, out, truth = fabricate(tmp_path_factory.mktemp("models"), n_subjects=12, missing=MISSING)
    config = fast_config()
    change = build_change_table(out, bids, config)
    designs = {name: model_design(change, name, spec, config) for name, spec in config["elastic_net"]["models"].items()}
    return {"truth": truth["subjects"], "config": config, "change": change, "designs": designs}


def _arm(truth, subject):
    return truth[subject]["group"]


def test_default_config_has_the_four_models(trial12):
    assert tuple(trial12["config"]["elastic_net"]["models"]) == MODELS


def test_all_subjects_model(trial12):
    change, design, truth = trial12["change"], trial12["designs"]["all"], trial12["truth"]
    deltas = list(change["columns"].values())
    assert list(design["X"].columns) == deltas
    assert list(design["X"].index) == [s for s in sorted(truth) if s not in MISSING]
    np.testing.assert_array_equal(design["penalty_factor"], np.ones(len(deltas)))
    for subject, value in design["y"].items():
        caps = truth[subject]["caps5"]
        assert value == pytest.approx(caps["pre"] - caps["post"])
    pd.testing.assert_frame_equal(design["X"], change["table"].set_index("subject")[deltas])
    assert design["excluded"] == change["excluded"] and sorted(design["excluded"]) == sorted(MISSING)


def test_interaction_model_adds_drug_dummy_and_measure_by_drug_products(trial12):
    change, design, truth = trial12["change"], trial12["designs"]["drug_interaction"], trial12["truth"]
    deltas = list(change["columns"].values())
    X = design["X"]
    assert list(X.columns) == deltas + ["drug_ketamine"] + [f"{d}_x_drug_ketamine" for d in deltas]
    drug = np.array([1.0 if _arm(truth, s) == "ketamine" else 0.0 for s in X.index])
    np.testing.assert_array_equal(X["drug_ketamine"].to_numpy(), drug)
    assert 0 < drug.sum() < len(drug)  # both arms present
    for d in deltas:
        np.testing.assert_array_equal(X[f"{d}_x_drug_ketamine"].to_numpy(), X[d].to_numpy() * drug)
    np.testing.assert_array_equal(design["penalty_factor"], np.ones(X.shape[1]))  # all penalised


def test_covariate_model_adds_depression_change_unpenalised(trial12):
    change, design, truth = trial12["change"], trial12["designs"]["depression_covariate"], trial12["truth"]
    deltas = list(change["columns"].values())
    X = design["X"]
    assert list(X.columns) == deltas + ["improvement_madrs_total"]
    for subject, value in X["improvement_madrs_total"].items():
        madrs = truth[subject]["madrs"]
        assert value == pytest.approx(madrs["pre"] - madrs["post"])
    expected_pf = np.ones(X.shape[1])
    expected_pf[-1] = 0.0
    np.testing.assert_array_equal(design["penalty_factor"], expected_pf)


def test_ketamine_model_has_only_ketamine_subjects(trial12):
    design, truth = trial12["designs"]["ketamine_only"], trial12["truth"]
    expected = [s for s in sorted(truth) if _arm(truth, s) == "ketamine" and s not in MISSING]
    assert list(design["X"].index) == expected == ["01", "05", "06", "07", "09"]
    assert design["subset"] == "ketamine"
    # excluded subjects of the model's population only: sub-02 (ketamine), not sub-04 (midazolam)
    assert list(design["excluded"]) == ["02"]
    assert "drug_ketamine" not in design["X"].columns


def test_fewer_than_min_subjects_fails_with_a_clear_message(trial12):
    design = dict(trial12["designs"]["ketamine_only"])
    design["X"], design["y"] = design["X"].iloc[:4], design["y"].iloc[:4]
    en_cfg = trial12["config"]["elastic_net"]
    with pytest.raises(TooFewSubjectsError) as err:
        fit_model("ketamine_only", design, en_cfg, seed=0)
    message = str(err.value)
    assert "model 'ketamine_only'" in message and "subset ketamine" in message
    assert "4 usable subject(s)" in message and "min_subjects = 5" in message
    assert "sub-02 (no participant features for session post)" in message


def test_exactly_min_subjects_is_fitted(trial12):
    """The boundary: 5 subjects (the ketamine arm here) is enough."""
    en_cfg = dict(trial12["config"]["elastic_net"], n_permutations=5, n_bootstrap=5)
    result = fit_model("ketamine_only", trial12["designs"]["ketamine_only"], en_cfg, seed=0)
    assert len(result["predictions"]) == 5
    assert np.isfinite(result["nested"]["predicted"]).all()


def test_min_subjects_is_configurable(trial12):
    en_cfg = dict(trial12["config"]["elastic_net"], min_subjects=6)
    with pytest.raises(TooFewSubjectsError, match="5 usable subject.*min_subjects = 6"):
        fit_model("ketamine_only", trial12["designs"]["ketamine_only"], en_cfg, seed=0)


def test_model_seeds_are_stable_and_distinct():
    seeds = [model_seed(0, name) for name in MODELS]
    assert len(set(seeds)) == len(MODELS)
    assert seeds == [model_seed(0, name) for name in MODELS]
    assert model_seed(1, "all") != model_seed(0, "all")


# ---------------------------------------------------------------------------------------
# planted effects (21 fabricated subjects, the simulator's default seed)


def _fit(demo_features, name, **elastic_net):
    bids, out, _ = demo_features
    config = fast_config(n_permutations=0, **elastic_net)
    change = build_change_table(out, bids, config)
    spec = config["elastic_net"]["models"][name]
    design = model_design(change, name, spec, config)
    result = fit_model(name, design, config["elastic_net"], seed=11)
    coef = result["coefficients"].set_index("feature")
    # per SD (1/n, glmnet's convention) = per unit × SD of the predictor
    np.testing.assert_allclose(coef["beta_per_sd"], coef["beta_raw"] * design["X"].std(ddof=0).to_numpy(),
                               rtol=1e-10, atol=1e-12)
    assert (coef["selected"] == (coef["beta_raw"] != 0)).all()
    return coef


def _planted_sign(measure, arm):
    return np.sign(EFFECTS[measure]["slope_by_group"][arm])


def test_all_subjects_model_retains_the_planted_faces_connectivity_change(demo_features):
    coef = _fit(demo_features, "all")
    measure = "gppi_faces_fearfulMinusNeutral_vmpfc-amygdala"
    row = coef.loc[f"delta_{measure}"]
    assert row["selected"] and np.sign(row["beta_per_sd"]) == _planted_sign(measure, "midazolam")
    assert row["selection_frequency"] >= 0.8


def test_ketamine_model_retains_the_ketamine_only_effects(demo_features):
    coef = _fit(demo_features, "ketamine_only")
    for measure in ("activation_conflict_conflictRegulation_dacc", "fc_rest_vmpfc-antinsula"):
        row = coef.loc[f"delta_{measure}"]
        assert row["selected"], measure
        assert np.sign(row["beta_per_sd"]) == _planted_sign(measure, "ketamine"), measure
        assert row["selection_frequency"] >= 0.8, measure


def test_interaction_model_shows_the_planted_drug_interactions(demo_features):
    coef = _fit(demo_features, "drug_interaction")
    checked = []
    for measure, eff in EFFECTS.items():
        column = f"delta_{measure}_x_drug_ketamine"
        difference = eff["slope_by_group"]["ketamine"] - eff["slope_by_group"]["midazolam"]
        if column not in coef.index or difference == 0:  # DCM parameters are not in the features tables
            continue
        checked.append(column)
        row = coef.loc[column]
        assert row["selected"] and np.sign(row["beta_per_sd"]) == np.sign(difference), column
    assert len(checked) == 3  # gPPI vmPFC-amygdala, dACC conflict regulation, rest vmPFC-insula


def test_unpenalised_covariate_is_always_retained(demo_features):
    coef = _fit(demo_features, "depression_covariate")
    row = coef.loc["improvement_madrs_total"]
    assert row["penalty_factor"] == 0.0
    assert row["selected"] and row["selection_frequency"] == 1.0
    # CAPS-5 and MADRS improvements are simulated to go together
    assert row["beta_per_sd"] > 0
