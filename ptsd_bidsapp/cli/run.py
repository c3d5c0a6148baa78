"""Entry point: parse, validate, dispatch to the participant or group level.

Nothing else lives here: the participant level is
:func:`ptsd_bidsapp.workflows.participant.run_participant_level`, the group level
:func:`ptsd_bidsapp.group.run.run_group`. This module maps errors to exit codes, sets up
the console verbosity and the run log (:mod:`ptsd_bidsapp.cli.logs`) and writes the methods
text (``logs/CITATION.*``, :mod:`ptsd_bidsapp.reports.boilerplate`).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from ptsd_bidsapp import errors
from ptsd_bidsapp.bids.validation import validate_bids
from ptsd_bidsapp.cli.logs import RunLog, setup_console_logging
from ptsd_bidsapp.cli.parser import UsageError, parse_args
from ptsd_bidsapp.errors import InputError, describe_os_error, os_error_exit_code

LOGGER = logging.getLogger("ptsd_bidsapp")


def _fail(message: str, code: int) -> int:
    print(f"ptsd_bidsapp: error: {message}", file=sys.stderr)
    return code


def write_citation(output_dir: Path, config: dict, args) -> list[Path]:
    """``logs/CITATION.md``, ``.html``, ``.bib`` of this configuration (atomic writes)."""
    from ptsd_bidsapp.bids.outputs import atomic_write_text
    from ptsd_bidsapp.config import load_config
    from ptsd_bidsapp.reports.boilerplate import citation_files, write_citation_files

    options = {"seed": args.seed, "task_id": args.task_id, "no_dcm": args.no_dcm}
    files = citation_files(config, load_config(None), options)
    return write_citation_files(Path(output_dir) / "logs", files, atomic_write_text)


def main(argv: list[str] | None = None) -> int:
    """Run the BIDS App; returns the process exit code (BIDS App execution spec)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parse_args(argv)
    except UsageError as err:
        lines = "\n  - ".join(err.problems)
        print(f"usage: ptsd_bidsapp bids_dir output_dir {{participant,group}} [options]\n"
              f"ptsd_bidsapp: error: {len(err.problems)} problem(s) with the command line:\n  - {lines}",
              file=sys.stderr)
        return err.exit_code

    setup_console_logging(args.verbose, args.quiet)
    # no telemetry, no version check over the network (--notrack is the default and only behaviour)
    os.environ["NIPYPE_NO_ET"] = "1"

    from ptsd_bidsapp.config import ConfigError, dump_config, load_config, select_tasks

    try:
        config = load_config(args.config)
        if args.no_dcm:
            config["dcm"]["enabled"] = False
        config, skipped = select_tasks(config, args.task_id)
    except ConfigError as err:
        return _fail(str(err), errors.USAGE)
    if args.print_config:
        print(dump_config(config), end="")
        return errors.SUCCESS
    if args.boilerplate_only:
        try:
            paths = write_citation(args.output_dir, config, args)
        except OSError as err:
            return _fail(describe_os_error(err), os_error_exit_code(err))
        print("ptsd_bidsapp: methods boilerplate written to\n  " + "\n  ".join(str(p) for p in paths))
        return errors.SUCCESS

    if not args.bids_dir.is_dir():
        return _fail(f"bids_dir {args.bids_dir} does not exist", errors.NOINPUT)
    if not args.skip_bids_validation and not args.reports_only:
        problems = validate_bids(args.bids_dir, args.participant_label)
        if problems:
            shown = "\n  - ".join(problems[:20])
            return _fail(
                f"{args.bids_dir} failed BIDS validation ({len(problems)} error(s)):\n  - {shown}\n"
                "fix the dataset or rerun with --skip-bids-validation",
                errors.INVALID_BIDS,
            )

    run_log = None
    try:
        from ptsd_bidsapp.bids.outputs import ensure_writable_dir

        ensure_writable_dir(args.output_dir, "output_dir")
        run_log = RunLog(args.output_dir, args.analysis_level, argv, dump_config(config), args.verbose)
        from ptsd_bidsapp import __version__

        LOGGER.info("ptsd_bidsapp %s, %s level: %s -> %s (run log %s)", __version__, args.analysis_level,
                    args.bids_dir, args.output_dir, run_log.path)
        for note in skipped:
            LOGGER.warning("%s", note)
        if not args.reports_only:
            write_citation(args.output_dir, config, args)
        return _dispatch(args, config, skipped, run_log)
    except InputError as err:
        LOGGER.debug("input error", exc_info=True)
        return _fail(str(err), err.exit_code)
    except OSError as err:  # an output that cannot be written: permission, read-only FS, disk full
        LOGGER.debug("operating-system error", exc_info=True)
        return _fail(describe_os_error(err), os_error_exit_code(err))
    finally:
        if run_log is not None:
            print(f"  run log: {run_log.close()}")


def _dispatch(args, config: dict, skipped: list[str], run_log: RunLog) -> int:
    if args.analysis_level == "participant":
        from ptsd_bidsapp.bids.outputs import ensure_writable_dir

        ensure_writable_dir(args.work_dir, "work dir (-w)")
        if args.reports_only:
            from ptsd_bidsapp.workflows.participant import rebuild_participant_reports

            return rebuild_participant_reports(args, config)
        from ptsd_bidsapp.workflows.participant import run_participant_level

        return run_participant_level(args, config, run_log=run_log)
    from ptsd_bidsapp.group.run import rebuild_group_report, run_group

    if args.reports_only:
        return rebuild_group_report(args.output_dir, args.work_dir)
    run_group(
        bids_dir=args.bids_dir,
        output_dir=args.output_dir,
        config=config,
        seed=args.seed,
        n_jobs=args.nprocs,
        reports=not args.no_reports,
        notes=skipped,
        work_dir=args.work_dir,
    )
    return errors.SUCCESS


if __name__ == "__main__":
    sys.exit(main())
