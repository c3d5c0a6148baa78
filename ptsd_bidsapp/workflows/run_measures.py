"""Participant compute steps: the pure functions of :mod:`ptsd_bidsapp.measures` applied to one run
and one session. Nothing here writes a file.

:func:`compute_run_measures` and :func:`compute_session_measures` return *results*: plain data
(tables, images, arrays, dicts) and the derivative files as :class:`ptsd_bidsapp.bids.outputs.Derivative`
records; the sink (:mod:`ptsd_bidsapp.workflows.sink`) is the one place that writes them. A run result is

``{"subject", "session", "task", "run", "tr", "n_volumes", "bold", "echo_time", "outputs": [Derivative],
"features": [rows of Contract 3], "qc": {...}, "coverage": {...}, "warnings": [...], "report": {tables for
the subject report}, "dcm_inputs": {VOIs, confounds, events of the DCM}, "error": str or None}``
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from ptsd_bidsapp import contracts
from ptsd_bidsapp.bids.outputs import Derivative, as_written
from ptsd_bidsapp.config import parse_contrast

LOGGER = logging.getLogger("ptsd_bidsapp.participant")


def _read_events(path: str | Path, conditions: list[str]) -> pd.DataFrame:
    """BIDS events restricted to the configured conditions (onset, duration in s, trial_type)."""
    events = pd.read_csv(path, sep="\t", na_values="n/a", dtype={"trial_type": str})
    events = events[events["trial_type"].isin(conditions)]
    return events[["onset", "duration", "trial_type"]].reset_index(drop=True)


def _unmodelled_trial_types(path: str | Path, conditions: list[str], expected: list[str]) -> list[str]:
    """Trial types of the events file that no configured condition uses (and that the config does
    not list as ``unmodelled_trial_types``), with their counts, e.g. ``'cue' (12 events)``."""
    events = pd.read_csv(path, sep="\t", na_values="n/a", dtype={"trial_type": str})
    counts = events["trial_type"].dropna().value_counts(sort=False)
    return [f"'{t}' ({n} event{'s' if n != 1 else ''})" for t, n in sorted(counts.items())
            if t not in conditions and t not in expected]


def _run_label(run_info: Mapping[str, Any]) -> str:
    label = f"sub-{run_info['subject']} ses-{run_info['session']} task-{run_info['task']}"
    return label + (f" run-{run_info['run']}" if run_info.get("run") not in (None, "") else "")


def _empty_result(run_info: Mapping[str, Any], bold: str | Path | None) -> dict:
    return {
        "subject": run_info["subject"], "session": run_info["session"], "task": run_info["task"],
        "run": run_info.get("run"), "tr": run_info.get("tr"), "n_volumes": run_info.get("n_volumes"),
        "bold": str(bold) if bold else None, "echo_time": (run_info.get("metadata") or {}).get("EchoTime"),
        "outputs": [], "features": [], "qc": {}, "warnings": [], "report": {}, "dcm_inputs": {},
        "error": None,
    }


def failed_run_result(run_info: Mapping[str, Any], reason: str, config: Mapping[str, Any],
                      roi_names: list[str], bold: str | Path | None = None) -> dict:
    """Result of a run that could not be used: no outputs, ``n/a`` rows with ``reason`` as their note.

    Parameters
    ----------
    run_info : mapping
        ``subject``, ``session``, ``task``, ``run`` (``tr``, ``n_volumes`` when known).
    reason : str
        Why the run is unusable; starts with the run's label.
    config : mapping
        Resolved configuration (``tasks``, ``gppi``).
    roi_names : list of str
        ROI labels (Contract 1), atlas order.
    """
    from ptsd_bidsapp.measures.features import unavailable_features

    result = _empty_result(run_info, bold)
    result["error"] = reason
    task = run_info["task"]
    result["features"] = unavailable_features(task, config["tasks"][task], roi_names, reason,
                                              seeds=(config.get("gppi") or {}).get("seeds"))
    return result


def compute_run_measures(
    run_info: Mapping[str, Any],
    bold: str | Path,
    mask: str | Path,
    confounds: str | Path,
    events: str | Path | None,
    atlas_dseg: str | Path,
    atlas_labels: str | Path,
    config: Mapping[str, Any],
    low_mem: bool = False,
) -> dict:
    """Every participant measure of one BOLD run, from a single read of the series.

    Steps: ROI set resampled to the BOLD grid and its coverage in the brain mask; motion QC
    from ``framewise_displacement``; confounds with the task's denoising strategy
    (:func:`ptsd_bidsapp.measures.confounds.load_run_confounds`); the BOLD decompressed once,
    keeping only the ROI voxels inside the brain mask as float32
    (:func:`ptsd_bidsapp.measures.bold_stream.read_bold_voxels`: ROI means, per-ROI voxel blocks
    for the eigenvariates, then released); then,
    on ROI signals only, the activation GLM and gPPI (task runs) or Fisher-z connectivity
    (task-free runs). Data problems of this run (unreadable or all-zero BOLD, missing
    confound columns) do not raise: the result carries ``error`` and its measures are ``n/a``
    with the error as their note, so the subject's other runs are still written.

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
    low_mem : bool
        Decompress the BOLD one volume at a time (``--low-mem``; same values).

    Returns
    -------
    dict
        Run result (see module docstring); nothing is written.
    """
    from ptsd_bidsapp.atlas import load_atlas
    from ptsd_bidsapp.measures.errors import MeasureError

    result = _empty_result(run_info, bold)
    result["tr"], result["n_volumes"] = float(run_info["tr"]), int(run_info["n_volumes"])
    try:
        _run_measures(result, run_info, Path(bold), Path(mask), Path(confounds), events, atlas_dseg,
                      atlas_labels, config, low_mem)
    except (MeasureError, ValueError, OSError) as err:
        message = f"{_run_label(run_info)}: {err}"
        LOGGER.error(message)
        names = load_atlas(split_hemispheres=False, dseg=atlas_dseg, labels=atlas_labels).names
        failed = failed_run_result(run_info, message, config, names, bold)
        result.update(error=message, features=failed["features"])
    return result


def _run_measures(result, run_info, bold, mask, confounds, events, atlas_dseg, atlas_labels, config,
                  low_mem=False):
    import nibabel as nib
    import numpy as np
    import warnings as _warnings

    from ptsd_bidsapp.atlas import load_atlas, resample_atlas_to, roi_coverage
    from ptsd_bidsapp.measures import activation, bold_stream, features, gppi, qc, restfc, voi
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
    warnings_out: list[str] = result["warnings"]
    report = result["report"]

    def add(derivative: Derivative) -> Derivative:
        result["outputs"].append(derivative)
        return derivative

    # ROI set on this BOLD grid (header only), coverage inside the brain mask
    bold_img = nib.load(str(bold))
    if len(bold_img.shape) != 4:
        raise MeasureError(f"BOLD {bold} is not 4D (shape {bold_img.shape})")
    atlas = load_atlas(split_hemispheres=False, dseg=atlas_dseg, labels=atlas_labels)
    grid_atlas = resample_atlas_to(bold_img, atlas)
    mask_img = nib.load(str(mask))
    qc.check_same_grid(mask_img, bold_img, str(mask), str(bold))
    coverage = roi_coverage(grid_atlas, mask_img)
    min_coverage = float(config["atlas"].get("min_coverage", 0.5))
    names = grid_atlas.names
    low = [n for n in names if not coverage.get(n, 0) >= min_coverage]
    for name in low:
        warnings_out.append(f"{_run_label(run_info)}: ROI '{name}' coverage {coverage.get(name, float('nan')):.2f} "
                            f"inside brain mask {mask.name} is below {min_coverage}: its measures are n/a")
    labels = grid_atlas.data()
    labels[np.asanyarray(mask_img.dataobj) <= 0] = 0
    # the dseg image and its table share one sidecar (same stem): the image's, which also defines the
    # table's column beyond BIDS's index/name (the validator warns about undefined columns)
    add(Derivative(atlas_ents, "dseg", ".nii.gz", grid_atlas.img, sidecar={
        "SpatialReference": str(bold.name),
        "Description": f"atlas-{atlas_name} ROI set resampled (nearest neighbour) to the grid of this BOLD run",
        "Resolution": "BOLD grid", "Atlas": atlas_name,
        "coverage": {"LongName": "ROI coverage of the brain mask",
                     "Description": f"fraction of the ROI's voxels on this grid inside the brain mask {mask.name}; "
                                    f"ROIs below atlas.min_coverage ({min_coverage}) have n/a measures",
                     "Units": "1"}}))
    label_table = grid_atlas.labels[["index", "name"]].copy()
    label_table["coverage"] = [coverage.get(n) for n in names]
    add(Derivative(atlas_ents, "dseg", ".tsv", label_table))
    report["atlas"] = grid_atlas.img
    report["atlas_labels"] = dict(zip(grid_atlas.indices, names))
    result["coverage"] = {n: (None if not np.isfinite(v) else float(v)) for n, v in coverage.items()}

    # motion QC on the full fMRIPrep table
    raw = pd.read_csv(confounds, sep="\t", na_values="n/a")
    if len(raw) != result["n_volumes"]:
        raise MeasureError(f"confounds file {confounds} has {len(raw)} rows but BOLD {bold.name} has "
                           f"{result['n_volumes']} volumes")
    motion = qc.motion_qc(raw, config["motion_qc"], source=str(confounds))
    qc_pass = not motion["excluded"]
    result["qc"] = {k: v for k, v in motion.items() if k != "censored"}
    if not qc_pass:
        warnings_out.append(f"{_run_label(run_info)}: excluded by motion QC ({'; '.join(motion['reasons'])})")
    fd_table = pd.DataFrame({"framewise_displacement": raw["framewise_displacement"],
                             "censored": motion["censored"].astype(int)})
    add(Derivative(dict(ents, desc="confounds"), "motion", ".tsv", fd_table, sidecar={
        "Description": "Motion QC of this run (SPEC §5).",
        "framewise_displacement": {"Description": "fMRIPrep framewise displacement", "Units": "mm"},
        "censored": {"Description": f"1 when FD > {config['motion_qc']['fd_threshold']} mm"},
        "MeanFramewiseDisplacement": motion["mean_fd"], "MaxFramewiseDisplacement": motion["max_fd"],
        "PercentCensored": motion["percent_censored"], "Excluded": motion["excluded"],
        "ExclusionReasons": motion["reasons"], "Criteria": dict(config["motion_qc"]),
    }))
    report.update({"fd": as_written(fd_table), "fd_threshold": float(config["motion_qc"]["fd_threshold"])})

    # confounds with the task's strategy (nilearn load_confounds)
    strategy = dict(config["denoising"][spec["denoising"]])
    conf_df, sample_mask = load_run_confounds(bold, strategy, tr)
    conf = conf_df.to_numpy(float) if conf_df.shape[1] else None
    band_pass = spec.get("design") == "rest" and bool(strategy.get("low_pass") or strategy.get("high_pass"))
    qc.check_run_length(result["n_volumes"], conf_df.shape[1] + len(spec.get("conditions") or []) + 1, band_pass,
                        str(bold))

    # the BOLD, decompressed once: only the ROI voxels inside the brain mask are kept (every measure
    # below needs ROI means or ROI voxel blocks), in the order data[labels == index] would give them;
    # the same pass gives the run's mean BOLD, on which the subject report draws the ROI set
    in_rois = np.isin(labels, grid_atlas.indices)
    data, mean_bold = bold_stream.read_bold_voxels(bold, in_rois, low_mem=low_mem, mean_image=True)
    voxel_labels = labels[in_rois]
    report["mean_bold"] = nib.Nifti1Image(mean_bold, bold_img.affine)
    with _warnings.catch_warnings(record=True) as caught:
        _warnings.simplefilter("always")
        signals, n_voxels = activation.roi_mean_signals(data, voxel_labels, grid_atlas.indices, source=str(bold))
        eigen = np.full_like(signals, np.nan)
        for j, index in enumerate(grid_atlas.indices):
            if names[j] in low or n_voxels[j] == 0:
                continue
            block = data[voxel_labels == index].T  # (t, n_vox) copy of one ROI
            eigen[:, j] = voi.first_eigenvariate(block, conf)
    del data
    warnings_out.extend(f"{_run_label(run_info)}: {w.message}" for w in caught)
    for j, name in enumerate(names):
        if name in low:
            signals[:, j] = np.nan
    psc = activation.percent_signal_change(signals)

    series = pd.DataFrame(psc, columns=names)
    add(Derivative(atlas_ents, "timeseries", ".tsv", series, sidecar={
        "Description": "Mean signal of each ROI inside the brain mask, percent signal change about the run mean.",
        "SamplingFrequency": 1.0 / tr, "Units": "%", "Atlas": atlas_name}))
    eigen_table = pd.DataFrame(eigen, columns=names)
    add(Derivative(dict(atlas_ents, desc="eigenvariate"), "timeseries", ".tsv", eigen_table, sidecar={
        "Description": "First eigenvariate of each ROI's voxels after regressing out the run's confounds "
                       "(SPM12 spm_regions convention: scaled by sqrt(s1/n_voxels), signed to load positively "
                       "on the ROI mean); the VOIs of the DCM.",
        "SamplingFrequency": 1.0 / tr, "Units": "BOLD (scanner units)", "Atlas": atlas_name,
        "ConfoundsStrategy": strategy}))
    report["timeseries"] = as_written(series)
    # the DCM fits the VOIs as the eigenvariate file holds them (and the run's confounds as X0)
    result["dcm_inputs"] = {"voi": as_written(eigen_table), "confounds": as_written(conf_df),
                            "events": str(events) if events else None, "slice_time_ref": slice_ref}

    if spec.get("design") == "rest":
        clean = restfc.denoise_signals(psc, tr, conf, sample_mask, low_pass=strategy.get("low_pass"),
                                       high_pass=strategy.get("high_pass"))
        fc = restfc.fisher_z_connectivity(clean, names)
        add(Derivative(dict(atlas_ents, desc="fisherz"), "relmat", ".tsv", fc.rename_axis("roi"), index=True, sidecar={
            "Description": "Fisher z of the Pearson correlation between denoised ROI signals (confound "
                           "regression, censoring, band-pass).",
            "RelationshipMeasure": "Fisher z (arctanh) of Pearson r", "Atlas": atlas_name,
            "VolumesKept": int(len(sample_mask)) if sample_mask is not None else result["n_volumes"],
            "LowPass": strategy.get("low_pass"), "HighPass": strategy.get("high_pass")}))
        report.setdefault("relmat", {})[f"fc_{task}"] = as_written(fc.rename_axis("roi"), index=True)
        result["features"].extend(features.pair_features(fc, task, "fc", None, qc_pass, low))
        return

    conditions = list(spec["conditions"])
    events_df = _read_events(events, conditions)
    unmodelled = _unmodelled_trial_types(events, conditions, spec.get("unmodelled_trial_types") or [])
    if unmodelled:
        warnings_out.append(f"{_run_label(run_info)}: events with trial_type {', '.join(unmodelled)} in "
                            f"{Path(events).name} match no configured condition of task '{task}' "
                            f"({', '.join(conditions)}): not modelled")
    outside = qc.conditions_outside_scan(events_df, result["n_volumes"], tr)
    unusable = {}  # contrast -> reason: a condition without any event inside the scan
    for contrast, expression in spec["contrasts"].items():
        used = [c for c, w in parse_contrast(expression, conditions).items() if w and c in outside]
        if used:
            unusable[contrast] = "; ".join(outside[c] for c in used)
    if outside:
        result["qc"]["events_outside_scan"] = outside
        warnings_out.append(f"{_run_label(run_info)}: {'; '.join(outside.values())} in {Path(events).name}: "
                            f"contrast(s) {', '.join(unusable) or 'none'} are n/a")
    glm = config.get("glm", {})
    design = activation.task_design_matrix(result["n_volumes"], tr, events_df, conf_df if conf is not None else None,
                                           slice_ref, glm.get("hrf_model", "spm"), glm.get("drift_model"))
    report["design"] = as_written(design)
    tables = activation.fit_roi_glm(psc, design, spec["contrasts"], names, glm.get("noise_model", "ar1"),
                                    sample_mask)
    for contrast, table in tables.items():
        table = table.copy()
        table["coverage"] = [coverage.get(n) for n in names]
        table.loc[table["roi"].isin(low), ["effect_size", "stderr", "t"]] = np.nan
        if contrast in unusable:
            table[["effect_size", "stderr", "t"]] = np.nan
        add(Derivative(dict(atlas_ents, desc=contrast), "activation", ".tsv", table, sidecar={
            "Description": f"ROI first-level GLM (nilearn, {glm.get('hrf_model', 'spm')} HRF, "
                           f"{glm.get('noise_model', 'ar1')} noise) contrast '{spec['contrasts'][contrast]}'.",
            "effect_size": {"Units": "% signal change per unit regressor"},
            "coverage": {"Description": "fraction of ROI voxels inside the brain mask"}}))
        report.setdefault("activation", {})[contrast] = as_written(table)
        result["features"].extend(features.with_reason(
            features.activation_features(table, task, contrast, qc_pass, low), unusable.get(contrast)))

    if spec.get("gppi"):
        gcfg = config.get("gppi", {})
        task_cols = design[[c for c in design.columns if c in conditions]]
        for contrast, expression in spec["contrasts"].items():
            if contrast in unusable:  # no interaction regressor to estimate: n/a rows with the reason
                empty = pd.DataFrame(np.nan, index=names, columns=names)
                result["features"].extend(features.with_reason(
                    features.pair_features(empty, task, "gppi", contrast, False, low), unusable[contrast]))
                seeds = gcfg.get("seeds")
                result["features"].extend(features.unavailable_rows(
                    [contracts.gppi_directed_id(task, contrast, seed, target) for seed in names
                     if seeds is None or seed in seeds for target in names if target != seed],
                    task, "gppi_directed", unusable[contrast]))
                continue
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
                add(Derivative(dict(atlas_ents, desc=desc), "relmat", ".tsv", matrix.rename_axis("roi"), index=True,
                               sidecar={
                    "Description": f"gPPI (McLaren et al. 2012) contrast '{expression}' of interaction betas, {text}.",
                    "RelationshipMeasure": "gPPI interaction beta contrast", "Atlas": atlas_name}))
            report.setdefault("relmat", {})[f"gppi_{task}_{contrast}"] = as_written(
                symmetric.rename_axis("roi"), index=True)
            result["features"].extend(features.pair_features(symmetric, task, "gppi", contrast, qc_pass, low))
            result["features"].extend(features.directed_features(directed, task, contrast, qc_pass, low))


def _unavailable_dcm_features(dcm_config: Mapping[str, Any], reason: str) -> list[dict]:
    """``n/a`` rows (note ``reason``) for every measure the configured DCM would give."""
    from ptsd_bidsapp.dcm.participant import dcm_measure_ids
    from ptsd_bidsapp.measures.features import unavailable_rows

    try:
        ids = dcm_measure_ids(dcm_config["task"], dcm_config)
    except ValueError as err:  # a model the config validation let through but the spec refuses
        LOGGER.warning("DCM measure ids of the configured model: %s", err)
        return []
    return unavailable_rows(ids, dcm_config["task"], "dcm", reason)


def compute_session_measures(
    run_results: list[dict], config: Mapping[str, Any], session_info: Mapping[str, Any]
) -> dict:
    """Session-level step: the faces DCM (if enabled) and the session's features table.

    Parameters
    ----------
    run_results : list of dict
        Results of the session's runs (:func:`compute_run_measures`, :func:`failed_run_result`).
    config : mapping
        Resolved analysis configuration.
    session_info : mapping
        ``subject``, ``session``.

    Returns
    -------
    dict
        Session result: ``subject``, ``session``, ``runs`` (the run results), ``outputs`` (the DCM's
        :class:`~ptsd_bidsapp.bids.outputs.Derivative` records), ``features_table`` (the features table's
        record, written last), ``dcm`` (the DCM step's result or None), ``warnings``.
    """
    subject, session = session_info["subject"], session_info["session"]
    features = [row for result in run_results for row in result.get("features", [])]
    outputs: list[Derivative] = []
    warnings = [w for result in run_results for w in result.get("warnings", [])]
    dcm_result = None
    dcm_config = config.get("dcm", {})
    if dcm_config.get("enabled"):
        from ptsd_bidsapp.workflows.dcm_step import DCMNotFitted, fit_dcm_step

        task_runs = [r for r in run_results if r["task"] == dcm_config["task"]]
        message = None
        if task_runs:
            try:
                dcm_result = fit_dcm_step(task_runs[0], config)
                outputs.extend(dcm_result["outputs"])
                features.extend(dcm_result["features"])
            except DCMNotFitted as err:
                message = f"DCM of sub-{subject} ses-{session} not fitted: {err}"
            except Exception as err:  # a DCM failure must not lose the other measures
                message = f"DCM for sub-{subject} ses-{session} failed: {err}"
        else:
            message = f"no '{dcm_config['task']}' run for sub-{subject} ses-{session}: no DCM"
        if message is not None:  # warned, and the DCM's measures n/a with the reason
            LOGGER.warning(message)
            warnings.append(message)
            features.extend(_unavailable_dcm_features(dcm_config, message))

    table = pd.DataFrame(features, columns=contracts.FEATURE_COLUMNS)
    table = table.sort_values(["kind", "task", "measure"], kind="mergesort").reset_index(drop=True)
    features_table = Derivative(
        {"sub": subject, "ses": session, "space": config.get("space"), "atlas": config["atlas"]["name"],
         "desc": "measures"}, "features", ".tsv", table, datatype=None, sidecar={
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
        "runs": run_results,
        "outputs": outputs,
        "features_table": features_table,
        "dcm": dcm_result,
        "warnings": warnings,
    }
