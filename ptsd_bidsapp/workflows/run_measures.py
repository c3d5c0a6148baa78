"""Glue between the nipype nodes and the pure functions of :mod:`ptsd_bidsapp.measures` / :mod:`ptsd_bidsapp.dcm`.

Each function here reads inputs, calls the array-level functions, and writes its
files (with their final BIDS names) into the node's working folder; the sink
copies them into the derivative dataset. A *summary* dict describes what was
produced:

``{"subject", "session", "task", "run", "entities", "files": [{"path", "name", "datatype"}],
"features": [rows of Contract 3], "qc": {...}, "warnings": [...], "report": {...}}``
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from ptsd_bidsapp import contracts
from ptsd_bidsapp.bids.outputs import atomic_write_bytes, bids_filename, write_json, write_tsv  # noqa: F401

LOGGER = logging.getLogger("ptsd_bidsapp.participant")



def _file_entry(path: Path, datatype: str | None = "func") -> dict:
    return {"path": str(path), "name": path.name, "datatype": datatype}


def _read_events(path: str | Path, conditions: list[str]) -> pd.DataFrame:
    """BIDS events restricted to the configured conditions (onset, duration in s, trial_type)."""
    events = pd.read_csv(path, sep="\t", na_values="n/a", dtype={"trial_type": str})
    events = events[events["trial_type"].isin(conditions)]
    return events[["onset", "duration", "trial_type"]].reset_index(drop=True)


def _run_label(run_info: Mapping[str, Any]) -> str:
    label = f"sub-{run_info['subject']} ses-{run_info['session']} task-{run_info['task']}"
    return label + (f" run-{run_info['run']}" if run_info.get("run") not in (None, "") else "")


def compute_run_measures(
    run_info: Mapping[str, Any],
    bold: str | Path,
    mask: str | Path,
    confounds: str | Path,
    events: str | Path | None,
    atlas_dseg: str | Path,
    atlas_labels: str | Path,
    config: Mapping[str, Any],
    out_dir: Path,
) -> dict:
    """Every participant measure of one BOLD run, from a single read of the series.

    Steps: ROI set resampled to the BOLD grid and its coverage in the brain mask; motion QC
    from ``framewise_displacement``; confounds with the task's denoising strategy
    (:func:`ptsd_bidsapp.measures.confounds.load_run_confounds`); the BOLD read once as
    float32 (ROI means, per-ROI voxel blocks for the eigenvariates, then released); then,
    on ROI signals only, the activation GLM and gPPI (task runs) or Fisher-z connectivity
    (task-free runs). Data problems of this run (unreadable or all-zero BOLD, missing
    confound columns) do not raise: the summary carries ``error`` and no feature rows,
    so the subject's other runs are still written.

    Parameters
    ----------
    run_info : mapping
        :class:`ptsd_bidsapp.bids.inputs.RunInputs` fields (``tr`` in s,
        ``slice_time_ref`` as a fraction of TR, ``entities``).
    bold, mask, confounds, events : path
        fMRIPrep BOLD, brain mask, confounds TSV; raw events TSV (None for rest).
    atlas_dseg, atlas_labels : path
        ROI set (see :func:`ptsd_bidsapp.atlas.atlas_files`).
    config : mapping
        Resolved analysis configuration.
    out_dir : Path
        Folder where the files are written with their final BIDS names.

    Returns
    -------
    dict
        Run summary (see module docstring).
    """
    from ptsd_bidsapp.measures.errors import MeasureError

    out_dir = Path(out_dir)
    summary: dict[str, Any] = {
        "subject": run_info["subject"], "session": run_info["session"], "task": run_info["task"],
        "run": run_info.get("run"), "tr": float(run_info["tr"]), "n_volumes": int(run_info["n_volumes"]),
        "bold": str(bold), "echo_time": (run_info.get("metadata") or {}).get("EchoTime"),
        "files": [], "features": [], "qc": {}, "warnings": [], "report": {}, "work": {},
        "error": None,
    }
    try:
        _run_measures(summary, run_info, Path(bold), Path(mask), Path(confounds), events, atlas_dseg,
                      atlas_labels, config, out_dir)
    except (MeasureError, ValueError, OSError) as err:
        message = f"{_run_label(run_info)}: {err}"
        LOGGER.error(message)
        summary["error"] = message
        summary["features"] = []
    return summary


def _run_measures(summary, run_info, bold, mask, confounds, events, atlas_dseg, atlas_labels, config, out_dir):
    import nibabel as nib
    import numpy as np
    import warnings as _warnings

    from ptsd_bidsapp.atlas import load_atlas, resample_atlas_to, roi_coverage
    from ptsd_bidsapp.bids.outputs import write_nifti
    from ptsd_bidsapp.measures import activation, features, gppi, qc, restfc, voi
    from ptsd_bidsapp.measures.confounds import load_run_confounds
    from ptsd_bidsapp.measures.errors import MeasureError

    task = run_info["task"]
    spec = config["tasks"][task]
    tr = float(run_info["tr"])
    slice_ref = float(run_info.get("slice_time_ref") or 0.0)
    atlas_name = config["atlas"]["name"]
    ents = {"sub": run_info["subject"], "ses": run_info["session"], "task": task, "run": run_info.get("run"),
            "space": config.get("space")}
    atlas_ents = dict(ents, atlas=atlas_name)
    if run_info.get("entities", {}).get("resolution"):
        atlas_ents["res"] = run_info["entities"]["resolution"]
    warnings_out: list[str] = summary["warnings"]

    def add(path: Path) -> Path:
        """Register a file for the sink; a TSV's JSON sidecar (written with it) goes too."""
        summary["files"].append(_file_entry(path))
        if path.name.endswith(".tsv"):
            summary["files"].append(_file_entry(path.with_suffix(".json")))
        return path

    # ROI set on this BOLD grid (header only), coverage inside the brain mask
    bold_img = nib.load(str(bold))
    if len(bold_img.shape) != 4:
        raise MeasureError(f"BOLD {bold} is not 4D (shape {bold_img.shape})")
    atlas = load_atlas(split_hemispheres=False, dseg=atlas_dseg, labels=atlas_labels)
    grid_atlas = resample_atlas_to(bold_img, atlas)
    mask_img = nib.load(str(mask))
    if mask_img.shape[:3] != bold_img.shape[:3]:
        raise MeasureError(f"brain mask {mask} grid {mask_img.shape[:3]} differs from BOLD {bold} {bold_img.shape[:3]}")
    coverage = roi_coverage(grid_atlas, mask_img)
    min_coverage = float(config["atlas"].get("min_coverage", 0.5))
    names = grid_atlas.names
    low = [n for n in names if not coverage.get(n, 0) >= min_coverage]
    for name in low:
        warnings_out.append(f"{_run_label(run_info)}: ROI '{name}' coverage {coverage.get(name, float('nan')):.2f} "
                            f"inside brain mask {mask.name} is below {min_coverage}: its measures are n/a")
    labels = grid_atlas.data()
    labels[np.asanyarray(mask_img.dataobj) <= 0] = 0
    dseg_path = add(out_dir / bids_filename(atlas_ents, "dseg", ".nii.gz"))
    write_nifti(dseg_path, grid_atlas.img)
    label_table = grid_atlas.labels[["index", "name"]].copy()
    label_table["coverage"] = [coverage.get(n) for n in names]
    add(write_tsv(out_dir / bids_filename(atlas_ents, "dseg", ".tsv"), label_table, sidecar={
        "index": {"Description": "Integer value of the ROI in the dseg image"},
        "name": {"Description": "ROI label (Contract 1)"},
        "coverage": {"Description": f"Fraction of the ROI's voxels inside the brain mask {mask.name}; "
                                    f"below {min_coverage} the ROI's measures are n/a"}}))
    write_json(dseg_path.with_name(dseg_path.name.replace(".nii.gz", ".json")), {
        "SpatialReference": str(bold.name),
        "Description": f"atlas-{atlas_name} ROI set resampled (nearest neighbour) to the grid of this BOLD run",
        "Resolution": "BOLD grid", "Atlas": atlas_name})
    summary["files"].append(_file_entry(dseg_path.with_name(dseg_path.name.replace(".nii.gz", ".json"))))
    summary["report"]["atlas"] = str(dseg_path)
    summary["coverage"] = {n: (None if not np.isfinite(v) else float(v)) for n, v in coverage.items()}

    # motion QC on the full fMRIPrep table
    raw = pd.read_csv(confounds, sep="\t", na_values="n/a")
    if len(raw) != summary["n_volumes"]:
        raise MeasureError(f"confounds file {confounds} has {len(raw)} rows but BOLD {bold.name} has "
                           f"{summary['n_volumes']} volumes")
    motion = qc.motion_qc(raw, config["motion_qc"], source=str(confounds))
    qc_pass = not motion["excluded"]
    summary["qc"] = {k: v for k, v in motion.items() if k != "censored"}
    if not qc_pass:
        warnings_out.append(f"{_run_label(run_info)}: excluded by motion QC ({'; '.join(motion['reasons'])})")
    fd_table = pd.DataFrame({"framewise_displacement": raw["framewise_displacement"],
                             "censored": motion["censored"].astype(int)})
    fd_path = add(out_dir / bids_filename(dict(ents, desc="confounds"), "motion", ".tsv"))
    write_tsv(fd_path, fd_table, sidecar={
        "Description": "Motion QC of this run (SPEC §5).",
        "framewise_displacement": {"Description": "fMRIPrep framewise displacement", "Units": "mm"},
        "censored": {"Description": f"1 when FD > {config['motion_qc']['fd_threshold']} mm"},
        "MeanFramewiseDisplacement": motion["mean_fd"], "MaxFramewiseDisplacement": motion["max_fd"],
        "PercentCensored": motion["percent_censored"], "Excluded": motion["excluded"],
        "ExclusionReasons": motion["reasons"], "Criteria": dict(config["motion_qc"]),
    })
    summary["report"].update({"fd": str(fd_path), "fd_threshold": float(config["motion_qc"]["fd_threshold"])})

    # confounds with the task's strategy (nilearn load_confounds)
    strategy = dict(config["denoising"][spec["denoising"]])
    conf_df, sample_mask = load_run_confounds(bold, strategy)
    conf = conf_df.to_numpy(float) if conf_df.shape[1] else None

    # the BOLD, read once; ROI means and the ROI voxel blocks, then released
    data, _ = activation.load_bold_float32(bold)
    with _warnings.catch_warnings(record=True) as caught:
        _warnings.simplefilter("always")
        signals, n_voxels = activation.roi_mean_signals(data, labels, grid_atlas.indices, source=str(bold))
        eigen = np.full_like(signals, np.nan)
        for j, index in enumerate(grid_atlas.indices):
            if names[j] in low or n_voxels[j] == 0:
                continue
            block = data[labels == index].T  # (t, n_vox) copy of one ROI
            eigen[:, j] = voi.first_eigenvariate(block, conf)
    del data
    warnings_out.extend(f"{_run_label(run_info)}: {w.message}" for w in caught)
    for j, name in enumerate(names):
        if name in low:
            signals[:, j] = np.nan
    psc = activation.percent_signal_change(signals)

    series_path = add(out_dir / bids_filename(atlas_ents, "timeseries", ".tsv"))
    write_tsv(series_path, pd.DataFrame(psc, columns=names), sidecar={
        "Description": "Mean signal of each ROI inside the brain mask, percent signal change about the run mean.",
        "SamplingFrequency": 1.0 / tr, "Units": "%", "Atlas": atlas_name})
    voi_path = add(out_dir / bids_filename(dict(atlas_ents, desc="eigenvariate"), "timeseries", ".tsv"))
    write_tsv(voi_path, pd.DataFrame(eigen, columns=names), sidecar={
        "Description": "First eigenvariate of each ROI's voxels after regressing out the run's confounds "
                       "(SPM12 spm_regions convention: scaled by sqrt(s1/n_voxels), signed to load positively "
                       "on the ROI mean); the VOIs of the DCM.",
        "SamplingFrequency": 1.0 / tr, "Units": "BOLD (scanner units)", "Atlas": atlas_name,
        "ConfoundsStrategy": strategy})
    summary["report"]["timeseries"] = str(series_path)
    conf_path = out_dir / "confounds_used.tsv"  # work dir only: DCM X0 of this run
    write_tsv(conf_path, conf_df)
    summary["work"].update({"voi": str(voi_path), "confounds": str(conf_path),
                            "events": str(events) if events else None, "slice_time_ref": slice_ref})

    if spec.get("design") == "rest":
        clean = restfc.denoise_signals(psc, tr, conf, sample_mask, low_pass=strategy.get("low_pass"),
                                       high_pass=strategy.get("high_pass"))
        fc = restfc.fisher_z_connectivity(clean, names)
        path = add(out_dir / bids_filename(dict(atlas_ents, desc="fisherz"), "relmat", ".tsv"))
        write_tsv(path, fc.rename_axis("roi"), index=True, sidecar={
            "Description": "Fisher z of the Pearson correlation between denoised ROI signals (confound "
                           "regression, censoring, band-pass).",
            "RelationshipMeasure": "Fisher z (arctanh) of Pearson r", "Atlas": atlas_name,
            "VolumesKept": int(len(sample_mask)) if sample_mask is not None else summary["n_volumes"],
            "LowPass": strategy.get("low_pass"), "HighPass": strategy.get("high_pass")})
        summary["report"].setdefault("relmat", {})[f"fc_{task}"] = str(path)
        summary["features"].extend(features.pair_features(fc, task, "fc", None, qc_pass, low))
        return

    conditions = list(spec["conditions"])
    events_df = _read_events(events, conditions)
    glm = config.get("glm", {})
    design = activation.task_design_matrix(summary["n_volumes"], tr, events_df, conf_df if conf is not None else None,
                                           slice_ref, glm.get("hrf_model", "spm"), glm.get("drift_model"))
    design_path = out_dir / "design.tsv"  # work dir only (report figure)
    write_tsv(design_path, design)
    summary["report"]["design"] = str(design_path)
    tables = activation.fit_roi_glm(psc, design, spec["contrasts"], names, glm.get("noise_model", "ar1"),
                                    sample_mask)
    for contrast, table in tables.items():
        table = table.copy()
        table["coverage"] = [coverage.get(n) for n in names]
        table.loc[table["roi"].isin(low), ["effect_size", "stderr", "t"]] = np.nan
        path = add(out_dir / bids_filename(dict(atlas_ents, desc=contrast), "activation", ".tsv"))
        write_tsv(path, table, sidecar={
            "Description": f"ROI first-level GLM (nilearn, {glm.get('hrf_model', 'spm')} HRF, "
                           f"{glm.get('noise_model', 'ar1')} noise) contrast '{spec['contrasts'][contrast]}'.",
            "effect_size": {"Units": "% signal change per unit regressor"},
            "coverage": {"Description": "fraction of ROI voxels inside the brain mask"}})
        summary["report"].setdefault("activation", {})[contrast] = str(path)
        summary["features"].extend(features.activation_features(table, task, contrast, qc_pass, low))

    if spec.get("gppi"):
        gcfg = config.get("gppi", {})
        task_cols = design[[c for c in design.columns if c in conditions]]
        for contrast, expression in spec["contrasts"].items():
            directed, symmetric = gppi.gppi_matrix(
                psc, names, task_cols, events_df, conditions, expression, tr, confounds=conf,
                seeds=gcfg.get("seeds"), precision=gcfg.get("deconvolution_precision"),
                slice_time_ref=slice_ref, noise_model=glm.get("noise_model", "ar1"),
                method=gcfg.get("method", gppi.DEFAULT_METHOD), fmri_t=int(gcfg.get("fmri_t", gppi.MICROTIME_BINS)),
                fmri_t0=gcfg.get("fmri_t0"))
            for desc, matrix, text in (
                (contrast, symmetric, "symmetrised (mean of both directions)"),
                (f"{contrast}Directed", directed, "directed: row = seed, column = target"),
            ):
                path = add(out_dir / bids_filename(dict(atlas_ents, desc=desc), "relmat", ".tsv"))
                write_tsv(path, matrix.rename_axis("roi"), index=True, sidecar={
                    "Description": f"gPPI (McLaren et al. 2012) contrast '{expression}' of interaction betas, {text}.",
                    "RelationshipMeasure": "gPPI interaction beta contrast", "Atlas": atlas_name})
            summary["report"].setdefault("relmat", {})[f"gppi_{task}_{contrast}"] = str(
                out_dir / bids_filename(dict(atlas_ents, desc=contrast), "relmat", ".tsv"))
            summary["features"].extend(features.pair_features(symmetric, task, "gppi", contrast, qc_pass, low))
            summary["features"].extend(features.directed_features(directed, task, contrast, qc_pass, low))


