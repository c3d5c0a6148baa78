"""Participant level as a nipype graph (SPEC §5).

One sub-workflow per subject (``init_participant_wf``) with, per run, a node
computing every measure from a single read of the BOLD series, per session a
node fitting the DCM and assembling the features table, and per subject one sink
that writes every result into the derivative dataset atomically, then the report.
Compute nodes return results (kept by nipype in their work folders as a gzipped
pickle, ``*_result.pkl.gz``); only the sink writes derivative files
(:mod:`ptsd_bidsapp.workflows.sink`). Unusable runs and missing sessions found at
input collection enter the graph as data (their ``n/a`` rows and reasons), so the
subject's other runs are computed. All subjects' graphs are
joined in one meta-workflow so MultiProc/cluster plugins run them in parallel;
a crash in one subject leaves the others running (nipype does not stop on the
first crash), and the summary names the subjects that failed and why.
The work dir caches finished nodes, so an interrupted run resumes.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import pickle
import re
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

from nipype import Node, Workflow
from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec, traits

from ptsd_bidsapp import errors as exitcodes
from ptsd_bidsapp.progress import format_elapsed, still_working
from ptsd_bidsapp.workflows.progress import GraphProgress
from ptsd_bidsapp.config import REPORT_SECTIONS, RUN_SECTIONS, SESSION_SECTIONS, config_sections

LOGGER = logging.getLogger("ptsd_bidsapp.participant")

#: Name of the meta-workflow (its folder in the work dir holds every cached node).
META_WORKFLOW = "ptsd_bidsapp_wf"
#: Silence (seconds) after which the console gets a heartbeat line while participant nodes run: 25 s
#: + the heartbeat's 1 s polling keeps every gap under the 30 s users are promised (README).
HEARTBEAT_SECONDS = 25.0


# --------------------------------------------------------------------------- interfaces
def save_result(result: Any, path: Path) -> Path:
    """A compute node's result as a gzipped pickle in its work folder (nipype node state, not a derivative).

    Fixed gzip timestamp: equal results, equal bytes (nipype hashes downstream inputs by content).
    """
    path.write_bytes(gzip.compress(pickle.dumps(result, protocol=4), compresslevel=6, mtime=0))
    return path


def load_result(path: str | Path) -> Any:
    """Inverse of :func:`save_result`."""
    return pickle.loads(gzip.decompress(Path(path).read_bytes()))


@contextmanager
def _threads(n_threads: int, runtime):
    """Limit this process's BLAS/OpenMP pools to ``n_threads`` while a node computes (``--omp-nthreads``);
    the pools as threadpoolctl sees them inside the limit are kept in the node's runtime record
    (``runtime.thread_pools``, saved by nipype with the node's result)."""
    from ptsd_bidsapp.workflows.cluster import limit_threads, thread_pools

    with limit_threads(n_threads):
        runtime.thread_pools = thread_pools()
        yield


class _RunMeasuresInputSpec(BaseInterfaceInputSpec):
    # the BOLD is hashed by its path and bold_stat (size, modification time), not its content: an md5 of
    # every BOLD cost ~8 % of a subject (issue 16); the other, small inputs keep content hashing
    bold = File(exists=True, mandatory=True, hash_files=False, desc="fMRIPrep preprocessed BOLD")
    bold_stat = traits.Str(mandatory=True, desc="size and modification time of the BOLD (file_stat_signature)")
    mask = File(exists=True, mandatory=True, desc="fMRIPrep brain mask")
    confounds = File(exists=True, mandatory=True, desc="fMRIPrep confounds TSV")
    events = File(exists=True, desc="events TSV (task runs)")
    atlas_dseg = File(exists=True, mandatory=True, desc="atlas-ptsdcircuit dseg")
    atlas_labels = File(exists=True, mandatory=True, desc="atlas labels TSV")
    # hash_files=False: nipype would otherwise md5 every string naming a file, the BOLD path in run_info
    # included (twice per hash); the files are hashed through their own inputs above
    run_info = traits.Dict(mandatory=True, hash_files=False,
                           desc="RunInputs fields (labels, TR, slice-time reference, entities)")
    config = traits.Dict(mandatory=True, desc="resolved analysis configuration")
    low_mem = traits.Bool(False, usedefault=True, nohash=True,
                          desc="decompress the BOLD one volume at a time (same results: not part of the hash)")
    omp_nthreads = traits.Int(1, usedefault=True, nohash=True, desc="BLAS/OpenMP threads of this node's process")


class _RunMeasuresOutputSpec(TraitedSpec):
    result = File(exists=True, desc="run result (gzipped pickle): derivative records, features rows, QC")


class RunMeasures(SimpleInterface):
    """All measures of one run (QC, activation, gPPI, task-free FC, VOIs) from one read of the BOLD."""

    input_spec = _RunMeasuresInputSpec
    output_spec = _RunMeasuresOutputSpec

    def _run_interface(self, runtime):
        from ptsd_bidsapp.workflows.run_measures import compute_run_measures

        with _threads(self.inputs.omp_nthreads, runtime):
            result = compute_run_measures(
                run_info=self.inputs.run_info,
                bold=self.inputs.bold,
                mask=self.inputs.mask,
                confounds=self.inputs.confounds,
                events=self.inputs.events or None,
                atlas_dseg=self.inputs.atlas_dseg,
                atlas_labels=self.inputs.atlas_labels,
                config=self.inputs.config,
                low_mem=self.inputs.low_mem,
            )
        runtime.low_mem = bool(self.inputs.low_mem)
        self._results["result"] = str(save_result(result, Path(runtime.cwd) / "run_result.pkl.gz"))
        return runtime


class _SessionInputSpec(BaseInterfaceInputSpec):
    results = traits.List(File(exists=True), desc="results of the session's run nodes")
    failed_runs = traits.List(traits.Dict, hash_files=False,  # their reasons, not their files' bytes
                              desc="results of the session's runs unusable at input collection")
    config = traits.Dict(mandatory=True)
    session_info = traits.Dict(mandatory=True, desc="subject, session")
    omp_nthreads = traits.Int(1, usedefault=True, nohash=True, desc="BLAS/OpenMP threads of this node's process")


class _SessionOutputSpec(TraitedSpec):
    result = File(exists=True)


class SessionMeasures(SimpleInterface):
    """Session-level results: the faces DCM and the features table the group level reads."""

    input_spec = _SessionInputSpec
    output_spec = _SessionOutputSpec

    def _run_interface(self, runtime):
        from ptsd_bidsapp.workflows.run_measures import compute_session_measures

        runs = [load_result(p) for p in self.inputs.results] + [dict(r) for r in self.inputs.failed_runs]
        with _threads(self.inputs.omp_nthreads, runtime):
            result = compute_session_measures(runs, self.inputs.config, self.inputs.session_info)
        self._results["result"] = str(save_result(result, Path(runtime.cwd) / "session_result.pkl.gz"))
        return runtime


class _SinkInputSpec(BaseInterfaceInputSpec):
    results = traits.List(File(exists=True), mandatory=True)
    missing_sessions = traits.List(traits.Dict, desc="configured sessions without data: session, reason")
    output_dir = traits.Str(mandatory=True)
    subject = traits.Str(mandatory=True)
    reports = traits.Bool(True, usedefault=True)
    config = traits.Dict(mandatory=True)
    omp_nthreads = traits.Int(1, usedefault=True, nohash=True, desc="BLAS/OpenMP threads of this node's process")


class _SinkOutputSpec(TraitedSpec):
    out_files = traits.List(traits.Str)


class DerivativesSink(SimpleInterface):
    """The one writer: every result of the subject into the derivative dataset (atomic), then the report."""

    input_spec = _SinkInputSpec
    output_spec = _SinkOutputSpec
    always_run = True

    def _run_interface(self, runtime):
        from ptsd_bidsapp.workflows.sink import write_subject_outputs, write_subject_report

        results = [load_result(p) for p in self.inputs.results]
        missing = [dict(m) for m in self.inputs.missing_sessions]
        output_dir = Path(self.inputs.output_dir)
        written = write_subject_outputs(results, output_dir, self.inputs.subject, missing)
        if self.inputs.reports:
            from ptsd_bidsapp.reports.participant import render_subject_report

            with _threads(self.inputs.omp_nthreads, runtime):
                html = render_subject_report(results, self.inputs.subject, self.inputs.config, missing)
            written.append(str(write_subject_report(html, output_dir, self.inputs.subject)))
        self._results["out_files"] = written
        return runtime


# --------------------------------------------------------------------------- graph
def file_stat_signature(path: str | Path) -> str:
    """``<size in bytes>:<modification time in ns>`` of ``path``: how the run nodes hash their BOLD.

    The same evidence the pybids database key trusts (:func:`ptsd_bidsapp.bids.inputs.dataset_signature`):
    a BOLD replaced or edited gets a new size or time and its node recomputes; only a rewrite that keeps
    both (e.g. a copy forcing the old time onto new content) would not be noticed.
    """
    info = Path(path).stat()
    return f"{info.st_size}:{info.st_mtime_ns}"


def _node_name(*parts: Any) -> str:
    return "_".join(str(p) for p in parts if p not in (None, "")).replace("-", "")


def init_participant_wf(
    subject: str,
    runs: list,
    config: Mapping[str, Any],
    atlas_dseg: Path,
    atlas_labels: Path,
    output_dir: Path,
    reports: bool = True,
    unusable: list | None = None,
    missing_sessions: list | None = None,
    omp_nthreads: int = 1,
    low_mem: bool = False,
) -> Workflow:
    """Build the nipype workflow of one subject.

    Parameters
    ----------
    subject : str
        Subject label (no ``sub-``).
    runs : list of RunInputs
        From :func:`ptsd_bidsapp.bids.inputs.collect_runs`.
    config : mapping
        Resolved analysis configuration.
    atlas_dseg, atlas_labels : Path
        ROI set (packaged ``atlas-ptsdcircuit`` or the user's).
    output_dir : Path
        Derivative dataset root.
    reports : bool
        Write ``sub-<label>.html``.
    unusable : list of UnusableRun, optional
        Runs that cannot be used (:func:`ptsd_bidsapp.bids.inputs.collect_subject`): no node, ``n/a``
        rows with the reason in their session's features table.
    missing_sessions : list of MissingSession, optional
        Configured sessions without data: listed with the reason in the status and the report.
    omp_nthreads : int
        BLAS/OpenMP threads of each compute node (``--omp-nthreads``); also the node's ``n_procs``, so
        MultiProc counts its threads against ``--nprocs``.
    low_mem : bool
        Run nodes decompress their BOLD one volume at a time (``--low-mem``).

    Returns
    -------
    nipype.Workflow
        Named ``sub_<label>_wf``; its sink node is ``ds_sub_<label>``.
    """
    from ptsd_bidsapp.atlas import load_atlas
    from ptsd_bidsapp.workflows.run_measures import failed_run_result

    workflow = Workflow(name=f"sub_{subject}_wf")
    config = dict(config)
    sessions: dict[str, list] = {}
    failed: dict[str, list] = {}
    if unusable:
        roi_names = load_atlas(split_hemispheres=False, dseg=atlas_dseg, labels=atlas_labels).names
        for gap in unusable:
            info = {"subject": gap.subject, "session": gap.session, "task": gap.task, "run": gap.run}
            failed.setdefault(gap.session, []).append(failed_run_result(info, gap.reason, config, roi_names,
                                                                        str(gap.bold)))
    for run in runs:
        info = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(run).items()}
        node = Node(
            RunMeasures(
                bold=str(run.bold), mask=str(run.mask), confounds=str(run.confounds),
                atlas_dseg=str(atlas_dseg), atlas_labels=str(atlas_labels), run_info=info,
                config=config_sections(config, RUN_SECTIONS), bold_stat=file_stat_signature(run.bold),
                low_mem=low_mem, omp_nthreads=omp_nthreads,
            ),
            name=_node_name("ses", run.session, "task", run.task, "run", run.run),
            n_procs=omp_nthreads,
        )
        if run.events is not None:
            node.inputs.events = str(run.events)
        sessions.setdefault(run.session, []).append(node)

    sink = Node(DerivativesSink(output_dir=str(output_dir), subject=subject, reports=reports,
                                config=config_sections(config, REPORT_SECTIONS),
                                missing_sessions=[{"session": m.session, "reason": m.reason}
                                                  for m in missing_sessions or []], omp_nthreads=omp_nthreads),
                name=f"ds_sub_{subject}", n_procs=omp_nthreads)
    from nipype.interfaces.utility import Merge

    # the Merge nodes only list their inputs' file names: batch plugins (SLURM, SGE, ...) and MultiProc run
    # them in the main process instead of as a cluster job (seconds of queueing and Python start-up each)
    # or a worker task
    session_labels = sorted(set(sessions) | set(failed))
    merge_sessions = Node(Merge(len(session_labels)), name="merge_sessions", run_without_submitting=True)
    for index, session in enumerate(session_labels, start=1):
        nodes = sessions.get(session, [])
        session_node = Node(
            SessionMeasures(config=config_sections(config, SESSION_SECTIONS),
                            session_info={"subject": subject, "session": session},
                            failed_runs=failed.get(session, []), omp_nthreads=omp_nthreads),
            name=_node_name("ses", session, "summary"), n_procs=omp_nthreads,
        )
        if nodes:
            merge_runs = Node(Merge(len(nodes)), name=_node_name("merge", "ses", session), run_without_submitting=True)
            for i, node in enumerate(nodes, start=1):
                workflow.connect(node, "result", merge_runs, f"in{i}")
            workflow.connect(merge_runs, "out", session_node, "results")
        else:
            workflow.add_nodes([session_node])
        workflow.connect(session_node, "result", merge_sessions, f"in{index}")
    workflow.connect(merge_sessions, "out", sink, "results")
    return workflow


