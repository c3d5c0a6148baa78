"""Analysis configuration: load the packaged default, merge a user YAML, validate.

One YAML file holds every analysis choice (SPEC §3). The packaged default
(``ptsd_bidsapp/data/default_config.yml``) reproduces the reference study's design;
a user file passed with ``--config`` is merged over it key by key. Validation
collects *all* problems and raises a single :class:`ConfigError` listing them.
"""

from __future__ import annotations

import copy
import difflib
import re
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

from ptsd_bidsapp.contracts import DCM_NOISE_MODELS, dcm_parameter_names, pattern_task

#: Keys whose children are user-named (a new task, strategy, model, ...).
#: Each entry maps the dotted path of the open mapping to the dotted path of the
#: default entry used as the template for validating new children (or None when
#: children are free-form values validated semantically).
OPEN_MAPPINGS = {
    "tasks": "tasks.faces",
    "tasks.*.contrasts": None,
    "denoising": "denoising.rest_default",
    "elastic_net.models": "elastic_net.models.all",
    "dcm.b": None,
    "dcm.c": None,
    "dcm.inputs": None,
    "dcm.priors": None,
}

#: Keys whose value may be ``None`` or a value of any of the listed types.
NULLABLE = {
    "atlas.dseg": (str,),
    "atlas.labels": (str,),
    "clinical.phenotype_table": (str,),
    "clinical.covariate": (str,),
    "elastic_net.lambda_min_ratio": (float, int),
    "elastic_net.sequential_h": (int,),
    "glm.drift_model": (str,),
    "denoising.*.std_dvars_threshold": (float, int),
    "denoising.*.low_pass": (float, int),
    "denoising.*.high_pass": (float, int),
    "denoising.*.fd_threshold": (float, int),
    "elastic_net.models.*.subset": (str,),
    "elastic_net.models.*.measures": (list,),
    "gppi.fmri_t0": (int,),
    "gppi.deconvolution_precision": (float, int),
    "peb.loo_parameters": (list,),
}

#: Keys whose value may be of any of the listed types (besides the default's).
UNION = {
    "dcm.te": (float, int, str),
}

_TERM = re.compile(r"^\s*(?:(?P<coef>\d+(?:\.\d*)?|\.\d+)\s*\*?\s*)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*$")


#: Config sections each participant-level node reads. Nodes receive only these, so editing a
#: group-level or report-only key (elastic_net, peb, measures, clinical) reruns no
#: participant computation (nipype hashes node inputs).
RUN_SECTIONS = ("space", "tasks", "denoising", "motion_qc", "atlas", "glm", "gppi")
SESSION_SECTIONS = ("space", "atlas", "dcm")
REPORT_SECTIONS = ("atlas", "dcm", "sessions")
#: Sections only the group level reads.
GROUP_SECTIONS = ("sessions", "measures", "clinical", "elastic_net", "dcm", "peb")


def config_sections(config: Mapping, sections) -> dict:
    """The named top-level sections of ``config`` (a fresh dict; missing sections are omitted)."""
    return {k: copy.deepcopy(config[k]) for k in sections if k in config}


class ConfigError(ValueError):
    """Invalid analysis configuration; ``problems`` lists every issue found."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        super().__init__(f"invalid analysis configuration{where}:\n  - " + "\n  - ".join(self.problems))


def default_config_path() -> Path:
    """Path of the packaged default configuration YAML."""
    return Path(str(resources.files("ptsd_bidsapp") / "data" / "default_config.yml"))


def load_default_config() -> dict:
    """Return the packaged default configuration as a dict (fresh copy)."""
    with open(default_config_path(), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def deep_merge(base: Mapping, override: Mapping) -> dict:
    """Merge ``override`` into a copy of ``base`` recursively (mappings merge, other values replace)."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def parse_contrast(expression: str, conditions: list[str]) -> dict[str, float]:
    """Parse a linear contrast such as ``"iI - cI"`` or ``"0.5*a + 0.5*b - c"``.

    Parameters
    ----------
    expression : str
        Sum of optionally weighted condition names.
    conditions : list of str
        Conditions defined for the task.

    Returns
    -------
    dict
        Condition name -> weight.

    Raises
    ------
    ValueError
        If the expression is malformed or names an undefined condition.
    """
    text = expression.strip()
    if not text:
        raise ValueError("empty contrast expression")
    if text[0] not in "+-":
        text = "+" + text
    pieces = re.findall(r"([+-])([^+-]+)", text)
    if "".join(sign + body for sign, body in pieces).replace(" ", "") != text.replace(" ", ""):
        raise ValueError(f"cannot parse contrast {expression!r}")
    weights: dict[str, float] = {}
    for sign, body in pieces:
        match = _TERM.match(body)
        if not match:
            raise ValueError(f"cannot parse term {body.strip()!r} of contrast {expression!r}")
        name = match.group("name")
        if name not in conditions:
            raise ValueError(
                f"contrast {expression!r} names condition {name!r}, which is not one of the task's conditions {conditions}"
            )
        coef = float(match.group("coef")) if match.group("coef") else 1.0
        weights[name] = weights.get(name, 0.0) + (coef if sign == "+" else -coef)
    return weights


