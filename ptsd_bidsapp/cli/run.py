"""Entry point: parse, validate, dispatch to the participant or group level.

Nothing else lives here: the participant level is
:func:`ptsd_bidsapp.workflows.participant.run_participant_level`, the group level
:func:`ptsd_bidsapp.group.run.run_group`.
"""

from __future__ import annotations

import logging
import sys

from ptsd_bidsapp import errors
from ptsd_bidsapp.bids.validation import validate_bids
from ptsd_bidsapp.cli.parser import UsageError, parse_args
from ptsd_bidsapp.errors import InputError, describe_os_error, os_error_exit_code


def _fail(message: str, code: int) -> int:
    print(f"ptsd_bidsapp: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Run the BIDS App; returns the process exit code (BIDS App execution spec)."""
    try:
        args = parse_args(argv)
    except UsageError as err:
        lines = "\n  - ".join(err.problems)
        print(f"usage: ptsd_bidsapp bids_dir output_dir {{participant,group}} [options]\n"
              f"ptsd_bidsapp: error: {len(err.problems)} problem(s) with the command line:\n  - {lines}",
              file=sys.stderr)
        return err.exit_code

    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2) if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s: %(message)s",
    )

    from ptsd_bidsapp.config import ConfigError, dump_config, load_config

    try:
        config = load_config(args.config)
    except ConfigError as err:
        return _fail(str(err), errors.USAGE)
    if args.no_dcm:
        config["dcm"]["enabled"] = False
    if args.print_config:
        print(dump_config(config), end="")
        return errors.SUCCESS

    if not args.bids_dir.is_dir():
        return _fail(f"bids_dir {args.bids_dir} does not exist", errors.NOINPUT)
    if not args.skip_bids_validation:
        problems = validate_bids(args.bids_dir, args.participant_label)
        if problems:
            shown = "\n  - ".join(problems[:20])
            return _fail(
                f"{args.bids_dir} failed BIDS validation ({len(problems)} error(s)):\n  - {shown}\n"
                "fix the dataset or rerun with --skip-bids-validation",
                errors.INVALID_BIDS,
            )

    try:
        from ptsd_bidsapp.bids.outputs import ensure_writable_dir

        ensure_writable_dir(args.output_dir, "output_dir")
        if args.analysis_level == "participant":
            ensure_writable_dir(args.work_dir, "work dir (-w)")
            from ptsd_bidsapp.workflows.participant import run_participant_level

            return run_participant_level(args, config)
        from ptsd_bidsapp.group.run import run_group

        run_group(
            bids_dir=args.bids_dir,
            output_dir=args.output_dir,
            config=config,
            seed=args.seed,
            n_jobs=args.nprocs,
            reports=not args.no_reports,
        )
        return errors.SUCCESS
    except InputError as err:
        return _fail(str(err), err.exit_code)
    except OSError as err:  # an output that cannot be written: permission, read-only FS, disk full
        logging.getLogger("ptsd_bidsapp").debug("operating-system error", exc_info=True)
        return _fail(describe_os_error(err), os_error_exit_code(err))


if __name__ == "__main__":
    sys.exit(main())
