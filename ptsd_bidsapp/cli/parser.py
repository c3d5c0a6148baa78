"""Command-line parser: build it once, validate once (SPEC §9).

``build_parser`` only declares the options; ``parse_args`` parses and then runs
every check, collecting all problems into one message. Exit codes follow the
BIDS App execution specification (see :mod:`ptsd_bidsapp.errors`).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ptsd_bidsapp import __version__, errors

ANALYSIS_LEVELS = ("participant", "group")
PLUGINS = ("Linear", "MultiProc", "LegacyMultiProc", "SLURM", "SLURMGraph", "SGE", "SGEGraph", "PBS", "PBSGraph", "LSF", "Condor")


class UsageError(Exception):
    """Command-line problems; ``exit_code`` is 64 (USAGE) or 17 (unknown analysis level)."""

    def __init__(self, problems: list[str], exit_code: int = errors.USAGE):
        self.problems = problems
        self.exit_code = exit_code
        super().__init__("; ".join(problems))


def strip_label(prefix: str):
    """Return an argparse type stripping ``prefix`` (e.g. ``sub-``) from a label."""

    def _strip(value: str) -> str:
        value = value.strip()
        return value[len(prefix):] if value.startswith(prefix) else value

    _strip.__name__ = f"{prefix.rstrip('-')}_label"
    return _strip


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show defaults only where there is one worth showing."""

    def _get_help_string(self, action):
        if action.default in (None, False) or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors raise :class:`UsageError` (exit 64) instead of exiting 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise UsageError([message])


