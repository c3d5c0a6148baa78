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

from ptsd_bidsapp.bids.outputs import atomic_write_bytes, bids_filename, write_json, write_tsv

LOGGER = logging.getLogger("ptsd_bidsapp.participant")

FEATURE_COLUMNS = ["measure", "value", "task", "kind", "qc_pass", "note"]


def _file_entry(path: Path, datatype: str | None = "func") -> dict:
    return {"path": str(path), "name": path.name, "datatype": datatype}


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

    table = pd.DataFrame(features, columns=FEATURE_COLUMNS)
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
    # The features table marks a complete session: copy it after everything else.
    for summary in session_summaries:
        _copy(summary["features_file"], summary["session"])
    return written
