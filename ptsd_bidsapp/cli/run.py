"""Entry point: parse, validate, dispatch to the participant or group level.

Nothing else lives here: the participant level is
:func:`ptsd_bidsapp.workflows.participant.run_participant_level`, the group level
:func:`ptsd_bidsapp.group.run.run_group`.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

from ptsd_bidsapp.cli import exitcodes
from ptsd_bidsapp.cli.parser import UsageError, parse_args

LOGGER = logging.getLogger("ptsd_bidsapp")


def _fail(message: str, code: int) -> int:
    print(f"ptsd_bidsapp: error: {message}", file=sys.stderr)
    return code


def validate_bids(bids_dir: Path, subjects: list[str] | None = None) -> list[str]:
    """Run the BIDS validator (``bids-validator-deno``) on ``bids_dir``; return its error codes.

    Returns an empty list when the dataset is valid. If no validator is installed a
    warning is logged and validation is skipped (use ``--skip-bids-validation`` to silence it).
    """
    import json

    exe = shutil.which("bids-validator-deno") or shutil.which("bids-validator")
    if exe is None:
        LOGGER.warning("no BIDS validator found on PATH; skipping validation of %s", bids_dir)
        return []
    proc = subprocess.run([exe, str(bids_dir), "--json"], capture_output=True, text=True, check=False)
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        LOGGER.warning("could not parse the BIDS validator output; skipping validation")
        return []
    issues = report.get("issues", {}).get("issues", [])
    errors = []
    for issue in issues:
        if issue.get("severity") != "error":
            continue
        location = issue.get("location", "")
        if subjects and location.startswith("/sub-") and location.split("/")[1][4:] not in subjects:
            continue
        errors.append(f"{issue.get('code')}: {location}")
    return errors


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
        return _fail(str(err), exitcodes.USAGE)
    if args.no_dcm:
        config["dcm"]["enabled"] = False
    if args.print_config:
        print(dump_config(config), end="")
        return exitcodes.SUCCESS

    if not args.bids_dir.is_dir():
        return _fail(f"bids_dir {args.bids_dir} does not exist", exitcodes.NOINPUT)
    if not args.skip_bids_validation:
        errors = validate_bids(args.bids_dir, args.participant_label)
        if errors:
            shown = "\n  - ".join(errors[:20])
            return _fail(
                f"{args.bids_dir} failed BIDS validation ({len(errors)} error(s)):\n  - {shown}\n"
                "fix the dataset or rerun with --skip-bids-validation",
                exitcodes.INVALID_BIDS,
            )

    from ptsd_bidsapp.bids.inputs import InputError

    try:
        if args.analysis_level == "participant":
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
        return exitcodes.SUCCESS
    except InputError as err:
        return _fail(str(err), err.exit_code)
    except PermissionError as err:
        return _fail(f"cannot write {err.filename}: permission denied", exitcodes.CANTCREAT)


if __name__ == "__main__":
    sys.exit(main())
