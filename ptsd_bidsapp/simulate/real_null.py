"""Null pre/post trials built from REAL fMRI signals: nothing planted.

:func:`build_null_trial` writes a BIDS raw dataset + fMRIPrep-like derivatives in this app's
input layout (the layout :func:`ptsd_bidsapp.simulate.simulate_trial` writes, through the same
writers), two sessions ``pre``/``post``, tasks ``faces``, ``conflict``, ``rest``, in which

* every ROI's voxels carry a **real** ROI time series: nitime's ``data/fmri_timeseries.csv``
  (resting-state BOLD of one human subject, 28 anatomical ROIs + WM, ventricle and whole-brain
  signals, 250 volumes, TR 1.89 s; shipped in the ``nitime`` wheel, BSD-3-Clause). For each run
  the seed draws six different source ROIs (one per circuit region, without replacement) and a
  start time; the 300 s window (``n_volumes * tr``) is resampled to the run's TR by a cubic
  spline (mirror-extended if the run were longer than the recording). The whole recording is
  scaled by one constant so that the median source ROI SD is ``roi_sd_pct`` percent signal
  change (the file's units are arbitrary); relative amplitudes, temporal autocorrelation and the
  real cross-ROI correlations of the window are kept. Voxels get the ROI signal times a fixed
  per-voxel loading (mean 1) plus small white voxel noise (``voxel_noise_pct``);
* the confounds table is a **real** fMRIPrep table: nilearn's
  ``nilearn/interfaces/fmriprep/data/test_desc-confounds_regressors.tsv`` (30 volumes of real
  fMRIPrep output shipped as nilearn test data, BSD-3-Clause; its first, non-steady-state volume
  is dropped). Its rows (motion parameters,
  ``std_dvars``, ``dvars``) are mirror-tiled to the run length from a random offset (forward,
  backward, forward ... so no jump is created: the frame-to-frame differences, hence the
  framewise displacement, are real ones); the ``csf``, ``white_matter`` and ``global_signal``
  columns are the real ventricle, WM and whole-brain signals (nitime ``Vent``, ``WM``,
  ``Brain``) of the same window as the run's ROI signals; derivatives, squares, FD (Power 2012)
  and the cosine high-pass basis are recomputed for the run as fMRIPrep does;
* events are random, with the simulator's event structure (``design.faces_events``,
  ``design.conflict_events``); arms are a balanced random allocation; CAPS-5 / MADRS scores
  are random and independent of everything else.

No between-subject effect, no session effect and no task effect is planted:
``sourcedata/simulation/truth.json`` says ``"null": true`` and lists, per run, the source
ROIs, the window start and the confound offset. Each file's random draws come from
``numpy.random.default_rng([seed, ...])``, so a seed gives the same dataset.
"""

from __future__ import annotations

import json
import shutil
import time
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from ptsd_bidsapp import __version__
from ptsd_bidsapp.atlas import ROI_LABELS, load_atlas, resample_atlas_to
from ptsd_bidsapp.bids.outputs import atomic_write_text, write_json, write_tsv
from ptsd_bidsapp.simulate import design, generative, images
from ptsd_bidsapp.simulate.trial import (SESSIONS, SPATIAL_REFERENCE, TASKS, _label_width, _res_entity,
                                         _write_raw_placeholder, write_dataset_files)
from ptsd_bidsapp.templates import TEMPLATE, brain_mask

#: Source of the real ROI series (package, file inside it, licence, TR of the recording).
ROI_SOURCE = {
    "package": "nitime",
    "file": "data/fmri_timeseries.csv",
    "license": "BSD-3-Clause (nitime, Copyright (c) 2006-2011 NIPY Developers)",
    "description": "resting-state ('steady-state' fixation) BOLD of one human subject, contributed by Beth Mormino "
                   "(nitime documentation, 'fMRI data'); 28 ROI mean time series + WM, ventricle (Vent) and "
                   "whole-brain (Brain) signals, 250 volumes",
    "tr": 1.89,
}
#: Source of the real fMRIPrep confounds table.
CONFOUND_SOURCE = {
    "package": "nilearn",
    "file": "interfaces/fmriprep/data/test_desc-confounds_regressors.tsv",
    "license": "BSD-3-Clause (nilearn)",
    "description": "first 30 volumes of a real fMRIPrep confounds table (shipped as nilearn test data for "
                   "load_confounds); the non-steady-state first volume is dropped, 29 volumes used; mean FD 0.1 mm",
}
#: Non-ROI columns of the nitime file (used as the tissue confounds, never as ROI signals).
NUISANCE_COLUMNS = {"white_matter": "WM", "csf": "Vent", "global_signal": "Brain"}
MOTION = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
HEAD_RADIUS_MM = 50.0
TE = 0.03


