#!/usr/bin/env python
"""Benchmark: the whole test suite of this tree against a baseline commit's suite, in one run.

Both suites run the README's test command (``python -m pytest -n 2 --dist loadfile -q tests``) in
alternation (baseline, this tree, baseline, this tree, ...), each from its own tree with
``PYTHONPATH`` pointing at it (same virtual environment), so that a busy machine slows both alike;
the table gives the median wall time and CPU time (user + system of every process) of each and
their ratios. The default baseline, 8c7fce7, is main when the issue "Tests that pin every
convention" measured "≈ 7 min on 2 cores" (209 tests).

The SLURM tests of this tree run only with a cluster up (``ci/slurm-cluster.sh start``, as CI does);
the table says whether ``sinfo`` found one. Usage::

    python benchmarks/suite.py [--baseline 8c7fce7] [--repeats 2] [--root DIR]

Prints the table and appends it to ``benchmarks/results/suite.txt`` (``--output``).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from participant import REPO, baseline_tree, describe, imported_from, median, timed  # noqa: E402

SUITE = ["-m", "pytest", "-n", "2", "--dist", "loadfile", "-q", "-p", "no:cacheprovider", "tests"]


def slurm_state() -> str:
    """``sinfo``'s node state, or why there is no cluster (the SLURM tests skip without one)."""
    if shutil.which("sinfo") is None:
        return "no sinfo (SLURM tests skip)"
    proc = subprocess.run(["sinfo", "--noheader", "--format=%T"], capture_output=True, text=True, check=False)
    return f"sinfo: {proc.stdout.split()[0] if proc.stdout.split() else 'no node'}"


def outcome(result: dict) -> str:
    """pytest's last line (``N passed ... in S s``)."""
    lines = [line for line in result["out"].splitlines() if re.search(r"\d+ (passed|failed)", line)]
    return lines[-1].strip("= ") if lines else "(no pytest summary)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default="8c7fce7", help="commit whose suite is the reference (default 8c7fce7)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each suite, alternating (default 2)")
    parser.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "ptsd_bidsapp_bench_suite",
                        help="where the baseline worktree goes (kept for reruns)")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "suite.txt")
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    trees = {"baseline": baseline_tree(args.root, args.baseline), "this tree": REPO}
    for name, tree in trees.items():
        if imported_from(tree) != tree.resolve():
            raise SystemExit(f"{name}: python run from {tree} imports ptsd_bidsapp from {imported_from(tree)}")
    lines = [f"# {describe(REPO)}  vs  baseline {describe(trees['baseline'])}; {slurm_state()}",
             f"# {sys.executable} {' '.join(SUITE)}, {args.repeats} run(s) each, alternating"]
    print("\n".join(lines), flush=True)
    results: dict[str, list[dict]] = {name: [] for name in trees}
    for repeat in range(args.repeats):
        for name, tree in trees.items():
            result = timed([sys.executable, *SUITE], tree)
            results[name].append(result)
            line = f"  run {repeat + 1} {name:<9}: wall {result['wall']:7.1f} s  CPU {result['cpu']:7.1f} s  ({outcome(result)})"
            lines.append(line)
            print(line, flush=True)
    base, ours = results["baseline"], results["this tree"]
    for key, label in (("wall", "wall"), ("cpu", "CPU")):
        b, o = median(base, key), median(ours, key)
        lines.append(f"median {label:<4}: baseline {b:7.1f} s  this tree {o:7.1f} s  this tree / baseline {o / b:.2f}")
    print("\n".join(lines[-2:]))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with args.output.open("a") as handle:
        handle.write("\n".join(lines) + "\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
