"""Per-subject HTML report (``sub-<label>.html``): QC, ROI set, design, time series, activation,
connectivity pre vs post, DCM fit, and the gaps (unusable runs, missing sessions) with their reasons.

:func:`render_subject_report` returns the HTML from the session results (the tables as the derivative
files hold them); the sink (:mod:`ptsd_bidsapp.workflows.sink`) writes it."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape

from ptsd_bidsapp import __version__
from ptsd_bidsapp.reports import figures
from ptsd_bidsapp.reports.names import contrast_name, dcm_parameter_name, roi_name

#: shown in a table cell for a value that does not exist (never Python's ``None``)
MISSING = "n/a"


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, (float, np.floating)) and not np.isfinite(value)):
        return MISSING
    if isinstance(value, (float, np.floating)):
        return f"{value:.{digits}g}"
    return str(value)


def _relmat_title(name: str) -> str:
    """``fc_rest`` → "functional connectivity, rest (Fisher z)"; ``gppi_faces_fearfulMinusNeutral`` → gPPI words."""
    kind, _, rest = name.partition("_")
    task, _, contrast = rest.partition("_")
    if kind == "fc":
        return f"functional connectivity, {task} (Fisher z)"
    what = "directed gPPI (seed row → target column)" if kind == "gppidir" else "gPPI"
    return f"{what}, {task} ({contrast_name(contrast)})" if contrast else f"{what}, {task}"


def _run_label(run: Mapping[str, Any]) -> str:
    return run["task"] + (f" run-{run['run']}" if run.get("run") else "")


def _overview_entry(run: Mapping[str, Any]) -> dict:
    """One run's stretch of :func:`figures.session_overview`: its FD, censoring and ROI signals."""
    report = run.get("report") or {}
    qc = report.get("fd")
    entry = {"label": _run_label(run), "n_volumes": run.get("n_volumes"), "signals": report.get("timeseries"),
             "fd": None, "censored": None}
    if qc is not None and "framewise_displacement" in qc:
        entry["fd"] = qc["framewise_displacement"].fillna(0).to_numpy()
        entry["censored"] = qc.get("censored", pd.Series(False, index=qc.index)).astype(bool).to_numpy()
    return entry


def _session_overview(summary: Mapping[str, Any]) -> str | None:
    """The session's FD and ROI signals figure, or None when no run has either."""
    entries = [_overview_entry(run) for run in summary["runs"]]
    entries = [e for e in entries if e["fd"] is not None or e["signals"] is not None]
    if not entries:
        return None
    threshold = next((float(run["report"]["fd_threshold"]) for run in summary["runs"]
                      if (run.get("report") or {}).get("fd_threshold") is not None), 0.5)
    return figures.session_overview(entries, threshold, f"ses-{summary['session']}")


def session_order(sessions, config: Mapping[str, Any]) -> list[str]:
    """Session labels in study order: the config's pre, then post, then any other label sorted."""
    labels = config.get("sessions") or {"pre": "pre", "post": "post"}  # the packaged default's labels
    configured = [labels.get(k) for k in ("pre", "post")]
    first = [s for s in configured if s in sessions]
    return first + sorted(s for s in sessions if s not in first)


def _dcm_entry(summary: Mapping[str, Any], config: Mapping[str, Any]) -> dict:
    rep = summary["dcm"]["report"]
    diag = rep.get("diagnostics") or {}
    task = (config.get("dcm") or {}).get("task")
    per_region = diag.get("explained_variance_per_region") or {}
    threshold = (config.get("dcm") or {}).get("min_explained_variance", 10.0)
    return {
        "session": summary["session"], "F": _fmt(rep.get("F"), 6),
        "explained_variance": _fmt(diag.get("explained_variance"), 3), "threshold": _fmt(threshold),
        "per_region": {roi_name(r): _fmt(v, 3) for r, v in per_region.items()},
        "effective_parameters": _fmt(diag.get("effective_parameters"), 3),
        "largest_connection": _fmt(diag.get("largest_connection"), 3),
        "converged": rep.get("converged"), "fit_ok": diag.get("fit_ok", True),
        "problems": diag.get("problems") or [],
        "figure": figures.observed_vs_predicted(rep["observed"], rep["predicted"], list(rep["regions"]),
                                                float(rep["tr"]), f"ses-{summary['session']}: observed and "
                                                f"DCM-predicted BOLD", explained=per_region),
        "parameters": [{"name": dcm_parameter_name(p["name"], task), "id": p["name"], "mean": _fmt(p["mean"]),
                        "sd": _fmt(p["sd"]), "pp": _fmt(p["pp"])} for p in rep.get("parameters", [])],
    }


