"""``ptsd-bidsapp-simulate OUT_DIR``: write the simulated trial."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from ptsd_bidsapp import __version__


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ptsd-bidsapp-simulate",
        description="Write a simulated ketamine/midazolam PTSD trial: BIDS raw dataset, fMRIPrep-like derivatives "
                    "(derivatives/fmriprep) and the planted ground truth (sourcedata/simulation/truth.json).",
    )
    parser.add_argument("out_dir", type=Path, help="output folder (must be empty or absent)")
    parser.add_argument("--n-subjects", type=_positive_int, default=21, help="number of patients (default 21)")
    parser.add_argument("--seed", type=int, default=20210701, help="random seed (default 20210701)")
    parser.add_argument("--resolution", type=_positive_float, default=4.0,
                        help="voxel size in mm of the MNI152NLin2009cAsym grid (default 4; 2 = res-2, 97x115x97)")
    parser.add_argument("--n-volumes", type=_positive_int, default=150, help="volumes per run (default 150)")
    parser.add_argument("--tr", type=_positive_float, default=2.0, help="repetition time in seconds (default 2)")
    parser.add_argument("--tasks", nargs="+", choices=("faces", "conflict", "rest"), metavar="TASK",
                        help="simulate only these tasks (faces, conflict, rest; default all three)")
    parser.add_argument("--force", action="store_true", help="replace an earlier simulation in OUT_DIR")
    parser.add_argument("--quiet", action="store_true", help="no progress messages")
    parser.add_argument("--version", action="version", version=f"ptsd_bidsapp {__version__}")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    from ptsd_bidsapp.simulate.trial import simulate_trial

    if args.n_subjects < 2:
        print("ptsd-bidsapp-simulate: error: --n-subjects must be >= 2 (both treatment arms)", file=sys.stderr)
        return 64
    from ptsd_bidsapp.simulate.trial import MIN_VOLUMES

    if args.n_volumes < MIN_VOLUMES:
        print(f"ptsd-bidsapp-simulate: error: --n-volumes must be >= {MIN_VOLUMES}: shorter runs are refused by "
              "ptsd_bidsapp (the band-pass filter of task-free connectivity needs them)", file=sys.stderr)
        return 64
    start = time.time()
    try:
        out = simulate_trial(args.out_dir, n_subjects=args.n_subjects, seed=args.seed, resolution=args.resolution,
                             n_volumes=args.n_volumes, tr=args.tr, force=args.force, progress=not args.quiet,
                             tasks=args.tasks)
    except FileExistsError as err:
        print(f"ptsd-bidsapp-simulate: error: {err}", file=sys.stderr)
        return 73  # EX_CANTCREAT
    except ValueError as err:  # a design the app would reject (e.g. a conflict run missing a condition)
        print(f"ptsd-bidsapp-simulate: error: {err}", file=sys.stderr)
        return 64
    if not args.quiet:
        logging.getLogger("ptsd_bidsapp.simulate").info("wrote %s in %.1f s", out, time.time() - start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
