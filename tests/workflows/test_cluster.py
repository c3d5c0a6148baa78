"""Cluster-plugin handling without a cluster: defaults, LOGNAME, and the SLURMGraph wait on a fake squeue."""

import os
import stat

import pytest

from ptsd_bidsapp.workflows import cluster


def test_multiproc_defaults_and_user_values_win():
    settings, wait = cluster.plugin_settings("MultiProc", {"n_procs": 7}, nprocs=2, mem_gb=3.0)
    assert settings == {"n_procs": 7, "memory_gb": 3.0, "raise_insufficient": False}
    assert wait == {}


def test_slurmgraph_gets_resubmit_default_and_a_unique_comment():
    a, wait_a = cluster.plugin_settings("SLURMGraph", None, nprocs=2, mem_gb=None)
    b, wait_b = cluster.plugin_settings("SLURMGraph", {"sbatch_args": "-p normal", "status_poll_seconds": 1},
                                        nprocs=2, mem_gb=None)
    assert a["dont_resubmit_completed_jobs"] is True  # nipype crashes on empty plugin args without it
    assert a["sbatch_args"] == f"--comment={wait_a['token']}"
    assert b["sbatch_args"] == f"-p normal --comment={wait_b['token']}"
    assert wait_a["token"] != wait_b["token"] and wait_b["poll_seconds"] == 1.0
    assert "status_poll_seconds" not in b  # ours, not nipype's


def test_logname_defaulted(monkeypatch):
    monkeypatch.delenv("LOGNAME", raising=False)
    cluster.prepare_environment()
    assert os.environ["LOGNAME"]
    monkeypatch.setenv("LOGNAME", "someone")
    cluster.prepare_environment()
    assert os.environ["LOGNAME"] == "someone"


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """squeue printing the lines of queue.txt (running) / all.txt (--states=all); scancel logging its ids
    and removing them from queue.txt."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "squeue").write_text(f"""#!/bin/bash
if [[ " $* " == *" --states=all "* ]]; then cat {tmp_path}/all.txt; else cat {tmp_path}/queue.txt; fi
""")
    (bin_dir / "scancel").write_text(f"""#!/bin/bash
echo "$@" >> {tmp_path}/cancelled.txt
for id in "$@"; do sed -i "/^$id|/d" {tmp_path}/queue.txt; done
""")
    for name in ("squeue", "scancel"):
        (bin_dir / name).chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path


def test_wait_cancels_never_satisfiable_dependants_and_names_failed_jobs(fake_slurm):
    token = "ptsd_bidsapp-abc"
    (fake_slurm / "queue.txt").write_text(
        f"11|PENDING|DependencyNeverSatisfied|j3_ses_pre_summary|{token}\n"
        f"12|PENDING|DependencyNeverSatisfied|j4_ds_sub_02|{token}\n"
        "99|RUNNING|None|someone_elses_job|other\n"
    )
    (fake_slurm / "all.txt").write_text(
        f"10|FAILED|NonZeroExitCode|j0_ses_pre_task_faces|{token}\n"
        f"11|CANCELLED|None|j3_ses_pre_summary|{token}\n"
        f"9|COMPLETED|None|j1_ses_pre_task_rest|{token}\n"
        "99|RUNNING|None|someone_elses_job|other\n"
    )
    failed = cluster.wait_for_slurm_jobs(token, poll_seconds=0.01)
    assert (fake_slurm / "cancelled.txt").read_text().split() == ["11", "12"]
    assert failed == ["j0_ses_pre_task_faces (FAILED)", "j3_ses_pre_summary (CANCELLED)"]


def test_wait_gives_up_when_squeue_keeps_failing(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "squeue").write_text("#!/bin/bash\necho 'slurm_load_jobs error: Unable to contact slurm controller' >&2\n"
                                    "exit 1\n")
    (bin_dir / "squeue").chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(RuntimeError, match="Unable to contact"):
        cluster.wait_for_slurm_jobs("ptsd_bidsapp-x", poll_seconds=0.01, max_squeue_failures=2)


def test_batch_plugins_get_a_list_traceback_for_vanished_jobs(monkeypatch):
    """nipype's report_crash appends a list to the traceback: a str one raised TypeError and aborted the run."""
    from nipype.pipeline.plugins.base import SGELikeBatchManagerBase

    monkeypatch.setattr(SGELikeBatchManagerBase, "_get_result",
                        lambda self, taskid: {"result": None, "traceback": "Job finished\nno results file\n"})
    runner = cluster.make_plugin("SLURM", {"sbatch_args": "-p x"})
    assert type(runner).__name__ == "SLURMPlugin" and runner._sbatch_args == "-p x"
    tb = runner._get_result(1)["traceback"]
    assert tb == ["Job finished\n", "no results file\n"]
    tb += ["When creating this crashfile, ..."]  # what nipype's report_crash does
    assert cluster.make_plugin("MultiProc", {}) == "MultiProc"


def test_local_plugins_poll_often_batch_plugins_keep_nipype_value_user_value_wins():
    assert cluster.scheduler_poll_seconds("MultiProc", {}) == cluster.LOCAL_POLL_SECONDS < 2.0  # nipype's is 2
    assert cluster.scheduler_poll_seconds("LegacyMultiProc", {}) == cluster.LOCAL_POLL_SECONDS
    assert cluster.scheduler_poll_seconds("SLURM", {}) is None  # each pass may run squeue: not more often
    assert cluster.scheduler_poll_seconds("SLURMGraph", {}) is None
    settings = {"n_procs": 2, "poll_sleep_duration": "1.5"}
    assert cluster.scheduler_poll_seconds("SLURM", settings) == 1.5
    assert settings == {"n_procs": 2}  # nipype configuration, not a plugin argument


