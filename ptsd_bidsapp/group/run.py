"""The ``group`` analysis level: change scores → elastic-net models → DCM PEB → report.

Plain Python over the participant outputs (no nipype graph), MRIQC-style. Everything goes
to ``<output_dir>/group/`` (listed in the output dataset's ``.bidsignore``):

* ``changes.tsv/.json`` — the change-score table and the excluded subjects with reasons;
* ``model-<name>_coefficients.tsv/.json`` and ``model-<name>_predictions.tsv/.json`` per model;
* ``group_summary.json`` — every model's status (fitted / failed with the reason), key results;
* ``dcm/`` — the DCM PEB models (:mod:`ptsd_bidsapp.group.dcm_group`);
* ``group_report.html`` — the report (unless ``--no-reports``).

Failure policy: a model with fewer usable subjects than ``elastic_net.min_subjects``, or one
that cannot be fitted on these data (e.g. a singular design in a permutation refit of a small
sample), is recorded as failed with the reason (summary, report, log) and the other models
still run; the run exits with 65 (DATAERR) only when no model at all could be fitted, or when
the inputs are missing (66, no features tables — the participant level has not been run).

Everything is written into a temporary folder next to ``group/`` and moved into place at the
end, as the participant level's sink does: a run that crashes (or is killed) leaves the previous
``group/`` untouched and no partial results.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Mapping

from ptsd_bidsapp import __version__
from ptsd_bidsapp.bids.inputs import InputError
from ptsd_bidsapp.bids.outputs import atomic_write_bytes, atomic_write_text, write_json, write_tsv
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
        from ptsd_bidsapp.bids.dataset import BIDSIGNORE

        reason = next(r for r, patterns in BIDSIGNORE if GROUP_BIDSIGNORE in patterns)
        atomic_write_text(ignore, "\n".join([*lines, f"# {reason}", GROUP_BIDSIGNORE]) + "\n")


#: Exceptions of a model fit on data it cannot handle (singular or degenerate designs in the
#: cross-validation/permutation refits of a small sample): the model fails, the others go on.
MODEL_FIT_ERRORS = (TooFewSubjectsError, ArithmeticError, ValueError)


def _publish(staging: Path, group_dir: Path) -> None:
    """Replace ``group_dir`` by the finished ``staging`` folder (two renames on one file system)."""
    old = None
    if group_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=".group.old-", dir=group_dir.parent))
        os.replace(group_dir, old / "group")
    os.replace(staging, group_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _run_dcm(stage_root: Path, output_dir: Path, change: Mapping, config: Mapping, reports: bool,
             seed: int, notes: list[str] = ()) -> dict | None:
    if not config.get("dcm", {}).get("enabled", True):
        why = [n for n in notes if n.startswith("DCM")]
        return {"note": why[0] if why else "DCM disabled in the config (dcm.enabled: false / --no-dcm)"}
    from ptsd_bidsapp.group.dcm_group import run_dcm_group

    try:
        return run_dcm_group(participant_dir=output_dir, output_dir=stage_root, clinical=change["clinical"],
                             config=config, figures=reports, seed=seed)
    except (ValueError, KeyError, OSError, InputError, RuntimeError, ArithmeticError) as err:
        LOGGER.warning("DCM group models failed: %s", err, exc_info=True)
        return {"note": f"DCM group models failed: {err}"}


def run_group(bids_dir, output_dir, config: Mapping, seed: int = 0, n_jobs: int = 1, reports: bool = True,
              notes: list[str] | None = None, work_dir=None) -> dict:
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
    notes : list of str, optional
        What was skipped on purpose (``--task-id``: measures, DCM), kept in ``group_summary.json``.
    work_dir : path, optional
        Where the report's inputs are cached (``group_report_inputs.pkl.gz``) for ``--reports-only``.

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
    change = build_change_table(output_dir, bids_dir, config)
    _ignore_group_dir(output_dir)
    stage_root = Path(tempfile.mkdtemp(prefix=".group.tmp-", dir=output_dir))
    try:
        result = _run_group_into(stage_root, output_dir, change, config, seed, n_jobs, reports,
                                 list(notes or []) + list(change.get("skipped", [])))
        _publish(stage_root / "group", output_dir / "group")
    finally:
        shutil.rmtree(stage_root, ignore_errors=True)
    if work_dir is not None:
        _cache_report_inputs(Path(work_dir), output_dir, result, config, seed)
    if result["report"] is not None:
        result["report"] = output_dir / "group" / Path(result["report"]).name
        print(f"ptsd_bidsapp: group report written to {result['report']}")
    if not result["models"]:
        group_dir = output_dir / "group"
        raise InputError(
            "no group model could be fitted:\n  - " + "\n  - ".join(f"{k}: {v}" for k, v in result["failed"].items())
            + f"\nsee {group_dir / 'group_summary.json'}", group_dir, exitcodes.DATAERR)
    return result


def _run_group_into(stage_root: Path, output_dir: Path, change: dict, config: Mapping, seed: int, n_jobs: int,
                    reports: bool, notes: list[str] = ()) -> dict:
    """Compute and write every group result under ``stage_root/group`` (see :func:`run_group`)."""
    group_dir = stage_root / "group"
    en_cfg = config["elastic_net"]
    for subject, reason in sorted(change["excluded"].items()):
        LOGGER.warning("group level: sub-%s excluded: %s", subject, reason)
    for subject, missing in sorted(change.get("incomplete", {}).items()):
        LOGGER.warning("group level: sub-%s left out of the models that use %s (elastic_net.missing: per_model): %s",
                       subject, ", ".join(missing), "; ".join(missing.values()))
    write_tsv(group_dir / "changes.tsv", change["table"], sidecar=change_table_sidecar(change, config))

    models, failed, files = {}, {}, {}
    for name, spec in en_cfg["models"].items():
        design = None
        try:
            design = model_design(change, name, spec, config)
            LOGGER.info("group level: model %s, %d subjects, %d predictors", name, len(design["y"]),
                        design["X"].shape[1])
            result = fit_model(name, design, en_cfg, seed, n_jobs=n_jobs)
        except TooFewSubjectsError as err:
            LOGGER.error("group level: %s", err)
            failed[name] = str(err)
            continue
        except MODEL_FIT_ERRORS as err:
            LOGGER.error("group level: model '%s' could not be fitted: %s", name, err, exc_info=True)
            on = f" on these {len(design['y'])} subjects" if design is not None else ""
            failed[name] = (f"model '{name}' could not be fitted{on} ({type(err).__name__}: {err}); "
                            "the other models are unaffected")
            continue
        result["spec"] = dict(spec)
        files[name] = write_model_outputs(result, group_dir, spec, config)
        models[name] = result

    dcm = _run_dcm(stage_root, output_dir, change, config, reports, seed, list(notes))

    summary = {
        "GeneratedBy": {"Name": "ptsd_bidsapp", "Version": __version__},
        "Seed": int(seed),
        "Skipped": list(notes),
        "Outcome": change["outcome"],
        "Measures": change["measures"],
        "ExcludedSubjects": dict(sorted(change["excluded"].items())),
        "MissingValues": change.get("missing", "listwise"),
        "IncompleteSubjects": {s: dict(m) for s, m in sorted(change.get("incomplete", {}).items())},
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
            "ExcludedSubjects": dict(sorted(result["design"]["excluded"].items())),
            "LambdaMin": result["cv"].lambda_min_,
            "Retained": {f: b for f, b, s in zip(coef["feature"], coef["beta_per_sd"], coef["selected"]) if s},
            "NestedR2": result["nested"]["r2"],
            "PermutationP": result["permutation"]["p_value"],
            "Files": [str(Path(p).relative_to(stage_root)) for p in (files[name]["coefficients"],
                                                                    files[name]["predictions"])],
        }
    write_json(group_dir / "group_summary.json", summary)

    report = None
    if reports:
        from ptsd_bidsapp.group.report import write_group_report

        report = write_group_report(group_dir / "group_report.html", change, models, failed, dcm, config, seed)
    return {"change": change, "models": models, "failed": failed, "dcm": dcm, "report": report}


#: The group report's inputs, cached in the work dir for ``--reports-only`` (not a derivative).
REPORT_CACHE = "group_report_inputs.pkl.gz"


def _cache_report_inputs(work_dir: Path, output_dir: Path, result: Mapping, config: Mapping, seed: int) -> None:
    import gzip
    import pickle

    cache = {"output_dir": str(Path(output_dir).resolve()), "change": result["change"], "models": result["models"],
             "failed": result["failed"], "dcm": result["dcm"], "config": dict(config), "seed": int(seed)}
    try:
        payload = gzip.compress(pickle.dumps(cache, protocol=4), compresslevel=6, mtime=0)
    except (pickle.PicklingError, TypeError, AttributeError) as err:
        LOGGER.warning("group level: the report inputs could not be cached for --reports-only (%s)", err)
        return
    Path(work_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(Path(work_dir) / REPORT_CACHE, payload)


def rebuild_group_report(output_dir, work_dir) -> int:
    """``--reports-only``: render ``group/group_report.html`` again from the results cached by the last group run.

    Raises
    ------
    InputError
        No cached results in ``work_dir`` (66), or results of another output dataset (66).
    """
    import gzip
    import pickle

    from ptsd_bidsapp.group.report import write_group_report

    path = Path(work_dir) / REPORT_CACHE
    if not path.is_file():
        raise InputError(f"--reports-only: no cached group results ({path}); run the group level (without "
                         "--reports-only) with this work dir first", path)
    cache = pickle.loads(gzip.decompress(path.read_bytes()))
    if cache["output_dir"] != str(Path(output_dir).resolve()):
        raise InputError(f"--reports-only: {path} holds the group results of {cache['output_dir']}, not of "
                         f"{output_dir}; pass the work dir of that run", path)
    report = write_group_report(Path(output_dir) / "group" / "group_report.html", cache["change"], cache["models"],
                                cache["failed"], cache["dcm"], cache["config"], cache["seed"])
    print(f"ptsd_bidsapp group level (--reports-only): group report written to {report}")
    return exitcodes.SUCCESS
