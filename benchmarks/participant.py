#!/usr/bin/env python
"""Benchmark: the participant level against the gunzip floor and against a baseline commit, in one run.

Two comparisons, every timing a median over ``--repeats`` runs taken in alternation (A, B, A, B, ...)
so that a busy machine slows both sides alike:

1. **One 2 mm subject** (97 x 115 x 97 grid, 2 sessions x 3 tasks = 6 runs of ``--volumes`` volumes;
   simulated with ``ptsd-bidsapp-simulate --resolution 2``): the participant level of this tree
   (``--plugin Linear --nprocs 1 --no-reports``, fresh work dir) and of the baseline tree, against the
   *gunzip floor*: ``gzip.decompress`` (zlib) of the subject's six BOLD files in a fresh process. Wall
   time, CPU time (user + system of every process) and peak RSS (largest single process).
2. **The demo participant level** (``--demo-subjects`` subjects of the default simulated trial,
   4 mm, 150 volumes; reports on) at ``--nprocs 2`` (MultiProc): this tree vs the baseline tree.

The baseline is a detached ``git worktree`` of ``--baseline`` (default ``main``) under the work folder,
run with ``PYTHONPATH`` pointing at it (same virtual environment). Usage::

    python benchmarks/participant.py [--volumes 200] [--repeats 3] [--demo-subjects 21] [--root DIR]
    python benchmarks/participant.py --repeats 0 --demo-repeats 1 --baseline ebe6b59   # the demo comparison only

Prints a table and writes it to ``benchmarks/results/participant.txt`` (``--output``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

GUNZIP_FLOOR = r"""
import gzip, json, sys, time
start = time.perf_counter(); cpu = time.process_time()
size = 0
for path in sys.argv[1:]:
    with open(path, "rb") as f:
        size += len(gzip.decompress(f.read()))
print(json.dumps({"wall": time.perf_counter() - start, "cpu": time.process_time() - cpu, "bytes": size}))
"""

TIMED = r"""
import json, os, resource, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
wall = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024,
                  "rc": proc.returncode, "err": proc.stderr[-3000:], "out": proc.stdout[-1500:]}))
"""


def imported_from(tree: Path) -> Path:
    """Where ``python -m ptsd_bidsapp`` run as :func:`timed` runs it imports the package from."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    proc = subprocess.run([sys.executable, "-c", "import ptsd_bidsapp; print(ptsd_bidsapp.__file__)"], cwd=str(tree),
                          env=env, capture_output=True, text=True, check=True)
    return Path(proc.stdout.strip()).resolve().parents[1]


def timed(cmd: list[str], pythonpath: Path) -> dict:
    """Run ``cmd`` in a fresh process with ``PYTHONPATH=pythonpath``: wall s, CPU s (all descendants), peak RSS MB."""
    env = dict(os.environ, PYTHONPATH=str(pythonpath))
    # run from the tree: `python -m` puts the working directory first on sys.path, before PYTHONPATH,
    # so started from another checkout it would import that checkout's package instead
    proc = subprocess.run([sys.executable, "-c", TIMED, *cmd], capture_output=True, text=True, check=True, env=env,
                          cwd=str(pythonpath))
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result['rc']}):\n{result['err']}\n{result['out']}")
    return result


def participant_cmd(tree: Path, bids: Path, out: Path, work: Path, extra: list[str]) -> list[str]:
    for folder in (out, work):
        shutil.rmtree(folder, ignore_errors=True)
    return [sys.executable, "-m", "ptsd_bidsapp", str(bids), str(out), "participant", "-w", str(work),
            "--skip-bids-validation", *extra]


def simulate(tree: Path, out: Path, args: list[str]) -> None:
    if (out / "dataset_description.json").is_file():
        return
    env = dict(os.environ, PYTHONPATH=str(tree))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ptsd_bidsapp.simulate.cli", str(out), "--force", "--quiet", *args],
                   check=True, env=env, cwd=str(tree))
    print(f"simulated {out.name} ({' '.join(args)}) in {time.perf_counter() - start:.0f} s", flush=True)


def baseline_tree(root: Path, ref: str) -> Path:
    tree = root / f"baseline-{ref.replace('/', '_')}"
    if not (tree / "ptsd_bidsapp").is_dir():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), ref], check=True,
                       capture_output=True)
    return tree


def describe(tree: Path) -> str:
    proc = subprocess.run(["git", "-C", str(tree), "log", "-1", "--format=%h %s"], capture_output=True, text=True)
    return proc.stdout.strip()[:90]