def run_participant_level(args, config: Mapping[str, Any], run_log=None) -> int:
    """Run the participant level for every selected subject; return the exit code.

    Input problems of one subject (missing file, inconsistent TR) mark that subject as
    failed and the others go on. The exit code is 0 when every subject succeeded,
    1 when some failed (a summary lists them with reasons), or the input error's own
    code when no subject could even be set up.

    Run control as fMRIPrep's options (``args``): ``stop_on_first_crash``, ``clean_workdir``,
    ``resource_monitor``, ``write_graph``. ``run_log`` (:class:`ptsd_bidsapp.cli.logs.RunLog`)
    receives the subjects' warnings from their status files.
    """
    from nipype import config as nipype_config

    from ptsd_bidsapp.atlas import atlas_files
    from ptsd_bidsapp.bids.dataset import bootstrap_output
    from ptsd_bidsapp.bids.inputs import InputError, collect_subject, make_layout, select_participants
    from ptsd_bidsapp.workflows.sink import read_status, status_path

    work_dir = Path(args.work_dir).resolve()
    output_dir = Path(args.output_dir).resolve()
    if getattr(args, "clean_workdir", False):
        clean_work_dir(work_dir)
    # only the selected subjects are indexed (all when none is selected)
    LOGGER.info("indexing the inputs with pybids (%s)",
                f"sub-{', sub-'.join(args.participant_label)}" if args.participant_label else "every subject")
    with still_working("indexing the inputs with pybids", HEARTBEAT_SECONDS):
        layout = make_layout(args.bids_dir, args.derivatives, work_dir, participants=args.participant_label)
        subjects = select_participants(layout, args.participant_label)
    LOGGER.info("%d subject(s) selected; collecting their inputs and building the workflow", len(subjects))
    sessions = args.session_label or [config["sessions"]["pre"], config["sessions"]["post"]]
    bootstrap_output(output_dir, args.bids_dir, args.derivatives, config)
    atlas_dseg, atlas_labels = atlas_files(config["atlas"])

    failures: dict[str, str] = {}
    codes: dict[str, int] = {}
    gaps: dict[str, list[str]] = {}
    present: dict[str, list[str]] = {}
    statuses: dict[str, dict] = {}  # the status each sink wrote in this run
    meta = Workflow(name=META_WORKFLOW, base_dir=str(work_dir))
    totals = {"run": 0, "session": 0, "subject": 0}
    collected = {}
    with still_working("collecting the inputs", HEARTBEAT_SECONDS):
        for subject in subjects:
            try:
                found = collect_subject(layout, subject, sessions, config["tasks"], config["space"], args.bids_filters)
            except InputError as err:
                failures[subject] = str(err)
                codes[subject] = err.exit_code
                LOGGER.error("sub-%s: %s", subject, err)
                continue
            for gap in found.missing_sessions:
                LOGGER.warning("sub-%s: %s", subject, gap.reason)
                gaps.setdefault(subject, []).append(f"ses-{gap.session} missing: {gap.reason}")
            for gap in found.unusable:
                LOGGER.error("%s", gap.reason)
            missing = {gap.session for gap in found.missing_sessions}
            present[subject] = [s for s in sessions if s not in missing]
            collected[subject] = found
    from ptsd_bidsapp.workflows.cluster import default_omp_nthreads

    omp_nthreads = getattr(args, "omp_nthreads", None) or default_omp_nthreads(
        args.plugin, args.nprocs, sum(len(found.runs) for found in collected.values()))
    LOGGER.info("BLAS/OpenMP threads per process: %d (--nprocs %d, plugin %s)", omp_nthreads, args.nprocs,
                args.plugin)
    with still_working("building the workflow", HEARTBEAT_SECONDS):
        for subject, found in collected.items():
            meta.add_nodes([init_participant_wf(subject, found.runs, config, atlas_dseg, atlas_labels, output_dir,
                                                reports=not args.no_reports, unusable=found.unusable,
                                                missing_sessions=found.missing_sessions, omp_nthreads=omp_nthreads,
                                                low_mem=bool(getattr(args, "low_mem", False)))])
            totals["run"] += len(found.runs)
            totals["session"] += len({r.session for r in found.runs} | {g.session for g in found.unusable})
            totals["subject"] += 1
    crash_dir = work_dir / "crashes"
    crash_dir.mkdir(parents=True, exist_ok=True)
    stop_first = "true" if getattr(args, "stop_on_first_crash", False) else "false"
    execution = {"crashdump_dir": str(crash_dir), "crashfile_format": "txt", "stop_on_first_crash": stop_first,
                 "check_version": "false",  # no telemetry: the app runs offline
                 # the run nodes write the derivative files into their folders; nipype must keep them
                 "remove_unnecessary_outputs": "false", "hash_method": "content"}
    level = "INFO" if getattr(args, "verbose", 0) else "WARNING"
    nipype_config.update_config({"execution": execution,
                                 "logging": {"workflow_level": level, "interface_level": level,
                                             "utils_level": "WARNING"}})
    from nipype import logging as nipype_logging

    nipype_logging.update_logging(nipype_config)
    for name in ("nipype.workflow", "nipype.interface", "nipype.utils"):
        logging.getLogger(name).propagate = False  # nipype has its own handler: no duplicate lines
    monitor = bool(getattr(args, "resource_monitor", False))
    if monitor:
        enable_resource_monitor(nipype_config)
    else:  # nipype's config is process-wide: a run without the flag must not inherit an earlier run's monitor
        nipype_config.disable_resource_monitor()
    # a Workflow copies the global config when created: set it on the graph too
    meta.config["execution"].update(execution)
    meta.config["monitoring"] = {"enabled": "true" if monitor else "false", "sample_frequency": "0.5"}
    stopped = False
    started = time.time()
    progress = GraphProgress(totals, resource_monitor=monitor, heartbeat=HEARTBEAT_SECONDS)
    if meta._graph.number_of_nodes():
        from ptsd_bidsapp.workflows.cluster import plugin_settings, run_graph

        if getattr(args, "write_graph", False):
            write_workflow_graph(meta, work_dir)
        settings, wait = plugin_settings(args.plugin, getattr(args, "plugin_settings", None), args.nprocs, args.mem_gb)
        if args.plugin in ("Linear", "MultiProc", "LegacyMultiProc"):
            settings["status_callback"] = progress   # local plugins report each node's status
        LOGGER.info("participant level: %d subject(s), %d run(s), %d session(s) to process with %s",
                    totals["subject"], totals["run"], totals["session"], args.plugin)
        try:
            # nipype's resource monitor writes its raw samples (.proc-* files) into the folder the nodes
            # start from (MultiProc workers chdir to the cwd of the plugin's creation): the work dir's
            with contextlib.chdir(monitor_dir(work_dir)) if monitor else contextlib.nullcontext():
                run_graph(meta, args.plugin, settings, wait)
        except RuntimeError as err:
            stopped = stop_first == "true"
            LOGGER.error("some nodes crashed (%s); see %s", str(err).splitlines()[0] if str(err) else "", crash_dir)
        finally:
            progress.stop()
        crashed = progress
        for subject in subjects:
            if subject in failures:
                continue
            if (subject in crashed.by_subject or _crashed_since(crash_dir, subject, started)
                    or not (output_dir / f"sub-{subject}").is_dir()
                    or not _subject_complete(output_dir, subject, present[subject])):
                failures[subject] = _crash_reason(crash_dir, subject, started)
                codes[subject] = exitcodes.FAILURE
                continue
            status = statuses[subject] = read_status(output_dir, subject) or {}
            if status.get("failed_runs"):
                failures[subject] = "; ".join(status["failed_runs"]) + " (the subject's other outputs were written)"
                codes[subject] = exitcodes.FAILURE
                _forget_failed_runs(work_dir, meta.name, subject, status.get("failed_run_keys", []))
    else:
        progress.stop()
    ok = [s for s in subjects if s not in failures]
    if run_log is not None:
        for subject in subjects:
            status = read_status(output_dir, subject) or {}
            run_log.record(status.get("warnings", []), prefix=f"sub-{subject}: ")
    if monitor:
        from ptsd_bidsapp.workflows.sink import write_resource_table

        table = write_resource_table(progress.resources, output_dir, run_log)
        print(f"  resource monitor: {table}")
    print(f"ptsd_bidsapp participant level: {len(ok)}/{len(subjects)} subject(s) succeeded "
          f"({format_elapsed(time.monotonic() - progress.start)})")
    if stopped:
        print("  stopped at the first crash (--stop-on-first-crash): the remaining nodes were not run")
    if ok and not args.no_reports:
        reports = [output_dir / f"sub-{s}.html" for s in ok if (output_dir / f"sub-{s}.html").is_file()]
        print("  reports:\n" + "\n".join(f"    {path}" for path in reports))
    for subject, reason in failures.items():
        print(f"  FAILED sub-{subject}: {reason}")
        for crash in _subject_crashes(crash_dir, subject, started):
            print(f"    crash file: {crash}")
    for subject, notes in gaps.items():
        for note in notes:
            print(f"  GAP sub-{subject}: {note} (the other sessions were computed; the group level drops "
                  "the subject from change-based models)")
    for subject, status in statuses.items():  # warned n/a: measures n/a with the reason, the rest computed
        warned = status.get("warnings") or []
        if warned:
            print(f"  WARNED sub-{subject}: {len(warned)} warning(s), e.g. {warned[0]!r}; the affected measures "
                  f"are n/a with the reason in the features tables; all in {status_path(output_dir, subject)}")
    if not failures:
        return exitcodes.SUCCESS
    if not ok and len(set(codes.values())) == 1:
        return next(iter(codes.values()))
    return exitcodes.FAILURE