def compute_session_measures(
    run_summaries: list[dict], config: Mapping[str, Any], session_info: Mapping[str, Any], out_dir: Path
) -> dict:
    """Session-level step: the faces DCM (if enabled) and the session's features table.

    Parameters
    ----------
    run_summaries : list of dict
        Summaries of the session's runs (:func:`compute_run_measures`).
    config : mapping
        Resolved analysis configuration.
    session_info : mapping
        ``subject``, ``session``, ``seed``.
    out_dir : Path
        Node working folder.

    Returns
    -------
    dict
        Session summary with ``runs``, ``files``, ``features_file`` and ``dcm``.
    """
    subject, session = session_info["subject"], session_info["session"]
    features = [row for summary in run_summaries for row in summary.get("features", [])]
    files: list[dict] = []
    warnings = [w for summary in run_summaries for w in summary.get("warnings", [])]
    dcm_summary = None
    dcm_config = config.get("dcm", {})
    if dcm_config.get("enabled"):
        task_runs = [s for s in run_summaries if s["task"] == dcm_config["task"]]
        if task_runs:
            from ptsd_bidsapp.workflows.dcm_step import fit_session_dcm_files

            try:
                dcm_summary = fit_session_dcm_files(task_runs[0], config, out_dir)
                files.extend(dcm_summary["files"])
                features.extend(dcm_summary["features"])
            except Exception as err:  # a DCM failure must not lose the other measures
                message = f"DCM for sub-{subject} ses-{session} failed: {err}"
                LOGGER.warning(message)
                warnings.append(message)
        else:
            warnings.append(f"no '{dcm_config['task']}' run for sub-{subject} ses-{session}: no DCM")

    table = pd.DataFrame(features, columns=contracts.FEATURE_COLUMNS)
    table = table.sort_values(["kind", "task", "measure"], kind="mergesort").reset_index(drop=True)
    name = bids_filename(
        {"sub": subject, "ses": session, "space": config.get("space"), "atlas": config["atlas"]["name"],
         "desc": "measures"}, "features", ".tsv")
    path = out_dir / name
    write_tsv(path, table, sidecar={
        "Description": "Every participant-level scalar of this session in long format; read by the group level.",
        "measure": "Measure identifier: activation_<task>_<contrast>_<roi>, gppi_<task>_<contrast>_<roiA>-<roiB>, "
                   "fc_<task>_<roiA>-<roiB>, dcm_<task>_<field>_[<input>_]<from>-<to>",
        "value": "Estimate (activation: % signal change per unit regressor; gPPI: interaction beta contrast; "
                 "fc: Fisher z; dcm: posterior mean, Hz or log scale)",
        "qc_pass": "False when the run failed motion QC or the ROI coverage threshold",
    })
    return {
        "subject": subject,
        "session": session,
        "runs": run_summaries,
        "files": files,
        "features_file": _file_entry(path, None),
        "dcm": dcm_summary,
        "warnings": warnings,
    }