def _pattern_match(path: str, pattern: str) -> bool:
    parts, pparts = path.split("."), pattern.split(".")
    return len(parts) == len(pparts) and all(p == "*" or p == q for p, q in zip(pparts, parts))


def _template_for(path: str, default: dict):
    """Default sub-tree that describes the allowed keys/types at ``path`` (or None)."""
    node: Any = default
    for i, part in enumerate(path.split(".") if path else []):
        prefix = ".".join(path.split(".")[: i + 1])
        parent = ".".join(path.split(".")[:i])
        open_rule = next((v for k, v in OPEN_MAPPINGS.items() if _pattern_match(parent, k)), "absent") if parent else "absent"
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif open_rule != "absent":
            if open_rule is None:
                return None
            node = _template_for(open_rule, default)
        else:
            return None
        del prefix
    return node


def _type_ok(value, template, path: str) -> bool:
    union = next((types for k, types in UNION.items() if _pattern_match(path, k)), None)
    if union is not None:
        return isinstance(value, union) and not isinstance(value, bool)
    nullable = next((types for k, types in NULLABLE.items() if _pattern_match(path, k)), None)
    if value is None:
        return template is None or nullable is not None
    if nullable is not None and template is None:
        return isinstance(value, nullable) and not isinstance(value, bool)
    if template is None:
        return True
    if isinstance(template, bool):
        return isinstance(value, bool)
    if isinstance(template, (int, float)):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(template, str):
        return isinstance(value, str)
    if isinstance(template, list):
        return isinstance(value, list)
    if isinstance(template, Mapping):
        return isinstance(value, Mapping)
    return True


def _walk(user: Mapping, default: dict, path: str, problems: list[str]) -> None:
    for key, value in user.items():
        child = f"{path}.{key}" if path else str(key)
        is_open = any(_pattern_match(path, k) for k in OPEN_MAPPINGS) if path else False
        template = _template_for(child, default)
        if template is None and not is_open and not any(_pattern_match(child, k) for k in NULLABLE):
            parent_template = _template_for(path, default) if path else default
            if isinstance(parent_template, Mapping) and key not in parent_template:
                allowed = ", ".join(sorted(map(str, parent_template)))
                problems.append(f"unknown key '{child}' (allowed here: {allowed})")
                continue
        if not _type_ok(value, template, child):
            expected = type(template).__name__ if template is not None else "null"
            problems.append(f"'{child}' should be of type {expected}, got {type(value).__name__} ({value!r})")
            continue
        if isinstance(value, Mapping) and (isinstance(template, Mapping) or is_open):
            _walk(value, default, child, problems)


def validate_config(config: Mapping, user: Mapping | None = None) -> list[str]:
    """Return the list of problems of a merged configuration (empty when valid).

    Parameters
    ----------
    config : mapping
        The merged (default + user) configuration.
    user : mapping, optional
        The user's own YAML, checked for unknown keys and wrong types.
    """
    default = load_default_config()
    problems: list[str] = []
    if user is not None:
        _walk(user, default, "", problems)
    try:
        problems.extend(_semantic_problems(config))
    except (KeyError, TypeError, ValueError, AttributeError):
        # A structural problem (already reported) made a semantic check impossible.
        if not problems:
            raise
    return problems


def _semantic_problems(config: Mapping) -> list[str]:
    """Cross-field checks, each section guarded so one bad value cannot hide the others."""
    problems: list[str] = []
    for check in (_check_tasks, _check_sessions, _check_elastic_net, _check_measures, _check_dcm, _check_clinical,
                  _check_gppi, _check_peb):
        try:
            problems.extend(check(config))
        except (KeyError, TypeError, ValueError, AttributeError):
            continue  # a structural problem in this section is already reported
    return problems


