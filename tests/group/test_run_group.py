"""The group level end to end through the CLI (``ptsd_bidsapp BIDS OUT group``).

Fittable cases use fabricated features tables (:mod:`ptsd_bidsapp.simulate.features`, 10
subjects: the 5-subject minimum is the documented floor, so it is not lowered to make a small
trial pass). The failure case on the 4-subject simulated trial's real participant outputs is
in ``tests/workflows/test_participant.py`` (next to the session fixture it shares, so that it is
built once per run).
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ptsd_bidsapp import errors as exitcodes
from ptsd_bidsapp.cli.run import main
from ptsd_bidsapp.config import load_config
from tests.group.conftest import a_priori_measures, fabricate

MODELS = ("all", "drug_interaction", "depression_covariate", "ketamine_only")
N_PERMUTATIONS = 20
# 10 subjects; ketamine: 01 02 03 05 06 (exactly the minimum of 5), midazolam: 04 07 08 09 10;
# sub-04 failed motion QC on the conflict task
MISSING = {"04": "qc"}


def _config_file(directory: Path) -> Path:
    path = directory / "fast_config.yml"
    path.write_text(f"elastic_net:\n  n_permutations: {N_PERMUTATIONS}\n  n_bootstrap: {N_PERMUTATIONS}\n")
    return path


def _group(bids: Path, out: Path, config: Path, seed: int = 5, nprocs: int = 1, *extra: str) -> int:
    return main([str(bids), str(out), "group", "--skip-bids-validation", "--config", str(config), "--seed",
                 str(seed), "--nprocs", str(nprocs), *extra])


def _raw_values(out: Path, subject: str, session: str) -> pd.Series:
    """A features TSV read back with pandas: measure -> value (n/a as NaN)."""
    (path,) = (out / f"sub-{subject}" / f"ses-{session}").glob("*_desc-measures_features.tsv")
    table = pd.read_csv(path, sep="\t", na_values="n/a", keep_default_na=False)
    return table.set_index("measure")["value"].astype(float)


def _tables(out: Path) -> dict[str, bytes]:
    """{relative path: bytes} of every TSV and JSON under ``out/group``."""
    group = out / "group"
    return {str(p.relative_to(group)): p.read_bytes() for p in sorted(group.rglob("*"))
            if p.suffix in (".tsv", ".json")}


def _validator_errors(root: Path) -> list:
    """Errors of bids-validator-deno on ``root`` (as tests/workflows/test_participant.py runs it)."""
    exe = shutil.which("bids-validator-deno") or str(Path(sys.executable).parent / "bids-validator-deno")
    proc = subprocess.run([exe, str(root), "--json"], capture_output=True, text=True, check=False)
    report = json.loads(proc.stdout)
    return [i for i in report["issues"]["issues"] if i.get("severity") == "error"]


@pytest.fixture(scope="module")
def fabricated(tmp_path_factory):
    """Pristine fabricated trial (never run on): copy it before running the group level."""
    base = tmp_path_factory.mktemp("rungroup")
    bids, out, truth = fabricate(base, n_subjects=10, missing=MISSING)
    return {"base": base, "bids": bids, "out": out, "truth": truth["subjects"], "config": _config_file(base)}


def _copy(fabricated, dest: Path) -> Path:
    shutil.copytree(fabricated["out"], dest)
    return dest


@pytest.fixture(scope="module")
def run_a(fabricated, tmp_path_factory):
    """One group run (seed 5, 1 process) on a copy of the fabricated trial."""
    out = _copy(fabricated, tmp_path_factory.mktemp("run_a") / "out")
    code = _group(fabricated["bids"], out, fabricated["config"], 5, 1, "--no-dcm")
    return {"out": out, "code": code}


def test_writes_changes_models_summary_and_report(fabricated, run_a):
    assert run_a["code"] == exitcodes.SUCCESS
    group = run_a["out"] / "group"
    expected = ["changes.tsv", "changes.json", "group_summary.json", "group_report.html"]
    for name in MODELS:
        expected += [f"model-{name}_{kind}.{ext}" for kind in ("coefficients", "predictions")
                     for ext in ("tsv", "json")]
    missing = [f for f in expected if not (group / f).is_file()]
    assert missing == []

    # the change table on disk against the inputs read here (not build_change_table): one row per
    # subject that passed QC, the planted clinical scores, post - pre of every a-priori measure
    truth = fabricated["truth"]
    on_disk = pd.read_csv(group / "changes.tsv", sep="\t", dtype={"subject": str})
    assert list(on_disk["subject"]) == [s for s in sorted(truth) if s not in MISSING]
    a_priori = a_priori_measures(load_config(fabricated["config"]))
    deltas = [c for c in on_disk.columns if c.startswith("delta_")]
    assert len(a_priori) > 10 and sorted(deltas) == sorted(f"delta_{m}" for m in a_priori)
    for row in on_disk.to_dict("records"):
        subject = row["subject"]
        caps, madrs = truth[subject]["caps5"], truth[subject]["madrs"]
        assert row["group"] == truth[subject]["group"]
        assert row["improvement_caps5_total"] == pytest.approx(caps["pre"] - caps["post"])
        assert row["improvement_madrs_total"] == pytest.approx(madrs["pre"] - madrs["post"])
        pre, post = _raw_values(fabricated["out"], subject, "pre"), _raw_values(fabricated["out"], subject, "post")
        for measure in a_priori:
            assert row[f"delta_{measure}"] == pytest.approx(post[measure] - pre[measure], rel=1e-6, abs=1e-9)
    excluded = json.loads((group / "changes.json").read_text())["ExcludedSubjects"]
    assert list(excluded) == ["04"] and "failed QC" in excluded["04"]

    summary = json.loads((group / "group_summary.json").read_text())
    assert summary["Seed"] == 5 and summary["ExcludedSubjects"] == excluded
    report = (group / "group_report.html").read_text()
    for name in MODELS:
        assert summary["Models"][name]["Status"] == "fitted"
        assert name in report
        # the files the summary lists are the model's tables, with one prediction per subject
        assert summary["Models"][name]["Files"] == [f"group/model-{name}_coefficients.tsv",
                                                    f"group/model-{name}_predictions.tsv"]
        predictions = pd.read_csv(run_a["out"] / summary["Models"][name]["Files"][1], sep="\t", dtype={"subject": str})
        assert len(predictions) == summary["Models"][name]["N"] > 0
    assert "group" in (run_a["out"] / ".bidsignore").read_text().splitlines()


@pytest.mark.parametrize("name", MODELS)
def test_model_files_are_complete_and_consistent(fabricated, run_a, name):
    group = run_a["out"] / "group"
    coef = pd.read_csv(group / f"model-{name}_coefficients.tsv", sep="\t")
    meta = json.loads((group / f"model-{name}_coefficients.json").read_text())
    pred = pd.read_csv(group / f"model-{name}_predictions.tsv", sep="\t", dtype={"subject": str})
    summary = json.loads((group / "group_summary.json").read_text())["Models"][name]

    assert {"feature", "beta_per_sd", "beta_raw", "selected", "selection_frequency"} <= set(coef.columns)
    assert (coef["selected"] == (coef["beta_raw"] != 0)).all()
    assert coef["selection_frequency"].between(0, 1).all()
    assert summary["Retained"].keys() == set(coef.loc[coef["selected"], "feature"])

    # λ: the path is decreasing; λ_min minimises the CV curve, λ_1se ≥ λ_min
    lam, cvm = np.array(meta["LambdaPath"]), np.array(meta["CVMeanSquaredError"])
    assert np.all(np.diff(lam) < 0) and len(cvm) == len(lam) == len(meta["CVStandardError"])
    assert meta["LambdaMin"] == lam[meta["LambdaMinIndex"]] and cvm[meta["LambdaMinIndex"]] == cvm.min()
    assert meta["Lambda1SE"] >= meta["LambdaMin"]
    assert meta["Alpha"] == 0.5

    # nested-CV metrics are those of the written predictions (R² against the outer-training means)
    y, yhat, ref = pred["observed"], pred["predicted"], pred["training_mean"]
    assert meta["NestedCV"]["R2"] == pytest.approx(1 - np.sum((y - yhat) ** 2) / np.sum((y - ref) ** 2), rel=1e-5)
    assert meta["NestedCV"]["PearsonR"] == pytest.approx(np.corrcoef(y, yhat)[0, 1], rel=1e-5)
    assert meta["NestedCV"]["MeanAbsoluteError"] == pytest.approx(np.mean(np.abs(y - yhat)), rel=1e-5)

    # permutation p: (1 + #exceeding) / (1 + P) with P = the configured count
    assert meta["Permutation"]["NPermutations"] == N_PERMUTATIONS
    p = meta["Permutation"]["PValue"]
    assert 1 / (N_PERMUTATIONS + 1) <= p <= 1 and round(p * (N_PERMUTATIONS + 1), 9) % 1 == 0

    # the population: the arm subset, the excluded subjects with their reason
    truth = fabricated["truth"]
    subjects = [s for s in sorted(truth) if s not in MISSING
                and (name != "ketamine_only" or truth[s]["group"] == "ketamine")]
    assert meta["N"] == len(pred) == len(subjects) and meta["Subjects"] == subjects == list(pred["subject"])
    expected_excluded = set() if name == "ketamine_only" else {"04"}  # sub-04 is in the midazolam arm
    assert set(meta["ExcludedSubjects"]) == expected_excluded
    assert all("failed QC" in reason for reason in meta["ExcludedSubjects"].values())
    assert meta["Seed"] == 5


def test_same_seed_gives_byte_identical_tables(fabricated, run_a, tmp_path):
    """A second run with the same seed (without the report, which is no table) reproduces every
    TSV/JSON byte for byte; another seed changes the seeded parts (bootstrap frequencies,
    permutation p) but not the change table."""
    out_b = _copy(fabricated, tmp_path / "b")
    assert _group(fabricated["bids"], out_b, fabricated["config"], 5, 1, "--no-dcm", "--no-reports") == 0
    tables_a, tables_b = _tables(run_a["out"]), _tables(out_b)
    assert len(tables_a) == 4 * len(MODELS) + 3
    assert sorted(tables_a) == sorted(tables_b)
    assert [f for f in tables_a if tables_a[f] != tables_b[f]] == []

    out_c = _copy(fabricated, tmp_path / "c")
    assert _group(fabricated["bids"], out_c, fabricated["config"], 6, 1, "--no-dcm", "--no-reports") == 0
    tables_c = _tables(out_c)
    assert tables_c["changes.tsv"] == tables_a["changes.tsv"]
    assert any(tables_c[f"model-{n}_coefficients.tsv"] != tables_a[f"model-{n}_coefficients.tsv"] for n in MODELS)


def test_model_below_min_subjects_fails_alone_and_stale_files_go(fabricated, run_a, tmp_path):
    """Rerun after two ketamine subjects lose data: the ketamine-only model (3 usable) is reported
    failed with the excluded subjects, its old files are removed, the other models still fit."""
    out = tmp_path / "out"
    shutil.copytree(run_a["out"], out)
    assert (out / "group" / "model-ketamine_only_coefficients.tsv").is_file()
    next((out / "sub-02" / "ses-post").glob("*_features.tsv")).unlink()
    features = next((out / "sub-06" / "ses-pre").glob("*_features.tsv"))
    table = pd.read_csv(features, sep="\t", dtype=str, keep_default_na=False)
    table.loc[table["measure"] == "fc_rest_vmpfc-antinsula", "value"] = "n/a"
    table.to_csv(features, sep="\t", index=False)

    assert _group(fabricated["bids"], out, fabricated["config"], 5, 1, "--no-dcm", "--no-reports") == 0
    group = out / "group"
    summary = json.loads((group / "group_summary.json").read_text())
    failed = summary["Models"]["ketamine_only"]
    assert failed["Status"] == "failed"
    assert "3 usable subject(s)" in failed["Reason"] and "min_subjects = 5" in failed["Reason"]
    assert "sub-02 (no participant features for session post)" in failed["Reason"]
    assert "sub-06 (fc_rest_vmpfc-antinsula is n/a in session pre)" in failed["Reason"]
    assert list(group.glob("model-ketamine_only_*")) == []
    for name in ("all", "drug_interaction", "depression_covariate"):
        assert summary["Models"][name]["Status"] == "fitted" and summary["Models"][name]["N"] == 7
    assert sorted(summary["ExcludedSubjects"]) == ["02", "04", "06"]


def test_no_fittable_model_exits_65_naming_every_model(tmp_path, capsys):
    bids, out, truth = fabricate(tmp_path, n_subjects=4)
    code = _group(bids, out, _config_file(tmp_path), 5, 1, "--no-dcm")
    assert code == exitcodes.DATAERR == 65
    err = capsys.readouterr().err
    assert "no group model could be fitted" in err
    for name in MODELS:
        assert f"model '{name}'" in err
    summary = json.loads((out / "group" / "group_summary.json").read_text())
    assert {m["Status"] for m in summary["Models"].values()} == {"failed"}
    # the change table is still written, with the four subjects and their planted improvement
    changes = pd.read_csv(out / "group" / "changes.tsv", sep="\t", dtype={"subject": str})
    subjects = truth["subjects"]
    assert list(changes["subject"]) == sorted(subjects) == ["01", "02", "03", "04"]
    np.testing.assert_allclose(changes["improvement_caps5_total"],
                               [subjects[s]["caps5"]["pre"] - subjects[s]["caps5"]["post"] for s in sorted(subjects)])
    report = (out / "group" / "group_report.html").read_text()
    assert report.count("fewer than elastic_net.min_subjects = 5") == len(MODELS)


def test_missing_participant_outputs_exit_66(tmp_path, capsys):
    bids, _, _ = fabricate(tmp_path, n_subjects=4)
    code = _group(bids, tmp_path / "empty", _config_file(tmp_path), 5, 1, "--no-dcm")
    assert code == exitcodes.NOINPUT
    assert "run the participant level" in capsys.readouterr().err
