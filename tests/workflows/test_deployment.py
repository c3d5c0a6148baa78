"""The README's brainlife.io and Boutiques commands, run for real on the small simulated trial.

(The docker/apptainer commands are exercised by ``ci/container-smoke.sh``, the SLURM ones by
``test_slurm.py``; ``.ci/run`` runs both.)
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
FAST = "dcm:\n  enabled: false\n"  # the wrappers are under test here, not the DCM


def _env():
    env = dict(os.environ)
    # the wrappers call the `ptsd_bidsapp` console script: the one of this interpreter's environment
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.mark.slow
def test_brainlife_main_runs_the_app_from_config_json(trial, tmp_path):
    """brainlife.io runs `main` in a job folder holding config.json; outputs go to ./output."""
    shutil.copy(ROOT / "brainlife" / "main", tmp_path / "main")
    (tmp_path / "fast.yml").write_text(FAST)
    config = json.loads((ROOT / "brainlife" / "config.json").read_text())  # the documented keys
    config.update({"bids": str(trial), "fmriprep": str(trial / "derivatives" / "fmriprep"), "participant_label": "01",
                   "config": str(tmp_path / "fast.yml"), "seed": 3, "nprocs": 2})
    (tmp_path / "config.json").write_text(json.dumps(config))
    proc = subprocess.run(["bash", "main"], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1/1 subject(s) succeeded" in proc.stdout
    out = tmp_path / "output"
    assert json.loads((out / "dataset_description.json").read_text())["DatasetType"] == "derivative"
    for session in ("pre", "post"):
        (features,) = (out / "sub-01" / f"ses-{session}").glob("*_desc-measures_features.tsv")
        table = pd.read_csv(features, sep="\t", na_values="n/a")
        assert list(table.columns) == ["measure", "value", "task", "kind", "qc_pass", "note"]
        assert {"activation", "gppi", "fc"} <= set(table["kind"]) and table["value"].notna().any()
    report = (out / "sub-01.html").read_text()
    assert "<h1>sub-01 — PTSD fear-regulation circuit</h1>" in report and 'id="ses-post"' in report
    assert (tmp_path / "work").is_dir()


def test_brainlife_main_rejects_a_missing_bids_key(tmp_path):
    shutil.copy(ROOT / "brainlife" / "main", tmp_path / "main")
    (tmp_path / "config.json").write_text(json.dumps({"analysis_level": "participant"}))
    proc = subprocess.run(["bash", "main"], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "bids" in proc.stderr


@pytest.mark.slow
def test_bosh_exec_launch_runs_the_descriptor(trial, tmp_path):
    """`bosh exec launch --no-container boutiques.json invocation.json` (the README's Boutiques command)."""
    bosh = shutil.which("bosh") or str(Path(sys.executable).parent / "bosh")
    if not Path(bosh).exists():
        pytest.fail("bosh (boutiques) is not installed; `pip install -e .[test]` installs it")
    (tmp_path / "fast.yml").write_text(FAST)
    invocation = {"bids_dir": str(trial), "output_dir_name": str(tmp_path / "out"), "analysis_level": "participant",
                  "participant_label": ["02"], "config": str(tmp_path / "fast.yml"), "work_dir": str(tmp_path / "work"),
                  "nprocs": 2, "seed": 3, "skip_bids_validation": True, "no_reports": True}
    (tmp_path / "invocation.json").write_text(json.dumps(invocation))
    check = subprocess.run([bosh, "invocation", str(ROOT / "boutiques.json"), "-i", str(tmp_path / "invocation.json")],
                           capture_output=True, text=True, env=_env())
    assert check.returncode == 0, check.stdout + check.stderr
    proc = subprocess.run([bosh, "exec", "launch", "--no-container", "--stream", str(ROOT / "boutiques.json"),
                           str(tmp_path / "invocation.json")], capture_output=True, text=True, env=_env(),
                          cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1/1 subject(s) succeeded" in proc.stdout
    for session in ("pre", "post"):
        (features,) = (tmp_path / "out" / "sub-02" / f"ses-{session}").glob("*_desc-measures_features.tsv")
        table = pd.read_csv(features, sep="\t", na_values="n/a")
        assert list(table.columns) == ["measure", "value", "task", "kind", "qc_pass", "note"]
        assert {"activation", "gppi", "fc"} <= set(table["kind"]) and table["value"].notna().any()
