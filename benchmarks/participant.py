#!/usr/bin/env python
"""Benchmark: participant level on one realistic-size simulated subject.

Realistic size: 2 mm MNI152NLin2009cAsym grid (97 x 115 x 97), 2 sessions x 3 tasks,
>= 200 volumes per run. Prints, in the same run:

* the I/O floor: reading + decompressing every BOLD file of the subject with nibabel
  (float32), wall time and peak RSS, in a fresh process;
* the participant level (``ptsd_bidsapp ... participant``, Linear plugin, fresh work dir):
  wall time and peak RSS (largest single process);
* ratios pipeline / I/O floor, and peak RSS / one run's float32 size.

Timings are medians over ``--repeats`` runs (machines are noisy). Usage::

    python benchmarks/participant.py [--volumes 200] [--repeats 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IO_FLOOR = r"""
import json, resource, sys, time
import nibabel as nib, numpy as np
paths = sys.argv[1:]
start = time.perf_counter()
total = 0.0
for p in paths:
    data = np.asarray(nib.load(p).dataobj, dtype=np.float32)
    total += float(data[..., 0].sum())
    del data
wall = time.perf_counter() - start
print(json.dumps({"wall_s": wall, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_timed(cmd: list[str]) -> tuple[float, float, str]:
    """Run ``cmd``; return (wall seconds, peak RSS of the largest child in MB, stdout)."""
    wrapper = (
        "import resource, subprocess, sys, time, json;"
        "t=time.perf_counter(); p=subprocess.run(sys.argv[1:], capture_output=True, text=True);"
        "w=time.perf_counter()-t;"
        "print(json.dumps({'wall': w, 'rss': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024,"
        " 'rc': p.returncode, 'out': p.stdout[-2000:], 'err': p.stderr[-4000:]}))"
    )
    proc = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result['rc']}):\n{result['err']}")
    return result["wall"], result["rss"], result["out"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--volumes", type=int, default=200)
    parser.add_argument("--resolution", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="keep the simulated dataset here")
    opts = parser.parse_args()

    root = opts.keep or Path(tempfile.mkdtemp(prefix="ptsd_bench_"))
    bids = root / "bids"
    exe = Path(sys.executable).parent
    if not bids.exists():
        t0 = time.perf_counter()
        subprocess.run([str(exe / "ptsd-bidsapp-simulate"), str(bids), "--n-subjects", "2", "--seed", "1",
                        "--resolution", str(opts.resolution), "--n-volumes", str(opts.volumes), "--force"], check=True)
        print(f"simulated 2 subjects (the simulator needs both arms; sub-01 is benchmarked) at {opts.resolution} mm, {opts.volumes} volumes/run in {time.perf_counter() - t0:.1f} s")
    bolds = sorted(str(p) for p in (bids / "derivatives" / "fmriprep" / "sub-01").rglob("*_desc-preproc_bold.nii.gz"))
    import nibabel as nib

    shape = nib.load(bolds[0]).shape
    run_mb = 4 * float(__import__("numpy").prod(shape)) / 2**20
    print(f"{len(bolds)} BOLD runs, shape {shape}, one run as float32 = {run_mb:.0f} MB")

    io_walls, io_rss = [], []
    for _ in range(opts.repeats):
        proc = subprocess.run([sys.executable, "-c", IO_FLOOR, *bolds], capture_output=True, text=True, check=True)
        res = json.loads(proc.stdout)
        io_walls.append(res["wall_s"])
        io_rss.append(res["peak_rss_mb"])

    pipe_walls, pipe_rss = [], []
    for i in range(opts.repeats):
        out, work = root / f"out{i}", root / f"work{i}"
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
        wall, rss, _ = run_timed([str(exe / "ptsd_bidsapp"), str(bids), str(out), "participant", "-w", str(work),
                                  "--participant-label", "01", "--plugin", "Linear", "--nprocs", "1",
                                  "--skip-bids-validation", "--no-reports"])
        pipe_walls.append(wall)
        pipe_rss.append(rss)

    io_wall, pipe_wall = statistics.median(io_walls), statistics.median(pipe_walls)
    print()
    print(f"{'measurement':<44}{'median':>12}{'all runs':>30}")
    print(f"{'I/O floor: read+decompress all BOLD (s)':<44}{io_wall:>12.2f}{str([round(x, 2) for x in io_walls]):>30}")
    print(f"{'I/O floor peak RSS (MB)':<44}{statistics.median(io_rss):>12.0f}")
    print(f"{'participant level wall time (s)':<44}{pipe_wall:>12.2f}{str([round(x, 2) for x in pipe_walls]):>30}")
    print(f"{'participant level peak RSS, max process (MB)':<44}{statistics.median(pipe_rss):>12.0f}")
    print(f"{'ratio wall time pipeline / I/O floor':<44}{pipe_wall / io_wall:>12.2f}")
    print(f"{'ratio peak RSS / one run float32':<44}{statistics.median(pipe_rss) / run_mb:>12.2f}")
    if opts.keep is None:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