def _package_file(package: str, relative: str) -> Path:
    try:
        root = resources.files(package)
    except ModuleNotFoundError as err:  # pragma: no cover - depends on the environment
        raise ModuleNotFoundError(
            f"the real-signal null trial reads {relative} from the installed '{package}' package; "
            f"install it (pip install {package}, or pip install -e .[test])") from err
    path = Path(str(root.joinpath(relative)))
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed '{package}' package")
    return path


def load_roi_source() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Real ROI series ``(T, 28)`` and the nuisance signals ``(T, 3)`` of nitime's recording (raw units)."""
    table = pd.read_csv(_package_file(ROI_SOURCE["package"], ROI_SOURCE["file"]))
    nuisance = table[list(NUISANCE_COLUMNS.values())].astype(float)
    rois = table.drop(columns=list(NUISANCE_COLUMNS.values())).astype(float)
    return rois, nuisance


def load_confound_source() -> pd.DataFrame:
    """The real fMRIPrep confounds table shipped with nilearn, without its non-steady-state volume (29 rows).

    fMRIPrep flags the first volume non-steady-state (``non_steady_state_outlier00``); its motion
    estimate is not a real head position, so it is dropped before tiling.
    """
    table = pd.read_csv(_package_file(CONFOUND_SOURCE["package"], CONFOUND_SOURCE["file"]), sep="\t",
                        na_values=["n/a"])
    outliers = table.filter(like="non_steady_state_outlier").fillna(0).to_numpy().sum(axis=1) > 0
    return table.loc[~outliers].reset_index(drop=True)


def _reflect_index(n_out: int, n_in: int, offset: int) -> np.ndarray:
    """Indices 0..n_in-1 forward, then backward, ... (period 2(n_in-1)) starting at ``offset``."""
    period = 2 * (n_in - 1)
    p = (np.arange(n_out) + offset) % period
    return np.where(p < n_in, p, period - p)


def resample_window(x: np.ndarray, source_tr: float, start_s: float, n: int, tr: float) -> np.ndarray:
    """Sample ``x`` (rows = volumes at ``source_tr``) at ``start_s + k * tr`` by a cubic spline.

    Times beyond the recording are mirrored back into it (no jump).
    """
    from scipy.interpolate import CubicSpline

    x = np.asarray(x, dtype=float)
    length = (x.shape[0] - 1) * source_tr
    t = start_s + np.arange(n) * tr
    period = 2 * length
    t = np.mod(t, period)
    t = np.where(t <= length, t, period - t)
    return CubicSpline(np.arange(x.shape[0]) * source_tr, x, axis=0)(t)


def _expansions(name: str, x: np.ndarray) -> dict[str, np.ndarray]:
    d = np.r_[np.nan, np.diff(x)]
    return {name: x, f"{name}_derivative1": d, f"{name}_power2": x ** 2, f"{name}_derivative1_power2": d ** 2}


def null_confounds(source: pd.DataFrame, nuisance: np.ndarray, n: int, tr: float, offset: int) -> tuple[pd.DataFrame, dict]:
    """fMRIPrep-style confounds of one run from the real table (see module docstring).

    ``nuisance`` is ``(n, 3)``: the run window's real WM, CSF and whole-brain signals.
    """
    idx = _reflect_index(n, len(source), offset)
    cols: dict[str, np.ndarray] = {}
    for j, name in enumerate(("white_matter", "csf", "global_signal")):
        cols.update(_expansions(name, nuisance[:, j]))
    cols["csf_wm"] = nuisance[:, :2].mean(axis=1)
    for name in ("std_dvars", "dvars"):
        values = source[name].to_numpy(dtype=float)
        values = np.where(np.isnan(values), np.nanmedian(values), values)[idx]
        values[0] = np.nan
        cols[name] = values
    motion = np.stack([source[m].to_numpy(dtype=float)[idx] for m in MOTION], axis=1)
    d = np.abs(np.diff(motion, axis=0))
    cols["framewise_displacement"] = np.r_[np.nan, d[:, :3].sum(axis=1) + HEAD_RADIUS_MM * d[:, 3:].sum(axis=1)]
    for j, name in enumerate(MOTION):
        cols.update(_expansions(name, motion[:, j]))
    cos = images.cosine_basis(n, tr)
    meta = {}
    for k in range(cos.shape[1]):
        cols[f"cosine_{k:02d}"] = cos[:, k]
        meta[f"cosine_{k:02d}"] = {"Method": "Discrete cosine basis", "Cutoff": 128.0}
    return pd.DataFrame(cols), meta


