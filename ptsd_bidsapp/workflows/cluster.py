"""Running the participant graph with nipype's execution plugins, cluster plugins included.

nipype's batch plugins need a little help to be usable as they are shipped:

- ``SLURM`` names its jobs after ``$LOGNAME`` and raises ``KeyError`` where it is unset
  (CI runners, containers): :func:`prepare_environment` defaults it to the current user.
- ``SLURMGraph`` only *submits* the whole graph (one job per node, chained by
  ``--dependency=afterok``) and returns at once; the app would then find no outputs and
  report every subject as failed while the jobs are still queued. :func:`run_graph` tags
  the jobs with a unique ``--comment`` token, waits until no job carries it
  (:func:`wait_for_slurm_jobs`, polling ``squeue``) and only then checks completeness. A job
  whose dependency failed is cancelled (a cluster without
  ``DependencyParameters=kill_invalid_depend`` would otherwise keep it pending forever).
- The batch plugins (``SLURM``, ``SGE``, ``PBS``, ``LSF``, ``Condor``) crash with ``TypeError``
  inside nipype (``report_crash`` adds a list to the string traceback) when a job ends without
  a result file (killed by the scheduler: time or memory limit, node failure, a failing job
  header), which aborts the whole run and orphans the other subjects' jobs:
  :func:`make_plugin` hands nipype the traceback as a list of lines, as it does for crashes.
- ``SLURMGraph`` crashes on empty plugin arguments (``_dont_resubmit_completed_jobs`` is
  only set when some are given): :func:`plugin_settings` always passes
  ``dont_resubmit_completed_jobs`` (a rerun with the same work dir submits only what is left).
"""

from __future__ import annotations

import gc
import getpass
import logging
import os
import shutil
import subprocess
import time
import uuid
from typing import Any

LOGGER = logging.getLogger("ptsd_bidsapp.cluster")

#: plugin arguments this module reads itself (removed before nipype sees them)
WAIT_POLL_KEY = "status_poll_seconds"
#: SLURM pending reason of a job whose ``afterok`` dependency can no longer be satisfied
NEVER_SATISFIED = "DependencyNeverSatisfied"


def prepare_environment() -> None:
    """Default ``LOGNAME`` (nipype's SLURM plugin builds job names from it).

    ``getpass.getuser`` reads ``USER``/``LNAME``/``USERNAME`` or the password database; an
    arbitrary container uid without a passwd entry gets ``uid<N>``.
    """
    if os.environ.get("LOGNAME"):
        return
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid{os.getuid()}"
    os.environ["LOGNAME"] = user


#: What the nodes of a participant run import when they first run (measures with nilearn's GLM and
#: confounds, the DCM step, the report with nilearn's plotting): imported once in the app's process
#: before a local parallel plugin forks its workers (:func:`preload_node_modules`).
NODE_MODULES = (
    "ptsd_bidsapp.workflows.run_measures", "ptsd_bidsapp.measures.activation", "ptsd_bidsapp.measures.gppi",
    "ptsd_bidsapp.measures.confounds", "ptsd_bidsapp.measures.restfc", "ptsd_bidsapp.measures.voi",
    "ptsd_bidsapp.workflows.dcm_step", "ptsd_bidsapp.dcm.participant", "ptsd_bidsapp.workflows.sink",
    "ptsd_bidsapp.reports.participant", "nilearn.glm.contrasts", "nilearn.plotting",
)


def preload_node_modules(plugin: str) -> None:
    """Import :data:`NODE_MODULES` before a local parallel plugin (MultiProc) starts its workers.

    The workers are forked from this process (Python's default start method on Linux), so they
    inherit the imported modules instead of each importing nilearn, scikit-learn, SciPy's stats and
    matplotlib again at its first node (≈ 4 s of CPU per worker here). Cluster plugins start a new
    Python per job and the Linear plugin imports in this process anyway: nothing to do for them.
    """
    if plugin not in LOCAL_PARALLEL_PLUGINS:
        return
    import importlib

    for name in NODE_MODULES:
        importlib.import_module(name)


def plugin_settings(plugin: str, user_settings: dict | None, nprocs: int, mem_gb: float | None) -> tuple[dict, dict]:
    """nipype plugin arguments with the app's defaults, and the app's own wait options.

    Parameters
    ----------
    plugin : str
        nipype plugin name (``MultiProc``, ``SLURM``, ``SLURMGraph``, ...).
    user_settings : dict or None
        ``--plugin-args``; the user's values win over the defaults.
    nprocs : int
        ``--nprocs`` (MultiProc's ``n_procs``).
    mem_gb : float or None
        ``--mem-gb`` (MultiProc's ``memory_gb``).

    Returns
    -------
    settings : dict
        Passed to ``Workflow.run(plugin_args=...)``.
    wait : dict
        ``{"token": str, "poll_seconds": float}`` for ``SLURMGraph`` (see :func:`run_graph`), else ``{}``.
    """
    settings = dict(user_settings or {})
    wait: dict[str, Any] = {}
    poll = float(settings.pop(WAIT_POLL_KEY, 5.0))
    if plugin in ("MultiProc", "LegacyMultiProc"):
        settings.setdefault("n_procs", nprocs)
        if mem_gb:
            settings.setdefault("memory_gb", mem_gb)
        settings.setdefault("raise_insufficient", False)
    elif plugin == "SLURMGraph":
        settings.setdefault("dont_resubmit_completed_jobs", True)
        token = f"ptsd_bidsapp-{uuid.uuid4().hex[:16]}"
        settings["sbatch_args"] = f"{settings.get('sbatch_args', '')} --comment={token}".strip()
        wait = {"token": token, "poll_seconds": poll}
    return settings, wait


