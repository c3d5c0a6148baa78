"""Fault model, group level: damaged clinical tables and participant outputs are named with
the documented exit code; a model that cannot be fitted fails alone; a failed run leaves no
partial group outputs."""

import errno
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ptsd_bidsapp import errors as exitcodes
from ptsd_bidsapp.cli.run import main
from tests.group.conftest import fabricate


@pytest.fixture(scope="module")
def fabricated(tmp_path_factory):
    """10 fabricated subjects (features tables + clinical files), never modified: copy it."""
    base = tmp_path_factory.mktemp("groupfaults")
    bids, out, _ = fabricate(base, n_subjects=10)
    config = base / "fast.yml"
    config.write_text("elastic_net:\n  n_permutations: 9\n  n_bootstrap: 9\n")
    return {"bids": bids, "out": out, "config": config}


def _copy(fabricated, tmp_path):
    bids, out = tmp_path / "bids", tmp_path / "out"
    shutil.copytree(fabricated["bids"], bids)
    shutil.copytree(fabricated["out"], out)
    return bids, out


def _group(bids, out, config, *extra) -> int:
    return main([str(bids), str(out), "group", "--skip-bids-validation", "--no-dcm", "--no-reports", "--config",
                 str(config), "--seed", "1", *extra])


def test_arm_not_configured_exits_65_naming_subject_and_value(fabricated, tmp_path, capsys):
    """'Ketamine ' (capital, trailing space) was silently a third arm."""
    bids, out = _copy(fabricated, tmp_path)
    table = pd.read_csv(bids / "participants.tsv", sep="\t", dtype=str)
    table.loc[table["participant_id"] == "sub-03", "group"] = "Ketamine "
    table.to_csv(bids / "participants.tsv", sep="\t", index=False)
    assert _group(bids, out, fabricated["config"]) == exitcodes.DATAERR
    err = capsys.readouterr().err
    assert "sub-03 'Ketamine '" in err and "participants.tsv" in err
    assert not (out / "group").exists()


def test_non_utf8_participants_tsv_exits_65(fabricated, tmp_path, capsys):
    bids, out = _copy(fabricated, tmp_path)
    path = bids / "participants.tsv"
    path.write_bytes(path.read_bytes().replace(b"ketamine", "k\u00e9tamine".encode("latin-1"), 1))
    assert _group(bids, out, fabricated["config"]) == exitcodes.DATAERR
    err = capsys.readouterr().err
    assert "participants.tsv is not UTF-8" in err and "Traceback" not in err


def test_non_numeric_clinical_score_exits_65_naming_the_value(fabricated, tmp_path, capsys):
    """A CAPS-5 score 'twelve' was coerced to a missing score ('no caps5_total')."""
    bids, out = _copy(fabricated, tmp_path)
    path = bids / "sub-04" / "sub-04_sessions.tsv"
    table = pd.read_csv(path, sep="\t", dtype=str)
    table.loc[table["session_id"] == "ses-post", "caps5_total"] = "twelve"
    table.to_csv(path, sep="\t", index=False)
    assert _group(bids, out, fabricated["config"]) == exitcodes.DATAERR
    err = capsys.readouterr().err
    assert "caps5_total of sub-04 ses-post is 'twelve', not a number" in err


def test_truncated_features_table_exits_65_naming_file_and_line(fabricated, tmp_path, capsys):
    """A features table cut mid-row (disk full, interrupted copy) was read as 'failed QC'."""
    bids, out = _copy(fabricated, tmp_path)
    path = next((out / "sub-05" / "ses-pre").glob("*_desc-measures_features.tsv"))
    lines = path.read_text().splitlines()
    cut = "\t".join(lines[40].split("\t")[:2])[:-2]  # the copy stopped inside row 41's value
    path.write_text("\n".join(lines[:40] + [cut]))
    assert _group(bids, out, fabricated["config"]) == exitcodes.DATAERR
    err = capsys.readouterr().err
    assert path.name in err and "damaged" in err and "line 41" in err