def build_parser() -> argparse.ArgumentParser:
    """Declare the CLI (no validation here; see :func:`validate_args`)."""
    parser = _Parser(
        prog="ptsd_bidsapp",
        description=(
            "PTSD fear-regulation circuit analysis of pre/post treatment trials from fMRIPrep outputs: "
            "ROI activation, gPPI and task-free connectivity, DCM (participant level); change scores, "
            "leave-one-out elastic net and PEB (group level)."
        ),
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("bids_dir", type=Path, help="the root folder of a BIDS raw dataset (sub-XXXXX folders at the top level)")
    parser.add_argument("output_dir", type=Path, help="the output folder (a BIDS derivative dataset); must not be inside bids_dir")
    parser.add_argument("analysis_level", help="'participant' (per subject, may run in parallel) or 'group' (once all participants are done)")

    sel = parser.add_argument_group("selecting inputs")
    sel.add_argument(
        "--participant-label", "--participant_label", dest="participant_label", nargs="+", type=strip_label("sub-"),
        metavar="LABEL", help="subject labels to process (the 'sub-' prefix is optional); default: all subjects",
    )
    sel.add_argument(
        "--session-label", "--session_label", dest="session_label", nargs="+", type=strip_label("ses-"),
        metavar="LABEL", help="session labels to process ('ses-' optional); default: the config's pre and post sessions",
    )
    sel.add_argument(
        "--derivatives", type=Path, metavar="PATH",
        help="fMRIPrep derivatives folder (default: <bids_dir>/derivatives/fmriprep)",
    )
    sel.add_argument("--bids-filter-file", "--bids_filter_file", dest="bids_filter_file", type=Path, metavar="FILE",
                     help="JSON file of pybids filters per query (keys: bold, mask, confounds, events), as in fMRIPrep")
    sel.add_argument("--skip-bids-validation", "--skip_bids_validation", dest="skip_bids_validation", action="store_true",
                     help="do not validate bids_dir with the BIDS validator before running")

    ana = parser.add_argument_group("analysis")
    ana.add_argument("--config", type=Path, metavar="FILE", help="analysis YAML merged over the packaged default")
    ana.add_argument("--print-config", action="store_true", help="print the resolved analysis configuration and exit")
    ana.add_argument("--seed", type=int, default=0, help="random seed for permutations, bootstraps and any stochastic step")
    ana.add_argument("--no-dcm", action="store_true", help="skip DCM estimation (participant) and PEB (group)")
    ana.add_argument("--no-reports", action="store_true", help="do not write HTML reports")

    perf = parser.add_argument_group("performance and execution")
    perf.add_argument("-w", "--work-dir", dest="work_dir", type=Path, metavar="DIR",
                      help="working folder for intermediate results and the pybids database (default: $PTSD_BIDSAPP_WORK_DIR if set, as in the container image, else <output_dir>/../work)")
    perf.add_argument("--nprocs", "--n-cpus", "--n_cpus", dest="nprocs", type=int, default=os.cpu_count() or 1,
                      help="maximum number of processes")
    perf.add_argument("--mem-gb", "--mem_gb", dest="mem_gb", type=float, metavar="GB", help="memory limit for the MultiProc plugin (GB)")
    perf.add_argument("--omp-nthreads", "--omp_nthreads", dest="omp_nthreads", type=int, metavar="N",
                      help="BLAS/OpenMP threads per process (default: nprocs divided among the processes that run "
                           "at once, so MultiProc does not oversubscribe the CPUs; 1 for batch plugins)")
    perf.add_argument("--low-mem", "--low_mem", dest="low_mem", action="store_true",
                      help="bound memory: decompress each BOLD one volume at a time instead of 16 MB blocks "
                           "(same results)")
    perf.add_argument("--plugin", default="MultiProc", help=f"nipype execution plugin ({', '.join(PLUGINS)})")
    perf.add_argument("--plugin-args", "--plugin_args", dest="plugin_args", metavar="JSON",
                      help="plugin arguments as a JSON string or a path to a JSON file, e.g. '{\"sbatch_args\": \"-p normal\"}'")
    perf.add_argument("-v", "--verbose", action="count", default=0, help="more log output (repeat for debug)")
    parser.add_argument("--version", action="version", version=f"ptsd_bidsapp {__version__}")
    _add_operation_options(parser)
    return parser


def _add_operation_options(parser: argparse.ArgumentParser) -> None:
    """Task selection, crash handling, work-dir hygiene, reports and logging, with fMRIPrep's names and meanings."""
    ops = parser.add_argument_group("task selection, run control and logging (fMRIPrep's options)")
    ops.add_argument("-t", "--task-id", "--task_id", dest="task_id", nargs="+", metavar="TASK",
                     help="process only these tasks (labels of the config's 'tasks'); measures, DCM and group "
                          "models that need another task are skipped with a message")
    ops.add_argument("--notrack", action="store_true",
                     help="accepted for fMRIPrep compatibility: ptsd_bidsapp never sends anything over the network")
    ops.add_argument("--stop-on-first-crash", "--stop_on_first_crash", dest="stop_on_first_crash",
                     action="store_true", help="stop the whole run at the first node that crashes "
                                               "(default: the other subjects go on)")
    ops.add_argument("--clean-workdir", "--clean_workdir", dest="clean_workdir", action="store_true",
                     help="delete this app's intermediate results in the work dir before running (recomputes "
                          "everything; do not use while another run shares the work dir)")
    ops.add_argument("--resource-monitor", "--resource_monitor", dest="resource_monitor", action="store_true",
                     help="record each node's run time, peak memory (GB) and CPU use (nipype's resource monitor) "
                          "in logs/resource_monitor-<level>-<timestamp>.tsv")
    ops.add_argument("--write-graph", "--write_graph", dest="write_graph", action="store_true",
                     help="write the workflow graph (graphviz .dot, and .svg when graphviz is installed) "
                          "into the work dir")
    ops.add_argument("--reports-only", "--reports_only", dest="reports_only", action="store_true",
                     help="rebuild the HTML reports from existing results without recomputing anything")
    ops.add_argument("--boilerplate-only", "--boilerplate_only", dest="boilerplate_only", action="store_true",
                     help="write the methods text (logs/CITATION.md, .html, .bib) for this configuration and exit")
    ops.add_argument("-q", "--quiet", action="count", default=0,
                     help="less output: -q only warnings and the final summary, -qq only errors and the summary")


def _is_inside(child: Path, parent: Path) -> bool:
    child, parent = child.resolve(), parent.resolve()
    return child == parent or parent in child.parents


def validate_args(args: argparse.Namespace) -> argparse.Namespace:
    """Check every argument, collecting all problems; raise :class:`UsageError`.

    Missing inputs (bids_dir, derivatives) are *not* usage errors: they are
    reported by the runner with exit code 66 (NOINPUT).
    """
    problems: list[str] = []
    level_ok = args.analysis_level in ANALYSIS_LEVELS
    if not level_ok:
        problems.append(f"analysis_level must be one of {', '.join(ANALYSIS_LEVELS)} (got {args.analysis_level!r})")
    if args.bids_dir.exists() and not args.bids_dir.is_dir():
        problems.append(f"bids_dir {args.bids_dir} is not a folder")
    if args.bids_dir.is_dir() and _is_inside(args.output_dir, args.bids_dir):
        problems.append(
            f"output_dir {args.output_dir} is inside bids_dir {args.bids_dir}: choose a folder outside the input dataset "
            "(ptsd_bidsapp never writes into bids_dir)"
        )
    if args.work_dir is not None and args.bids_dir.is_dir() and _is_inside(args.work_dir, args.bids_dir):
        problems.append(f"work dir {args.work_dir} is inside bids_dir {args.bids_dir}: choose a folder outside the input dataset")
    if args.nprocs is not None and args.nprocs < 1:
        problems.append(f"--nprocs must be a positive integer (got {args.nprocs})")
    if getattr(args, "omp_nthreads", None) is not None and args.omp_nthreads < 1:
        problems.append(f"--omp-nthreads must be a positive integer (got {args.omp_nthreads})")
    if args.mem_gb is not None and args.mem_gb <= 0:
        problems.append(f"--mem-gb must be positive (got {args.mem_gb})")
    if args.plugin not in PLUGINS:
        problems.append(f"--plugin {args.plugin!r} is not a nipype plugin this app supports ({', '.join(PLUGINS)})")
    for label in args.participant_label or []:
        if not label.isalnum():
            problems.append(f"participant label {label!r} must be alphanumeric (BIDS label)")
    for label in args.session_label or []:
        if not label.isalnum():
            problems.append(f"session label {label!r} must be alphanumeric (BIDS label)")
    for option, path in (("--config", args.config), ("--bids-filter-file", args.bids_filter_file)):
        if path is not None and not path.is_file():
            problems.append(f"{option} {path} does not exist or is not a file")
    if args.bids_filter_file is not None and args.bids_filter_file.is_file():
        try:
            filters = json.loads(args.bids_filter_file.read_text())
            if not isinstance(filters, dict):
                raise ValueError("the top level must be an object")
            args.bids_filters = filters
        except ValueError as err:
            problems.append(f"--bids-filter-file {args.bids_filter_file} is not valid JSON: {err}")
    else:
        args.bids_filters = {}
    args.plugin_settings = {}
    if args.plugin_args:
        text = args.plugin_args
        if Path(text).is_file():
            text = Path(text).read_text()
        try:
            value = json.loads(text)
            if not isinstance(value, dict):
                raise ValueError("must be a JSON object")
            args.plugin_settings = value
        except ValueError as err:
            problems.append(f"--plugin-args is neither a JSON object nor a JSON file: {err}")
    _validate_operation_options(args, problems)
    if problems:
        only_level = not level_ok and len(problems) == 1
        raise UsageError(problems, errors.UNKNOWN_LEVEL if only_level else errors.USAGE)
    if args.work_dir is None:
        # the container image sets PTSD_BIDSAPP_WORK_DIR (its / is not writable by the image user)
        default = os.environ.get("PTSD_BIDSAPP_WORK_DIR")
        args.work_dir = Path(default) if default else args.output_dir.resolve().parent / "work"
    if args.derivatives is None:
        args.derivatives = args.bids_dir / "derivatives" / "fmriprep"
    return args


def _validate_operation_options(args: argparse.Namespace, problems: list[str]) -> None:
    """Checks of the options of :func:`_add_operation_options` (task labels against the config: run.py)."""
    for task in args.task_id or []:
        if not task.isalnum():
            problems.append(f"--task-id {task!r} must be alphanumeric (BIDS task label)")
    if args.reports_only and args.boilerplate_only:
        problems.append("--reports-only and --boilerplate-only exclude each other: choose one")
    if args.verbose and args.quiet:
        problems.append("-v/--verbose and -q/--quiet exclude each other")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and validate; argparse's own errors (bad types, missing args) exit 64."""
    args = build_parser().parse_args(argv)
    return validate_args(args)
