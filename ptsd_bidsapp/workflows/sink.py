"""The participant level's one sink: the only place that writes the results of the compute steps.

:func:`write_subject_outputs` takes a subject's session results
(:func:`ptsd_bidsapp.workflows.run_measures.compute_session_measures`) and writes every
:class:`~ptsd_bidsapp.bids.outputs.Derivative` they carry with
:func:`ptsd_bidsapp.bids.outputs.write_derivative` (BIDS names, atomic writes), the features tables
last (a features table marks a complete session), then ``logs/sub-<label>_status.json``; the
subject report is rendered by :func:`ptsd_bidsapp.reports.participant.render_subject_report` and
written here too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from ptsd_bidsapp.bids.outputs import atomic_write_text, write_derivative, write_json


def status_path(output_dir: Path, subject: str) -> Path:
    """``<output_dir>/logs/sub-<label>_status.json``."""
    return Path(output_dir) / "logs" / f"sub-{subject}_status.json"


def write_subject_outputs(session_results: list[dict], output_dir: Path, subject: str,
                          missing_sessions: Sequence[Mapping[str, Any]] = ()) -> list[str]:
    """Write a subject's derivatives (atomically), features tables last, then its status JSON.

    Parameters
    ----------
    session_results : list of dict
        The subject's session results.
    output_dir : Path
        Derivative dataset root.
    subject : str
        Subject label.
    missing_sessions : sequence of mapping
        ``{"session", "reason"}`` of configured sessions without data (listed in the status).

    Returns
    -------
    list of str
        Written paths.
    """
    written: list[Path] = []
    for result in session_results:
        for run in result["runs"]:
            for derivative in run.get("outputs", []):
                written += write_derivative(output_dir, derivative)
        for derivative in result.get("outputs", []):
            written += write_derivative(output_dir, derivative)
    for result in session_results:
        written += write_derivative(output_dir, result["features_table"])
    failed = [run for result in session_results for run in result["runs"] if run.get("error")]
    status = {
        "subject": subject,
        "sessions": sorted(result["session"] for result in session_results),
        "failed_runs": [run["error"] for run in failed],
        "failed_run_keys": [{k: run.get(k) for k in ("session", "task", "run")} for run in failed],
        "missing_sessions": [dict(gap) for gap in missing_sessions],
        "warnings": [w for result in session_results for w in result.get("warnings", [])],
    }
    written.append(write_json(status_path(output_dir, subject), status))
    return [str(path) for path in written]


def write_subject_report(html: str, output_dir: Path, subject: str) -> Path:
    """Write ``<output_dir>/sub-<label>.html`` atomically."""
    return atomic_write_text(Path(output_dir) / f"sub-{subject}.html", html)


def read_status(output_dir: Path, subject: str) -> dict | None:
    """The status a subject's sink wrote (``logs/sub-<label>_status.json``), or None."""
    path = status_path(output_dir, subject)
    return json.loads(path.read_text()) if path.is_file() else None


def write_resource_table(rows: list[dict], output_dir: Path, run_log=None) -> Path:
    """The resource monitor's per-node table: ``logs/resource_monitor-participant-<timestamp>.tsv``.

    Columns: ``node``, ``interface``, ``duration_s`` (seconds), ``mem_peak_gb`` (GB), ``cpu_percent``
    (percent of one core), ``cached`` (the node's result was reused: no measurement).
    """
    import time

    import pandas as pd

    stamp = run_log.path.stem.split("-", 1)[1] if run_log is not None else time.strftime("%Y%m%dT%H%M%SZ",
                                                                                          time.gmtime())
    path = Path(output_dir) / "logs" / f"resource_monitor-participant-{stamp}.tsv"
    table = pd.DataFrame(rows, columns=["node", "interface", "duration_s", "mem_peak_gb", "cpu_percent", "cached"])
    atomic_write_text(path, table.to_csv(sep="\t", index=False, na_rep="n/a"))
    return path
