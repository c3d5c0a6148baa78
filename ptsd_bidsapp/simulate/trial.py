"""The synthetic PTSD treatment trial: BIDS raw + fMRIPrep-like derivatives + ground truth.

:func:`simulate_trial` writes, under ``out_dir``:

- a BIDS raw dataset: ``participants.tsv/.json`` (``group``, ``age``, ``sex``),
  ``sub-<s>/sub-<s>_sessions.tsv/.json`` (``caps5_total``, ``madrs_total``), per session
  ``pre``/``post`` and task ``faces``/``conflict``/``rest`` a small placeholder raw BOLD
  (valid NIfTI, right TR and number of volumes; the analysis reads the derivatives) and
  ``events.tsv``; task sidecars at the dataset root;
- ``derivatives/fmriprep``: ``*_space-MNI152NLin2009cAsym[_res-<r>]_desc-preproc_bold.nii.gz``
  + JSON, ``*_desc-brain_mask.nii.gz`` + JSON, ``*_desc-confounds_timeseries.tsv`` + JSON;
- ``sourcedata/simulation/truth.json`` (Contract 4) and a README documenting it.

Subjects are generated one at a time (memory = one run); every random draw comes from
``numpy.random.default_rng([seed, subject, ...])`` so a seed gives byte-identical files.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ptsd_bidsapp import __version__
from ptsd_bidsapp.atlas import ROI_LABELS, load_atlas, resample_atlas_to
from ptsd_bidsapp.bids.outputs import write_json, write_tsv, atomic_write_text
from ptsd_bidsapp.measures.qc import MIN_BANDPASS_VOLUMES
from ptsd_bidsapp.simulate import design, dcm_forward, generative, images
from ptsd_bidsapp.templates import TEMPLATE, brain_mask

LOGGER = logging.getLogger("ptsd_bidsapp.simulate")

TASKS = ("faces", "conflict", "rest")
SESSIONS = ("pre", "post")
DEFAULT_N_VOLUMES = 150
TE = 0.03  # seconds, the BOLD sidecar's EchoTime
#: echo time of the planted DCM forward model: SPM12 r7771 spm_gx_fmri's fixed 0.04 s, so the
#: planted model is exactly the one the app (and SPM) estimates by default
DCM_TE = 0.04
BIDS_VERSION = "1.10.0"
FMRIPREP_VERSION = "24.1.1"
SPATIAL_REFERENCE = {
    "1": "https://templateflow.s3.amazonaws.com/tpl-MNI152NLin2009cAsym/tpl-MNI152NLin2009cAsym_res-01_T1w.nii.gz",
    "2": "https://templateflow.s3.amazonaws.com/tpl-MNI152NLin2009cAsym/tpl-MNI152NLin2009cAsym_res-02_T1w.nii.gz",
}
ROI = {name: k for k, name in enumerate(ROI_LABELS, start=1)}

TASK_META = {
    "faces": {
        "TaskName": "faces",
        "TaskDescription": "Emotional face viewing: 20 s blocks of fearful or neutral faces separated by 10 s fixation.",
        "CogAtlasID": "https://www.cognitiveatlas.org/task/id/trm_4f24126c22011/",
    },
    "conflict": {
        "TaskName": "conflict",
        "TaskDescription": "Emotional conflict (face-word Stroop, Etkin et al. 2006): identify the facial expression of "
                           "a face overlaid with a congruent or incongruent emotion word; trial_type codes previous "
                           "(lower case) and current (upper case) congruency.",
    },
    "rest": {
        "TaskName": "rest",
        "TaskDescription": "Task-free: eyes open, fixation cross.",
    },
}


def _label_width(n_subjects: int) -> int:
    return max(2, len(str(n_subjects)))


def _res_entity(resolution: float) -> str | None:
    # fMRIPrep names TemplateFlow resolutions res-1 / res-2; other grids (template space at
    # the BOLD's own resolution) carry no res entity.
    return {1.0: "1", 2.0: "2"}.get(float(resolution))


def _normalised(x: np.ndarray, sd: float) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    s = x.std()
    return x * (sd / s) if s > 0 else x


#: SD (percent signal change) of vmPFC's HRF-convolved fluctuation that the amygdala follows
#: (the gPPI ground truth). The participant-level DCM is deterministic, so this fluctuation is
#: noise to it: at 1.0 the per-session error of the fearful B (amygdala -> vmPFC) estimate had
#: SD 0.38 Hz over 20 simulated 21-subject trials (DCM stage only), at 0.5 SD 0.24 Hz. Halving
#: it doubles the gPPI estimate's noise, so the gPPI ground truth in generative.EFFECTS (mean,
#: SDs, slopes) is twice what it was at 1.0.
GPPI_SHARED_PSC = 0.5
GPPI_NEUTRAL_GAIN = 0.2  # amygdala gain on it outside fearful blocks


def faces_signals(params: dict, ses: str, events: pd.DataFrame, n: int, tr: float, start: float,
                  rng: np.random.Generator) -> tuple[dict[int, np.ndarray], str]:
    """ROI signals (PSC) of a faces run: DCM amygdala<->vmPFC + gPPI coupling + activations + fluctuations."""
    u = design.boxcar(events, ["fearful", "neutral"], n, tr)
    inputs = np.stack([u["fearful"] + u["neutral"], u["fearful"]], axis=1)
    y, engine = dcm_forward.simulate_faces_bold(params["dcm"][ses], inputs, tr, DCM_TE, start, n)
    sig = {k: np.zeros(n) for k in ROI.values()}
    sig[ROI["amygdala"]] += y[:, 0]
    sig[ROI["vmpfc"]] += y[:, 1]
    # gPPI: the amygdala follows vmPFC's neural fluctuation z(t) (top-down) with gain
    # GPPI_NEUTRAL_GAIN outside fearful blocks and GPPI_NEUTRAL_GAIN + planted value during them;
    # the vmPFC-seed -> amygdala gPPI fearful-minus-neutral contrast estimates the value.
    m = params["measures"][ses]
    z = design.smooth_noise(n * design.MICROTIME, rng, tr)
    k = GPPI_NEUTRAL_GAIN + m["gppi_faces_fearfulMinusNeutral_vmpfc-amygdala"] * u["fearful"]
    coupled = design.convolve_and_sample(np.stack([z, k * z], axis=1), tr, start, n)
    scale = GPPI_SHARED_PSC / coupled[:, 0].std()
    sig[ROI["vmpfc"]] += scale * coupled[:, 0]
    sig[ROI["amygdala"]] += scale * coupled[:, 1]
    # block activations of the other ROIs (dACC fearful-neutral is a null measure)
    reg = design.convolve_and_sample(np.stack([u["fearful"], u["neutral"]], axis=1), tr, start, n)
    amps = {"dacc": (0.30 + m["activation_faces_fearfulMinusNeutral_dacc"], 0.30), "racc": (0.25, 0.20),
            "anthippo": (0.20, 0.15), "antinsula": (0.35, 0.25)}
    for name, (a_f, a_n) in amps.items():
        sig[ROI[name]] += a_f * reg[:, 0] + a_n * reg[:, 1]
    for k in sig:  # intrinsic fluctuations
        sig[k] += _normalised(design.convolve_and_sample(design.smooth_noise(n * design.MICROTIME, rng, tr), tr, start, n), 0.3)
    return sig, engine


CONFLICT_AMPLITUDES = {  # PSC per unit 1-s event regressor: cC, cI, iC, iI (None: cI + planted), first
    "dacc": (2.5, 3.5, 2.8, None, 3.0),
    "racc": (0.8, 0.9, 0.8, 0.9, 0.8),
    "vmpfc": (0.3, 0.3, 0.3, 0.3, 0.3),
    "anthippo": (0.3, 0.3, 0.3, 0.3, 0.3),
    "antinsula": (1.2, 1.5, 1.2, 1.5, 1.3),
    "amygdala": (0.6, 0.7, 0.6, 0.7, 0.6),
}


def conflict_signals(params: dict, ses: str, events: pd.DataFrame, n: int, tr: float, start: float,
                     rng: np.random.Generator) -> dict[int, np.ndarray]:
    """ROI signals (PSC) of a conflict run; dACC iI - cI carries the planted conflict-regulation effect."""
    conds = ["cC", "cI", "iC", "iI", "first"]
    u = design.boxcar(events, conds, n, tr)
    reg = design.convolve_and_sample(np.stack([u[c] for c in conds], axis=1), tr, start, n)
    delta = params["measures"][ses]["activation_conflict_conflictRegulation_dacc"]
    sig = {}
    for name, amps in CONFLICT_AMPLITUDES.items():
        amps = list(amps)
        if amps[3] is None:
            amps[3] = amps[1] + delta
        s = reg @ np.asarray(amps)
        s += _normalised(design.convolve_and_sample(design.smooth_noise(n * design.MICROTIME, rng, tr), tr, start, n), 0.3)
        sig[ROI[name]] = s
    return sig


def _weight_for_correlation(r: float, shared: float = 0.09) -> float:
    """Weight w of a latent shared by two unit-variance signals that also share ``shared``: r = (shared + w^2) / (1 + shared + w^2)."""
    r = float(np.clip(r, 0.0, 0.95))
    return float(np.sqrt(max(0.0, (r * (1 + shared) - shared) / (1 - r))))


def rest_signals(params: dict, ses: str, n: int, tr: float, start: float, rng: np.random.Generator) -> dict[int, np.ndarray]:
    """ROI signals (PSC) of a rest run: shared latents set the planted vmPFC-antinsula and amygdala-anthippo coupling."""
    micro = n * design.MICROTIME

    def component():
        return design.convolve_and_sample(design.smooth_noise(micro, rng, tr, cutoff_s=12.0), tr, start, n)

    def unit(x):
        return (x - x.mean()) / x.std()

    m = params["measures"][ses]
    w_va = _weight_for_correlation(np.tanh(m["fc_rest_vmpfc-antinsula"]))
    w_ah = _weight_for_correlation(np.tanh(m["fc_rest_amygdala-anthippo"]))
    network = unit(component())
    latent_va = unit(component())
    latent_ah = unit(component())
    sig = {}
    for name, k in ROI.items():
        s = unit(component()) + 0.3 * network
        var = 1.09
        if name in ("vmpfc", "antinsula"):
            s = s + w_va * latent_va
            var += w_va ** 2
        if name in ("amygdala", "anthippo"):
            s = s + w_ah * latent_ah
            var += w_ah ** 2
        sig[k] = 0.8 * s / np.sqrt(var)
    return sig


def _write_raw_placeholder(path: Path, n_volumes: int, tr: float, rng: np.random.Generator) -> None:
    affine = np.diag([24.0, 24.0, 24.0, 1.0])
    affine[:3, 3] = (-96.0, -132.0, -78.0)
    shape = (8, 10, 8)
    header = images.bold_header(affine, shape, n_volumes, tr)
    vols = (np.clip(1000 + 10 * rng.standard_normal(shape), 0, 32767).astype(np.int16) for _ in range(n_volumes))
    images.write_nifti_gz(path, header, vols, compresslevel=6)


def _slice_timing(n_slices: int, tr: float) -> list[float]:
    order = list(range(0, n_slices, 2)) + list(range(1, n_slices, 2))  # interleaved ascending
    times = np.zeros(n_slices)
    for k, sl in enumerate(order):
        times[sl] = k * tr / n_slices
    return [round(float(t), 4) for t in times]


def write_dataset_files(out: Path, n_subjects: int, seed: int, tr: float, resolution: float) -> None:
    """Dataset-level files of the raw and derivative datasets."""
    write_json(out / "dataset_description.json", {
        "Name": "Simulated ketamine vs midazolam PTSD treatment trial (ptsd_bidsapp)",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "raw",
        "License": "CC0",
        "Authors": ["ptsd_bidsapp developers", "ptsd_bidsapp simulator"],
        "GeneratedBy": [{"Name": "ptsd_bidsapp-simulate", "Version": __version__,
                         "Description": f"seed {seed}, {n_subjects} subjects, {resolution} mm"}],
        "ReferencesAndLinks": ["Norbury et al. 2021, Neuropsychopharmacology 46:2266, doi:10.1038/s41386-021-01104-4"],
    })
    atomic_write_text(out / "README", (
        "Simulated PTSD treatment trial written by `ptsd-bidsapp-simulate` (ptsd_bidsapp "
        f"{__version__}).\n\nDesign after Norbury et al. 2021: patients randomised to repeated IV ketamine or "
        "midazolam, scanned before (ses-pre) and after (ses-post) treatment with three fMRI tasks (faces, "
        "conflict, rest).\nRaw BOLD files are small placeholders with the right repetition time and number of "
        "volumes; the analysis reads `derivatives/fmriprep`, which mimics fMRIPrep outputs in "
        "MNI152NLin2009cAsym. The planted ground truth is documented in `sourcedata/simulation/`.\n"))
    atomic_write_text(out / "CHANGES", f"1.0.0 {time.strftime('%Y-%m-%d', time.gmtime(0))}\n  - simulated (seed {seed})\n")
    write_json(out / "participants.json", {
        "participant_id": {"Description": "participant label"},
        "group": {"Description": "randomised treatment arm", "Levels": {
            "ketamine": "repeated IV ketamine (0.5 mg/kg)", "midazolam": "repeated IV midazolam (active placebo)"}},
        "age": {"Description": "age at baseline", "Units": "year"},
        "sex": {"Description": "sex", "Levels": {"F": "female", "M": "male"}},
    })
    for task, meta in TASK_META.items():
        write_json(out / f"task-{task}_bold.json", dict(meta, RepetitionTime=tr, SliceTiming=_slice_timing(8, tr),
                                                         EchoTime=TE, MagneticFieldStrength=3,
                                                         SliceEncodingDirection="k"))
    write_json(out / "task-faces_events.json", {
        "trial_type": {"Description": "block condition", "Levels": {"fearful": "fearful faces", "neutral": "neutral faces"}},
    })
    write_json(out / "task-conflict_events.json", {
        "trial_type": {"Description": "previous (lower case) and current (upper case) congruency", "Levels": {
            "cC": "congruent after congruent", "cI": "incongruent after congruent",
            "iC": "congruent after incongruent", "iI": "incongruent after incongruent",
            "first": "first trial of the run (no predecessor)"}},
        "congruency": {"Description": "congruency of the current trial"},
        "response_time": {"Description": "simulated response time", "Units": "s"},
    })
    deriv = out / "derivatives" / "fmriprep"
    write_json(deriv / "dataset_description.json", {
        "Name": "fMRIPrep - fMRI PREProcessing workflow (simulated outputs)",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [{
            "Name": "fMRIPrep",
            "Version": FMRIPREP_VERSION,
            "Description": f"Simulated by ptsd_bidsapp {__version__} (ptsd-bidsapp-simulate); not real fMRIPrep output",
            "CodeURL": "https://github.com/nipreps/fmriprep",
        }],
        "SourceDatasets": [{"URL": "../../", "Version": "simulated"}],
        "HowToAcknowledge": "Simulated data: cite ptsd_bidsapp.",
    })
    atomic_write_text(deriv / "README", "Simulated fMRIPrep-like derivatives written by ptsd-bidsapp-simulate; "
                                         "see ../../sourcedata/simulation/README.md.\n")
    # BIDS 1.10 has no rule for func *_timeseries.tsv (fMRIPrep's confounds); real fMRIPrep
    # datasets need the same .bidsignore entry.
    atomic_write_text(deriv / ".bidsignore", "*_desc-confounds_timeseries.tsv\n*_desc-confounds_timeseries.json\n")


class _BackgroundWriter:
    """Compress + write one BOLD file in a thread while the next run is simulated.

    zlib releases the GIL, so compression overlaps with the numpy work; at most one file
    is pending (memory: two runs).
    """

    def __init__(self):
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=1)
        self._pending = None

    def submit(self, fn, *args):
        self.wait()
        self._pending = self._pool.submit(fn, *args)

    def wait(self):
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def close(self):
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)


def _write_subject(out: Path, label: str, params: dict, space: images.SubjectSpace, mask_img, seed: int,
                   index: int, n_volumes: dict, tr: float, resolution: float, writer: _BackgroundWriter) -> dict:
    """All files of one subject; returns its motion truth."""
    start = tr / 2.0  # fMRIPrep slice-timing reference (StartTime) at mid-TR
    res = _res_entity(resolution)
    space_ents = f"space-{TEMPLATE}" + (f"_res-{res}" if res else "")
    deriv = out / "derivatives" / "fmriprep" / f"sub-{label}"
    motion_truth: dict = {}
    engines = set()
    for s_idx, ses in enumerate(SESSIONS):
        motion_truth[ses] = {}
        for t_idx, task in enumerate(TASKS):
            if task not in n_volumes:
                continue  # a task not simulated (tasks=...); the others keep their random streams
            n = n_volumes[task]
            rng = np.random.default_rng([seed, index, 10 + s_idx, t_idx])
            stem = f"sub-{label}_ses-{ses}_task-{task}"
            raw_func = out / f"sub-{label}" / f"ses-{ses}" / "func"
            # events + signals
            if task == "faces":
                events = design.faces_events(n, tr, rng)
                sig, engine = faces_signals(params, ses, events, n, tr, start, rng)
                engines.add(engine)
            elif task == "conflict":
                events = design.conflict_events(n, tr, rng)
                sig = conflict_signals(params, ses, events, n, tr, start, rng)
            else:
                events = None
                sig = rest_signals(params, ses, n, tr, start, rng)
            if events is not None:
                write_tsv(raw_func / f"{stem}_events.tsv", events, float_format="%.3f")
            _write_raw_placeholder(raw_func / f"{stem}_bold.nii.gz", n, tr, rng)
            # motion, image, confounds
            spikes = bool(rng.random() < 0.35)
            motion, spike_vols = images.simulate_motion(n, params["motion_level_mm"], rng, spikes)
            n_dummy = int(rng.integers(0, 3))
            data = images.synthesize_run(space, sig, motion, n_dummy, rng)
            confounds, meta = images.confounds_table(space, data, motion, tr, n_dummy)
            func = deriv / f"ses-{ses}" / "func"
            header = images.bold_header(space.affine, space.shape, n, tr)
            writer.submit(images.write_nifti_gz, func / f"{stem}_{space_ents}_desc-preproc_bold.nii.gz", header,
                          images.volumes_from_matrix(data, space.mask))
            del data
            write_json(func / f"{stem}_{space_ents}_desc-preproc_bold.json", {
                "RepetitionTime": tr,
                "SpatialReference": SPATIAL_REFERENCE.get(res, f"bids:templateflow:tpl-{TEMPLATE}"),
                "TaskName": task,
                "SkullStripped": True,
                "Description": "Simulated preprocessed BOLD in standard space (ptsd_bidsapp simulator)",
                "SliceTimingCorrected": True,
                "StartTime": start,
                "Sources": [f"bids:raw:sub-{label}/ses-{ses}/func/{stem}_bold.nii.gz"],
            })
            images.write_nifti_gz(func / f"{stem}_{space_ents}_desc-brain_mask.nii.gz", mask_img, compresslevel=6)
            write_json(func / f"{stem}_{space_ents}_desc-brain_mask.json", {
                "Type": "Brain", "Description": "Brain mask (template brain mask on the BOLD grid)", "Sources": [f"bids:raw:sub-{label}/ses-{ses}/func/{stem}_bold.nii.gz"]})
            write_tsv(func / f"{stem}_desc-confounds_timeseries.tsv", confounds, sidecar=meta, float_format="%.6g")
            fd = images.framewise_displacement(motion)
            motion_truth[ses][task] = {
                "mean_fd_mm": float(np.nanmean(fd)),
                "max_fd_mm": float(np.nanmax(fd)),
                "spike_onsets": spike_vols,
                "n_non_steady_state": n_dummy,
                "n_volumes_fd_above_0.5": int(np.sum(np.nan_to_num(fd) > 0.5)),
            }
    motion_truth["dcm_forward_model"] = sorted(engines)
    return motion_truth


#: Fewest volumes per run the app accepts (:data:`ptsd_bidsapp.measures.qc.MIN_BANDPASS_VOLUMES`).
MIN_VOLUMES = MIN_BANDPASS_VOLUMES


def simulate_trial(out_dir, n_subjects: int = 21, seed: int = 20210701, resolution: float = 4.0,
                   n_volumes: int | dict | None = None, tr: float = 2.0, force: bool = False,
                   progress: bool = False, tasks=None) -> Path:
    """Write the simulated trial (see module docstring).

    Parameters
    ----------
    out_dir : path-like
        Destination; must be empty or absent (``force=True`` replaces an earlier simulation).
    n_subjects : int
        Number of patients, split between ketamine and midazolam.
    seed : int
        Random seed; the same seed writes byte-identical files.
    resolution : float
        Voxel size (mm) of the MNI152NLin2009cAsym grid of the derivatives (2 = res-2, 97x115x97).
    n_volumes : int or dict, optional
        Volumes per run (one number or ``{task: n}``; default 150).
    tr : float
        Repetition time in seconds.
    force : bool
        Replace an existing simulation in ``out_dir``.
    progress : bool
        Log one line per subject.
    tasks : sequence of str, optional
        Write only these tasks' runs (a site without some task; default all of ``faces``,
        ``conflict``, ``rest``). The kept tasks' files are identical to a full simulation's.

    Returns
    -------
    Path
        ``out_dir``.
    """
    out = Path(out_dir)
    if n_subjects < 2:
        raise ValueError("n_subjects must be >= 2 (both treatment arms)")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise FileExistsError(f"{out} is not empty; use --force to replace an earlier simulation")
        if not (out / "sourcedata" / "simulation" / "truth.json").is_file():
            raise FileExistsError(f"{out} is not empty and is not a ptsd_bidsapp simulation; refusing to delete it")
        shutil.rmtree(out)
    if n_volumes is None:
        n_volumes = DEFAULT_N_VOLUMES
    if isinstance(n_volumes, int):
        n_volumes = {task: int(n_volumes) for task in TASKS}
    if tasks is not None:
        unknown = sorted(set(tasks) - set(TASKS))
        if unknown or not tasks:
            raise ValueError(f"tasks must be a non-empty subset of {', '.join(TASKS)} (got {list(tasks)})")
        n_volumes = {task: n for task, n in n_volumes.items() if task in tasks}
    if min(n_volumes.values()) < MIN_VOLUMES:
        raise ValueError(f"n_volumes must be >= {MIN_VOLUMES}: shorter runs are refused by the app (the band-pass "
                         "filter of task-free connectivity needs them)")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    mask_img = brain_mask(resolution)
    atlas_on_grid = resample_atlas_to(mask_img, load_atlas())
    atlas_data = atlas_on_grid.data()
    write_dataset_files(out, n_subjects, seed, tr, resolution)

    groups = generative.assign_groups(n_subjects, seed)
    width = _label_width(n_subjects)
    participants = []
    truth_subjects = {}
    writer = _BackgroundWriter()
    try:
        _simulate_subjects(out, n_subjects, seed, groups, width, mask_img, atlas_data, n_volumes, tr, resolution,
                           writer, participants, truth_subjects, progress, t0)
    finally:
        writer.close()
    write_tsv(out / "participants.tsv", pd.DataFrame(participants))
    _write_truth(out, seed, n_subjects, tr, n_volumes, resolution, truth_subjects)
    return out


def _simulate_subjects(out, n_subjects, seed, groups, width, mask_img, atlas_data, n_volumes, tr, resolution,
                       writer, participants, truth_subjects, progress, t0) -> None:
    for index in range(n_subjects):
        label = f"{index + 1:0{width}d}"
        params = generative.subject_parameters(seed, index, groups[index])
        space = images.make_subject_space(mask_img, atlas_data, np.random.default_rng([seed, index, 2]))
        motion = _write_subject(out, label, params, space, mask_img, seed, index, n_volumes, tr, resolution, writer)
        del space
        participants.append({"participant_id": f"sub-{label}", "group": params["group"], "age": params["age"],
                             "sex": params["sex"]})
        sessions = pd.DataFrame({
            "session_id": [f"ses-{s}" for s in SESSIONS],
            "caps5_total": [params["caps5"][s] for s in SESSIONS],
            "madrs_total": [params["madrs"][s] for s in SESSIONS],
        })
        write_tsv(out / f"sub-{label}" / f"sub-{label}_sessions.tsv", sessions, float_format="%.0f", sidecar={
            "session_id": {"Description": "pre = baseline scan before treatment, post = after the treatment course"},
            "caps5_total": {"Description": "Clinician-Administered PTSD Scale for DSM-5, total severity (past week)",
                            "Units": "points"},
            "madrs_total": {"Description": "Montgomery-Asberg Depression Rating Scale, total", "Units": "points"},
        })
        entry = {k: v for k, v in params.items() if k not in ("motion_level_mm",)}
        entry["motion"] = dict(motion, level_mm=params["motion_level_mm"])
        truth_subjects[f"sub-{label}"] = entry
        if progress:
            LOGGER.info("sub-%s (%s) written, %.1f s", label, params["group"], time.time() - t0)


def _write_truth(out: Path, seed: int, n_subjects: int, tr: float, n_volumes: dict, resolution: float,
                 subjects: dict) -> None:
    engines = sorted({e for s in subjects.values() for e in s["motion"].pop("dcm_forward_model")})
    truth = {
        "seed": seed,
        "n_subjects": n_subjects,
        "tr": tr,
        "te": TE,
        "dcm_te": DCM_TE,
        "start_time": tr / 2.0,
        "n_volumes": n_volumes,
        "resolution_mm": resolution,
        "space": TEMPLATE,
        "sessions": list(SESSIONS),
        "tasks": [task for task in TASKS if task in n_volumes],
        "roi_labels": list(ROI_LABELS),
        "simulator_version": __version__,
        "dcm_forward_model": engines,
        "improvement": {
            "definition": "caps5_total pre - post (points)",
            "z_definition": f"(improvement - {generative.IMPROVEMENT_MEAN}) / {generative.IMPROVEMENT_SD}",
            "arm_mean_sd": generative.ARM_IMPROVEMENT,
        },
        "change_model": "post - pre = slope_by_group[group] * improvement_z + Normal(0, noise_sd); pre = pre_mean + "
                        "pre_sd * Normal(0, 1) (+ baseline_slope_by_group[group] * improvement_z)",
        "effects": generative.effects_for_truth(),
        "subjects": subjects,
    }
    write_json(out / "sourcedata" / "simulation" / "truth.json", truth)
    from ptsd_bidsapp.simulate.truth_readme import TRUTH_README

    atomic_write_text(out / "sourcedata" / "simulation" / "README.md", TRUTH_README)
