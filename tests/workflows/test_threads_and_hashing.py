"""--omp-nthreads defaults, the BLAS/OpenMP limit inside a node, and how the run nodes hash their BOLD."""

import os
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from ptsd_bidsapp.atlas import atlas_files
from ptsd_bidsapp.config import RUN_SECTIONS, config_sections, load_config
from ptsd_bidsapp.workflows.cluster import default_omp_nthreads, limit_threads, thread_pools
from ptsd_bidsapp.workflows.participant import RunMeasures, file_stat_signature

CONFIG = load_config(None)


@pytest.mark.parametrize("plugin,nprocs,nodes,expected", [
    ("MultiProc", 2, 12, 1),       # two nodes at once on two CPUs: one thread each
    ("MultiProc", 8, 3, 2),        # three nodes can run at once: 8 // 3
    ("MultiProc", 8, 1, 8),        # a single node gets every CPU
    ("LegacyMultiProc", 4, 0, 4),  # nothing to run: no division by zero
    ("Linear", 4, 12, 4),          # one node at a time
    ("SLURM", 16, 12, 1),          # batch jobs ask for one CPU
])
def test_default_omp_nthreads_shares_the_cpus(plugin, nprocs, nodes, expected):
    assert default_omp_nthreads(plugin, nprocs, nodes) == expected


def test_limit_threads_sets_the_blas_pool_of_this_process():
    # numpy's BLAS is loaded: the limit must show in threadpoolctl's view, whatever the machine's default
    np.ones((4, 4)) @ np.ones((4, 4))
    for n in (1, 2):
        with limit_threads(n):
            assert thread_pools()["blas"] == n


def _run_node(bold: Path, run, tmp_path):
    dseg, labels = atlas_files(CONFIG["atlas"])
    info = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(run).items()}
    info["bold"] = str(bold)  # run_info names the BOLD too: nipype must not hash its content through it
    node = RunMeasures(bold=str(bold), mask=str(run.mask), confounds=str(run.confounds), atlas_dseg=str(dseg),
                       atlas_labels=str(labels), run_info=info, config=config_sections(CONFIG, RUN_SECTIONS),
                       bold_stat=file_stat_signature(bold))
    return node.inputs.get_hashval(hash_method="content")[1]


def test_bold_is_hashed_by_size_and_time_not_content(trial, tmp_path):
    from ptsd_bidsapp.bids.inputs import collect_runs, make_layout

    layout = make_layout(trial, trial / "derivatives" / "fmriprep", tmp_path / "work", participants=["01"])
    run = collect_runs(layout, "01", ["pre"], CONFIG["tasks"], CONFIG["space"])[0]
    bold = tmp_path / run.bold.name
    shutil.copy2(run.bold, bold)
    first = _run_node(bold, run, tmp_path)
    assert _run_node(bold, run, tmp_path) == first
    stat = bold.stat()
    # same size and time, other bytes: not noticed (the documented trade-off; the content is not read)
    raw = bytearray(bold.read_bytes())
    raw[-1] ^= 0xFF
    bold.write_bytes(bytes(raw))
    os.utime(bold, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert _run_node(bold, run, tmp_path) == first
    # a new modification time (a rewritten or touched file): a new hash, the node recomputes
    os.utime(bold, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert _run_node(bold, run, tmp_path) != first
    # a different size
    bold.write_bytes(bytes(raw) + b"\0")
    os.utime(bold, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert _run_node(bold, run, tmp_path) != first


def test_low_mem_and_thread_count_are_not_part_of_the_hash(tmp_path):
    bold = tmp_path / "bold.nii.gz"
    bold.write_bytes(b"x")
    common = {"bold": str(bold), "mask": str(bold), "confounds": str(bold), "atlas_dseg": str(bold),
              "atlas_labels": str(bold), "run_info": {"subject": "01"}, "config": {}, "bold_stat": "1:1"}
    hashes = {RunMeasures(**common, low_mem=low, omp_nthreads=n).inputs.get_hashval("content")[1]
              for low in (False, True) for n in (1, 4)}
    assert len(hashes) == 1
    assert RunMeasures(**dict(common, bold_stat="1:2")).inputs.get_hashval("content")[1] not in hashes