def test_group_level_runs_on_4_subjects_with_min_subjects_3(tmp_path, capsys):
    """The acceptance case of issue 14 item 2, end to end through the CLI with no fault injected:
    4 subjects (2 per arm), ``min_subjects: 3``. The ketamine-only model (2 subjects) is reported
    failed with the reason, the other three are fitted and written (was: a LinAlgError traceback in
    the permutation refits of depression_covariate, exit 1, no group_summary.json). Two permutations
    and bootstraps keep the run short; the n = 4 refits still go through the permutation test."""
    bids, out, truth = fabricate(tmp_path, n_subjects=4)
    arms = sorted(p["group"] for p in truth["subjects"].values())
    assert arms == ["ketamine", "ketamine", "midazolam", "midazolam"]
    config = tmp_path / "min3.yml"
    config.write_text("elastic_net:\n  min_subjects: 3\n  n_permutations: 2\n  n_bootstrap: 2\n")
    assert _group(bids, out, config) == exitcodes.SUCCESS
    err = capsys.readouterr().err
    assert "Traceback" not in err
    group = out / "group"
    summary = json.loads((group / "group_summary.json").read_text())
    failed = summary["Models"]["ketamine_only"]
    assert failed["Status"] == "failed"
    assert "2 usable subject(s), fewer than elastic_net.min_subjects = 3" in failed["Reason"]
    assert not list(group.glob("model-ketamine_only_*"))
    for name in ("all", "drug_interaction", "depression_covariate"):
        model = summary["Models"][name]
        assert model["Status"] == "fitted" and model["N"] == 4, name
        assert model["PermutationP"] is not None, name  # the permutation refits of n = 4 ran
        coefficients = json.loads((group / f"model-{name}_coefficients.json").read_text())
        assert coefficients["N"] == 4 and coefficients["Permutation"]["NPermutations"] == 2
        predictions = pd.read_csv(group / f"model-{name}_predictions.tsv", sep="\t")
        assert len(predictions) == 4 and np.isfinite(predictions["predicted"]).all()
    assert len(pd.read_csv(group / "changes.tsv", sep="\t")) == 4


def test_unfittable_model_fails_alone_others_written(fabricated, tmp_path, monkeypatch):
    """A singular design in one model's permutation refits (4 subjects, min_subjects 3, the
    depression covariate): that model is reported failed with the reason, the others written
    (was a LinAlgError traceback, exit 1, no group_summary.json)."""
    import ptsd_bidsapp.group.run as group_run

    real = group_run.fit_model

    def fit(name, *args, **kwargs):
        if name == "depression_covariate":
            raise np.linalg.LinAlgError("Singular matrix")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(group_run, "fit_model", fit)
    bids, out = _copy(fabricated, tmp_path)
    assert _group(bids, out, fabricated["config"]) == exitcodes.SUCCESS
    summary = json.loads((out / "group" / "group_summary.json").read_text())
    failed = summary["Models"]["depression_covariate"]
    assert failed["Status"] == "failed" and "could not be fitted" in failed["Reason"]
    assert "Singular matrix" in failed["Reason"]
    assert {summary["Models"][m]["Status"] for m in ("all", "drug_interaction", "ketamine_only")} == {"fitted"}
    # the other models' tables are written in full: the coefficients of every predictor, the
    # retained ones the summary names, one prediction per fitted subject
    for name in ("all", "drug_interaction", "ketamine_only"):
        model = summary["Models"][name]
        coef = pd.read_csv(out / "group" / f"model-{name}_coefficients.tsv", sep="\t")
        assert {"feature", "beta_per_sd", "beta_raw", "selected", "selection_frequency"} <= set(coef.columns)
        assert set(coef.loc[coef["selected"], "feature"]) == set(model["Retained"]), name
        predictions = pd.read_csv(out / "group" / f"model-{name}_predictions.tsv", sep="\t")
        assert len(predictions) == model["N"] > 0 and np.isfinite(predictions["predicted"]).all(), name
    assert not list((out / "group").glob("model-depression_covariate_*"))


def test_failed_group_write_leaves_previous_results_and_no_partial_files(fabricated, tmp_path, monkeypatch,
                                                                          capsys):
    """Disk full while writing the summary: exit 74, the earlier group/ untouched, no temp folder."""
    import ptsd_bidsapp.group.run as group_run

    bids, out = _copy(fabricated, tmp_path)
    assert _group(bids, out, fabricated["config"]) == exitcodes.SUCCESS
    before = {p.relative_to(out): p.read_bytes() for p in sorted((out / "group").rglob("*")) if p.is_file()}

    def disk_full(path, obj):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(group_run, "write_json", disk_full)
    assert _group(bids, out, fabricated["config"], "--seed", "2") == exitcodes.IOERR
    assert "No space left on device" in capsys.readouterr().err
    after = {p.relative_to(out): p.read_bytes() for p in sorted((out / "group").rglob("*")) if p.is_file()}
    assert after == before
    assert [p.name for p in out.iterdir() if p.name.startswith(".group")] == []