def median(results: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in results)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--volumes", type=int, default=200, help="volumes per run of the 2 mm subject")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the 2 mm subject (0: skip it)")
    parser.add_argument("--demo-subjects", type=int, default=21, help="subjects of the demo comparison (0: skip)")
    parser.add_argument("--demo-repeats", type=int, default=None, help="repeats of the demo comparison")
    parser.add_argument("--baseline", default="main", help="git ref of the baseline tree")
    parser.add_argument("--root", type=Path, default=Path("/tmp/ptsd_bench_participant"),
                        help="datasets, work folders and the baseline worktree (kept for reruns)")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "participant.txt")
    opts = parser.parse_args()
    root = opts.root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    base = baseline_tree(root, opts.baseline)
    say(f"this tree: {describe(REPO)}")
    say(f"baseline ({opts.baseline}): {describe(base)}")
    say(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average at start {os.getloadavg()[0]:.1f}")
    for tree in (REPO, base):  # each side runs its own code (see timed)
        if imported_from(tree) != tree.resolve():
            raise SystemExit(f"python -m ptsd_bidsapp run from {tree} imports {imported_from(tree)}")

    # 1. one 2 mm subject vs the gunzip floor and vs the baseline
    if opts.repeats:  # 0: the demo comparison only
        bids = root / f"bids_2mm_{opts.volumes}"
        simulate(REPO, bids, ["--n-subjects", "2", "--seed", "1", "--resolution", "2", "--n-volumes", str(opts.volumes)])
        bolds = sorted(str(p) for p in (bids / "derivatives" / "fmriprep" / "sub-01").rglob("*_desc-preproc_bold.nii.gz"))
        import nibabel as nib

        shape = nib.load(bolds[0]).shape
        say(f"2 mm subject sub-01: {len(bolds)} BOLD runs of shape {shape}; "
            f"{sum(os.path.getsize(b) for b in bolds) / 2**20:.0f} MB gzip on disk")
        single = ["--participant-label", "01", "--plugin", "Linear", "--nprocs", "1", "--no-reports"]
        floor, new, old, low = [], [], [], []
        for i in range(opts.repeats):
            proc = subprocess.run([sys.executable, "-c", GUNZIP_FLOOR, *bolds], capture_output=True, text=True,
                                  check=True)
            floor.append(json.loads(proc.stdout))
            new.append(timed(participant_cmd(REPO, bids, root / "out_new", root / "work_new", single), REPO))
            old.append(timed(participant_cmd(base, bids, root / "out_old", root / "work_old", single), base))
            low.append(timed(participant_cmd(REPO, bids, root / "out_low", root / "work_low", [*single, "--low-mem"]),
                             REPO))
            say(f"  repeat {i + 1}: floor {floor[-1]['wall']:.1f} s, this tree {new[-1]['wall']:.1f} s, "
                f"--low-mem {low[-1]['wall']:.1f} s, baseline {old[-1]['wall']:.1f} s "
                f"(load {os.getloadavg()[0]:.1f})")
        say()
        title = f"one 2 mm subject (6 runs), medians of {opts.repeats}"
        say(f"{title:<52}{'wall s':>9}{'CPU s':>9}{'peak RSS MB':>13}")
        floor_label = "gunzip floor (gzip.decompress of the 6 BOLD)"
        say(f"{floor_label:<52}{median(floor, 'wall'):>9.1f}{median(floor, 'cpu'):>9.1f}")
        for label, res in (("participant level, this tree", new), ("participant level, this tree, --low-mem", low),
                           ("participant level, baseline", old)):
            say(f"{label:<52}{median(res, 'wall'):>9.1f}{median(res, 'cpu'):>9.1f}{median(res, 'rss_mb'):>13.0f}")
        for label, res in (("this tree", new), ("this tree --low-mem", low), ("baseline", old)):
            say(f"ratio {label} / gunzip floor: wall {median(res, 'wall') / median(floor, 'wall'):.2f}, "
                f"CPU {median(res, 'cpu') / median(floor, 'cpu'):.2f}")
        say(f"speed-up this tree vs baseline: wall {median(old, 'wall') / median(new, 'wall'):.2f}x, "
            f"CPU {median(old, 'cpu') / median(new, 'cpu'):.2f}x; peak RSS {median(new, 'rss_mb'):.0f} MB "
            f"vs {median(old, 'rss_mb'):.0f} MB")

    # 2. the demo participant level at --nprocs 2
    if opts.demo_subjects:
        demo = root / f"bids_demo_{opts.demo_subjects}"
        simulate(REPO, demo, ["--n-subjects", str(opts.demo_subjects)])
        repeats = opts.demo_repeats or opts.repeats
        multi = ["--nprocs", "2"]
        new_demo, old_demo = [], []
        for i in range(repeats):
            new_demo.append(timed(participant_cmd(REPO, demo, root / "demo_new", root / "demo_work_new", multi),
                                  REPO))
            old_demo.append(timed(participant_cmd(base, demo, root / "demo_old", root / "demo_work_old", multi),
                                  base))
            say(f"  demo repeat {i + 1}: this tree {new_demo[-1]['wall']:.1f} s, baseline {old_demo[-1]['wall']:.1f} s"
                f" (load {os.getloadavg()[0]:.1f})")
        say()
        say(f"{'demo participant level, ' + str(opts.demo_subjects) + ' subjects, --nprocs 2':<52}"
            f"{'wall s':>9}{'CPU s':>9}{'peak RSS MB':>13}")
        for label, res in (("this tree", new_demo), ("baseline", old_demo)):
            say(f"{label:<52}{median(res, 'wall'):>9.1f}{median(res, 'cpu'):>9.1f}{median(res, 'rss_mb'):>13.0f}")
        say(f"speed-up this tree vs baseline: wall {median(old_demo, 'wall') / median(new_demo, 'wall'):.2f}x, "
            f"CPU {median(old_demo, 'cpu') / median(new_demo, 'cpu'):.2f}x")
    opts.output.parent.mkdir(parents=True, exist_ok=True)
    opts.output.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
