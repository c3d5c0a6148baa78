"""The ``group`` analysis level: change scores → elastic-net models → DCM PEB → report.

Plain Python over the participant outputs (no nipype graph), MRIQC-style. Everything goes
to ``<output_dir>/group/`` (listed in the output dataset's ``.bidsignore``):

* ``changes.tsv/.json`` — the change-score table and the excluded subjects with reasons;
* ``model-<name>_coefficients.tsv/.json`` and ``model-<name>_predictions.tsv/.json`` per model;
* ``group_summary.json`` — every model's status (fitted / failed with the reason), key results;
* ``dcm/`` — the DCM PEB models (:mod:`ptsd_bidsapp.group.dcm_group`);
* ``group_report.html`` — the report (unless ``--no-reports``).

Failure policy: a model with fewer usable subjects than ``elastic_net.min_subjects`` is
recorded as failed (summary, report, log) and the other models still run; the run exits
with 65 (DATAERR) only when no model at all could be fitted, or when the inputs are missing
(66, no features tables — the participant level has not been run).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

from ptsd_bidsapp import __version__
from ptsd_bidsapp.bids.inputs import InputError
from ptsd_bidsapp.bids.outputs import atomic_write_text, write_json, write_tsv
from ptsd_bidsapp import errors as exitcodes
from ptsd_bidsapp.glmnet import TooFewSubjectsError
from ptsd_bidsapp.group.changes import build_change_table, change_table_sidecar
from ptsd_bidsapp.group.models import fit_model, model_design, write_model_outputs

LOGGER = logging.getLogger("ptsd_bidsapp.group")

__all__ = ["run_group"]


#: ``.bidsignore`` entry of the group results (BIDS has no names for them). A bare name: the
#: validator does not honour ``group/`` (trailing slash; bids-standard/bids-validator#291).
GROUP_BIDSIGNORE = "group"


def _ignore_group_dir(output_dir: Path) -> None:
    """Make sure the output dataset's ``.bidsignore`` lists the group directory."""
    ignore = output_dir / ".bidsignore"
    lines = ignore.read_text().splitlines() if ignore.is_file() else []
    if GROUP_BIDSIGNORE not in lines:
        atomic_write_text(ignore, "\n".join([*lines, GROUP_BIDSIGNORE]) + "\n")


def _remove_stale(group_dir: Path, name: str) -> None:
    for path in group_dir.glob(f"model-{name}_*"):
        path.unlink()


def _run_dcm(output_dir: Path, change: Mapping, config: Mapping, reports: bool, seed: int) -> dict | None:
    if not config.get("dcm", {}).get("enabled", True):
        return {"note": "DCM disabled in the config (dcm.enabled: false / --no-dcm)"}
    from ptsd_bidsapp.group.dcm_group import run_dcm_group

    try:
        return run_dcm_group(participant_dir=output_dir, output_dir=output_dir, clinical=change["clinical"],
                             config=config, figures=reports, seed=seed)
    except (ValueError, KeyError, OSError, InputError, RuntimeError, ArithmeticError) as err:
        LOGGER.warning("DCM group models failed: %s", err, exc_info=True)
        return {"note": f"DCM group models failed: {err}"}


def run_group(bids_dir, output_dir, config: Mapping, seed: int = 0, n_jobs: int = 1, reports: bool = True) -> dict:
    """Run the group level.

    Parameters
    ----------
    bids_dir : path
        Raw BIDS dataset (``participants.tsv`` arms, per-session clinical scores).
    output_dir : path
        Output dataset holding the participant-level results; results go to ``group/``.
    config : mapping
        Resolved analysis config.
    seed : int
        Seed of the nested CV folds (K-fold only), permutations and bootstraps.
    n_jobs : int
        Processes for the permutation test (results do not depend on it).
    reports : bool
        Write ``group/group_report.html``.

    Returns
    -------
    dict
        ``{"change": ..., "models": {name: result}, "failed": {name: reason}, "dcm": ..., "report": path}``.

    Raises
    ------
    InputError
        No features tables (66) or no model could be fitted (65).
    """
    output_dir = Path(output_dir)
    group_dir = output_dir / "group"
    en_cfg = config["elastic_net"]
    change = build_change_table(output_dir, bids_dir, config)
    _ignore_group_dir(output_dir)
    for subject, reason in sorted(change["excluded"].items()):
        LOGGER.warning("group level: sub-%s excluded: %s", subject, reason)
    write_tsv(group_dir / "changes.tsv", change["table"], sidecar=change_table_sidecar(change, config))

    models, failed, files = {}, {}, {}
    for name, spec in en_cfg["models"].items():
        _remove_stale(group_dir, name)
        try:
            design = model_design(change, name, spec, config)
            LOGGER.info("group level: model %s, %d subjects, %d predictors", name, len(design["y"]),
                        design["X"].shape[1])
            result = fit_model(name, design, en_cfg, seed, n_jobs=n_jobs)
        except TooFewSubjectsError as err:
            LOGGER.error("group level: %s", err)
            failed[name] = str(err)
            continue
        result["spec"] = dict(spec)
        files[name] = write_model_outputs(result, group_dir, spec, config)
        models[name] = result

    dcm = _run_dcm(output_dir, change, config, reports, seed)

    summary = {
        "GeneratedBy": {"Name": "ptsd_bidsapp", "Version": __version__},
        "Seed": int(seed),
        "Outcome": change["outcome"],
        "Measures": change["measures"],
        "ExcludedSubjects": dict(sorted(change["excluded"].items())),
        "ElasticNet": {k: v for k, v in en_cfg.items() if k != "models"},
        "Models": {},
        "DCM": None if dcm is None else {"Note": dcm.get("note"),
                                         "Models": sorted((dcm.get("models") or {}).keys()),
                                         "LOO": sorted((dcm.get("loo") or {}).keys())},
    }
    for name, spec in en_cfg["models"].items():
        if name in failed:
            summary["Models"][name] = {"Status": "failed", "Reason": failed[name], "Spec": dict(spec)}
            continue
        result = models[name]
        coef = result["coefficients"]
        summary["Models"][name] = {
            "Status": "fitted",
            "Spec": dict(spec),
            "N": int(len(result["design"]["y"])),
            "LambdaMin": result["cv"].lambda_min_,
            "Retained": {f: b for f, b, s in zip(coef["feature"], coef["beta_per_sd"], coef["selected"]) if s},
            "NestedR2": result["nested"]["r2"],
            "PermutationP": result["permutation"]["p_value"],
            "Files": [str(Path(p).relative_to(output_dir)) for p in (files[name]["coefficients"],
                                                                     files[name]["predictions"])],
        }
    write_json(group_dir / "group_summary.json", summary)

    report = None
    if reports:
        from ptsd_bidsapp.group.report import write_group_report

        report = write_group_report(group_dir / "group_report.html", change, models, failed, dcm, config, seed)
        print(f"ptsd_bidsapp: group report written to {report}")
    if not models:
        raise InputError(
            "no group model could be fitted:\n  - " + "\n  - ".join(f"{k}: {v}" for k, v in failed.items())
            + f"\nsee {group_dir / 'group_summary.json'}", group_dir, exitcodes.DATAERR)
    return {"change": change, "models": models, "failed": failed, "dcm": dcm, "report": report}