def _scores(seed: int, index: int) -> dict:
    """Random CAPS-5 / MADRS scores, independent of the arm and of every signal."""
    rng = np.random.default_rng([seed, index, 1])
    caps_pre = float(np.clip(np.round(rng.normal(46.0, 8.0)), 30, 70))
    improvement = float(np.clip(np.round(rng.normal(generative.IMPROVEMENT_MEAN, generative.IMPROVEMENT_SD)),
                                -10, caps_pre - 5))
    madrs_pre = float(np.clip(np.round(rng.normal(28.0, 6.0)), 10, 50))
    madrs_change = float(np.clip(np.round(0.4 * (improvement - generative.IMPROVEMENT_MEAN) + rng.normal(6.0, 6.0)),
                                 -10, madrs_pre - 2))
    return {"caps5": {"pre": caps_pre, "post": caps_pre - improvement},
            "madrs": {"pre": madrs_pre, "post": madrs_pre - madrs_change},
            "age": int(rng.integers(21, 66)), "sex": str(rng.choice(["F", "M"]))}


def _run_signals(rois: np.ndarray, nuisance: np.ndarray, n: int, tr: float, rng: np.random.Generator) -> tuple[dict, np.ndarray, dict]:
    """Six real ROI series (PSC, by atlas index) + the window's nuisance signals + the draw."""
    source_tr = ROI_SOURCE["tr"]
    length = (rois.shape[0] - 1) * source_tr
    span = n * tr
    start = float(rng.uniform(0.0, max(0.0, length - span)))
    chosen = rng.choice(rois.shape[1], size=len(ROI_LABELS), replace=False)
    window = resample_window(rois[:, chosen], source_tr, start, n, tr)
    window -= window.mean(axis=0)
    sig = {k: window[:, j] for j, k in enumerate(range(1, len(ROI_LABELS) + 1))}
    nuis = resample_window(nuisance, source_tr, start, n, tr)
    return sig, nuis, {"start_s": round(start, 3), "source_columns": chosen.tolist()}


def _synthesize(space: images.SubjectSpace, sig: dict, n: int, noise_pct: float, rng: np.random.Generator) -> np.ndarray:
    """``(T, V)`` float32 intensities: baseline x (1 + (ROI signal x loading + white voxel noise) / 100)."""
    pct = rng.standard_normal((n, space.baseline.size), dtype=np.float32) * np.float32(noise_pct)
    for k, s in sig.items():
        sel = space.roi_index == k
        if sel.any():
            pct[:, sel] += np.asarray(s, dtype=np.float32)[:, None] * space.roi_weight[sel][None, :]
    return space.baseline[None, :] * (1.0 + pct / 100.0)


