"""Change scores (post − pre) of the a-priori measures and the clinical improvement.

Reads the participant level's long features tables (ARCHITECTURE.md, Contract 3)::

    <out>/sub-<s>/ses-<t>/sub-<s>_ses-<t>_space-MNI152NLin2009cAsym_atlas-ptsdcircuit_desc-measures_features.tsv

selects the measures matching the config's ``measures`` patterns (fnmatch over the
Contract 2 identifiers) and builds one row per subject:

==============================  =================================================================
column                          meaning
==============================  =================================================================
``subject``                     label without ``sub-``
``<group_column>``              treatment arm from ``participants.tsv``
``improvement_<outcome>``       outcome pre − post (default ``improvement_caps5_total``; CAPS-5
                                points, positive = fewer symptoms after treatment)
``improvement_<covariate>``     covariate pre − post (default ``improvement_madrs_total``)
``<score>_<session>``           the raw scores per session (e.g. ``caps5_total_pre``)
``delta_<measure id>``          measure post − pre, in the measure's own units
==============================  =================================================================

Missing values (``elastic_net.missing``) — never a silent drop, every reason is listed:

* ``listwise`` (default; the reference study's complete-case analysis): a subject is excluded
  from every model when a session's features table is missing, any selected measure is ``n/a``
  or failed QC (``qc_pass`` False) in either session, a clinical score is missing, or the arm is
  unknown;
* ``per_model``: a missing session, arm or outcome still excludes the subject from every model;
  a measure ``n/a`` / failing QC or a missing covariate score leaves the subject out only of the
  models that use that measure or covariate (each model's own ``measures`` patterns, or the
  top-level ``measures``). The subject stays in the table with ``n/a`` in those columns, listed
  under ``incomplete`` with the reason per column; each model reports its own n and exclusions.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from ptsd_bidsapp.bids.inputs import InputError, read_arms, read_clinical, read_tsv
from ptsd_bidsapp.contracts import UnmatchedPatternError, match_measures, parse_measure_id, pattern_task
from ptsd_bidsapp import errors as exitcodes

LOGGER = logging.getLogger("ptsd_bidsapp.group")

__all__ = ["FEATURES_GLOB", "MISSING_POLICIES", "patterns_for_present_tasks", "read_features", "select_measures",
           "model_measure_patterns", "build_change_table", "change_table_sidecar"]

FEATURES_GLOB = "sub-*/ses-*/*_desc-measures_features.tsv"
_PATH_RE = re.compile(r"sub-(?P<subject>[A-Za-z0-9]+)_ses-(?P<session>[A-Za-z0-9]+)_")


_QC_TOKENS = {"true", "false", "1", "0", "yes", "no"}

#: Values of ``elastic_net.missing`` (see the module docstring), described in ``changes.json``.
MISSING_DESCRIPTION = {
    "listwise": "listwise: a subject with any missing value (a selected measure n/a or failing QC in either "
                "session, a missing clinical score) is excluded from every model (ExcludedSubjects)",
    "per_model": "per_model: a missing session, arm or outcome excludes a subject from every model "
                 "(ExcludedSubjects); a selected measure n/a or failing QC, or a missing covariate score, only "
                 "from the models that use it (IncompleteSubjects: the missing columns, n/a in the table, and why)",
}
MISSING_POLICIES = tuple(MISSING_DESCRIPTION)


def _check_features_rows(path: Path, table: pd.DataFrame, qc: pd.Series) -> None:
    """Refuse a damaged features table (cut short by a full disk or a copy): rows with an empty
    measure id, a value that is neither a number nor ``n/a``, or a ``qc_pass`` that is not a boolean.

    Raises
    ------
    InputError
        Exit 65 naming the file, the first bad line and what to do.
    """
    value = table["value"]
    numeric = pd.to_numeric(value, errors="coerce")
    bad = ((table["measure"].isna() | (table["measure"].astype(str).str.strip() == ""))
           | (numeric.isna() & value.notna() & (value.astype(str).str.strip() != ""))
           | ~qc.astype(str).str.strip().str.lower().isin(_QC_TOKENS))
    if bad.any():
        first = int(np.flatnonzero(bad.to_numpy())[0])
        row = "\t".join("" if pd.isna(v) else str(v) for v in table.iloc[first].tolist())
        raise InputError(
            f"participant features table {path} is damaged (truncated or edited?): line {first + 2} "
            f"{row!r} is not a complete row (measure, numeric value or n/a, qc_pass True/False); "
            f"{int(bad.sum())} bad row(s). Rerun the participant level for this subject", path, exitcodes.DATAERR)


def read_features(participant_dir: Path | str) -> pd.DataFrame:
    """All features tables under ``participant_dir`` in one long frame.

    Columns: subject, session, measure, value (float, NaN for ``n/a``), qc_pass (bool), note.
    """
    frames = []
    for path in sorted(Path(participant_dir).glob(FEATURES_GLOB)):
        match = _PATH_RE.match(path.name)
        if match is None:
            continue
        table = read_tsv(path, keep_default_na=False, dtype={"measure": str, "note": str, "qc_pass": str})
        for needed in ("measure", "value"):
            if needed not in table.columns:
                raise InputError(f"{path} has no '{needed}' column (expected the participant features table)",
                                 path, exitcodes.DATAERR)
        qc = table["qc_pass"] if "qc_pass" in table.columns else pd.Series("True", index=table.index)
        _check_features_rows(path, table, qc)
        table = pd.DataFrame({
            "subject": match["subject"],
            "session": match["session"],
            "measure": table["measure"].astype(str),
            "value": pd.to_numeric(table["value"], errors="coerce"),
            "qc_pass": qc.map(lambda v: str(v).strip().lower() in ("true", "1", "yes")).astype(bool),
            "note": table["note"].fillna("") if "note" in table.columns else "",
        })
        frames.append(table)
    if not frames:
        return pd.DataFrame(columns=["subject", "session", "measure", "value", "qc_pass", "note"])
    return pd.concat(frames, ignore_index=True)


def select_measures(measure_ids, patterns, key: str = "measures") -> list[str]:
    """Measure identifiers matching any pattern, in the order of first appearance.

    Patterns are fnmatch patterns over the identifiers; undirected ROI pairs match in either
    order (:func:`ptsd_bidsapp.contracts.match_measures`). ``key`` is the config key the
    patterns come from (named in the error).

    Raises
    ------
    InputError
        (exit 64, a configuration error) naming a pattern that matches no measure and the
        nearest identifiers.
    """
    ids = list(dict.fromkeys(measure_ids))
    try:
        hits = match_measures(patterns, ids)
    except UnmatchedPatternError as err:
        raise InputError(f"config key '{key}': {err}", None, exitcodes.USAGE) from err
    chosen = {m for found in hits.values() for m in found}
    return [m for m in ids if m in chosen]


def patterns_for_present_tasks(patterns, tasks, measure_ids) -> tuple[list[str], list[str]]:
    """Drop the measure patterns of configured tasks that no participant features table holds.

    A site without a task (or a participant level run with ``--task-id``) has no measures of it:
    its patterns are skipped with a message instead of failing as patterns that match nothing.
    A pattern naming a task the configuration does not define still fails (a typo).

    Returns
    -------
    (list of str, list of str)
        The patterns kept and one message per pattern skipped.
    """
    present = set()
    for measure in pd.Series(measure_ids).dropna().unique():
        try:
            present.add(parse_measure_id(measure).task)
        except ValueError:
            continue  # not an id of ours: select_measures reports what matters
    kept, notes = [], []
    for pattern in patterns:
        task = pattern_task(pattern)
        if task is not None and task in tasks and task not in present:
            notes.append(f"measure pattern '{pattern}' skipped: no participant features of task '{task}' "
                         "(not run, or excluded with --task-id)")
        else:
            kept.append(pattern)
    return kept, notes


def model_measure_patterns(config: Mapping) -> dict[str, list[str]]:
    """``{model name: measure patterns}``: the model's own ``measures``, else the top-level ``measures``."""
    return {name: list(spec.get("measures") or config["measures"])
            for name, spec in config["elastic_net"]["models"].items()}


