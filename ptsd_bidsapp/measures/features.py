"""Rows of the Contract 3 features table from activation, gPPI and FC results (Contract 2 ids)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ptsd_bidsapp import contracts
from ptsd_bidsapp.contracts import FEATURE_COLUMNS


def _row(measure, value, task, kind, qc_pass, note=""):
    value = float(value) if value is not None and np.isfinite(value) else "n/a"
    return {"measure": measure, "value": value, "task": task, "kind": kind,
            "qc_pass": bool(qc_pass) and value != "n/a", "note": note if value != "n/a" or note else "not estimable"}


def activation_features(table: pd.DataFrame, task: str, contrast: str, qc_pass: bool = True,
                        low_coverage: Sequence[str] = ()) -> list[dict]:
    """``activation_<task>_<contrast>_<roi>`` rows from a :func:`fit_roi_glm` table (effect_size, % signal change)."""
    rows = []
    for roi, value in zip(table["roi"], table["effect_size"]):
        note = "insufficient ROI coverage" if roi in low_coverage else ""
        rows.append(_row(contracts.activation_id(task, contrast, roi), np.nan if note else value, task,
                         "activation", qc_pass, note))
    return rows


def pair_features(matrix: pd.DataFrame, task: str, kind: str, contrast: str | None = None, qc_pass: bool = True,
                  low_coverage: Sequence[str] = ()) -> list[dict]:
    """Upper-triangle rows of an undirected ROI x ROI matrix, pairs in atlas (matrix) order.

    ``kind`` is ``"gppi"`` (needs ``contrast``; :func:`ptsd_bidsapp.contracts.gppi_id`) or
    ``"fc"`` (:func:`ptsd_bidsapp.contracts.fc_id`).
    """
    if kind == "gppi":
        make_id = lambda a, b: contracts.gppi_id(task, contrast, a, b)  # noqa: E731
    elif kind == "fc":
        make_id = lambda a, b: contracts.fc_id(task, a, b)  # noqa: E731
    else:
        raise ValueError(f"pair_features: kind must be 'gppi' or 'fc', got {kind!r}")
    names = list(matrix.index)
    rows = []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            bad = [r for r in (names[i], names[j]) if r in low_coverage]
            note = f"insufficient ROI coverage: {', '.join(bad)}" if bad else ""
            value = np.nan if bad else matrix.iloc[i, j]
            rows.append(_row(make_id(names[i], names[j]), value, task, kind, qc_pass, note))
    return rows


def directed_features(matrix: pd.DataFrame, task: str, contrast: str, qc_pass: bool = True,
                      low_coverage: Sequence[str] = ()) -> list[dict]:
    """Rows for every off-diagonal seed -> target entry with a seed row.

    Ids from :func:`ptsd_bidsapp.contracts.gppi_directed_id`; ``matrix.loc[seed, target]``
    as returned by :func:`ptsd_bidsapp.measures.gppi.gppi_matrix` (directed).
    Seeds that were not modelled (all-NaN rows) give no rows.
    """
    rows = []
    for seed in matrix.index:
        if seed not in low_coverage and not np.isfinite(matrix.loc[seed].to_numpy(float)).any():
            continue
        for target in matrix.columns:
            if target == seed:
                continue
            bad = [r for r in (seed, target) if r in low_coverage]
            note = f"insufficient ROI coverage: {', '.join(bad)}" if bad else ""
            value = np.nan if bad else matrix.loc[seed, target]
            rows.append(_row(contracts.gppi_directed_id(task, contrast, seed, target), value, task,
                             "gppi_directed", qc_pass, note))
    return rows


def unavailable_features(task: str, spec: dict, roi_names: Sequence[str], reason: str,
                         seeds: Sequence[str] | None = None) -> list[dict]:
    """``n/a`` rows, note ``reason``, for every measure a run of ``task`` would give (an unusable run).

    ``spec`` is the task's config section (``design``, ``contrasts``, ``gppi``); ``seeds`` the gPPI
    seeds (None: every ROI). The ids are those of :func:`activation_features`, :func:`pair_features`
    and :func:`directed_features` (the DCM's are added by the session step: :func:`unavailable_rows`
    over :func:`ptsd_bidsapp.dcm.participant.dcm_measure_ids`).
    """
    names = list(roi_names)
    pairs = [(names[i], names[j]) for i in range(len(names)) for j in range(i + 1, len(names))]
    ids: list[tuple[str, str]] = []
    if spec.get("design") == "rest":
        ids += [(contracts.fc_id(task, a, b), "fc") for a, b in pairs]
    else:
        for contrast in spec.get("contrasts") or {}:
            ids += [(contracts.activation_id(task, contrast, roi), "activation") for roi in names]
            if spec.get("gppi"):
                ids += [(contracts.gppi_id(task, contrast, a, b), "gppi") for a, b in pairs]
                ids += [(contracts.gppi_directed_id(task, contrast, seed, target), "gppi_directed")
                        for seed in names if seeds is None or seed in seeds for target in names if target != seed]
    return [_row(measure, np.nan, task, kind, False, reason) for measure, kind in ids]


def unavailable_rows(measure_ids: Sequence[str], task: str, kind: str, reason: str) -> list[dict]:
    """``n/a`` rows (``qc_pass`` False, note ``reason``) for the given measure ids."""
    return [_row(measure, np.nan, task, kind, False, reason) for measure in measure_ids]


def features_table(rows: list[dict]) -> pd.DataFrame:
    """DataFrame with the Contract 3 columns."""
    return pd.DataFrame(rows, columns=FEATURE_COLUMNS)


def with_reason(rows: list[dict], reason: str | None) -> list[dict]:
    """``rows`` made ``n/a`` (qc_pass False) with ``reason`` as their note; unchanged when ``reason`` is None."""
    if not reason:
        return rows
    return [dict(row, value="n/a", qc_pass=False, note=reason) for row in rows]