def _check_tasks(config: Mapping) -> list[str]:
    problems = []
    for task, spec in config["tasks"].items():
        if not re.fullmatch(r"[A-Za-z0-9]+", str(task)):
            problems.append(f"task label '{task}' must be alphanumeric (BIDS task label)")
        conditions = list(spec.get("conditions") or [])
        for name, expression in (spec.get("contrasts") or {}).items():
            if not re.fullmatch(r"[A-Za-z0-9]+", str(name)):
                problems.append(f"contrast name 'tasks.{task}.contrasts.{name}' must be alphanumeric (used as a BIDS desc label)")
            try:
                parse_contrast(str(expression), conditions)
            except ValueError as err:
                problems.append(f"tasks.{task}.contrasts.{name}: {err}")
        if spec.get("denoising") not in config["denoising"]:
            problems.append(
                f"tasks.{task}.denoising names strategy '{spec.get('denoising')}', not defined under 'denoising' "
                f"({', '.join(config['denoising'])})"
            )
        if spec.get("design") not in ("block", "event", "rest"):
            problems.append(f"tasks.{task}.design must be one of block, event, rest (got {spec.get('design')!r})")
    return problems


def _check_sessions(config: Mapping) -> list[str]:
    if config["sessions"]["pre"] == config["sessions"]["post"]:
        return ["sessions.pre and sessions.post must differ"]
    return []


def _check_elastic_net(config: Mapping) -> list[str]:
    problems = []
    en = config["elastic_net"]
    if not 0.0 <= float(en["alpha"]) <= 1.0:
        problems.append(f"elastic_net.alpha must be within [0, 1] (got {en['alpha']})")
    if en.get("standardize") is not True:
        problems.append("elastic_net.standardize: only true (glmnet's default, predictors scaled to unit SD "
                        f"before penalising) is implemented (got {en.get('standardize')!r})")
    if int(en["min_subjects"]) < 3:
        problems.append("elastic_net.min_subjects must be at least 3")
    from ptsd_bidsapp.glmnet.solver import SOLVERS  # lazy: numpy/numba only when a config is checked

    if en.get("solver", "auto") not in SOLVERS:
        problems.append(f"elastic_net.solver must be one of {', '.join(SOLVERS)} (got {en.get('solver')!r})")
    if en.get("sequential_h") is not None and not 1 <= int(en["sequential_h"]) <= int(en["n_permutations"]):
        problems.append("elastic_net.sequential_h must be null (fixed-size permutation test) or between 1 and "
                        f"elastic_net.n_permutations (got {en['sequential_h']})")
    if en.get("missing") not in ("listwise", "per_model"):
        problems.append(f"elastic_net.missing must be listwise or per_model (got {en.get('missing')!r})")
    for name, model in en["models"].items():
        patterns = model.get("measures")
        if patterns is not None and (not isinstance(patterns, list) or not patterns
                                     or not all(isinstance(m, str) for m in patterns)):
            problems.append(f"elastic_net.models.{name}.measures must be null or a non-empty list of "
                            f"measure-identifier patterns (got {patterns!r})")
        for cov in model.get("covariates") or []:
            if cov != config["clinical"]["covariate"]:
                problems.append(
                    f"elastic_net.models.{name}.covariates names '{cov}', which is not the clinical covariate "
                    f"'{config['clinical']['covariate']}'"
                )
    return problems


def _check_measures(config: Mapping) -> list[str]:
    if not isinstance(config["measures"], list) or not all(isinstance(m, str) for m in config["measures"]):
        return ["measures must be a list of measure-identifier patterns (strings)"]
    return []


def _check_dcm(config: Mapping) -> list[str]:
    if not config["dcm"].get("enabled"):
        return []
    return _validate_dcm(config["dcm"], config["tasks"])


def _check_clinical(config: Mapping) -> list[str]:
    clinical = config["clinical"]
    if clinical["source"] not in ("sessions", "phenotype"):
        return ["clinical.source must be 'sessions' or 'phenotype'"]
    if clinical["source"] == "phenotype" and not clinical["phenotype_table"]:
        return ["clinical.source is 'phenotype' but clinical.phenotype_table is not set"]
    return []


