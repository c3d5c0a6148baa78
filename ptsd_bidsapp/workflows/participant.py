"""Participant level as a nipype graph (SPEC §5).

One sub-workflow per subject (``init_participant_wf``) with, per run, a node
computing every measure from a single read of the BOLD series, per session a
DCM node and a features node, and per subject a sink that copies results into
the derivative dataset atomically and a report node. All subjects' graphs are
joined in one meta-workflow so MultiProc/cluster plugins run them in parallel;
a crash in one subject leaves the others running (nipype does not stop on the
first crash), and the summary names the subjects that failed and why.
The work dir caches finished nodes, so an interrupted run resumes.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

from nipype import Node, Workflow
from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec, traits

from ptsd_bidsapp import errors as exitcodes
from ptsd_bidsapp.config import REPORT_SECTIONS, RUN_SECTIONS, SESSION_SECTIONS, config_sections

LOGGER = logging.getLogger("ptsd_bidsapp.participant")


# --------------------------------------------------------------------------- interfaces
class _RunMeasuresInputSpec(BaseInterfaceInputSpec):
    bold = File(exists=True, mandatory=True, desc="fMRIPrep preprocessed BOLD")
    mask = File(exists=True, mandatory=True, desc="fMRIPrep brain mask")
    confounds = File(exists=True, mandatory=True, desc="fMRIPrep confounds TSV")
    events = File(exists=True, desc="events TSV (task runs)")
    atlas_dseg = File(exists=True, mandatory=True, desc="atlas-ptsdcircuit dseg")
    atlas_labels = File(exists=True, mandatory=True, desc="atlas labels TSV")
    run_info = traits.Dict(mandatory=True, desc="RunInputs fields (labels, TR, slice-time reference, entities)")
    config = traits.Dict(mandatory=True, desc="resolved analysis configuration")


class _RunMeasuresOutputSpec(TraitedSpec):
    summary = File(exists=True, desc="JSON: produced files, features rows, QC")


class RunMeasures(SimpleInterface):
    """All measures of one run (QC, activation, gPPI, task-free FC, VOIs) from one read of the BOLD."""

    input_spec = _RunMeasuresInputSpec
    output_spec = _RunMeasuresOutputSpec

    def _run_interface(self, runtime):
        from ptsd_bidsapp.workflows.run_measures import compute_run_measures

        summary = compute_run_measures(
            run_info=self.inputs.run_info,
            bold=self.inputs.bold,
            mask=self.inputs.mask,
            confounds=self.inputs.confounds,
            events=self.inputs.events or None,
            atlas_dseg=self.inputs.atlas_dseg,
            atlas_labels=self.inputs.atlas_labels,
            config=self.inputs.config,
            out_dir=Path(runtime.cwd),
        )
        path = Path(runtime.cwd) / "summary.json"
        path.write_text(json.dumps(summary, indent=2, sort_keys=True, default=str))
        self._results["summary"] = str(path)
        return runtime


class _SessionInputSpec(BaseInterfaceInputSpec):
    summaries = traits.List(File(exists=True), mandatory=True, desc="per-run summaries of the session")
    config = traits.Dict(mandatory=True)
    session_info = traits.Dict(mandatory=True, desc="subject, session")


class _SessionOutputSpec(TraitedSpec):
    summary = File(exists=True)


class SessionMeasures(SimpleInterface):
    """Session-level results: the faces DCM and the features table the group level reads."""

    input_spec = _SessionInputSpec
    output_spec = _SessionOutputSpec

    def _run_interface(self, runtime):
        from ptsd_bidsapp.workflows.run_measures import compute_session_measures

        summaries = [json.loads(Path(p).read_text()) for p in self.inputs.summaries]
        summary = compute_session_measures(summaries, self.inputs.config, self.inputs.session_info, Path(runtime.cwd))
        path = Path(runtime.cwd) / "session_summary.json"
        path.write_text(json.dumps(summary, indent=2, sort_keys=True, default=str))
        self._results["summary"] = str(path)
        return runtime


class _SinkInputSpec(BaseInterfaceInputSpec):
    summaries = traits.List(File(exists=True), mandatory=True)
    output_dir = traits.Str(mandatory=True)
    subject = traits.Str(mandatory=True)
    reports = traits.Bool(True, usedefault=True)
    config = traits.Dict(mandatory=True)


class _SinkOutputSpec(TraitedSpec):
    out_files = traits.List(traits.Str)


class DerivativesSink(SimpleInterface):
    """Copy every produced file into the derivative dataset (atomic) and write the subject report."""

    input_spec = _SinkInputSpec
    output_spec = _SinkOutputSpec
    always_run = True

    def _run_interface(self, runtime):
        from ptsd_bidsapp.workflows.run_measures import sink_outputs

        summaries = [json.loads(Path(p).read_text()) for p in self.inputs.summaries]
        written = sink_outputs(summaries, Path(self.inputs.output_dir), self.inputs.subject)
        if self.inputs.reports:
            from ptsd_bidsapp.reports.participant import write_subject_report

            written.append(str(write_subject_report(summaries, Path(self.inputs.output_dir), self.inputs.subject,
                                                    self.inputs.config)))
        self._results["out_files"] = written
        return runtime


# --------------------------------------------------------------------------- graph
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

    Returns
    -------
    nipype.Workflow
        Named ``sub_<label>_wf``; its sink node is ``ds_sub_<label>``.
    """
    workflow = Workflow(name=f"sub_{subject}_wf")
    config = dict(config)
    sessions: dict[str, list] = {}
    for run in runs:
        info = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(run).items()}
        node = Node(
            RunMeasures(
                bold=str(run.bold), mask=str(run.mask), confounds=str(run.confounds),
                atlas_dseg=str(atlas_dseg), atlas_labels=str(atlas_labels), run_info=info,
                config=config_sections(config, RUN_SECTIONS),
            ),
            name=_node_name("ses", run.session, "task", run.task, "run", run.run),
        )
        if run.events is not None:
            node.inputs.events = str(run.events)
        sessions.setdefault(run.session, []).append(node)

    sink = Node(DerivativesSink(output_dir=str(output_dir), subject=subject, reports=reports,
                                config=config_sections(config, REPORT_SECTIONS)),
                name=f"ds_sub_{subject}")
    from nipype.interfaces.utility import Merge

    merge_sessions = Node(Merge(len(sessions)), name="merge_sessions")
    for index, (session, nodes) in enumerate(sorted(sessions.items()), start=1):
        merge_runs = Node(Merge(len(nodes)), name=_node_name("merge", "ses", session))
        for i, node in enumerate(nodes, start=1):
            workflow.connect(node, "summary", merge_runs, f"in{i}")
        session_node = Node(
            SessionMeasures(config=config_sections(config, SESSION_SECTIONS),
                            session_info={"subject": subject, "session": session}),
            name=_node_name("ses", session, "summary"),
        )
        workflow.connect(merge_runs, "out", session_node, "summaries")
        workflow.connect(session_node, "summary", merge_sessions, f"in{index}")
    workflow.connect(merge_sessions, "out", sink, "summaries")
    return workflow