def slurm_jobs_with_comment(token: str, all_states: bool = False) -> list[dict[str, str]]:
    """Jobs in ``squeue`` whose comment is ``token``: ``[{"id", "name", "state", "reason"}]``.

    By default the jobs still queued or running; ``all_states`` adds the finished ones the
    controller still remembers (``MinJobAge``, 300 s by default).
    """
    cmd = ["squeue", "--noheader", "--format=%i|%T|%r|%j|%k"] + (["--states=all"] if all_states else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"squeue failed ({proc.returncode}): {proc.stderr.strip()}")
    jobs = []
    for line in proc.stdout.splitlines():
        fields = line.strip().split("|", 4)
        if len(fields) == 5 and fields[4] == token:
            jobs.append({"id": fields[0], "state": fields[1], "reason": fields[2], "name": fields[3]})
    return jobs


def wait_for_slurm_jobs(token: str, poll_seconds: float = 5.0, max_squeue_failures: int = 12) -> list[str]:
    """Block until no SLURM job carries the comment ``token``; return the jobs that did not complete.

    Jobs pending with reason ``DependencyNeverSatisfied`` (a node they depend on failed) are
    cancelled, so the wait ends on every cluster. ``squeue`` failing (controller busy) is
    retried ``max_squeue_failures`` times in a row before giving up with ``RuntimeError``.

    Returns
    -------
    list of str
        ``"<job name> (<state>)"`` of every job of the run that ended other than COMPLETED
        (as far as the controller still remembers them).
    """
    failures = 0
    announced = False
    while True:
        try:
            jobs = slurm_jobs_with_comment(token)
            failures = 0
        except RuntimeError as err:
            failures += 1
            if failures > max_squeue_failures:
                raise
            LOGGER.warning("%s; retrying", err)
            time.sleep(poll_seconds)
            continue
        if not jobs:
            break
        if not announced:
            LOGGER.warning("waiting for %d SLURM job(s) of this run (comment %s)", len(jobs), token)
            announced = True
        stuck = [job["id"] for job in jobs if job["state"] == "PENDING" and job["reason"] == NEVER_SATISFIED]
        if stuck:
            LOGGER.error("cancelling %d SLURM job(s) whose dependencies failed: %s", len(stuck), " ".join(stuck))
            subprocess.run(["scancel", *stuck], check=False)
        time.sleep(poll_seconds)
    try:
        finished = slurm_jobs_with_comment(token, all_states=True)
    except RuntimeError:
        return []
    failed = [f"{job['name']} ({job['state']})" for job in finished if job["state"] != "COMPLETED"]
    if failed:
        LOGGER.error("SLURM jobs of this run that did not complete: %s (their stderr: batch/*.e in the work dir)",
                     ", ".join(failed))
    return failed


#: nipype batch plugins sharing ``SGELikeBatchManagerBase._get_result``
BATCH_PLUGINS = ("SLURM", "SGE", "PBS", "LSF", "Condor")


class _ListTracebackMixin:
    """A job that vanished without a result file gets its traceback as a list of lines (see module doc)."""

    def _get_result(self, taskid):
        result = super()._get_result(taskid)
        if result and isinstance(result.get("traceback"), str):
            result["traceback"] = result["traceback"].splitlines(keepends=True)
        return result


def make_plugin(plugin: str, settings: dict):
    """The plugin name, or for a batch plugin an instance of the fixed subclass (``Workflow.run`` takes both)."""
    if plugin not in BATCH_PLUGINS:
        return plugin
    from nipype.pipeline import plugins

    base = getattr(plugins, f"{plugin}Plugin")
    fixed = type(f"{plugin}Plugin", (_ListTracebackMixin, base), {})
    return fixed(plugin_args=settings)


#: nipype's setting: seconds between two passes of its scheduler loop (``execution.poll_sleep_duration``)
POLL_KEY = "poll_sleep_duration"
#: the scheduler pass interval for :data:`LOCAL_PARALLEL_PLUGINS` (see :func:`scheduler_poll_seconds`)
LOCAL_POLL_SECONDS = 0.2