def _check_gppi(config: Mapping) -> list[str]:
    gppi = config["gppi"]
    problems = []
    if gppi.get("method") not in ("spm", "slice_reference"):
        problems.append(f"gppi.method must be 'spm' or 'slice_reference' (got {gppi.get('method')!r})")
    fmri_t = gppi.get("fmri_t")
    if isinstance(fmri_t, bool) or not isinstance(fmri_t, int) or fmri_t < 1:
        return problems + [f"gppi.fmri_t must be a positive integer (microtime bins per TR; got {fmri_t!r})"]
    t0 = gppi.get("fmri_t0")
    if t0 is not None and (isinstance(t0, bool) or not isinstance(t0, int) or not 1 <= t0 <= fmri_t):
        problems.append(f"gppi.fmri_t0 must be null or an integer within 1..gppi.fmri_t={fmri_t} (got {t0!r})")
    precision = gppi.get("deconvolution_precision")
    if precision is not None and not float(precision) > 0:
        problems.append(f"gppi.deconvolution_precision must be null or > 0 (got {precision!r})")
    return problems


def _check_peb(config: Mapping) -> list[str]:
    peb = config["peb"]
    problems = []
    if peb.get("random_effects") not in ("single", "fields", "all", "none"):
        problems.append(f"peb.random_effects must be single, fields, all or none (got {peb.get('random_effects')!r})")
    if peb.get("poor_fits") not in ("include", "exclude"):
        problems.append(f"peb.poor_fits must be include or exclude (got {peb.get('poor_fits')!r})")
    if int(peb.get("n_permutations", 0)) < 19:
        problems.append("peb.n_permutations must be at least 19 (a p-value below 0.05 needs 19 re-randomisations)")
    if not 0.5 <= float(peb.get("pp_threshold")) < 1:
        problems.append(f"peb.pp_threshold must be within [0.5, 1) (got {peb.get('pp_threshold')})")
    if not 0 < float(peb.get("finding_alpha")) < 1:
        problems.append(f"peb.finding_alpha must be within (0, 1) (got {peb.get('finding_alpha')})")
    if peb.get("finding_family") not in ("covariate", "model"):
        problems.append(f"peb.finding_family must be covariate or model (got {peb.get('finding_family')!r})")
    if peb.get("finding_p") not in ("p_rnd", "p_rnd_fwe"):
        problems.append(f"peb.finding_p must be p_rnd or p_rnd_fwe (got {peb.get('finding_p')!r})")
    if not float(peb.get("hC")) > 0:
        problems.append("peb.hC must be > 0")
    return problems


def _validate_dcm(dcm: Mapping, tasks: Mapping) -> list[str]:
    problems = []
    task = dcm.get("task")
    if task not in tasks:
        return [f"dcm.task '{task}' is not a configured task ({', '.join(tasks)})"]
    n = len(dcm["regions"])
    conditions = tasks[task].get("conditions") or []
    for name, conds in (dcm.get("inputs") or {}).items():
        for cond in conds:
            if cond not in conditions:
                problems.append(f"dcm.inputs.{name} uses condition '{cond}', not a condition of task '{task}' {conditions}")
    a = dcm.get("a")
    if not (isinstance(a, list) and len(a) == n and all(isinstance(r, list) and len(r) == n for r in a)):
        problems.append(f"dcm.a must be a {n}x{n} matrix (one row/column per region in dcm.regions)")
    for name, mat in (dcm.get("b") or {}).items():
        if name not in (dcm.get("inputs") or {}):
            problems.append(f"dcm.b.{name}: '{name}' is not an input defined under dcm.inputs")
        if not (isinstance(mat, list) and len(mat) == n and all(isinstance(r, list) and len(r) == n for r in mat)):
            problems.append(f"dcm.b.{name} must be a {n}x{n} matrix")
    for name, vec in (dcm.get("c") or {}).items():
        if name not in (dcm.get("inputs") or {}):
            problems.append(f"dcm.c.{name}: '{name}' is not an input defined under dcm.inputs")
        if not (isinstance(vec, list) and len(vec) == n):
            problems.append(f"dcm.c.{name} must list one 0/1 entry per region ({n})")
    te = dcm.get("te")
    if te != "sidecar" and not (isinstance(te, (int, float)) and 0 < te <= 0.2):
        problems.append(f"dcm.te must be the echo time in seconds (0, 0.2] or 'sidecar' (got {te!r})")
    if int(dcm.get("max_iterations", 0)) < 1 or not float(dcm.get("tolerance", 0)) > 0 or not float(dcm.get("hC", 0)) > 0:
        problems.append("dcm.max_iterations must be >= 1, dcm.tolerance and dcm.hC > 0")
    if int(dcm.get("microtime_bins", 0)) < 1:
        problems.append("dcm.microtime_bins must be a positive integer")
    if dcm.get("noise") not in DCM_NOISE_MODELS:
        problems.append(f"dcm.noise must be one of {list(DCM_NOISE_MODELS)} (got {dcm.get('noise')!r})")
    if not 0 <= float(dcm.get("min_explained_variance", 0)) < 100:
        problems.append("dcm.min_explained_variance must be a percentage within [0, 100)")
    try:
        names = dcm_parameter_names(dcm["regions"], list(dcm.get("inputs") or {}))
    except ValueError as err:
        return problems + [f"dcm: {err}"]
    for name, override in (dcm.get("priors") or {}).items():
        if name not in names:
            near = difflib.get_close_matches(str(name), names, n=3)
            problems.append(f"dcm.priors names '{name}', not a parameter of this model"
                            + (f" (nearest: {', '.join(near)})" if near else ""))
        elif not isinstance(override, Mapping) or set(override) - {"mean", "variance"} or not override:
            problems.append(f"dcm.priors.{name} must be a mapping with 'mean' and/or 'variance'")
        elif override.get("variance") is not None and float(override["variance"]) < 0:
            problems.append(f"dcm.priors.{name}.variance must be >= 0")
    return problems