def run_participant_level(args, config: Mapping[str, Any]) -> int:
    """Run the participant level for every selected subject; return the exit code.

    Input problems of one subject (missing file, inconsistent TR) mark that subject as
    failed and the others go on. The exit code is 0 when every subject succeeded,
    1 when some failed (a summary lists them with reasons), or the input error's own
    code when no subject could even be set up.
    """
    from nipype import config as nipype_config

    from ptsd_bidsapp.atlas import atlas_files
    from ptsd_bidsapp.bids.dataset import bootstrap_output
    from ptsd_bidsapp.bids.inputs import InputError, collect_runs, make_layout, select_participants
    from ptsd_bidsapp.workflows.run_measures import read_status

    work_dir = Path(args.work_dir).resolve()
    output_dir = Path(args.output_dir).resolve()
    layout = make_layout(args.bids_dir, args.derivatives, work_dir)
    subjects = select_participants(layout, args.participant_label)
    sessions = args.session_label or [config["sessions"]["pre"], config["sessions"]["post"]]
    bootstrap_output(output_dir, args.bids_dir, args.derivatives, config)
    atlas_dseg, atlas_labels = atlas_files(config["atlas"])

    failures: dict[str, str] = {}
    codes: dict[str, int] = {}
    meta = Workflow(name="ptsd_bidsapp_wf", base_dir=str(work_dir))
    for subject in subjects:
        try:
            runs = collect_runs(layout, subject, sessions, config["tasks"], config["space"], args.bids_filters)
        except InputError as err:
            failures[subject] = str(err)
            codes[subject] = err.exit_code
            LOGGER.error("sub-%s: %s", subject, err)
            continue
        meta.add_nodes([init_participant_wf(subject, runs, config, atlas_dseg, atlas_labels, output_dir,
                                            reports=not args.no_reports)])
    crash_dir = work_dir / "crashes"
    crash_dir.mkdir(parents=True, exist_ok=True)
    execution = {"crashdump_dir": str(crash_dir), "crashfile_format": "txt", "stop_on_first_crash": "false",
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
    # a Workflow copies the global config when created: set it on the graph too
    meta.config["execution"].update(execution)
    if meta._graph.number_of_nodes():
        from ptsd_bidsapp.workflows.cluster import plugin_settings, run_graph

        settings, wait = plugin_settings(args.plugin, getattr(args, "plugin_settings", None), args.nprocs, args.mem_gb)
        try:
            run_graph(meta, args.plugin, settings, wait)
        except RuntimeError as err:
            LOGGER.error("some nodes crashed (%s); see %s", str(err).splitlines()[0] if str(err) else "", crash_dir)
        for subject in subjects:
            if subject in failures:
                continue
            if not (output_dir / f"sub-{subject}").is_dir() or not _subject_complete(output_dir, subject, sessions):
                failures[subject] = _crash_reason(crash_dir, subject)
                codes[subject] = exitcodes.FAILURE
                continue
            status = read_status(output_dir, subject) or {}
            if status.get("failed_runs"):
                failures[subject] = "; ".join(status["failed_runs"]) + " (the subject's other outputs were written)"
                codes[subject] = exitcodes.FAILURE
                _forget_failed_runs(work_dir, meta.name, subject, status.get("failed_run_keys", []))
    ok = [s for s in subjects if s not in failures]
    print(f"ptsd_bidsapp participant level: {len(ok)}/{len(subjects)} subject(s) succeeded")
    if ok and not args.no_reports:
        print(f"  reports: {output_dir}/sub-<label>.html")
    for subject, reason in failures.items():
        print(f"  FAILED sub-{subject}: {reason}")
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


def _crash_reason(crash_dir: Path, subject: str) -> str:
    """First error line of the first crash file (text format) of a subject's nodes."""
    for crash in sorted(Path(crash_dir).glob("crash-*.txt")):
        text = crash.read_text(errors="replace")
        if f"sub_{subject}_wf" not in text and f"sub-{subject}" not in text:
            continue
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        errors = [line for line in lines if ("Error:" in line or "Exception:" in line)]
        node = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Node:")), "")
        return (errors[-1] if errors else "crashed") + (f" (node {node})" if node else "")
    return "no outputs were written; see the crash files in the work dir"
