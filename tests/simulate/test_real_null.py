"""The null trial from real signals: layout the app discovers, real series, nothing planted, determinism."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

pytest.importorskip("nitime", reason="the real ROI series ship in nitime (test extra)")

from ptsd_bidsapp.atlas import ROI_LABELS, load_atlas, resample_atlas_to  # noqa: E402
from ptsd_bidsapp.simulate import real_null  # noqa: E402

SMALL = {"n_subjects": 4, "seed": 5, "resolution": 8.0, "n_volumes": 80}
SPACE = "space-MNI152NLin2009cAsym"
TASKS = ("faces", "conflict", "rest")
SESSIONS = ("pre", "post")


@pytest.fixture(scope="module")
def null_trial(tmp_path_factory):
    return real_null.build_null_trial(tmp_path_factory.mktemp("realnull") / "bids", **SMALL)


def _func(root, sub, ses):
    return Path(root) / "derivatives" / "fmriprep" / f"sub-{sub}" / f"ses-{ses}" / "func"


def _truth(root):
    return json.loads((Path(root) / "sourcedata" / "simulation" / "truth.json").read_text())


def test_sources_are_the_packaged_real_recordings():
    rois, nuisance = real_null.load_roi_source()
    assert rois.shape == (250, 28) and list(nuisance.columns) == ["WM", "Vent", "Brain"]
    # real BOLD: strongly autocorrelated, not white noise
    lag1 = [np.corrcoef(c[:-1], c[1:])[0, 1] for c in rois.to_numpy().T]
    assert np.median(lag1) > 0.5
    confounds = real_null.load_confound_source()
    assert len(confounds) == 29 and {"trans_x", "rot_z", "framewise_displacement", "std_dvars"} <= set(confounds)
    assert confounds["framewise_displacement"].mean() < 0.5  # passes the app's motion QC


def test_layout_is_what_the_app_discovers(null_trial, tmp_path):
    from ptsd_bidsapp.bids.inputs import collect_runs, make_layout, read_arms, read_clinical, select_participants
    from ptsd_bidsapp.config import load_default_config

    config = load_default_config()
    layout = make_layout(null_trial, Path(null_trial) / "derivatives" / "fmriprep", tmp_path)
    subjects = select_participants(layout, None)
    assert subjects == ["1", "2", "3", "4"] or subjects == ["01", "02", "03", "04"]
    for sub in subjects:
        runs = collect_runs(layout, sub, list(SESSIONS), config["tasks"])
        assert len(runs) == 6
    arms = read_arms(Path(null_trial))
    assert sorted(arms.value_counts().to_dict().items()) == [("ketamine", 2), ("midazolam", 2)]
    clinical = read_clinical(Path(null_trial), config["clinical"])
    assert len(clinical) > 0


def test_confounds_load_with_the_app_strategies(null_trial):
    from ptsd_bidsapp.config import load_default_config
    from ptsd_bidsapp.measures.confounds import load_run_confounds

    config = load_default_config()
    for task in TASKS:
        bold = _func(null_trial, "01", "pre") / f"sub-01_ses-pre_task-{task}_{SPACE}_desc-preproc_bold.nii.gz"
        strategy = config["denoising"][config["tasks"][task]["denoising"]]
        table, _ = load_run_confounds(bold, strategy)
        assert len(table) == SMALL["n_volumes"] and table.shape[1] >= 12
        assert np.isfinite(table.to_numpy()).all()


def test_motion_and_fd_are_the_real_table_tiled(null_trial):
    source = real_null.load_confound_source()
    table = pd.read_csv(_func(null_trial, "02", "post") / "sub-02_ses-post_task-faces_desc-confounds_timeseries.tsv",
                        sep="\t", na_values="n/a")
    real = set(np.round(source["trans_x"].to_numpy(), 9))
    assert set(np.round(table["trans_x"].to_numpy(), 5)) <= {round(v, 5) for v in real}
    src_fd = np.sort(source["framewise_displacement"].dropna().to_numpy())
    fd = table["framewise_displacement"].dropna().to_numpy()
    # every frame-to-frame displacement is one of the real table's, recomputed with Power's formula from
    # the table's (rounded) parameters: equal to fMRIPrep's value within 0.005 mm
    assert np.all(np.min(np.abs(fd[:, None] - src_fd[None, :]), axis=1) < 5e-3)
    assert {"cosine_00", "csf", "white_matter", "global_signal", "rot_z_derivative1_power2"} <= set(table)


def test_roi_means_are_the_real_series(null_trial):
    truth = _truth(null_trial)
    rois, _ = real_null.load_roi_source()
    scale = truth["roi_source"]["scale_to_psc"]
    bold = _func(null_trial, "03", "pre") / f"sub-03_ses-pre_task-conflict_{SPACE}_desc-preproc_bold.nii.gz"
    img = nib.load(bold)
    data = np.asanyarray(img.dataobj, dtype=np.float32)
    atlas = resample_atlas_to(img, load_atlas()).data()
    run = truth["subjects"]["sub-03"]["runs"]["ses-pre_task-conflict"]
    n, tr = SMALL["n_volumes"], truth["tr"]
    for k, name in enumerate(ROI_LABELS, start=1):
        sel = atlas == k
        if sel.sum() < 3:
            continue
        mean = data[sel].mean(axis=0)
        psc = 100.0 * (mean / mean.mean() - 1.0)
        source = rois[run["source_rois"][name]].to_numpy() * scale
        # the real series at the run's scan times, by numpy's linear interpolation (not the module's
        # spline): the window lies inside the 250-volume recording, so no mirroring is involved
        times = run["window_start_s"] + np.arange(n) * tr
        source_times = np.arange(source.size) * real_null.ROI_SOURCE["tr"]
        assert times[0] >= 0 and times[-1] <= source_times[-1]
        expected = np.interp(times, source_times, source)
        expected -= expected.mean()
        r = np.corrcoef(psc, expected)[0, 1]
        assert r > 0.97, (name, r)
        # nothing else in it: residual = voxel noise averaged over the ROI (+ int16 rounding)
        resid = psc - expected
        assert resid.std() < 0.35 * expected.std() + 0.1, (name, resid.std(), expected.std())


def test_nothing_planted(null_trial):
    truth = _truth(null_trial)
    assert truth["null"] is True and truth["effects"] == {}
    # the region -> source ROI draws ignore arm and session: each run draws six distinct real ROIs
    for sub in truth["subjects"].values():
        for run in sub["runs"].values():
            assert len(set(run["source_rois"].values())) == len(ROI_LABELS)
    # events exist with the simulator's structure
    events = pd.read_csv(Path(null_trial) / "sub-01" / "ses-pre" / "func" / "sub-01_ses-pre_task-faces_events.tsv",
                         sep="\t")
    assert set(events["trial_type"]) == {"fearful", "neutral"}


def test_deterministic_for_a_seed(null_trial, tmp_path):
    kwargs = dict(SMALL, n_subjects=4)
    again = real_null.build_null_trial(tmp_path / "again", **kwargs)
    other = real_null.build_null_trial(tmp_path / "other", **dict(kwargs, seed=SMALL["seed"] + 1))
    rel = [
        "participants.tsv",
        "sub-02/sub-02_sessions.tsv",
        "sub-02/ses-post/func/sub-02_ses-post_task-conflict_events.tsv",
        f"derivatives/fmriprep/sub-02/ses-post/func/sub-02_ses-post_task-rest_{SPACE}_desc-preproc_bold.nii.gz",
        "derivatives/fmriprep/sub-02/ses-post/func/sub-02_ses-post_task-rest_desc-confounds_timeseries.tsv",
    ]
    for name in rel:
        assert (Path(null_trial) / name).read_bytes() == (again / name).read_bytes(), name
    assert any((Path(null_trial) / name).read_bytes() != (other / name).read_bytes() for name in rel[2:])


def test_refuses_to_overwrite_foreign_folder(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        real_null.build_null_trial(tmp_path / "x", **SMALL)
    with pytest.raises(FileExistsError):
        real_null.build_null_trial(tmp_path / "x", force=True, **SMALL)
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"