def load_config(path: str | Path | None = None) -> dict:
    """Load the analysis configuration.

    Parameters
    ----------
    path : path-like, optional
        User YAML merged over the packaged default. ``None`` returns the default.

    Returns
    -------
    dict
        The resolved configuration.

    Raises
    ------
    ConfigError
        Listing every problem (unknown key, wrong type, undefined contrast condition, ...).
    """
    default = load_default_config()
    user: dict = {}
    source = None
    if path is not None:
        source = str(path)
        try:
            with open(path, encoding="utf-8") as handle:
                user = yaml.safe_load(handle) or {}
        except OSError as err:
            raise ConfigError([f"cannot read config file: {err.strerror}"], source) from err
        except yaml.YAMLError as err:
            raise ConfigError([f"not valid YAML: {err}"], source) from err
        if not isinstance(user, Mapping):
            raise ConfigError(["the top level must be a mapping of section names"], source)
    config = deep_merge(default, user)
    problems = validate_config(config, user)
    if problems:
        raise ConfigError(problems, source)
    return config


def dump_config(config: Mapping) -> str:
    """Serialise a configuration to YAML (stable key order)."""
    header = "# Resolved ptsd_bidsapp analysis configuration (default merged with --config)\n"
    return header + yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=None, width=100)


def select_tasks(config: Mapping, tasks: list[str] | None) -> tuple[dict, list[str]]:
    """Restrict a resolved configuration to ``tasks`` (``--task-id``).

    Tasks not selected leave ``tasks``; measure patterns naming one of them leave ``measures``;
    the DCM is disabled when its task is not selected. Each of these is returned as a message
    (they are skipped on purpose, not errors).

    Parameters
    ----------
    config : mapping
        Resolved, validated configuration.
    tasks : list of str or None
        Task labels to keep; ``None`` keeps every task.

    Returns
    -------
    (dict, list of str)
        The restricted configuration (a fresh copy) and one message per skipped item.

    Raises
    ------
    ConfigError
        A label that is not a task of the configuration.
    """
    config = copy.deepcopy(dict(config))
    if not tasks:
        return config, []
    unknown = [t for t in tasks if t not in config["tasks"]]
    if unknown:
        raise ConfigError([f"--task-id {t!r} is not a task of the configuration (tasks: "
                           f"{', '.join(config['tasks'])})" for t in unknown])
    dropped = [t for t in config["tasks"] if t not in tasks]
    if not dropped:
        return config, []
    why = f"not selected (--task-id {' '.join(tasks)})"
    notes = [f"task '{t}' skipped: {why}" for t in dropped]
    config["tasks"] = {t: spec for t, spec in config["tasks"].items() if t in tasks}
    kept = []
    for pattern in config["measures"]:
        task = pattern_task(pattern)
        if task in dropped:
            notes.append(f"measure pattern '{pattern}' skipped: task '{task}' {why}")
        else:
            kept.append(pattern)
    config["measures"] = kept
    if config["dcm"].get("enabled") and config["dcm"]["task"] not in tasks:
        config["dcm"]["enabled"] = False
        notes.append(f"DCM (participant) and DCM PEB models (group) skipped: their task '{config['dcm']['task']}' "
                     f"is {why}")
    return config, notes
