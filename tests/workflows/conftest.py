"""A small simulated trial and one finished participant-level run, shared by the workflow tests."""

import hashlib
import os
import stat
from pathlib import Path

import pandas as pd
import pytest

from ptsd_bidsapp.cli.run import main
from ptsd_bidsapp.simulate import simulate_trial

SMALL = {"n_subjects": 4, "seed": 11, "resolution": 8.0, "n_volumes": 80}
SESSIONS = ("pre", "post")


def features_table(out: Path, sub: str, ses: str) -> pd.DataFrame:
    """The one features table of ``sub``/``ses`` in the output dataset ``out`` (``n/a`` read as missing)."""
    files = list((out / f"sub-{sub}" / f"ses-{ses}").glob("*_desc-measures_features.tsv"))
    assert len(files) == 1, files
    return pd.read_csv(files[0], sep="\t", na_values="n/a")


def tree_digest(root: Path, skip=(".ptsd_bidsapp.lock",)) -> dict[str, str]:
    """{relative path: sha256} of every file under ``root``, but the run logs (``logs/<level>-<timestamp>.log``:
    one per invocation, named by its start time)."""
    out = {}
    for path in sorted(Path(root).rglob("*")):
        run_log = path.parent.name == "logs" and path.suffix == ".log"
        if path.is_file() and path.name not in skip and not run_log:
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def set_read_only(root: Path, read_only: bool) -> None:
    for path in [Path(root), *Path(root).rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        if read_only:
            os.chmod(path, mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        else:
            os.chmod(path, mode | stat.S_IWUSR)


@pytest.fixture(scope="session")
def trial(tmp_path_factory):
    return simulate_trial(tmp_path_factory.mktemp("wfsim") / "bids", **SMALL)


@pytest.fixture(scope="session")
def participant_run(trial, tmp_path_factory):
    """The participant level on the read-only simulated trial: (bids, out, work, exit code, input digest before)."""
    from threadpoolctl import threadpool_limits

    base = tmp_path_factory.mktemp("wfout")
    before = tree_digest(trial)
    set_read_only(trial, True)
    # tests/conftest.py limits this process to one BLAS thread, and the MultiProc workers forked from it
    # would inherit that: two here, so that one thread per worker (test_omp_nthreads_...) is the app's doing
    limit = threadpool_limits(limits=2)
    try:
        code = main([str(trial), str(base / "out"), "participant", "-w", str(base / "work"), "--nprocs", "2",
                     "--skip-bids-validation", "--seed", "3"])
    finally:
        limit.restore_original_limits()
        set_read_only(trial, False)
    return {"bids": trial, "out": base / "out", "work": base / "work", "code": code, "before": before}