def _forget_failed_runs(work_dir: Path, meta_name: str, subject: str, keys: list[dict]) -> None:
    """Drop the cached results of runs that failed on their data, so a rerun retries them
    (e.g. after the input was fixed); finished runs stay cached."""
    import shutil

    for key in keys:
        node_dir = work_dir / meta_name / f"sub_{subject}_wf" / _node_name("ses", key.get("session"), "task",
                                                                          key.get("task"), "run", key.get("run"))
        if node_dir.is_dir():
            shutil.rmtree(node_dir, ignore_errors=True)


def _subject_complete(output_dir: Path, subject: str, sessions: list[str]) -> bool:
    """True when every session of ``subject`` has its features table (written last by the sink)."""
    for session in sessions:
        if not list((output_dir / f"sub-{subject}" / f"ses-{session}").glob("*_desc-measures_features.tsv")):
            return False
    return True


def _subject_crashes(crash_dir: Path, subject: str, since: float) -> list[Path]:
    """Crash files of ``subject``'s nodes written since ``since`` (Unix time), newest first."""
    found = []
    for crash in Path(crash_dir).glob("crash-*.txt"):
        try:
            if crash.stat().st_mtime < since - 1.0:
                continue
            text = crash.read_text(errors="replace")
        except OSError:
            continue
        if re.search(rf"sub[-_]{re.escape(subject)}(?![A-Za-z0-9])", text):
            found.append(crash)
    return sorted(found, key=lambda c: c.stat().st_mtime, reverse=True)