def sink_outputs(session_summaries: list[dict], output_dir: Path, subject: str) -> list[str]:
    """Copy produced files into the derivative dataset atomically; features tables last.

    Returns
    -------
    list of str
        Written paths.
    """
    written: list[str] = []

    def _copy(entry: dict, session: str | None) -> None:
        dest = Path(output_dir) / f"sub-{subject}"
        if session:
            dest = dest / f"ses-{session}"
        if entry.get("datatype"):
            dest = dest / entry["datatype"]
        dest = dest / entry["name"]
        atomic_write_bytes(dest, Path(entry["path"]).read_bytes())
        written.append(str(dest))

    for summary in session_summaries:
        for run in summary["runs"]:
            for entry in run.get("files", []):
                _copy(entry, summary["session"])
        for entry in summary.get("files", []):
            _copy(entry, summary["session"])
    # The features table marks a complete session: copy it (sidecar first) after everything else.
    for summary in session_summaries:
        table = summary["features_file"]
        sidecar = Path(table["path"]).with_suffix(".json")
        if sidecar.is_file():
            _copy(_file_entry(sidecar, table.get("datatype")), summary["session"])
        _copy(table, summary["session"])
    failed = [run for summary in session_summaries for run in summary["runs"] if run.get("error")]
    status = {
        "subject": subject,
        "sessions": sorted(summary["session"] for summary in session_summaries),
        "failed_runs": [run["error"] for run in failed],
        "failed_run_keys": [{k: run.get(k) for k in ("session", "task", "run")} for run in failed],
        "warnings": [w for summary in session_summaries for w in summary.get("warnings", [])],
    }
    written.append(str(write_json(Path(output_dir) / "logs" / f"sub-{subject}_status.json", status)))
    return written


def read_status(output_dir: Path, subject: str) -> dict | None:
    """The status a subject's sink wrote (``logs/sub-<label>_status.json``), or None."""
    import json

    path = Path(output_dir) / "logs" / f"sub-{subject}_status.json"
    return json.loads(path.read_text()) if path.is_file() else None
