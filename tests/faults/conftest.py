"""Fixtures of the fault-model tests (docs/fault_model.md): one tiny simulated trial per
test process, copied before any test damages it, and helpers to run one BOLD run directly.

Each test damages one input the way a user's dataset can be damaged and checks the
documented handling (exit code and message, or a warned ``n/a``) — and would fail if the
handling regressed to the old behaviour (a traceback, a silent number, a hang, a success).
"""

import shutil
from dataclasses import asdict
from pathlib import Path

import pytest

from ptsd_bidsapp.config import load_config
from ptsd_bidsapp.simulate import simulate_trial

#: 2 subjects (both arms), 10 mm voxels, 40 volumes (>= the app's minimum of 34): a few seconds.
TINY = {"n_subjects": 2, "seed": 7, "resolution": 10.0, "n_volumes": 40}


@pytest.fixture(scope="session")
def tiny_trial(tmp_path_factory):
    """Pristine tiny trial: never modify it, copy it with :func:`copy_trial`."""
    return simulate_trial(tmp_path_factory.mktemp("faultsim") / "bids", **TINY)


def copy_trial(trial: Path, dest: Path) -> Path:
    shutil.copytree(trial, dest, symlinks=True)
    return dest


def fmriprep_func(bids: Path, sub: str = "01", ses: str = "pre") -> Path:
    return bids / "derivatives" / "fmriprep" / f"sub-{sub}" / f"ses-{ses}" / "func"


def run_inputs(bids: Path, work: Path, task: str, sub: str = "01", ses: str = "pre", config=None):
    """The collected :class:`RunInputs` of one run and its ``run_info`` dict (as the node gets it)."""
    from ptsd_bidsapp.bids.inputs import collect_runs, make_layout

    config = config or load_config(None)
    layout = make_layout(bids, bids / "derivatives" / "fmriprep", work)
    run = [r for r in collect_runs(layout, sub, [ses], config["tasks"], config["space"]) if r.task == task][0]
    info = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(run).items()}
    return run, info


def compute_run(run, info, out: Path, config=None, **replace) -> dict:
    """:func:`compute_run_measures` on one run (files may be swapped with ``replace``)."""
    from ptsd_bidsapp.atlas import atlas_files
    from ptsd_bidsapp.workflows.run_measures import compute_run_measures

    config = config or load_config(None)
    dseg, labels = atlas_files(config["atlas"])
    files = {"bold": run.bold, "mask": run.mask, "confounds": run.confounds, "events": run.events}
    files.update(replace)
    return compute_run_measures(info, files["bold"], files["mask"], files["confounds"], files["events"], dseg,
                                labels, config)