def test_run_graph_sets_the_pass_interval_and_freezes_the_heap_only_during_the_run():
    import gc

    seen = {}

    class Graph:
        config = {"execution": {"poll_sleep_duration": "2"}}

        def run(self, plugin, plugin_args):
            seen.update(plugin=plugin, args=dict(plugin_args), frozen=gc.get_freeze_count(),
                        poll=self.config["execution"]["poll_sleep_duration"])

    cluster.run_graph(Graph(), "MultiProc", {"n_procs": 2, "poll_sleep_duration": 0.5}, {})
    assert seen["poll"] == "0.5" and seen["args"] == {"n_procs": 2}
    assert seen["frozen"] > 0 and gc.get_freeze_count() == 0
    cluster.run_graph(Graph(), "MultiProc", {"n_procs": 2}, {})
    assert float(seen["poll"]) == cluster.LOCAL_POLL_SECONDS


def test_run_graph_unfreezes_when_the_run_raises():
    import gc

    class Graph:
        config = {"execution": {}}

        def run(self, plugin, plugin_args):
            raise RuntimeError("nodes crashed")

    with pytest.raises(RuntimeError, match="nodes crashed"):
        cluster.run_graph(Graph(), "Linear", {}, {})
    assert gc.get_freeze_count() == 0


def test_merge_nodes_run_in_the_main_process_compute_nodes_are_submitted(tmp_path):
    # a Merge only lists file names: as a SLURM job it cost seconds of queueing and Python start-up
    from nipype.interfaces.utility import Merge

    from ptsd_bidsapp.atlas import PACKAGED_DSEG, PACKAGED_LABELS
    from ptsd_bidsapp.bids.inputs import RunInputs
    from ptsd_bidsapp.config import load_config
    from ptsd_bidsapp.workflows.participant import init_participant_wf

    files = {}
    for name in ("bold.nii.gz", "mask.nii.gz", "confounds.tsv", "events.tsv"):
        files[name] = tmp_path / name
        files[name].write_text("x")
    runs = [RunInputs(subject="01", session=session, task=task, run=None, bold=files["bold.nii.gz"],
                      mask=files["mask.nii.gz"], confounds=files["confounds.tsv"],
                      events=None if task == "rest" else files["events.tsv"], tr=2.0, slice_time_ref=0.0,
                      n_volumes=10, entities={}, metadata={})
            for session in ("pre", "post") for task in ("faces", "rest")]
    workflow = init_participant_wf("01", runs, load_config(None), PACKAGED_DSEG, PACKAGED_LABELS, tmp_path / "out")
    nodes = {workflow.get_node(name) for name in workflow.list_node_names()}
    merges = [node for node in nodes if isinstance(node.interface, Merge)]
    assert len(merges) == 3   # the runs of each session, then the sessions
    assert all(node.run_without_submitting for node in merges)
    compute = nodes - set(merges)
    assert len(compute) == 4 + 2 + 1 and not any(node.run_without_submitting for node in compute)


NODE_SEES = r"""
import sys
from nipype import Node, Workflow
from nipype.interfaces.utility import Function
from ptsd_bidsapp.workflows import cluster


def loaded_at_start():
    import sys
    return sorted(name for name in ("nilearn.plotting", "nilearn.glm.contrasts", "ptsd_bidsapp.workflows.run_measures")
                  if name in sys.modules)


plugin, base = sys.argv[1], sys.argv[2]
workflow = Workflow(name="wf", base_dir=base)
workflow.add_nodes([Node(Function(function=loaded_at_start, output_names=["loaded"]), name="probe")])
settings, _ = cluster.plugin_settings(plugin, None, nprocs=2, mem_gb=None)
cluster.run_graph(workflow, plugin, settings, {})
from nipype.utils.filemanip import loadpkl
print(loadpkl(f"{base}/wf/probe/result_probe.pklz").outputs.loaded)
"""


@pytest.mark.parametrize("plugin, inherited", [("MultiProc", True), ("Linear", False)])
def test_multiproc_workers_start_with_the_node_modules_imported(plugin, inherited, tmp_path):
    """A MultiProc worker (forked from the app's process) finds nilearn's GLM and plotting and the measures
    already imported at the start of its first node: the app imported them once before the pool started,
    so each worker does not import them again. The Linear plugin runs nodes in the app's process, which
    imports them only when a node needs them (nothing preloaded). A fresh interpreter, so that nothing
    this test process imported earlier counts."""
    import subprocess
    import sys

    script = tmp_path / "probe.py"  # a file: nipype's Function node reads its function's source
    script.write_text(NODE_SEES)
    proc = subprocess.run([sys.executable, str(script), plugin, str(tmp_path)], capture_output=True, text=True,
                          check=False, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    loaded = eval(proc.stdout.strip().splitlines()[-1])  # the node's list of module names
    expected = ["nilearn.glm.contrasts", "nilearn.plotting", "ptsd_bidsapp.workflows.run_measures"]
    assert loaded == (expected if inherited else [])
    assert set(expected) <= set(cluster.NODE_MODULES)