def scheduler_poll_seconds(plugin: str, settings: dict) -> float | None:
    """Seconds between two passes of nipype's scheduler loop for ``plugin``; pops a user value from ``settings``.

    nipype's default, 2 s, suits batch queues (each pass may ask the queue about every pending
    job). A local pool then idles: a finished node is collected, and its dependants started, only
    at the next pass, for nodes that take 0.5-3 s on the demo. Measured on 2 demo subjects at
    ``--nprocs 1`` (cgroup CPU, wall): 2 s passes 27.0 CPU s / 60 s wall; 0.2 s passes 23.1-27.7 CPU s /
    21-25 s; 0.05 s passes 28.8-30.8 CPU s / 24-25 s (a pass costs ~3 ms of the main process). The
    local parallel plugins therefore pass every :data:`LOCAL_POLL_SECONDS`; others keep nipype's
    value (None). ``--plugin-args '{"poll_sleep_duration": S}'`` sets it for any plugin.

    Parameters
    ----------
    plugin : str
        nipype plugin name.
    settings : dict
        Plugin arguments; a ``poll_sleep_duration`` key is removed (it is nipype configuration,
        not a plugin argument).

    Returns
    -------
    float or None
        Seconds, or None for nipype's configured value.
    """
    if POLL_KEY in settings:
        return float(settings.pop(POLL_KEY))
    return LOCAL_POLL_SECONDS if plugin in LOCAL_PARALLEL_PLUGINS else None


def run_graph(workflow, plugin: str, settings: dict, wait: dict) -> None:
    """``workflow.run`` with ``plugin``; for ``SLURMGraph`` also wait for the submitted jobs.

    The scheduler's pass interval is :func:`scheduler_poll_seconds`'s. The objects alive when the
    run starts (the input index, the graph) are frozen out of the garbage collector for the run
    (``gc.freeze``): MultiProc calls ``gc.collect()`` before each submission, which took 128 ms
    per node in the main process on 2 demo subjects (3.1 of its CPU s), 7 ms frozen.
    Raises what ``workflow.run`` raises (``RuntimeError`` when nodes crashed).
    """
    prepare_environment()
    settings = dict(settings)
    poll = scheduler_poll_seconds(plugin, settings)
    if poll is not None:
        workflow.config.setdefault("execution", {})[POLL_KEY] = str(poll)
    if plugin.startswith("SLURM") and shutil.which("sbatch") is None:
        raise RuntimeError(f"--plugin {plugin} needs SLURM's sbatch on PATH (not found)")
    preload_node_modules(plugin)
    gc.collect()
    gc.freeze()  # see the docstring: what exists now is alive for the whole run
    try:
        workflow.run(plugin=make_plugin(plugin, settings), plugin_args=settings)
    finally:
        gc.unfreeze()
        if wait:
            wait_for_slurm_jobs(wait["token"], wait["poll_seconds"])


#: plugins that run the graph's nodes as processes of this machine, at most ``n_procs`` at once
LOCAL_PARALLEL_PLUGINS = ("MultiProc", "LegacyMultiProc")


def default_omp_nthreads(plugin: str, nprocs: int, n_parallel_nodes: int) -> int:
    """BLAS/OpenMP threads per process when ``--omp-nthreads`` is not given.

    MultiProc runs up to ``nprocs`` nodes at once; each node given ``nprocs`` BLAS threads would put
    ``nprocs**2`` threads on ``nprocs`` CPUs (measured 1.3-1.75x slower on 2 cores, eigenvariates 12.6x;
    issue 16). The CPUs are therefore shared among the nodes that can run at once: ``nprocs //
    min(nprocs, n_parallel_nodes)``, at least 1. ``Linear`` runs one node at a time (all ``nprocs``);
    batch plugins (SLURM, SGE, ...) get 1 per job (their jobs ask for one CPU unless ``--plugin-args``
    says otherwise).

    Parameters
    ----------
    plugin : str
        nipype plugin name.
    nprocs : int
        ``--nprocs``.
    n_parallel_nodes : int
        Nodes of the widest stage of the graph (the run nodes of every subject).

    Returns
    -------
    int
    """
    nprocs = max(1, int(nprocs))
    if plugin == "Linear":
        return nprocs
    if plugin in LOCAL_PARALLEL_PLUGINS:
        return max(1, nprocs // max(1, min(nprocs, int(n_parallel_nodes))))
    return 1


def limit_threads(n_threads: int):
    """Context manager limiting BLAS and OpenMP thread pools of this process to ``n_threads`` (threadpoolctl)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=int(n_threads))


def thread_pools() -> dict[str, int]:
    """Threads of each loaded thread pool of this process, by API: e.g. ``{"blas": 1, "openmp": 1}``.

    The largest ``num_threads`` per API (threadpoolctl's view), so a library that a limit did not
    reach shows.
    """
    from threadpoolctl import threadpool_info

    pools: dict[str, int] = {}
    for info in threadpool_info():
        api = info["user_api"]
        pools[api] = max(pools.get(api, 0), int(info["num_threads"]))
    return pools