def _model_needs(config: Mapping, model_measures: Mapping[str, list]) -> dict[str, tuple]:
    """``{model: (subset arm or None, set of change-table columns the model needs)}``."""
    out = {}
    for name, spec in config["elastic_net"]["models"].items():
        columns = {f"delta_{mid}" for mid in model_measures[name]}
        columns |= {f"improvement_{cov}" for cov in spec.get("covariates") or []}
        out[name] = (spec.get("subset"), columns)
    return out


def build_change_table(participant_dir: Path | str, bids_dir: Path | str, config: Mapping) -> dict:
    """Build the change-score table of the group models.

    Parameters
    ----------
    participant_dir : path
        Root of the participant-level outputs.
    bids_dir : path
        Raw BIDS dataset (clinical scores and ``participants.tsv``).
    config : mapping
        Resolved analysis config (``measures``, ``sessions``, ``clinical``, ``elastic_net``:
        ``missing`` and each model's ``measures`` and ``covariates``).

    Returns
    -------
    dict
        ``table`` (DataFrame, one row per included subject, sorted by subject; with
        ``per_model``, ``n/a`` where a value is missing), ``excluded`` ({subject: reason}: left
        out of every model), ``exclusions`` (the reasons of ``excluded`` as records
        ``{"subject", "session" (None when not per session), "reason", "measure" (id or None)}``,
        for the report's table), ``incomplete`` ({subject: {column: reason}}: ``per_model``
        only, the values missing in the table), ``missing`` (the policy), ``measures`` (selected
        measure ids, the union over the models), ``model_measures`` ({model: measure ids}),
        ``columns`` (measure id → ``delta_`` column), ``outcome`` and ``covariate`` column
        names, ``group_column``, and ``clinical`` (every subject with scores, indexed by label:
        arm, ``improvement`` = outcome pre − post, ``improvement_<score>``; for the DCM group
        models, which need no features).

    Raises
    ------
    InputError
        No features tables at all (the participant level has not been run), or none of the
        a-priori patterns matches a measure.
    """
    clinical_cfg = config["clinical"]
    pre, post = config["sessions"]["pre"], config["sessions"]["post"]
    group_column = clinical_cfg.get("group_column", "group")
    outcome = clinical_cfg["outcome"]
    covariate = clinical_cfg.get("covariate")
    policy = config["elastic_net"].get("missing", "listwise")
    if policy not in MISSING_POLICIES:  # config validation rejects it; guard direct callers
        raise ValueError(f"elastic_net.missing must be one of {MISSING_POLICIES}, got {policy!r}")
    features = read_features(participant_dir)
    if features.empty:
        raise InputError(
            f"no participant features tables ({FEATURES_GLOB}) under {participant_dir}: run the participant "
            "level for every subject before the group level", participant_dir)
    skipped: list[str] = []

    def present_task_patterns(patterns):
        kept, notes = patterns_for_present_tasks(patterns, config["tasks"], features["measure"])
        skipped.extend(note for note in notes if note not in skipped)
        return kept

    top_patterns = present_task_patterns(config["measures"])
    model_measures = {}
    for name, patterns in model_measure_patterns(config).items():
        kept = present_task_patterns(patterns)
        key = f"elastic_net.models.{name}.measures" if config["elastic_net"]["models"][name].get("measures") \
            else "measures"
        model_measures[name] = select_measures(features["measure"], kept, key) if kept else []
    for note in skipped:
        LOGGER.warning("group level: %s", note)
    in_models = {m for ids in model_measures.values() for m in ids}
    wanted = [*top_patterns, *sorted(in_models)]
    measures = select_measures(features["measure"], wanted) if wanted else []
    if not measures:
        raise InputError(
            f"none of the a-priori measure patterns {list(config['measures'])} matches a measure in the features "
            f"tables under {participant_dir}; check the config key 'measures'", participant_dir, exitcodes.DATAERR)
    needs = _model_needs(config, model_measures)
    configured_arms = [a for a in (clinical_cfg.get("reference_group"), clinical_cfg.get("active_group")) if a]
    arms = read_arms(Path(bids_dir), group_column, configured_arms or None)
    clinical = read_clinical(Path(bids_dir), clinical_cfg)
    scores = [c for c in (outcome, covariate) if c]

    selected = features[features["measure"].isin(measures)]
    value = selected.pivot_table(index=["subject", "session"], columns="measure", values="value", aggfunc="first",
                                 dropna=False)
    qc = selected.pivot_table(index=["subject", "session"], columns="measure", values="qc_pass", aggfunc="first",
                              dropna=False)
    sessions_found = features.groupby("subject")["session"].agg(set)
    subjects = sorted(set(sessions_found.index) | set(arms.index) | set(clinical["subject"]))

    rows, excluded, exclusions, incomplete, clinical_rows = [], {}, [], {}, []
    for subject in subjects:
        # (column or None, reason, exclusion record for the report's table): a None column excludes the
        # subject from every model whatever the policy
        reasons: list[tuple[str | None, str, dict]] = []
        have = sessions_found.get(subject, set())
        for ses in (pre, post):
            if ses not in have:
                reasons.append((None, f"no participant features for session {ses}",
                                {"session": ses, "reason": "no participant features", "measure": None}))
        arm = arms.get(subject, np.nan)
        if pd.isna(arm):
            why = f"no treatment arm ('{group_column}') in participants.tsv"
            reasons.append((None, why, {"session": None, "reason": why, "measure": None}))
        record = {"subject": subject, group_column: arm}
        for score in scores:
            for ses in (pre, post):
                hit = clinical[(clinical["subject"] == subject) & (clinical["session"] == ses)]
                val = pd.to_numeric(hit[score], errors="coerce").iloc[0] if len(hit) else np.nan
                if pd.isna(val):
                    reasons.append((None if score == outcome else f"improvement_{score}",
                                    f"no {score} for session {ses}",
                                    {"session": ses, "reason": f"no {score}", "measure": None}))
                record[f"{score}_{ses}"] = val
            record[f"improvement_{score}"] = record[f"{score}_{pre}"] - record[f"{score}_{post}"]
        clinical_rows.append({"subject": subject, group_column: arm,
                              "improvement": record[f"improvement_{outcome}"],
                              **{f"improvement_{s}": record[f"improvement_{s}"] for s in scores}})
        if pre in have and post in have:
            for mid in measures:
                vals = [value.at[(subject, ses), mid] if (subject, ses) in value.index and mid in value.columns
                        else np.nan for ses in (pre, post)]
                oks = [bool(qc.at[(subject, ses), mid]) if (subject, ses) in qc.index and mid in qc.columns
                       and not pd.isna(qc.at[(subject, ses), mid]) else False for ses in (pre, post)]
                for ses, val, ok in zip((pre, post), vals, oks):
                    if pd.isna(val):
                        reasons.append((f"delta_{mid}", f"{mid} is n/a in session {ses}",
                                        {"session": ses, "reason": "measure n/a", "measure": mid}))
                    elif not ok:
                        reasons.append((f"delta_{mid}", f"{mid} failed QC in session {ses}",
                                        {"session": ses, "reason": "measure failed QC", "measure": mid}))
                record[f"delta_{mid}"] = vals[1] - vals[0]
        if not reasons:
            rows.append(record)
            continue
        text = "; ".join(r for _, r, _ in reasons)
        records = [{"subject": subject, **entry} for _, _, entry in reasons]
        if policy == "listwise" or any(column is None for column, _, _ in reasons):
            excluded[subject] = text
            exclusions.extend(records)
            continue
        missing: dict[str, str] = {}
        for column, reason, _ in reasons:
            missing[column] = f"{missing[column]}; {reason}" if column in missing else reason
        usable = [name for name, (subset, columns) in needs.items()
                  if (subset is None or subset == arm) and not columns & set(missing)]
        if not usable:
            excluded[subject] = f"{text} (needed by every model that includes this subject)"
            exclusions.extend(records)
            continue
        for column in missing:
            record[column] = np.nan
        rows.append(record)
        incomplete[subject] = missing
    columns = {mid: f"delta_{mid}" for mid in measures}
    ordered = ["subject", group_column, *[f"improvement_{s}" for s in scores],
               *[f"{s}_{ses}" for s in scores for ses in (pre, post)], *columns.values()]
    table = pd.DataFrame(rows, columns=ordered).sort_values("subject").reset_index(drop=True)
    return {
        "table": table,
        "excluded": excluded,
        "exclusions": exclusions,
        "incomplete": incomplete,
        "missing": policy,
        "measures": measures,
        "model_measures": model_measures,
        "columns": columns,
        "outcome": f"improvement_{outcome}",
        "covariate": f"improvement_{covariate}" if covariate else None,
        "group_column": group_column,
        "clinical": pd.DataFrame(clinical_rows).set_index("subject"),
        "skipped": skipped,
    }


