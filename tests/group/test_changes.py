"""Change-score table: post − pre per a-priori measure, improvement = pre − post, exclusions with reasons.

Ground truth comes from the fabricated files themselves (the features TSVs read back with pandas)
and from the simulator's subject parameters (the clinical scores it planted).
"""

import json

import numpy as np
import pandas as pd
import pytest

from ptsd_bidsapp.bids.inputs import InputError
from ptsd_bidsapp import errors as exitcodes
from ptsd_bidsapp.group.changes import build_change_table, change_table_sidecar
from ptsd_bidsapp.simulate.features import measure_ids
from tests.group.conftest import a_priori_measures, fabricate, fast_config

PLANTED_GPPI = "gppi_faces_fearfulMinusNeutral_vmpfc-amygdala"
# sub-02 lacks the post session, sub-03 has the planted gPPI n/a in post, sub-04 failed motion QC
# on the conflict task in pre, sub-05 lacks the post CAPS-5
MISSING = {"02": "session", "03": "measure", "04": "qc", "05": "score"}


def _features_file(out, subject, session):
    (path,) = (out / f"sub-{subject}" / f"ses-{session}").glob("*_desc-measures_features.tsv")
    return path


def _raw_values(out, subject, session):
    table = pd.read_csv(_features_file(out, subject, session), sep="\t", na_values="n/a", keep_default_na=False)
    return table.set_index("measure")["value"].astype(float)


@pytest.fixture(scope="module")
def incomplete(tmp_path_factory):
    """10 fabricated subjects with the MISSING defects, sub-06 without an arm, and sub-07 with a
    measure outside the a-priori list set to n/a (which must not exclude it)."""
    bids, out, truth = fabricate(tmp_path_factory.mktemp("changes"), n_subjects=10, missing=MISSING)
    participants = pd.read_csv(bids / "participants.tsv", sep="\t", dtype=str)
    participants.loc[participants["participant_id"] == "sub-06", "group"] = "n/a"
    participants.to_csv(bids / "participants.tsv", sep="\t", index=False)
    path = _features_file(out, "07", "post")
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    outside = "gppidir_faces_fearfulMinusNeutral_vmpfc-amygdala"
    table.loc[table["measure"] == outside, "value"] = "n/a"
    table.to_csv(path, sep="\t", index=False)
    config = fast_config()
    return {"bids": bids, "out": out, "truth": truth, "config": config,
            "change": build_change_table(out, bids, config), "outside": outside}


def test_change_is_post_minus_pre_of_every_a_priori_measure(incomplete):
    change, out = incomplete["change"], incomplete["out"]
    table = change["table"].set_index("subject")
    expected_measures = a_priori_measures(incomplete["config"])
    assert sorted(change["measures"]) == sorted(expected_measures)
    assert change["columns"] == {m: f"delta_{m}" for m in change["measures"]}
    assert sorted(c for c in table.columns if c.startswith("delta_")) == sorted(f"delta_{m}" for m in expected_measures)
    for subject in table.index:
        pre, post = _raw_values(out, subject, "pre"), _raw_values(out, subject, "post")
        for measure in expected_measures:
            assert table.at[subject, f"delta_{measure}"] == pytest.approx(post[measure] - pre[measure], rel=1e-12), (
                subject, measure)


def test_improvement_is_pre_minus_post_of_the_planted_scores(incomplete):
    change, truth = incomplete["change"], incomplete["truth"]["subjects"]
    table = change["table"].set_index("subject")
    assert change["outcome"] == "improvement_caps5_total"
    assert change["covariate"] == "improvement_madrs_total"
    for subject in table.index:
        caps, madrs = truth[subject]["caps5"], truth[subject]["madrs"]
        assert table.at[subject, "improvement_caps5_total"] == pytest.approx(caps["pre"] - caps["post"])
        assert table.at[subject, "improvement_madrs_total"] == pytest.approx(madrs["pre"] - madrs["post"])
        assert table.at[subject, "caps5_total_pre"] == pytest.approx(caps["pre"])
        assert table.at[subject, "group"] == truth[subject]["group"]
    # positive = fewer symptoms after treatment: the simulated arms improve on average
    assert table["improvement_caps5_total"].mean() > 0


def test_outcome_is_configurable(incomplete):
    """clinical.outcome names the score whose pre − post is the outcome (here MADRS, no covariate)."""
    config = fast_config()
    config["clinical"]["outcome"] = "madrs_total"
    config["clinical"]["covariate"] = None
    change = build_change_table(incomplete["out"], incomplete["bids"], config)
    truth = incomplete["truth"]["subjects"]
    assert change["outcome"] == "improvement_madrs_total" and change["covariate"] is None
    table = change["table"].set_index("subject")
    assert "improvement_caps5_total" not in table.columns
    # sub-05 lacks only the post CAPS-5, which is no longer needed
    assert "05" in table.index
    assert table.at["05", "improvement_madrs_total"] == pytest.approx(truth["05"]["madrs"]["pre"]
                                                                      - truth["05"]["madrs"]["post"])


