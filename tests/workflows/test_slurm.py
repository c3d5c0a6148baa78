"""The participant level on a real SLURM cluster (``--plugin SLURM`` and ``SLURMGraph``).

Needs a responding cluster: ``ci/slurm-cluster.sh start`` installs and starts a one-node one
(CI does, before ``make test``). Without ``sinfo`` the tests are skipped, saying so.
One subject through each plugin must give files byte-identical to MultiProc's; a job that fails
must fail the run with the subject named, and the run must end (no job left pending).
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from ptsd_bidsapp.simulate import simulate_trial

from .conftest import tree_digest

pytestmark = pytest.mark.slurm

#: a template prepended to every job script: the faces run of the pre session exits 3 before
#: nipype runs (as a job killed by the scheduler would), other jobs run normally
FAILING_TEMPLATE = ('#!/bin/bash\ncase "$SLURM_JOB_NAME" in *ses_pre_task_faces*) '
                    'echo "injected job failure" >&2; exit 3;; esac')
RUN_TIMEOUT = 900


def _cluster_problem() -> str | None:
    if shutil.which("sinfo") is None:
        return "SLURM's sinfo is not on PATH (ci/slurm-cluster.sh start installs and starts a one-node cluster)"
    proc = subprocess.run(["sinfo", "--noheader", "--format=%T"], capture_output=True, text=True, check=False)
    states = proc.stdout.split()
    if proc.returncode != 0 or not {"idle", "mixed", "allocated"} & set(states):
        return f"sinfo found no usable SLURM node ({proc.stderr.strip() or ' '.join(states) or 'no nodes'})"
    return None


@pytest.fixture(scope="module")
def cluster():
    problem = _cluster_problem()
    if problem is not None:
        if os.environ.get("PTSD_REQUIRE_SLURM"):
            pytest.fail(f"PTSD_REQUIRE_SLURM is set but {problem}")
        pytest.skip(problem)


@pytest.fixture(scope="module")
def small_trial(cluster, tmp_path_factory):
    return simulate_trial(tmp_path_factory.mktemp("slurmsim") / "bids", n_subjects=2, seed=11, resolution=8.0,
                          n_volumes=80)


def _run(bids, base, *extra, env=None):
    """The app as users call it (a separate process, as SLURM jobs re-import it); env without LOGNAME."""
    env = dict(os.environ if env is None else env)
    env.pop("LOGNAME", None)  # unset on CI runners: the app must default it for nipype's SLURM plugin
    cmd = [sys.executable, "-m", "ptsd_bidsapp", str(bids), str(base / "out"), "participant", "-w", str(base / "work"),
           "--skip-bids-validation", "--seed", "3", *extra]
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=RUN_TIMEOUT, check=False)
    return proc, time.monotonic() - start


@pytest.fixture(scope="module")
def multiproc_reference(small_trial, tmp_path_factory):
    base = tmp_path_factory.mktemp("multiproc")
    proc, _ = _run(small_trial, base, "--participant-label", "01", "--session-label", "pre", "--nprocs", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return tree_digest(base / "out")


@pytest.mark.parametrize("plugin", ["SLURM", "SLURMGraph"])
def test_cluster_plugin_outputs_equal_multiproc(plugin, small_trial, multiproc_reference, tmp_path):
    """One session of one subject, every node kind (the three tasks' runs with DCM, the merges, the session
    summary, the sink with the report): each node a cluster job."""
    args = tmp_path / "plugin_args.json"
    args.write_text(json.dumps({"status_poll_seconds": 1}))
    proc, _ = _run(small_trial, tmp_path, "--participant-label", "01", "--session-label", "pre", "--plugin", plugin,
                   "--plugin-args", str(args))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1/1 subject(s) succeeded" in proc.stdout
    ours = tree_digest(tmp_path / "out")
    assert sorted(ours) == sorted(multiproc_reference)
    assert [name for name in ours if ours[name] != multiproc_reference[name]] == []


@pytest.mark.parametrize("plugin", ["SLURM", "SLURMGraph"])
def test_failed_job_fails_the_run_naming_the_subject(plugin, small_trial, tmp_path):
    args = tmp_path / "plugin_args.json"
    args.write_text(json.dumps({"template": FAILING_TEMPLATE, "status_poll_seconds": 1}))
    proc, seconds = _run(small_trial, tmp_path, "--participant-label", "02", "--session-label", "pre", "--task-id",
                         "faces", "--no-dcm", "--no-reports", "--plugin", plugin, "--plugin-args", str(args))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "0/1 subject(s) succeeded" in proc.stdout and "FAILED sub-02" in proc.stdout
    # the run waited for its jobs and left none behind (dependants of the failed job cancelled)
    queue = subprocess.run(["squeue", "--noheader", "--format=%j|%k"], capture_output=True, text=True, check=True)
    ours = [line for line in queue.stdout.splitlines()
            if str(tmp_path) in line or "sub_02_wf" in line or "|ptsd_bidsapp-" in line]
    assert ours == [], queue.stdout
    assert seconds < RUN_TIMEOUT


@pytest.mark.parametrize("plugin", ["SLURM", "SLURMGraph"])
def test_node_error_on_bad_data_fails_the_run_naming_subject_and_file(plugin, small_trial, tmp_path):
    """A job that runs but whose node meets unusable data (an all-zero BOLD run): the error travels back
    from the cluster job to the summary, with the subject and the file named."""
    import nibabel as nib
    import numpy as np

    bids = tmp_path / "bids"
    shutil.copytree(small_trial, bids, symlinks=True)
    bold = next((bids / "derivatives" / "fmriprep" / "sub-02" / "ses-pre" / "func").glob("*task-faces*_bold.nii.gz"))
    img = nib.load(bold)
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.int16), img.affine, img.header), bold)
    args = tmp_path / "plugin_args.json"
    args.write_text(json.dumps({"status_poll_seconds": 1}))
    proc, seconds = _run(bids, tmp_path, "--participant-label", "02", "--session-label", "pre", "--task-id", "faces",
                         "--no-dcm", "--no-reports", "--plugin", plugin, "--plugin-args", str(args))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "0/1 subject(s) succeeded" in proc.stdout
    failed = [line for line in proc.stdout.splitlines() if "FAILED sub-02" in line]
    assert len(failed) == 1 and bold.name in failed[0] and "all zeros" in failed[0], proc.stdout
    assert seconds < RUN_TIMEOUT


def _wait_for_job(job_id: str, poll_seconds: float = 0.5) -> list[str]:
    """The final states of a job's array tasks (``sbatch --wait`` polls at intervals of several seconds)."""
    ended = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
             "DEADLINE"}
    deadline = time.monotonic() + RUN_TIMEOUT
    while True:
        queue = subprocess.run(["squeue", "--noheader", "--states=all", "--jobs", job_id, "--format=%T"],
                               capture_output=True, text=True, check=True)
        states = queue.stdout.split()
        if states and set(states) <= ended:
            return states
        assert time.monotonic() < deadline, f"job {job_id} still {states} after {RUN_TIMEOUT} s"
        time.sleep(poll_seconds)