def build_null_trial(out_dir, n_subjects: int = 12, seed: int = 0, resolution: float = 4.0, n_volumes: int = 150,
                     tr: float = 2.0, roi_sd_pct: float = 1.0, voxel_noise_pct: float = 0.5,
                     force: bool = False) -> Path:
    """Write a null trial from real signals (see module docstring) and return ``out_dir``.

    Parameters
    ----------
    out_dir : path-like
        Destination; must be empty or absent (``force=True`` replaces an earlier null trial).
    n_subjects : int
        Patients, split between ketamine and midazolam at random (balanced).
    seed : int
        Seed of every draw (source ROIs and windows, confound offsets, events, arms, scores, noise).
    resolution : float
        Voxel size (mm) of the MNI152NLin2009cAsym grid.
    n_volumes : int
        Volumes per run (all tasks).
    tr : float
        Repetition time (s) of the written runs.
    roi_sd_pct : float
        Median SD (percent signal change) of the source ROI series after the one global rescaling.
    voxel_noise_pct : float
        SD (percent) of the white voxel noise added on top of the real ROI signal.
    force : bool
        Replace an earlier null trial in ``out_dir``.
    """
    out = Path(out_dir)
    if n_subjects < 4:
        raise ValueError("n_subjects must be >= 4")
    if images.cosine_basis(n_volumes, tr).shape[1] == 0:
        raise ValueError(f"runs of {n_volumes} x {tr} s are too short for fMRIPrep's 128 s cosine high-pass basis "
                         "(the app's denoising needs cosine_* columns): use n_volumes * tr >= 160 s")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise FileExistsError(f"{out} is not empty; pass force=True to replace an earlier null trial")
        truth = out / "sourcedata" / "simulation" / "truth.json"
        if not truth.is_file() or not json.loads(truth.read_text()).get("null"):
            raise FileExistsError(f"{out} is not empty and is not a real-signal null trial; refusing to delete it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)

    rois_df, nuisance_df = load_roi_source()
    roi_scale = roi_sd_pct / float(np.median(rois_df.std(axis=0)))
    rois = rois_df.to_numpy() * roi_scale
    nuisance = nuisance_df.to_numpy()
    confound_source = load_confound_source()

    mask_img = brain_mask(resolution)
    atlas_data = resample_atlas_to(mask_img, load_atlas()).data()
    write_dataset_files(out, n_subjects, seed, tr, resolution)
    _describe(out, n_subjects, seed)

    res = _res_entity(resolution)
    space_ents = f"space-{TEMPLATE}" + (f"_res-{res}" if res else "")
    start_time = tr / 2.0
    groups = generative.assign_groups(n_subjects, seed)
    width = _label_width(n_subjects)
    participants, subjects_truth = [], {}
    for index in range(n_subjects):
        label = f"{index + 1:0{width}d}"
        space = images.make_subject_space(mask_img, atlas_data, np.random.default_rng([seed, index, 2]))
        scores = _scores(seed, index)
        runs_truth = {}
        for s_idx, ses in enumerate(SESSIONS):
            for t_idx, task in enumerate(TASKS):
                rng = np.random.default_rng([seed, index, 10 + s_idx, t_idx])
                stem = f"sub-{label}_ses-{ses}_task-{task}"
                raw_func = out / f"sub-{label}" / f"ses-{ses}" / "func"
                if task == "faces":
                    events = design.faces_events(n_volumes, tr, rng)
                elif task == "conflict":
                    events = design.conflict_events(n_volumes, tr, rng)
                else:
                    events = None
                if events is not None:
                    write_tsv(raw_func / f"{stem}_events.tsv", events, float_format="%.3f")
                _write_raw_placeholder(raw_func / f"{stem}_bold.nii.gz", n_volumes, tr, rng)
                sig, nuis, draw = _run_signals(rois, nuisance, n_volumes, tr, rng)
                offset = int(rng.integers(0, 2 * (len(confound_source) - 1)))
                confounds, meta = null_confounds(confound_source, nuis, n_volumes, tr, offset)
                data = _synthesize(space, sig, n_volumes, voxel_noise_pct, rng)
                func = out / "derivatives" / "fmriprep" / f"sub-{label}" / f"ses-{ses}" / "func"
                header = images.bold_header(space.affine, space.shape, n_volumes, tr)
                images.write_nifti_gz(func / f"{stem}_{space_ents}_desc-preproc_bold.nii.gz", header,
                                      images.volumes_from_matrix(data, space.mask))
                del data
                source = f"bids:raw:sub-{label}/ses-{ses}/func/{stem}_bold.nii.gz"
                write_json(func / f"{stem}_{space_ents}_desc-preproc_bold.json", {
                    "RepetitionTime": tr,
                    "SpatialReference": SPATIAL_REFERENCE.get(res, f"bids:templateflow:tpl-{TEMPLATE}"),
                    "TaskName": task,
                    "SkullStripped": True,
                    "Description": "Null trial from real ROI signals (ptsd_bidsapp.simulate.real_null)",
                    "SliceTimingCorrected": True,
                    "StartTime": start_time,
                    "Sources": [source],
                })
                images.write_nifti_gz(func / f"{stem}_{space_ents}_desc-brain_mask.nii.gz", mask_img, compresslevel=6)
                write_json(func / f"{stem}_{space_ents}_desc-brain_mask.json", {
                    "Type": "Brain", "Description": "Brain mask (template brain mask on the BOLD grid)",
                    "Sources": [source]})
                write_tsv(func / f"{stem}_desc-confounds_timeseries.tsv", confounds, sidecar=meta,
                          float_format="%.6g")
                runs_truth[f"ses-{ses}_task-{task}"] = {
                    "window_start_s": draw["start_s"],
                    "source_rois": {name: str(rois_df.columns[c]) for name, c in
                                    zip(ROI_LABELS, draw["source_columns"])},
                    "confound_row_offset": offset,
                    "mean_fd_mm": float(np.nanmean(confounds["framewise_displacement"])),
                }
        participants.append({"participant_id": f"sub-{label}", "group": groups[index], "age": scores["age"],
                             "sex": scores["sex"]})
        write_tsv(out / f"sub-{label}" / f"sub-{label}_sessions.tsv", pd.DataFrame({
            "session_id": [f"ses-{s}" for s in SESSIONS],
            "caps5_total": [scores["caps5"][s] for s in SESSIONS],
            "madrs_total": [scores["madrs"][s] for s in SESSIONS],
        }), float_format="%.0f", sidecar={
            "session_id": {"Description": "pre = baseline scan before treatment, post = after the treatment course"},
            "caps5_total": {"Description": "Clinician-Administered PTSD Scale for DSM-5, total severity (random: "
                                           "null trial)", "Units": "points"},
            "madrs_total": {"Description": "Montgomery-Asberg Depression Rating Scale, total (random: null trial)",
                            "Units": "points"},
        })
        subjects_truth[f"sub-{label}"] = {"group": groups[index], "caps5": scores["caps5"], "madrs": scores["madrs"],
                                          "runs": runs_truth}
    write_tsv(out / "participants.tsv", pd.DataFrame(participants))
    write_json(out / "sourcedata" / "simulation" / "truth.json", {
        "null": True,
        "statement": "Nothing is planted: ROI signals are real resting-state series assigned to regions at random, "
                     "events, arms and clinical scores are random and independent of the signals. Every "
                     "between-subject (drug, improvement, improvement x drug) effect and every session-change "
                     "effect is null.",
        "effects": {},
        "generator": "ptsd_bidsapp.simulate.real_null.build_null_trial",
        "version": __version__,
        "seed": seed,
        "n_subjects": n_subjects,
        "tr": tr,
        "te": TE,
        "start_time": start_time,
        "n_volumes": {task: n_volumes for task in TASKS},
        "resolution_mm": resolution,
        "space": TEMPLATE,
        "sessions": list(SESSIONS),
        "tasks": list(TASKS),
        "roi_labels": list(ROI_LABELS),
        "roi_source": dict(ROI_SOURCE, scale_to_psc=roi_scale, median_sd_psc=roi_sd_pct),
        "confound_source": CONFOUND_SOURCE,
        "voxel_noise_pct": voxel_noise_pct,
        "subjects": subjects_truth,
    })
    atomic_write_text(out / "sourcedata" / "simulation" / "README.md", (
        "# Null trial from real signals\n\n" + (__doc__ or "") + "\n`truth.json` lists every draw.\n"))
    return out


def _describe(out: Path, n_subjects: int, seed: int) -> None:
    """Replace the simulator's dataset description/README with this trial's."""
    desc = json.loads((out / "dataset_description.json").read_text())
    desc["Name"] = "Null PTSD treatment trial from real fMRI signals (ptsd_bidsapp)"
    desc["GeneratedBy"] = [{"Name": "ptsd_bidsapp.simulate.real_null", "Version": __version__,
                            "Description": f"seed {seed}, {n_subjects} subjects; real ROI series from nitime "
                                           "(BSD-3-Clause), real fMRIPrep confounds from nilearn (BSD-3-Clause)"}]
    write_json(out / "dataset_description.json", desc)
    atomic_write_text(out / "README", (
        f"Null pre/post trial (seed {seed}, {n_subjects} subjects) written by ptsd_bidsapp.simulate.real_null "
        f"(ptsd_bidsapp {__version__}).\n\nEach ROI carries a real resting-state fMRI ROI series (nitime "
        "data/fmri_timeseries.csv), the confounds are a real fMRIPrep table (nilearn test data) tiled to the run "
        "length; events, treatment arms and clinical scores are random. Nothing is planted: see "
        "sourcedata/simulation/.\n"))
    atomic_write_text(out / "derivatives" / "fmriprep" / "README",
                      "fMRIPrep-like derivatives of a null trial built from real ROI signals (not real fMRIPrep "
                      "output); see ../../sourcedata/simulation/README.md.\n")