def test_incomplete_subjects_are_excluded_with_the_reason(incomplete):
    change = incomplete["change"]
    excluded = change["excluded"]
    assert sorted(excluded) == ["02", "03", "04", "05", "06"]
    assert "no participant features for session post" in excluded["02"]
    assert f"{PLANTED_GPPI} is n/a in session post" in excluded["03"]
    conflict = [m for m in change["measures"] if m.startswith("activation_conflict_")]
    assert conflict and all(f"{m} failed QC in session pre" in excluded["04"] for m in conflict)
    assert "faces" not in excluded["04"]  # only the failed task's measures are named
    assert "no caps5_total for session post" in excluded["05"]
    assert "treatment arm" in excluded["06"]
    included = list(change["table"]["subject"])
    assert included == ["01", "07", "08", "09", "10"]  # sorted; sub-07's n/a is outside the a-priori list
    assert not set(included) & set(excluded)
    # every subject with scores stays available to the DCM group models
    assert "02" in change["clinical"].index


def test_column_names_do_not_depend_on_the_subjects(incomplete, tmp_path):
    """Another trial (other seed, other size, nobody missing): the same columns in the same order."""
    bids, out, _ = fabricate(tmp_path, n_subjects=6, seed=5)
    other = build_change_table(out, bids, incomplete["config"])
    assert list(other["table"].columns) == list(incomplete["change"]["table"].columns)
    assert other["excluded"] == {}
    assert list(other["table"].columns[:6]) == ["subject", "group", "improvement_caps5_total",
                                                "improvement_madrs_total", "caps5_total_pre", "caps5_total_post"]


def test_sidecar_describes_every_column_and_the_exclusions(incomplete):
    change = incomplete["change"]
    sidecar = change_table_sidecar(change, incomplete["config"])
    json.dumps(sidecar)  # serialisable
    for column in change["table"].columns:
        assert sidecar[column]["Description"], column
    assert sidecar["ExcludedSubjects"] == change["excluded"]
    assert "post minus" in sidecar[f"delta_{PLANTED_GPPI}"]["Description"]


def test_no_features_tables_is_an_input_error(tmp_path, incomplete):
    with pytest.raises(InputError, match="run the participant level") as err:
        build_change_table(tmp_path, incomplete["bids"], incomplete["config"])
    assert err.value.exit_code == exitcodes.NOINPUT


def test_a_pattern_matching_no_measure_is_a_configuration_error(incomplete):
    config = fast_config()
    config["measures"] = ["fc_rest_amygdala-*", "fc_rest_amygdla-vmpfc"]
    with pytest.raises(InputError, match="fc_rest_amygdla-vmpfc.*nearest ids: fc_rest_") as err:
        build_change_table(incomplete["out"], incomplete["bids"], config)
    assert err.value.exit_code == exitcodes.USAGE


def test_default_patterns_select_every_amygdala_pair_in_either_order(incomplete):
    from ptsd_bidsapp.config import load_default_config

    config = fast_config()
    config["measures"] = load_default_config()["measures"]
    measures = build_change_table(incomplete["out"], incomplete["bids"], config)["measures"]
    for partner in ("dacc", "racc", "vmpfc", "anthippo", "antinsula"):
        # pairs are written in atlas order, where the amygdala is last
        assert f"gppi_faces_fearfulMinusNeutral_{partner}-amygdala" in measures
        assert f"fc_rest_{partner}-amygdala" in measures
    assert not any(m.startswith("gppidir_") for m in measures)


def test_missing_values_are_never_silently_zero(incomplete):
    """No NaN reaches the table (an included subject has every delta)."""
    table = incomplete["change"]["table"]
    assert not table.isna().any().any()
    assert np.isfinite(table.filter(like="delta_").to_numpy()).all()


def test_exclusions_as_records_for_the_report(incomplete):
    """One record per subject, session and reason: what the group report's exclusions table groups."""
    records = incomplete["change"]["exclusions"]
    by_subject = {}
    for rec in records:
        by_subject.setdefault(rec["subject"], set()).add((rec["session"], rec["reason"], rec["measure"]))
    assert by_subject["02"] == {("post", "no participant features", None)}
    assert by_subject["03"] == {("post", "measure n/a", PLANTED_GPPI)}
    conflict = {m for m, task, _ in measure_ids() if task == "conflict"}
    assert by_subject["04"] == {("pre", "measure failed QC", m) for m in conflict}
    assert by_subject["05"] == {("post", "no caps5_total", None)}
    assert by_subject["06"] == {(None, "no treatment arm ('group') in participants.tsv", None)}
    assert set(by_subject) == set(incomplete["change"]["excluded"])