def test_readme_sbatch_array_script_runs_one_job_per_subject(small_trial, tmp_path):
    """The README's `sbatch --array=1-N scripts/sbatch_participants.sh BIDS OUT WORK` (pip install as the app)."""
    script = Path(__file__).resolve().parents[2] / "scripts" / "sbatch_participants.sh"
    env = dict(os.environ, PTSD_BIDSAPP=f"{sys.executable} -m ptsd_bidsapp")
    # the cluster here has 1 GB and 2 CPUs: smaller requests than the script's defaults
    cmd = ["sbatch", "--parsable", "--array=1-2", "--mem=200M", "--cpus-per-task=1", "-o", str(tmp_path / "job_%a.log"),
           str(script), str(small_trial), str(tmp_path / "out"), str(tmp_path / "work"),
           "--skip-bids-validation", "--seed", "3", "--session-label", "pre", "--no-dcm", "--no-reports"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=RUN_TIMEOUT, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    states = _wait_for_job(proc.stdout.strip().split(";")[0])
    logs = "\n".join(p.read_text() for p in sorted(tmp_path.glob("job_*.log")))
    assert states == ["COMPLETED", "COMPLETED"], logs
    for subject in ("01", "02"):
        assert logs.count("1/1 subject(s) succeeded") == 2
        assert not (tmp_path / "out" / f"sub-{subject}" / "ses-post").exists()  # --session-label pre reached the job
        session = "pre"
        tables = list((tmp_path / "out" / f"sub-{subject}" / f"ses-{session}").glob("*_desc-measures_features.tsv"))
        assert len(tables) == 1, tables
        # the job's content, not only its file: every task's measures, DCM off (--no-dcm), numbers
        table = pd.read_csv(tables[0], sep="\t", keep_default_na=False)
        assert list(table.columns) == ["measure", "value", "task", "kind", "qc_pass", "note"]
        assert set(table["task"]) == {"faces", "conflict", "rest"} and "dcm" not in set(table["kind"])
        assert table["measure"].is_unique and table["measure"].str.startswith(("activation_", "gppi_", "gppidir_", "fc_")).all()
        values = pd.to_numeric(table["value"], errors="coerce")
        assert values.notna().groupby(table["kind"]).any().all(), table.groupby("kind")["value"].first()
        assert (tmp_path / "work" / f"sub-{subject}").is_dir()
