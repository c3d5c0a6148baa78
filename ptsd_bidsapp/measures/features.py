"""Rows of the Contract 3 features table from activation, gPPI and FC results (Contract 2 ids)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

FEATURE_COLUMNS = ["measure", "value", "task", "kind", "qc_pass", "note"]


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
        rows.append(_row(f"activation_{task}_{contrast}_{roi}", np.nan if note else value, task, "activation",
                         qc_pass, note))
    return rows


def pair_features(matrix: pd.DataFrame, prefix: str, task: str, kind: str, qc_pass: bool = True,
                  low_coverage: Sequence[str] = ()) -> list[dict]:
    """Upper-triangle rows ``<prefix>_<roiA>-<roiB>`` in atlas (matrix) order, A before B.

    ``prefix`` is e.g. ``gppi_faces_fearfulMinusNeutral`` or ``fc_rest``.
    """
    names = list(matrix.index)
    rows = []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            bad = [r for r in (names[i], names[j]) if r in low_coverage]
            note = f"insufficient ROI coverage: {', '.join(bad)}" if bad else ""
            value = np.nan if bad else matrix.iloc[i, j]
            rows.append(_row(f"{prefix}_{names[i]}-{names[j]}", value, task, kind, qc_pass, note))
    return rows


def directed_features(matrix: pd.DataFrame, prefix: str, task: str, kind: str = "gppi_directed",
                      qc_pass: bool = True, low_coverage: Sequence[str] = ()) -> list[dict]:
    """Rows ``<prefix>_<seed>-<target>`` for every off-diagonal seed -> target entry with a seed row.

    ``prefix`` is e.g. ``gppidir_faces_fearfulMinusNeutral``; ``matrix.loc[seed, target]``
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
            rows.append(_row(f"{prefix}_{seed}-{target}", value, task, kind, qc_pass, note))
    return rows


def features_table(rows: list[dict]) -> pd.DataFrame:
    """DataFrame with the Contract 3 columns."""
    return pd.DataFrame(rows, columns=FEATURE_COLUMNS)