def _crashed_since(crash_dir: Path, subject: str, since: float) -> bool:
    """Any node of ``subject`` crashed in this run (plugin-independent: nipype writes a crash file)."""
    return bool(_subject_crashes(crash_dir, subject, since))


def _crash_reason(crash_dir: Path, subject: str, since: float = 0.0) -> str:
    """Last error line of the newest crash file (text format) of a subject's nodes written
    since ``since`` (a Unix time: crash files of earlier runs are not this run's reason)."""
    for crash in _subject_crashes(crash_dir, subject, since):
        text = crash.read_text(errors="replace")
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        errors = [line for line in lines if ("Error:" in line or "Exception:" in line)]
        node = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Node:")), "")
        return (errors[-1] if errors else "crashed") + (f" (node {node})" if node else "")
    return "no outputs were written; see the crash files in the work dir"


# --------------------------------------------------------------------------- run control (fMRIPrep's options)
def clean_work_dir(work_dir: Path) -> list[Path]:
    """``--clean-workdir``: delete this app's intermediate results (cached nodes, crash files) in ``work_dir``.

    Only what the app puts there is removed (the meta-workflow folder and ``crashes/``), never
    the folder itself nor anything else a user keeps in it; the pybids database stays (it is
    keyed by the dataset's content and rebuilt when that changes).
    """
    import shutil

    removed = []
    for name in (META_WORKFLOW, "crashes"):
        path = Path(work_dir) / name
        if path.is_dir():
            shutil.rmtree(path)
            removed.append(path)
    LOGGER.info("--clean-workdir: removed %s", ", ".join(map(str, removed)) or "nothing (no earlier results)")
    return removed


