"""Session DCM step: VOIs + events of the DCM task run -> DCM derivative files (Contract 3).

Reads the eigenvariates the run step saved, fits the model of the config ``dcm`` section
with :func:`ptsd_bidsapp.dcm.participant.fit_session_dcm`, and writes
``sub-<s>_ses-<t>_task-<task>[_run-<r>]_space-<space>_model-dcm_dcm.json`` (named parameters,
PEB vectors) and the matching ``.npz`` (observed/predicted/residual BOLD, ``Ep``, ``Cp``).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from ptsd_bidsapp.bids.outputs import atomic_write_bytes, bids_filename, write_json
from ptsd_bidsapp.dcm.diagnostics import dcm_diagnostics


def fit_session_dcm_files(run_summary: Mapping[str, Any], config: Mapping[str, Any], out_dir: Path) -> dict:
    """Fit the session DCM from a run summary and write its files.

    Parameters
    ----------
    run_summary : mapping
        Summary of the DCM task's run (:func:`ptsd_bidsapp.workflows.run_measures.compute_run_measures`);
        uses ``work.voi``, ``work.confounds``, ``work.events``, ``work.slice_time_ref`` (fraction of TR), ``tr``.
    config : mapping
        Resolved configuration (``dcm``, ``tasks``, ``space``).
    out_dir : Path
        Node working folder.

    Returns
    -------
    dict
        ``files``, ``features`` (Contract 2 ``dcm_*`` rows) and ``report`` (``fit`` npz path,
        ``regions``, ``tr``, ``F``, ``parameters``).
    """
    from ptsd_bidsapp.dcm.participant import dcm_measures, dcm_result_to_json, fit_session_dcm

    if run_summary.get("error"):
        raise ValueError(f"the {run_summary['task']} run failed: {run_summary['error']}")
    dcm_config = config["dcm"]
    task = dcm_config["task"]
    work = run_summary["work"]
    voi = pd.read_csv(work["voi"], sep="\t", na_values="n/a")
    events = pd.read_csv(work["events"], sep="\t", na_values="n/a", dtype={"trial_type": str})
    confounds = pd.read_csv(work["confounds"], sep="\t", na_values="n/a").to_numpy(float)
    tr = float(run_summary["tr"])
    echo_time = run_summary.get("echo_time")        # the BOLD sidecar's, as pybids read it
    if dcm_config.get("te") == "sidecar" and echo_time is None:
        raise ValueError(f"dcm.te is 'sidecar' but the sidecar of {run_summary.get('bold')} has no EchoTime: "
                         "set dcm.te to seconds")
    result = fit_session_dcm(voi, events, tr, dcm_config, confounds=confounds if confounds.size else None,
                             slice_timing_ref=float(work.get("slice_time_ref") or 0.0) * tr, echo_time=echo_time)
    ents = {"sub": run_summary["subject"], "ses": run_summary["session"], "task": task,
            "run": run_summary.get("run"), "space": config.get("space"), "model": "dcm"}
    json_path = Path(out_dir) / bids_filename(ents, "dcm", ".json")
    npz_path = Path(out_dir) / bids_filename(ents, "dcm", ".npz")
    diagnostics = dcm_diagnostics(result, threshold=float(dcm_config.get("min_explained_variance", 10.0)))
    content = dcm_result_to_json(result, subject=run_summary["subject"], session=run_summary["session"], task=task,
                                 include_timeseries=False)
    content["diagnostics"] = diagnostics.as_dict()
    content["Sources"] = [run_summary.get("bold")]
    write_json(json_path, content)
    buffer = io.BytesIO()
    observed = result.y_pred + result.residuals
    np.savez(buffer, observed=observed, predicted=result.y_pred, residuals=result.residuals,
             Ep=np.asarray(result.Ep_vector), Cp=np.asarray(result.Cp), regions=np.asarray(result.spec.region_names))
    atomic_write_bytes(npz_path, buffer.getvalue())
    run_ok = not run_summary.get("qc", {}).get("excluded", False)
    # a DCM that fits poorly (explained variance under the threshold) or did not converge is
    # flagged: qc_pass false with the reason, so the group level and the reports can see it
    note = "" if diagnostics.fit_ok else "poor DCM fit: " + "; ".join(
        p for p in diagnostics.problems if "explained variance" in p or "converge" in p)
    features = [{"measure": name, "value": value, "task": task, "kind": "dcm", "qc_pass": run_ok and diagnostics.fit_ok,
                 "note": note}
                for name, value in sorted(dcm_measures(result, task).items())]
    post_var = np.diag(result.Cp)
    parameters = [{"name": name, "mean": float(result.Ep_vector[i]), "sd": float(np.sqrt(max(post_var[i], 0.0))),
                   "pp": float(result.Pp_vector[i])}
                  for i, name in enumerate(result.param_names) if name[0] in "ABC" and result.pC[i, i] > 0]
    return {
        "files": [{"path": str(json_path), "name": json_path.name, "datatype": "func"},
                  {"path": str(npz_path), "name": npz_path.name, "datatype": "func"}],
        "features": features,
        "report": {"fit": str(npz_path), "regions": list(result.spec.region_names), "tr": tr, "F": float(result.F),
                   "parameters": parameters, "converged": bool(result.converged),
                   "diagnostics": diagnostics.as_dict()},
    }
