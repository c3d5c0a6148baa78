"""Session DCM step: VOIs + events of the DCM task run -> the DCM's results (Contract 3 files as records).

Takes the eigenvariates and confounds of the run result (as the derivative files hold them), fits
the model of the config ``dcm`` section with :func:`ptsd_bidsapp.dcm.participant.fit_session_dcm`,
and returns ``sub-<s>_ses-<t>_task-<task>[_run-<r>]_space-<space>_model-dcm_dcm.json`` (named
parameters, PEB vectors) and the matching ``.npz`` (observed/predicted/residual BOLD, ``Ep``, ``Cp``)
as :class:`~ptsd_bidsapp.bids.outputs.Derivative` records for the sink. Nothing is written here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from ptsd_bidsapp.bids.outputs import Derivative
from ptsd_bidsapp.dcm.diagnostics import dcm_diagnostics
from ptsd_bidsapp.measures.qc import conditions_outside_scan


class DCMNotFitted(ValueError):
    """The session's data cannot inform the configured DCM (e.g. an input with no event in the scan):
    its measures are ``n/a`` with this reason and a warning, not an error of the subject."""


def check_dcm_events(events: pd.DataFrame, dcm_config: Mapping[str, Any], n_volumes: int, tr: float,
                     source: str) -> None:
    """Refuse a DCM one of whose conditions has no event inside the scan (0 – ``n_volumes`` · ``tr`` s).

    An input made only of such a condition is all zeros: its B and C parameters stay at their
    priors yet would be written as estimates; an input pooling it with others silently changes
    meaning. The same rule as the activation contrasts (:func:`conditions_outside_scan`).

    Raises
    ------
    DCMNotFitted
        Naming the events file, the conditions and the inputs that use them.
    """
    inputs = {name: [str(c) for c in conds] for name, conds in (dcm_config.get("inputs") or {}).items()}
    conditions = sorted({c for conds in inputs.values() for c in conds})
    used = events[events["trial_type"].astype(str).isin(conditions)]
    problems = dict(conditions_outside_scan(used, n_volumes, tr))
    for condition in conditions:
        if condition not in set(used["trial_type"].astype(str)):
            problems[condition] = f"no '{condition}' event"
    if problems:
        affected = [name for name, conds in inputs.items() if set(conds) & set(problems)]
        raise DCMNotFitted(f"{'; '.join(problems[c] for c in sorted(problems))} in {source}: the DCM input(s) "
                           f"{', '.join(affected)} would miss these events, so the configured model cannot be "
                           "estimated (its measures are n/a)")


def fit_dcm_step(run_result: Mapping[str, Any], config: Mapping[str, Any]) -> dict:
    """Fit the session DCM from a run result.

    Parameters
    ----------
    run_result : mapping
        Result of the DCM task's run (:func:`ptsd_bidsapp.workflows.run_measures.compute_run_measures`);
        uses ``dcm_inputs`` (``voi`` and ``confounds`` tables, ``events`` path, ``slice_time_ref`` as a
        fraction of TR), ``tr``, ``echo_time``.
    config : mapping
        Resolved configuration (``dcm``, ``space``).

    Returns
    -------
    dict
        ``outputs`` (the ``.json`` and ``.npz`` records), ``features`` (Contract 2 ``dcm_*`` rows) and
        ``report`` (``observed``/``predicted`` arrays, ``regions``, ``tr``, ``F``, ``parameters``, ...).
    """
    from ptsd_bidsapp.dcm.participant import dcm_measures, dcm_result_to_json, fit_session_dcm

    if run_result.get("error"):
        raise ValueError(f"the {run_result['task']} run failed: {run_result['error']}")
    dcm_config = config["dcm"]
    task = dcm_config["task"]
    inputs = run_result["dcm_inputs"]
    voi = inputs["voi"]
    events = pd.read_csv(inputs["events"], sep="\t", na_values="n/a", dtype={"trial_type": str})
    confounds = inputs["confounds"].to_numpy(float)
    tr = float(run_result["tr"])
    check_dcm_events(events, dcm_config, len(voi), tr, Path(inputs["events"]).name)
    echo_time = run_result.get("echo_time")        # the BOLD sidecar's, as pybids read it
    if dcm_config.get("te") == "sidecar" and echo_time is None:
        raise ValueError(f"dcm.te is 'sidecar' but the sidecar of {run_result.get('bold')} has no EchoTime: "
                         "set dcm.te to seconds")
    result = fit_session_dcm(voi, events, tr, dcm_config, confounds=confounds if confounds.size else None,
                             slice_timing_ref=float(inputs.get("slice_time_ref") or 0.0) * tr, echo_time=echo_time)
    ents = {"sub": run_result["subject"], "ses": run_result["session"], "task": task,
            "run": run_result.get("run"), "space": config.get("space"), "model": "dcm"}
    diagnostics = dcm_diagnostics(result, threshold=float(dcm_config.get("min_explained_variance", 10.0)))
    content = dcm_result_to_json(result, subject=run_result["subject"], session=run_result["session"], task=task,
                                 include_timeseries=False)
    content["diagnostics"] = diagnostics.as_dict()
    content["Sources"] = [run_result.get("bold")]
    observed = result.y_pred + result.residuals
    arrays = {"observed": observed, "predicted": result.y_pred, "residuals": result.residuals,
              "Ep": np.asarray(result.Ep_vector), "Cp": np.asarray(result.Cp),
              "regions": np.asarray(result.spec.region_names)}
    run_ok = not run_result.get("qc", {}).get("excluded", False)
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
        "outputs": [Derivative(ents, "dcm", ".json", content), Derivative(ents, "dcm", ".npz", arrays)],
        "features": features,
        "report": {"observed": observed, "predicted": result.y_pred, "regions": list(result.spec.region_names),
                   "tr": tr, "F": float(result.F), "parameters": parameters, "converged": bool(result.converged),
                   "diagnostics": diagnostics.as_dict()},
    }
