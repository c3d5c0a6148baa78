"""Fault model, dataset and output-dir scope: damaged datasets and unwritable folders end with
the documented exit code and a message naming the file — never a traceback or a hang."""

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import pytest

from ptsd_bidsapp import errors as exitcodes
from ptsd_bidsapp.bids.inputs import InputError, collect_runs, make_layout, select_participants
from ptsd_bidsapp.cli.run import main
from ptsd_bidsapp.config import load_config
from tests.faults.conftest import copy_trial, fmriprep_func

CONFIG = load_config(None)


def _participant(bids: Path, tmp_path: Path, *extra: str) -> int:
    return main([str(bids), str(tmp_path / "out"), "participant", "-w", str(tmp_path / "work"),
                 "--skip-bids-validation", "--no-dcm", "--no-reports", "--nprocs", "1", *extra])


def test_invalid_json_bold_sidecar_exits_65_naming_it(tiny_trial, tmp_path, capsys):
    """A BOLD sidecar cut mid-object: exit 65 naming the file (was a pybids traceback)."""
    bids = copy_trial(tiny_trial, tmp_path / "bids")
    sidecar = next(fmriprep_func(bids, "02", "post").glob("*task-faces*desc-preproc_bold.json"))
    sidecar.write_text('{"RepetitionTime": 2.0, "SkullStripped": ')
    # the subject of the broken file (only the selected subjects are indexed: another subject's file is not read)
    code = _participant(bids, tmp_path, "--participant-label", "02")
    assert code == exitcodes.DATAERR
    err = capsys.readouterr().err
    assert sidecar.name in err and "invalid JSON" in err and "Traceback" not in err


def test_repetition_time_zero_in_sidecar_and_header_exits_65(tiny_trial, tmp_path):
    """RepetitionTime 0 in the JSON and the NIfTI header: a named DATAERR (was ZeroDivisionError)."""
    bids = copy_trial(tiny_trial, tmp_path / "bids")
    bold = next(fmriprep_func(bids).glob("*task-faces*desc-preproc_bold.nii.gz"))
    sidecar = Path(str(bold).replace(".nii.gz", ".json"))
    meta = json.loads(sidecar.read_text())
    meta["RepetitionTime"] = 0
    sidecar.write_text(json.dumps(meta))
    img = nib.load(str(bold))
    img.header.set_zooms(img.header.get_zooms()[:3] + (0.0,))
    nib.save(nib.Nifti1Image(img.get_fdata(dtype="float32"), img.affine, img.header), str(bold))
    layout = make_layout(bids, bids / "derivatives" / "fmriprep", tmp_path / "work")
    with pytest.raises(InputError) as err:
        collect_runs(layout, "01", ["pre"], CONFIG["tasks"], CONFIG["space"])
    assert err.value.exit_code == exitcodes.DATAERR
    assert "must be a positive number of seconds" in str(err.value) and sidecar.name in str(err.value)


def test_symlink_loop_in_bids_dir_is_refused_not_a_hang(tiny_trial, tmp_path):
    """sub-01/loop -> sub-01: exit 65 naming the link within the timeout (pybids walked it forever)."""
    bids = copy_trial(tiny_trial, tmp_path / "bids")
    os.symlink("..", bids / "sub-01" / "ses-pre" / "loop")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[2])] + sys.path))
    proc = subprocess.run([sys.executable, "-m", "ptsd_bidsapp", str(bids), str(tmp_path / "out"), "participant",
                           "-w", str(tmp_path / "work"), "--skip-bids-validation"],
                          capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == exitcodes.DATAERR, proc.stderr[-2000:]
    assert "symbolic link loop" in proc.stderr and "loop" in proc.stderr and "Traceback" not in proc.stderr


def test_rerun_sees_a_fixed_dataset(tiny_trial, tmp_path):
    """The pybids index in the work dir follows the dataset: a subject added (or a file restored)
    after a first run is found by the rerun (the stale index said 'not found', exit 18)."""
    bids = copy_trial(tiny_trial, tmp_path / "bids")
    moved = tmp_path / "sub-02-aside"
    (bids / "derivatives" / "fmriprep" / "sub-02").rename(moved)
    work = tmp_path / "work"
    layout = make_layout(bids, bids / "derivatives" / "fmriprep", work)
    assert select_participants(layout, None) == ["01"]
    moved.rename(bids / "derivatives" / "fmriprep" / "sub-02")
    layout = make_layout(bids, bids / "derivatives" / "fmriprep", work)
    assert select_participants(layout, ["02"]) == ["02"]
    events = bids / "sub-02" / "ses-pre" / "func" / "sub-02_ses-pre_task-faces_events.tsv"
    events.unlink()
    with pytest.raises(InputError, match="events file"):
        collect_runs(make_layout(bids, bids / "derivatives" / "fmriprep", work), "02", ["pre"], CONFIG["tasks"])
    events.write_bytes((tiny_trial / "sub-02" / "ses-pre" / "func" / events.name).read_bytes())  # restored
    runs = collect_runs(make_layout(bids, bids / "derivatives" / "fmriprep", work), "02", ["pre"], CONFIG["tasks"])
    assert len(runs) == 3
    assert len(list((work / "bids_db").iterdir())) == 1  # indexes of earlier states are removed


def test_output_dir_below_a_regular_file_exits_73(tiny_trial, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = main([str(tiny_trial), str(blocker / "out"), "participant", "-w", str(tmp_path / "work"),
                 "--skip-bids-validation"])
    assert code == exitcodes.CANTCREAT
    err = capsys.readouterr().err
    assert f"output_dir {blocker / 'out'} is not writable" in err and "regular file" in err


def test_read_only_file_system_exits_73(tiny_trial, tmp_path, monkeypatch, capsys):
    """OSError EROFS (a read-only mount) maps to 73 like PermissionError (was a traceback)."""
    import tempfile

    real = tempfile.mkstemp

    def read_only(*args, dir=None, **kwargs):
        if dir is not None and str(dir).startswith(str(tmp_path / "out")):
            raise OSError(errno.EROFS, "Read-only file system", str(dir))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    code = main([str(tiny_trial), str(tmp_path / "out"), "participant", "-w", str(tmp_path / "work"),
                 "--skip-bids-validation"])
    assert code == exitcodes.CANTCREAT
    assert "read-only" in capsys.readouterr().err
    assert exitcodes.os_error_exit_code(OSError(errno.EROFS, "x")) == exitcodes.CANTCREAT
    assert exitcodes.os_error_exit_code(OSError(errno.ENOSPC, "x")) == exitcodes.IOERR


def test_simulator_refuses_too_few_volumes_and_writes_every_condition(tmp_path, capsys):
    """The simulator refuses runs the app would refuse (was: --n-volumes 40 wrote conflict runs
    lacking a configured condition) and every conflict run it writes has all four conditions."""
    import numpy as np

    from ptsd_bidsapp.simulate import design
    from ptsd_bidsapp.simulate.cli import main as simulate_main

    assert simulate_main([str(tmp_path / "sim"), "--n-volumes", "30", "--quiet"]) == exitcodes.USAGE
    assert "--n-volumes must be >= 34" in capsys.readouterr().err
    for seed in range(200):
        table = design.conflict_events(40, 2.0, np.random.default_rng(seed))
        assert set(design.CONFLICT_CONDITIONS) <= set(table["trial_type"]), seed
