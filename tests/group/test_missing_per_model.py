"""``elastic_net.missing: per_model``: a missing value leaves a subject out only of the models that
use it (issue 14, item 11: one ``n/a`` measure removed the subject from every model).

The expected memberships follow from how the trial is damaged below (not from the code under
test): sub-02 has no post session and sub-05 no post CAPS-5 (out of every model); sub-03's
vmPFC–amygdala gPPI is ``n/a`` in post, sub-04's conflict run failed motion QC in pre, sub-06
has no post MADRS (each out of the models that use that value only).
"""

import json
import shutil

import pandas as pd
import pytest

from ptsd_bidsapp import errors as exitcodes
from ptsd_bidsapp.bids.inputs import InputError
from ptsd_bidsapp.cli.run import main
from ptsd_bidsapp.config import ConfigError, load_config
from ptsd_bidsapp.group.changes import build_change_table, change_table_sidecar
from ptsd_bidsapp.group.models import model_design
from tests.group.conftest import fabricate, fast_config

PLANTED_GPPI = "gppi_faces_fearfulMinusNeutral_vmpfc-amygdala"
MISSING = {"02": "session", "03": "measure", "04": "qc", "05": "score"}
SUBJECTS = [f"{i:02d}" for i in range(1, 11)]
#: a model of the rest connectivity only: neither sub-03's gPPI nor sub-04's conflict run is in it
REST_MODEL = {"subset": None, "interactions": False, "covariates": [], "measures": ["fc_rest_*"]}


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    base = tmp_path_factory.mktemp("permodel")
    bids, out, truth = fabricate(base, n_subjects=10, missing=MISSING)
    path = bids / "sub-06" / "sub-06_sessions.tsv"
    sessions = pd.read_csv(path, sep="\t", dtype=str)
    sessions.loc[sessions["session_id"] == "ses-post", "madrs_total"] = "n/a"
    sessions.to_csv(path, sep="\t", index=False)
    return {"base": base, "bids": bids, "out": out, "arms": {s: p["group"] for s, p in truth["subjects"].items()}}


def _config(missing):
    config = fast_config()
    config["elastic_net"]["missing"] = missing
    config["elastic_net"]["models"]["rest"] = dict(REST_MODEL)
    return config


def _designs(damaged, missing):
    config = _config(missing)
    change = build_change_table(damaged["out"], damaged["bids"], config)
    designs = {name: model_design(change, name, spec, config) for name, spec in config["elastic_net"]["models"].items()}
    return change, designs


def test_per_model_keeps_a_subject_in_the_models_its_missing_value_is_not_in(damaged):
    change, designs = _designs(damaged, "per_model")
    assert sorted(change["excluded"]) == ["02", "05"]  # no post session / no outcome: out of every model
    incomplete = change["incomplete"]
    assert sorted(incomplete) == ["03", "04", "06"]
    assert incomplete["03"] == {f"delta_{PLANTED_GPPI}": f"{PLANTED_GPPI} is n/a in session post"}
    assert incomplete["06"] == {"improvement_madrs_total": "no madrs_total for session post"}
    conflict = [m for m in change["measures"] if m.startswith("activation_conflict_")]
    assert conflict and set(incomplete["04"]) == {f"delta_{m}" for m in conflict}
    # the table holds n/a exactly where the value is missing
    table = change["table"].set_index("subject")
    assert list(table.index) == ["01", "03", "04", "06", "07", "08", "09", "10"]
    assert table.loc["03"].isna().sum() == 1 and pd.isna(table.at["03", f"delta_{PLANTED_GPPI}"])
    assert table.loc["06"].isna().sum() == 2  # madrs post and its improvement
    # each model: the subjects complete on its own values
    members = {name: list(d["X"].index) for name, d in designs.items()}
    assert members["all"] == ["01", "06", "07", "08", "09", "10"]
    assert members["depression_covariate"] == ["01", "07", "08", "09", "10"]
    assert members["rest"] == ["01", "03", "04", "06", "07", "08", "09", "10"]
    ketamine = [s for s in members["all"] if damaged["arms"][s] == "ketamine"]
    assert members["ketamine_only"] == ketamine
    assert "is n/a in session post" in designs["all"]["excluded"]["03"]
    assert "failed QC in session pre" in designs["all"]["excluded"]["04"]
    assert "06" not in designs["all"]["excluded"]
    assert designs["depression_covariate"]["excluded"]["06"] == "no madrs_total for session post"
    assert not {"03", "04", "06"} & set(designs["rest"]["excluded"])
    for design in designs.values():
        assert not design["X"].isna().any().any() and not design["y"].isna().any()
    assert list(designs["rest"]["X"].columns) == [c for c in table.columns if c.startswith("delta_fc_rest_")]