def enable_resource_monitor(nipype_config) -> None:
    """``--resource-monitor``: nipype samples each node's memory and CPU (needs psutil)."""
    import psutil  # noqa: F401 - nipype's resource monitor samples processes with it

    nipype_config.enable_resource_monitor()
    nipype_config.set("monitoring", "sample_frequency", "0.5")


def monitor_dir(work_dir: Path) -> Path:
    """``<work>/resource_monitor``: where nipype's resource monitor leaves its raw samples (created)."""
    path = Path(work_dir) / "resource_monitor"
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_workflow_graph(workflow: Workflow, work_dir: Path) -> Path:
    """``--write-graph``: the graph as graphviz ``.dot`` (and ``.svg`` when graphviz is installed) in the work dir."""
    dot = Path(work_dir) / workflow.name / "graph.dot"
    try:
        workflow.write_graph(dotfilename=str(dot), graph2use="colored", format="svg", simple_form=True)
        LOGGER.info("workflow graph written to %s (and .svg)", dot)
    except OSError as err:  # graphviz's dot is not installed: the .dot file is written all the same
        LOGGER.info("workflow graph written to %s (%s)", dot, err)
    print(f"  workflow graph: {dot}")
    return dot


def rebuild_participant_reports(args, config: Mapping[str, Any]) -> int:
    """``--reports-only``: render ``sub-<label>.html`` again from the session results cached in the work dir.

    Nothing is recomputed and no derivative other than the reports is written. A subject whose
    results are not in the work dir (another work dir, or ``--clean-workdir`` since) is named
    with the fix; exit 1 if some subjects could not be rebuilt, 66 if none could.
    """
    from ptsd_bidsapp.reports.participant import render_subject_report
    from ptsd_bidsapp.workflows.sink import read_status, write_subject_report

    work_dir, output_dir = Path(args.work_dir).resolve(), Path(args.output_dir).resolve()
    labels = args.participant_label or sorted(p.name[4:] for p in output_dir.glob("sub-*") if p.is_dir())
    rebuilt, missing = [], {}
    for subject in labels:
        cached = sorted((work_dir / META_WORKFLOW / f"sub_{subject}_wf").glob("ses_*_summary/session_result.pkl.gz"))
        if not cached:
            missing[subject] = (f"no cached session results under {work_dir / META_WORKFLOW / f'sub_{subject}_wf'}; "
                                "run the participant level (without --reports-only) with this work dir")
            continue
        status = read_status(output_dir, subject) or {}
        gaps = [{"session": g.get("session"), "reason": g.get("reason")} if isinstance(g, dict)
                else {"session": "", "reason": str(g)} for g in status.get("missing_sessions", [])]
        html = render_subject_report([load_result(p) for p in cached], subject,
                                     config_sections(config, REPORT_SECTIONS), gaps)
        rebuilt.append(write_subject_report(html, output_dir, subject))
    print(f"ptsd_bidsapp participant level (--reports-only): {len(rebuilt)}/{len(labels)} report(s) rebuilt")
    for path in rebuilt:
        print(f"    {path}")
    for subject, reason in missing.items():
        print(f"  FAILED sub-{subject}: {reason}")
    if not missing:
        return exitcodes.SUCCESS
    return exitcodes.FAILURE if rebuilt else exitcodes.NOINPUT
