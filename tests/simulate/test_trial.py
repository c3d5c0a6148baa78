"""The simulated trial: layout, BIDS validity, fMRIPrep compatibility, planted signals, determinism."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ptsd_bidsapp.atlas import ROI_LABELS, resample_atlas_to
from ptsd_bidsapp.simulate import design, generative, simulate_trial
from ptsd_bidsapp.simulate.cli import main as simulate_main
from ptsd_bidsapp.templates import grid

from .conftest import SMALL

TASKS = ("faces", "conflict", "rest")
SESSIONS = ("pre", "post")
SUBJECTS = ("01", "02", "03", "04")
SPACE = "space-MNI152NLin2009cAsym"


def _func(root, sub, ses):
    return Path(root) / "derivatives" / "fmriprep" / f"sub-{sub}" / f"ses-{ses}" / "func"


def _bold(root, sub, ses, task):
    return _func(root, sub, ses) / f"sub-{sub}_ses-{ses}_task-{task}_{SPACE}_desc-preproc_bold.nii.gz"


def _confounds(root, sub, ses, task):
    return _func(root, sub, ses) / f"sub-{sub}_ses-{ses}_task-{task}_desc-confounds_timeseries.tsv"


def _truth(root):
    return json.loads((Path(root) / "sourcedata" / "simulation" / "truth.json").read_text())


# --------------------------------------------------------------------------- layout


def test_every_run_has_fmriprep_outputs_and_raw_files(sim_small):
    root = Path(sim_small)
    affine, shape = grid(SMALL["resolution"])
    for sub in SUBJECTS:
        for ses in SESSIONS:
            for task in TASKS:
                bold = _bold(root, sub, ses, task)
                img = nib.load(bold)
                assert img.shape == shape + (SMALL["n_volumes"],)
                assert np.allclose(img.affine, affine)
                assert img.header.get_zooms()[3] == pytest.approx(2.0)
                meta = json.loads(bold.with_name(bold.name.replace(".nii.gz", ".json")).read_text())
                assert meta["RepetitionTime"] == 2.0 and meta["StartTime"] == 1.0 and meta["SliceTimingCorrected"]
                mask = bold.with_name(bold.name.replace("desc-preproc_bold", "desc-brain_mask"))
                assert nib.load(mask).shape == shape
                assert _confounds(root, sub, ses, task).is_file()
                assert _confounds(root, sub, ses, task).with_suffix(".json").is_file()
                raw = root / f"sub-{sub}" / f"ses-{ses}" / "func" / f"sub-{sub}_ses-{ses}_task-{task}_bold.nii.gz"
                assert nib.load(raw).shape[3] == SMALL["n_volumes"]
                events = raw.with_name(raw.name.replace("_bold.nii.gz", "_events.tsv"))
                assert events.is_file() == (task != "rest")
    for task in TASKS:
        meta = json.loads((root / f"task-{task}_bold.json").read_text())
        assert meta["TaskName"] == task and meta["RepetitionTime"] == 2.0
    desc = json.loads((root / "derivatives" / "fmriprep" / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative" and desc["GeneratedBy"][0]["Name"] == "fMRIPrep"


def test_events_conditions(sim_small):
    root = Path(sim_small)
    faces = pd.read_csv(root / "sub-01/ses-pre/func/sub-01_ses-pre_task-faces_events.tsv", sep="\t")
    assert set(faces["trial_type"]) == {"fearful", "neutral"}
    conflict = pd.read_csv(root / "sub-01/ses-pre/func/sub-01_ses-pre_task-conflict_events.tsv", sep="\t")
    assert {"cC", "cI", "iC", "iI"} <= set(conflict["trial_type"])
    # trial_type encodes previous + current congruency
    cong = conflict["congruency"].str[0].tolist()
    for k in range(1, len(conflict)):
        assert conflict["trial_type"][k] == cong[k - 1] + cong[k].upper()


def test_participants_sessions_and_truth_agree(sim_small):
    root = Path(sim_small)
    truth = _truth(root)
    participants = pd.read_csv(root / "participants.tsv", sep="\t")
    assert set(participants["group"]) == {"ketamine", "midazolam"}
    assert {"participant_id", "group", "age", "sex"} <= set(participants.columns)
    improvements = []
    for _, row in participants.iterrows():
        sid = row["participant_id"]
        sessions = pd.read_csv(root / sid / f"{sid}_sessions.tsv", sep="\t").set_index("session_id")
        entry = truth["subjects"][sid]
        assert entry["group"] == row["group"]
        assert sessions.loc["ses-pre", "caps5_total"] == entry["caps5"]["pre"]
        assert sessions.loc["ses-post", "madrs_total"] == entry["madrs"]["post"]
        assert entry["improvement"] == pytest.approx(entry["caps5"]["pre"] - entry["caps5"]["post"])
        improvements.append(entry["improvement"])
        for ses in SESSIONS:
            assert set(entry["measures"][ses]) == set(truth["effects"])
            dcm = entry["dcm"][ses]
            assert np.array(dcm["A"]).shape == (2, 2) and np.array(dcm["B"]["fearful"]).shape == (2, 2)
            assert dcm["A"][0][1] == entry["measures"][ses]["dcm_faces_A_vmpfc-amygdala"]
            assert dcm["B"]["fearful"][1][0] == entry["measures"][ses]["dcm_faces_B_fearful_amygdala-vmpfc"]
    assert np.std(improvements) > 2.0  # improvement varies across subjects
    for key in ("seed", "n_subjects", "tr", "n_volumes", "effects", "subjects"):
        assert key in truth
    planted = {"gppi_faces_fearfulMinusNeutral_vmpfc-amygdala", "activation_conflict_conflictRegulation_dacc",
               "fc_rest_vmpfc-antinsula", "dcm_faces_B_fearful_amygdala-vmpfc", "dcm_faces_A_vmpfc-amygdala"}
    assert planted <= set(truth["effects"])
    for mid in planted:
        assert not truth["effects"][mid]["null"]
        assert {"description", "slope_improvement", "applies_to", "slope_interaction"} <= set(truth["effects"][mid])
    assert truth["effects"]["activation_conflict_conflictRegulation_dacc"]["slope_improvement"] < 0
    assert (Path(root) / "sourcedata" / "simulation" / "README.md").read_text().startswith("# Simulation ground truth")


def test_planted_changes_follow_improvement_in_population():
    """Generative parameters of many subjects: changes track improvement as EFFECTS says."""
    rows = []
    for idx in range(400):
        group = "ketamine" if idx % 2 else "midazolam"
        p = generative.subject_parameters(3, idx, group)
        rows.append({"group": group, "z": p["improvement_z"],
                     **{m: p["measures"]["post"][m] - p["measures"]["pre"][m] for m in generative.EFFECTS},
                     "baseline_A": p["measures"]["pre"]["dcm_faces_A_vmpfc-amygdala"]})
    table = pd.DataFrame(rows)
    for mid, eff in generative.EFFECTS.items():
        for group, slope in eff["slope_by_group"].items():
            sub = table[table["group"] == group]
            fitted = np.polyfit(sub["z"], sub[mid], 1)[0]
            standard_error = eff["noise_sd"] / (sub["z"].std() * np.sqrt(len(sub)))
            assert fitted == pytest.approx(slope, abs=4 * standard_error + 1e-9), (mid, group)
    ket = table[table["group"] == "ketamine"]
    assert np.corrcoef(ket["z"], ket["baseline_A"])[0, 1] > 0.4  # weak baseline inhibition -> improvement
    mid = table[table["group"] == "midazolam"]
    assert abs(np.corrcoef(mid["z"], mid["baseline_A"])[0, 1]) < 0.15


# --------------------------------------------------------------------------- validity


def _validator_errors(path):
    exe = Path(sys.executable).with_name("bids-validator-deno")
    if not exe.exists():
        found = shutil.which("bids-validator-deno")
        if found is None:
            pytest.skip("bids-validator-deno not installed")
        exe = Path(found)
    proc = subprocess.run([str(exe), str(path), "--format", "json"], capture_output=True, text=True, timeout=600)
    report = json.loads(proc.stdout)
    return [i for i in report["issues"]["issues"] if i["severity"] == "error"]


def test_bids_validator_zero_errors_raw_and_fmriprep(sim_small):
    assert _validator_errors(sim_small) == []
    # derivatives validated as their own dataset (their .bidsignore covers fMRIPrep's
    # confounds *_timeseries.tsv, which BIDS 1.10 does not name)
    assert _validator_errors(Path(sim_small) / "derivatives" / "fmriprep") == []


@pytest.mark.parametrize(
    "strategy, kwargs",
    [
        (("motion", "high_pass", "wm_csf"), {"motion": "full", "wm_csf": "full"}),
        (("motion", "high_pass", "wm_csf", "scrub"), {"motion": "derivatives", "scrub": 5, "fd_threshold": 0.5}),
        (("compcor", "high_pass", "motion"), {"compcor": "anat_combined", "n_compcor": "all"}),
        (("global_signal", "motion", "high_pass"), {"global_signal": "full"}),
    ],
)
def test_nilearn_load_confounds_accepts_confounds(sim_small, strategy, kwargs):
    from nilearn.interfaces.fmriprep import load_confounds

    n = SMALL["n_volumes"]
    for sub, ses, task in (("01", "pre", "faces"), ("03", "post", "rest")):
        confounds, sample_mask = load_confounds(str(_bold(sim_small, sub, ses, task)), strategy=strategy, **kwargs)
        assert confounds.shape[0] == n
        assert not confounds.isna().any().any()
        if "motion" in strategy and kwargs.get("motion") == "full":
            assert sum(c.startswith(("trans_", "rot_")) for c in confounds.columns) == 24
        if "compcor" in strategy:
            assert any(c.startswith("a_comp_cor_") for c in confounds.columns)
        if sample_mask is not None:
            assert 0 < len(sample_mask) <= n


def test_confound_columns_as_fmriprep(sim_small):
    table = pd.read_csv(_confounds(sim_small, "02", "pre", "faces"), sep="\t")
    motion = [f"{p}_{a}" for p in ("trans", "rot") for a in "xyz"]
    for base in motion + ["global_signal", "csf", "white_matter"]:
        for suffix in ("", "_derivative1", "_power2", "_derivative1_power2"):
            assert base + suffix in table.columns
    for col in ("framewise_displacement", "dvars", "std_dvars", "a_comp_cor_00", "cosine_00", "csf_wm"):
        assert col in table.columns
    # FD recomputed from the motion columns (Power 2012, 50 mm head radius)
    m = table[motion].to_numpy()
    fd = np.abs(np.diff(m[:, :3], axis=0)).sum(1) + 50 * np.abs(np.diff(m[:, 3:], axis=0)).sum(1)
    assert np.isnan(table["framewise_displacement"][0])
    assert np.allclose(table["framewise_displacement"][1:], fd, rtol=1e-4, atol=1e-5)
    meta = json.loads(_confounds(sim_small, "02", "pre", "faces").with_suffix(".json").read_text())
    assert meta["a_comp_cor_00"]["Mask"] == "combined"


# --------------------------------------------------------------------------- planted signals


def _clean(y, confounds):
    x = np.column_stack([np.ones(len(y)), confounds])
    return y - x @ np.linalg.lstsq(x, y, rcond=None)[0]


def _roi_and_noise_correlations(root, sub, ses, task, roi, conditions):
    """Correlation of an ROI mean and of non-ROI voxels with the convolved regressor of ``conditions``."""
    from nilearn.interfaces.fmriprep import load_confounds

    n = SMALL["n_volumes"]
    bold = _bold(root, sub, ses, task)
    img = nib.load(bold)
    data = img.get_fdata(dtype=np.float32)
    mask = np.asanyarray(nib.load(str(bold).replace("desc-preproc_bold", "desc-brain_mask")).dataobj) > 0
    atlas = resample_atlas_to(img).data()
    conf, sample_mask = load_confounds(str(bold), strategy=("motion", "high_pass"), motion="basic")
    keep = np.arange(n) if sample_mask is None else sample_mask
    c = conf.to_numpy()[keep]
    events = pd.read_csv(Path(root) / f"sub-{sub}/ses-{ses}/func/sub-{sub}_ses-{ses}_task-{task}_events.tsv", sep="\t")
    u = design.boxcar(events, conditions, n, 2.0)
    reg = _clean(design.convolve_and_sample(sum(u.values()), 2.0, 1.0, n)[keep], c)
    signal = _clean(data[atlas == ROI_LABELS.index(roi) + 1].mean(0)[keep], c)
    noise = data[mask & (atlas == 0)][::3]
    r_noise = [np.corrcoef(_clean(v[keep], c), reg)[0, 1] for v in noise]
    return np.corrcoef(signal, reg)[0, 1], np.percentile(np.abs(r_noise), 95)


def test_faces_amygdala_follows_face_blocks_well_above_noise_voxels(sim_small):
    """The amygdala ROI mean (DCM-driven) tracks the convolved face-block regressor; noise voxels do not."""
    r_roi, r_noise = zip(*[_roi_and_noise_correlations(sim_small, sub, ses, "faces", "amygdala", ["fearful", "neutral"])
                           for sub in SUBJECTS for ses in SESSIONS])
    assert np.mean(r_roi) > 0.5
    assert np.mean(r_roi) > 1.5 * np.mean(r_noise)
    assert min(r_roi) > 0.2


def test_motion_spikes_leak_into_bold(sim_small):
    """Volumes with large FD have DVARS artefacts (std DVARS well above the run median)."""
    truth = _truth(sim_small)
    spike_runs = 0
    ratios, correlations = [], []
    for sub in SUBJECTS:
        for ses in SESSIONS:
            for task in TASKS:
                motion = truth["subjects"][f"sub-{sub}"]["motion"][ses][task]
                if not motion["spike_onsets"]:
                    continue
                spike_runs += 1
                table = pd.read_csv(_confounds(sim_small, sub, ses, task), sep="\t")
                fd = table["framewise_displacement"].to_numpy()
                dv = table["std_dvars"].to_numpy()
                skip = 1 + motion["n_non_steady_state"]
                worst = skip + int(np.nanargmax(fd[skip:]))
                ratios.append(dv[worst] / np.nanmedian(dv[skip:]))
                correlations.append(np.corrcoef(fd[skip:], dv[skip:])[0, 1])
                assert any(c.startswith("motion_outlier_") for c in table.columns)
    assert spike_runs >= 2
    assert np.median(ratios) > 2.0
    assert np.mean(correlations) > 0.4


# --------------------------------------------------------------------------- determinism + CLI


def _digest(root):
    import hashlib

    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(root).rglob("*")) if p.is_file()}


def test_same_seed_byte_identical_other_seed_differs(tmp_path):
    kwargs = dict(n_subjects=2, resolution=10.0, n_volumes=40)  # >= the app's minimum (34)
    a = _digest(simulate_trial(tmp_path / "a", seed=5, **kwargs))
    b = _digest(simulate_trial(tmp_path / "b", seed=5, **kwargs))
    c = _digest(simulate_trial(tmp_path / "c", seed=6, **kwargs))
    assert a == b
    assert a.keys() == c.keys()
    bold = "derivatives/fmriprep/sub-01/ses-pre/func/sub-01_ses-pre_task-faces_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz"
    assert a[bold] != c[bold]


def test_cli_refuses_non_empty_dir_and_force_replaces(tmp_path, capsys):
    out = tmp_path / "sim"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    args = [str(out), "--n-subjects", "2", "--resolution", "12", "--n-volumes", "34", "--quiet"]
    assert simulate_main(args) != 0
    assert simulate_main(args + ["--force"]) != 0  # not a simulation: never deleted
    assert (out / "precious.txt").read_text() == "keep me"          # untouched, not only still there
    out2 = tmp_path / "sim2"
    assert simulate_main([str(out2)] + args[1:]) == 0
    assert simulate_main([str(out2)] + args[1:]) != 0
    assert simulate_main([str(out2)] + args[1:] + ["--force", "--seed", "9"]) == 0
    assert _truth(out2)["seed"] == 9
    err = capsys.readouterr().err
    assert "--force" in err and "not a ptsd_bidsapp simulation" in err