def change_table_sidecar(result: Mapping, config: Mapping) -> dict:
    """BIDS-style JSON sidecar describing every column of the change table."""
    pre, post = config["sessions"]["pre"], config["sessions"]["post"]
    clinical_cfg = config["clinical"]
    out = {
        "Description": "Per-subject change scores (post - pre) of the a-priori measures and clinical improvement "
                       "(pre - post), the input of the group elastic-net models.",
        "Sessions": {"pre": pre, "post": post},
        "MeasurePatterns": list(config["measures"]),
        "ModelMeasures": {name: list(ids) for name, ids in (result.get("model_measures") or {}).items()},
        "MissingValues": MISSING_DESCRIPTION[result.get("missing", "listwise")],
        "ExcludedSubjects": dict(result["excluded"]),
        "IncompleteSubjects": {s: dict(cols) for s, cols in sorted((result.get("incomplete") or {}).items())},
        "subject": {"Description": "participant label (without sub-)"},
        result["group_column"]: {"Description": "treatment arm (participants.tsv)"},
    }
    for score in (clinical_cfg["outcome"], clinical_cfg.get("covariate")):
        if not score:
            continue
        out[f"improvement_{score}"] = {"Description": f"{score} session {pre} minus session {post} "
                                                      "(positive = improvement)"}
        for ses in (pre, post):
            out[f"{score}_{ses}"] = {"Description": f"{score} in session {ses}"}
    for mid, column in result["columns"].items():
        out[column] = {"Description": f"{mid}: session {post} minus session {pre}"
                                      + (" (n/a where missing: see IncompleteSubjects)"
                                         if result.get("missing") == "per_model" else "")}
    return out