def render_subject_report(session_results: list[dict], subject: str, config: Mapping[str, Any],
                          missing_sessions: Sequence[Mapping[str, Any]] = ()) -> str:
    """The HTML of ``sub-<subject>.html`` from the session results.

    Sessions appear in study order (:func:`session_order`: pre before post); a value that does
    not exist is shown as ``n/a``; ROIs and DCM parameters by name (ids in tooltips).

    Parameters
    ----------
    session_results : list of dict
        From :func:`ptsd_bidsapp.workflows.run_measures.compute_session_measures`.
    subject : str
        Subject label.
    config : mapping
        Resolved configuration.
    missing_sessions : sequence of mapping
        ``{"session", "reason"}`` of configured sessions without data.

    Returns
    -------
    str
        The report (self-contained HTML).
    """
    qc_rows, sessions, warnings = [], [], []
    gaps = [f"ses-{gap['session']} missing: {gap['reason']}" for gap in missing_sessions]
    connectivity: dict[str, dict[str, pd.DataFrame]] = {}
    dcm_entries = []
    overlay = None
    order = session_order([s["session"] for s in session_results], config)
    activation: dict[tuple[str, str], dict[str, pd.DataFrame]] = {}
    for summary in sorted(session_results, key=lambda s: order.index(s["session"])):
        warnings.extend(summary.get("warnings", []))
        runs = []
        for run in summary["runs"]:
            if run.get("error"):
                gaps.append(run["error"] + " (its measures are n/a)")
            qc = run.get("qc", {})
            qc_rows.append({
                "session": run["session"], "task": _run_label(run),
                "n_volumes": _fmt(run.get("n_volumes")), "tr": _fmt(run.get("tr")),
                "mean_fd": _fmt(qc.get("mean_fd")), "percent_censored": _fmt(qc.get("percent_censored")),
                "excluded": bool(qc.get("excluded")), "reasons": "; ".join(qc.get("reasons", [])),
            })
            report = run.get("report") or {}
            if report.get("design") is not None:
                runs.append({"task": run["task"], "run": run.get("run"), "design": figures.design_matrix(
                    report["design"], f"ses-{run['session']} task-{_run_label(run)}: design matrix")})
            for contrast, table in sorted((report.get("activation") or {}).items()):
                if table is not None:
                    which = run["task"] + " task" + (f", run {run['run']}" if run.get("run") else "")
                    activation.setdefault((which, contrast), {})[f"ses-{run['session']}"] = table
            if overlay is None and report.get("atlas") is not None:
                overlay = (report["atlas"], report.get("atlas_labels"), report.get("mean_bold"),
                           f"ses-{run['session']} task-{run['task']}")
            for name, table in sorted((report.get("relmat") or {}).items()):
                if table is not None:
                    table = table.set_index(table.columns[0])
                    connectivity.setdefault(name, {})[f"ses-{run['session']}"] = table
        sessions.append({"session": summary["session"], "overview": _session_overview(summary), "runs": runs})
        if (summary.get("dcm") or {}).get("report"):
            dcm_entries.append(_dcm_entry(summary, config))
    activation_figs = [figures.activation_by_session(tables, f"activation, {which}: {contrast_name(contrast)}")
                       for (which, contrast), tables in activation.items()]
    connectivity_figs = [figures.connectivity_matrices(mats, _relmat_title(name))
                         for name, mats in sorted(connectivity.items())]
    roi_overlay, roi_legend = None, []
    if overlay is not None:
        dseg, labels, background, where = overlay
        labels = labels or {}
        roi_legend = [{"index": i, "name": roi_name(n), "id": n} for i, n in sorted(labels.items())]
        try:
            roi_overlay = figures.roi_overlay(dseg, labels, background if background is not None else False,
                                              f"atlas-{config['atlas']['name']} ROIs",
                                              f"mean BOLD of {where}" if background is not None else "blank grid")
        except Exception as err:  # a plotting failure must not cost the report
            warnings.append(f"ROI overlay could not be drawn: {err}")
    env = Environment(loader=PackageLoader("ptsd_bidsapp.reports", "templates"), autoescape=select_autoescape())
    html = env.get_template("participant.html").render(
        subject=subject, sessions=sessions, qc_rows=qc_rows, warnings=warnings, gaps=gaps, roi_overlay=roi_overlay,
        roi_legend=roi_legend, activation=activation_figs, connectivity=connectivity_figs, dcm=dcm_entries,
        dcm_task=config.get("dcm", {}).get("task"), version=__version__,
    )
    return html