def test_listwise_default_excludes_every_incomplete_subject_from_every_model(damaged):
    assert load_config(None)["elastic_net"]["missing"] == "listwise"
    change, designs = _designs(damaged, "listwise")
    assert sorted(change["excluded"]) == ["02", "03", "04", "05", "06"]
    assert change["incomplete"] == {}
    for name, design in designs.items():
        expected = [s for s in ["01", "07", "08", "09", "10"]
                    if name != "ketamine_only" or damaged["arms"][s] == "ketamine"]
        assert list(design["X"].index) == expected, name


def test_a_subject_missing_a_value_every_model_needs_is_excluded_with_the_reason(damaged):
    """Per model, but the planted gPPI in every model: sub-03 fits no model, so it is excluded."""
    config = _config("per_model")
    del config["elastic_net"]["models"]["rest"]
    change = build_change_table(damaged["out"], damaged["bids"], config)
    assert "03" in change["excluded"] and "03" not in change["incomplete"]
    assert f"{PLANTED_GPPI} is n/a in session post" in change["excluded"]["03"]
    assert "04" in change["excluded"] and "06" in change["incomplete"]


def test_sidecar_names_the_policy_and_the_missing_values(damaged):
    change, _ = _designs(damaged, "per_model")
    sidecar = change_table_sidecar(change, _config("per_model"))
    json.dumps(sidecar)
    assert sidecar["MissingValues"].startswith("per_model")
    assert sidecar["IncompleteSubjects"]["06"] == {"improvement_madrs_total": "no madrs_total for session post"}
    assert sidecar["ModelMeasures"]["rest"] == [m for m in change["measures"] if m.startswith("fc_rest_")]


def test_missing_policy_and_model_measures_are_validated(tmp_path):
    path = tmp_path / "bad.yml"
    path.write_text("elastic_net:\n  missing: pairwise\n  models:\n    rest: {measures: []}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    problems = "\n".join(err.value.problems)
    assert "elastic_net.missing must be listwise or per_model (got 'pairwise')" in problems
    assert "elastic_net.models.rest.measures must be null or a non-empty list" in problems


def test_a_model_pattern_matching_nothing_names_the_model_key(damaged):
    config = _config("per_model")
    config["elastic_net"]["models"]["rest"]["measures"] = ["fc_rest_amygdla-*"]
    with pytest.raises(InputError, match="elastic_net.models.rest.measures") as err:
        build_change_table(damaged["out"], damaged["bids"], config)
    assert err.value.exit_code == exitcodes.USAGE


def test_group_run_reports_the_n_of_each_model(damaged, tmp_path):
    """Through the CLI: every model's JSON, the summary and the report give its own n and exclusions."""
    out = tmp_path / "out"
    shutil.copytree(damaged["out"], out)
    config = tmp_path / "per_model.yml"
    config.write_text("elastic_net:\n  missing: per_model\n  n_permutations: 9\n  n_bootstrap: 9\n"
                      "  models:\n    rest: {measures: ['fc_rest_*']}\n")
    code = main([str(damaged["bids"]), str(out), "group", "--skip-bids-validation", "--no-dcm", "--config",
                 str(config), "--seed", "1"])
    assert code == exitcodes.SUCCESS
    group = out / "group"
    summary = json.loads((group / "group_summary.json").read_text())
    assert summary["MissingValues"] == "per_model"
    assert sorted(summary["ExcludedSubjects"]) == ["02", "05"]
    assert sorted(summary["IncompleteSubjects"]) == ["03", "04", "06"]
    assert summary["Models"]["all"]["N"] == 6 and summary["Models"]["rest"]["N"] == 8
    assert summary["Models"]["depression_covariate"]["N"] == 5
    assert sorted(summary["Models"]["all"]["ExcludedSubjects"]) == ["02", "03", "04", "05"]
    rest = json.loads((group / "model-rest_coefficients.json").read_text())
    assert rest["N"] == 8 and rest["Subjects"] == ["01", "03", "04", "06", "07", "08", "09", "10"]
    assert rest["MissingValues"] == "per_model" and all(m.startswith("fc_rest_") for m in rest["Measures"])
    changes = pd.read_csv(group / "changes.tsv", sep="\t", dtype={"subject": str}, keep_default_na=False)
    assert changes.loc[changes["subject"] == "03", f"delta_{PLANTED_GPPI}"].item() == "n/a"
    report = (group / "group_report.html").read_text()
    assert "left out of the models that use a value they miss" in report
    assert "sub-06</td><td class=\"l\">improvement_madrs_total" in report
    assert "n = 8" in report and "n = 6" in report
