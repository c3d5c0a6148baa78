"""DCM group level: PEB models over the participants' DCM posteriors.

Plain Python (no nipype): read the per-subject, per-session DCM JSONs the participant
level wrote, build the between-subject designs from the config ``peb:`` section and the
clinical covariates, run the PEB models with Bayesian model reduction/averaging
(:mod:`ptsd_bidsapp.peb`), test every effect by re-randomisation and call findings
(:func:`add_rerandomisation`), write one TSV + JSON per model under
``<output_dir>/group/dcm/`` and return figures for the group report
(:mod:`ptsd_bidsapp.reports.dcm_figures`).

Size (~620 lines): reading the posteriors, the design, the two re-randomisation adapters
and the orchestration share the models' conventions (session labels, selection, options);
split further when a third model family arrives.

Design (between subjects; Zeidman et al. 2019, NeuroImage 200:12, sec. 2.3 — a constant
first column so that it models the group mean, covariates mean-centred):

=======================  ===============================================================
column                   coding
=======================  ===============================================================
``mean``                 1
``improvement``          outcome improvement (CAPS-5 pre − post), centred and divided by
                         its SD (effects are per SD of improvement)
``drug``                 +½ active arm (ketamine), −½ reference arm (midazolam), then
                         centred (effect = active − reference)
``improvement_x_drug``   improvement (z) × drug (±½), then centred (effect = slope under
                         ketamine − slope under midazolam)
other numeric columns    centred and divided by their SD
=======================  ===============================================================

With ``drug`` and the interaction centred, the ``improvement`` effect is the slope
averaged over the two arms (weighted by their sizes).

Models (names used in the output files):

* ``change`` — session change by PEB of PEBs (:func:`ptsd_bidsapp.peb.fit_session_change`):
  per subject, ``[mean, change]`` over the pre and post DCMs; between subjects, the
  ``change`` parameters on the design above. "Improvement goes with decreased modulation
  of amygdala→vmPFC" is the ``improvement`` effect on ``change:B_fearful_amygdala-vmpfc``.
* ``baseline`` — PEB over the pre-session DCMs on the same design.
* ``loo-all`` / ``loo-<active arm>`` — leave-one-out prediction of improvement from the
  pre-session parameters (``spm_dcm_loo``), all subjects and the active arm only.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ptsd_bidsapp import contracts
from ptsd_bidsapp.bids.outputs import write_json, write_tsv
from ptsd_bidsapp.dcm import priors
from ptsd_bidsapp.reports import dcm_figures
from ptsd_bidsapp.peb import (
    BMAResult,
    PEBResult,
    RerandomisationResult,
    SessionChangeResult,
    bmr_search,
    fit_peb,
    fit_session_change,
    loo_predict,
    rerandomisation_test,
    select_parameters,
)

__all__ = [
    "DCMPosterior",
    "read_dcm_posterior",
    "collect_dcm_posteriors",
    "peb_design",
    "peb_results_table",
    "run_dcm_group",
    "change_rerandomisation",
    "baseline_rerandomisation",
]

#: SPM's conventional Pp threshold (0.95): shown in tables and figures beside the finding rule, whose
#: own threshold is the config's ``peb.pp_threshold`` (the packaged default owns its value).
PP_THRESHOLD = 0.95


# ---------------------------------------------------------------------------------------
# reading participant DCM posteriors
# ---------------------------------------------------------------------------------------
@dataclass
class DCMPosterior:
    """One subject's DCM posterior in vector form (SPM ``spm_vec`` order)."""

    subject: str
    session: str | None
    param_names: list
    Ep: np.ndarray
    Cp: np.ndarray
    pE: np.ndarray
    pC: np.ndarray
    F: float
    path: Path | None = None
    explained_variance: float = float("nan")
    fit_ok: bool = True
    fit_problems: list = field(default_factory=list)


def _as_vector(value, regions, inputs) -> np.ndarray:
    if isinstance(value, Mapping):
        return priors.pack_parameters(value, len(regions), len(inputs), inputs)
    return np.asarray(value, dtype=float).ravel()


def _as_covariance(value, regions, inputs) -> np.ndarray:
    if isinstance(value, Mapping):  # prior variances given per field, like SPM's pC structure
        return np.diag(priors.pack_parameters(value, len(regions), len(inputs), inputs))
    array = np.asarray(value, dtype=float)
    return np.diag(array) if array.ndim == 1 else array


_ENTITY = re.compile(r"(sub|ses)-([A-Za-z0-9]+)")


def read_dcm_posterior(path: Path | str) -> DCMPosterior:
    """Read one participant DCM JSON (+ sibling ``.npz`` for arrays not in the JSON).

    Accepted keys (first found): regions ``region_names``/``regions``; inputs
    ``input_names``/``inputs``; posterior mean ``Ep`` (dict of fields or vector);
    posterior covariance ``Cp``; priors ``pE``/``pC`` (dicts, vectors or matrices);
    free energy ``F``; explicit ``param_names`` (vector order) if present.
    """
    path = Path(path)
    meta = json.loads(path.read_text())
    arrays = {}
    npz = path.with_suffix(".npz")
    if npz.exists():
        with np.load(npz, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}

    def get(*keys):
        for key in keys:
            if key in meta and meta[key] is not None:
                return meta[key]
            if key in arrays:
                return arrays[key]
        return None

    regions = list(get("region_names", "regions") or [])
    inputs = list(get("input_names", "inputs") or [])
    Ep, Cp, pE, pC = get("Ep"), get("Cp"), get("pE", "prior_mean"), get("pC", "prior_cov")
    missing = [name for name, value in (("Ep", Ep), ("Cp", Cp), ("pE", pE), ("pC", pC)) if value is None]
    if missing:
        raise ValueError(f"{path}: DCM posterior lacks {', '.join(missing)} (expected in the JSON or {npz.name})")
    names = get("param_names", "Pnames")
    names = list(names) if names is not None else contracts.dcm_parameter_names(regions, inputs)
    Ep, pE = _as_vector(Ep, regions, inputs), _as_vector(pE, regions, inputs)
    Cp, pC = _as_covariance(Cp, regions, inputs), _as_covariance(pC, regions, inputs)
    if not (len(names) == Ep.size == pE.size == Cp.shape[0] == pC.shape[0]):
        raise ValueError(f"{path}: inconsistent DCM parameter sizes (names {len(names)}, Ep {Ep.size}, "
                         f"Cp {Cp.shape}, pE {pE.size}, pC {pC.shape})")
    entities = dict(_ENTITY.findall(path.name))
    F = get("F")
    diagnostics = meta.get("diagnostics") or {}
    return DCMPosterior(
        subject=str(meta.get("subject", entities.get("sub"))),
        session=meta.get("session", entities.get("ses")),
        param_names=names,
        Ep=Ep,
        Cp=Cp,
        pE=pE,
        pC=pC,
        F=float(F) if F is not None else 0.0,
        path=path,
        explained_variance=float(diagnostics.get("explained_variance", meta.get("explained_variance")) or np.nan),
        fit_ok=bool(diagnostics.get("fit_ok", True)),
        fit_problems=list(diagnostics.get("problems") or []),
    )


def collect_dcm_posteriors(participant_dir: Path | str, task: str, sessions: Sequence[str]) -> dict:
    """``{session: {subject: DCMPosterior}}`` from ``sub-*/ses-*/func/*_task-<task>_*_dcm.json``."""
    participant_dir = Path(participant_dir)
    found: dict[str, dict[str, DCMPosterior]] = {ses: {} for ses in sessions}
    for ses in sessions:
        for path in sorted(participant_dir.glob(f"sub-*/ses-{ses}/func/sub-*_ses-{ses}_task-{task}_*dcm.json")):
            posterior = read_dcm_posterior(path)
            found[ses][posterior.subject] = posterior
    return found


def _why_no_dcm(participant_dir: Path | str, subject: str, session: str) -> str:
    """``": <reason>"`` the participant level gave for a session without a DCM (the note of its
    ``n/a`` ``dcm_*`` rows in the features table), or ``""`` when there is no such row."""
    paths = sorted(Path(participant_dir).glob(f"sub-{subject}/ses-{session}/*_desc-measures_features.tsv"))
    if not paths:
        return ""
    table = pd.read_csv(paths[0], sep="\t", dtype=str, keep_default_na=False)
    if "kind" not in table.columns or "note" not in table.columns:
        return ""
    notes = table.loc[(table["kind"] == "dcm") & (table["value"] == "n/a"), "note"]
    return f": {notes.iloc[0]}" if len(notes) and notes.iloc[0] else ""


# ---------------------------------------------------------------------------------------
# design
# ---------------------------------------------------------------------------------------
def _zscore(values: pd.Series) -> pd.Series:
    values = values.astype(float)
    sd = values.std(ddof=1)
    centred = values - values.mean()
    return centred / sd if sd > 0 else centred


def peb_design(
    clinical: pd.DataFrame,
    covariates: Sequence[str],
    *,
    group_column: str = "group",
    active_group: str = "ketamine",
    reference_group: str = "midazolam",
) -> pd.DataFrame:
    """Between-subject PEB design (coding in the module docstring).

    Parameters
    ----------
    clinical : DataFrame
        Indexed by subject label; columns ``improvement`` and ``group_column`` (and any
        other numeric covariate named in ``covariates``).
    covariates : sequence of str
        Design columns after ``mean``: ``improvement``, ``drug``, ``improvement_x_drug``
        or numeric column names.

    Returns
    -------
    DataFrame
        Indexed like ``clinical``; first column ``mean``.
    """
    design = pd.DataFrame({"mean": 1.0}, index=clinical.index)
    drug = None
    if group_column in clinical:
        drug = clinical[group_column].map({active_group: 0.5, reference_group: -0.5}).astype(float)
    improvement = _zscore(clinical["improvement"]) if "improvement" in clinical else None
    for name in covariates:
        if name == "improvement":
            design[name] = improvement
        elif name == "drug":
            if drug is None:
                raise ValueError(f"drug covariate needs the {group_column!r} column")
            design[name] = drug - drug.mean()
        elif name in ("improvement_x_drug", "drug_x_improvement"):
            product = improvement * drug
            design[name] = product - product.mean()
        elif name in clinical:
            design[name] = _zscore(clinical[name])
        else:
            raise ValueError(f"unknown PEB covariate {name!r}")
    if design.isna().any().any():
        bad = design.index[design.isna().any(axis=1)].tolist()
        raise ValueError(f"missing clinical values for subjects {bad}")
    # A constant covariate (e.g. drug in a one-arm subset) is not estimable: drop it.
    keep = ["mean"] + [c for c in design.columns[1:] if design[c].abs().max() > 1e-12]
    return design[keep]


# ---------------------------------------------------------------------------------------
# results tables
# ---------------------------------------------------------------------------------------
def peb_results_table(peb: PEBResult, bma: BMAResult | None) -> pd.DataFrame:
    """One row per parameter × covariate: full-PEB and BMA posteriors, probabilities.

    Columns: ``parameter``, ``effect`` (level-1 effect for PEB of PEBs, e.g. ``change``;
    ``n/a`` otherwise), ``covariate``, ``Ep``, ``Cp`` (posterior variance), ``Pp_sign``
    (probability of the sign), ``Ep_bma``, ``Cp_bma``, ``Pp`` (BMR/BMA posterior
    probability that the effect is present).
    """
    table = peb.table()
    split = table["parameter"].str.split(":", n=1, expand=True)
    if split.shape[1] == 2 and split[1].notna().all():
        table.insert(1, "effect", split[0])
        table["parameter"] = split[1]
    else:
        table.insert(1, "effect", None)
    if bma is not None:
        table["Ep_bma"] = bma.Ep.ravel(order="F")
        table["Cp_bma"] = np.diag(bma.Cp)
        table["Pp"] = bma.Pp.ravel(order="F")
    return table


def add_rerandomisation(table: pd.DataFrame, rnd: RerandomisationResult, pp_threshold: float,
                        finding_alpha: float, finding_p: str = "p_rnd_fwe") -> pd.DataFrame:
    """Join re-randomisation p-values to a :func:`peb_results_table` and apply the finding rule.

    An effect is a *finding* when its posterior probability of presence exceeds
    ``pp_threshold`` (config ``peb.pp_threshold``, default 0.75: Bayes factor 3, "positive
    evidence", Kass & Raftery 1995) AND its re-randomisation p (``finding_p``: the family-wise
    ``p_rnd_fwe``, the default, or ``p_rnd`` per effect) is below ``finding_alpha``: the
    Bayesian criterion says Bayesian model reduction keeps the effect, the re-randomisation
    holds the decision to its false-positive rate whatever the first-level posteriors'
    over-confidence (the null benchmark, ``benchmarks/null_calibration.py``, shows Pp alone
    is not calibrated on real data). With the family-wise p, a covariate without any effect
    gives a finding among its parameters with probability at most ``finding_alpha``, whatever
    ``pp_threshold``; SPM's 0.95 on top of it only lost power (Monte Carlo,
    ``scripts/dcm_monte_carlo.py``).
    """
    extra = rnd.table()
    names = [f"{e}:{p}" if isinstance(e, str) and e not in ("", "n/a") else p
             for e, p in zip(table["effect"], table["parameter"])]
    if names != list(extra["parameter"]) or list(table["covariate"]) != list(extra["covariate"]):
        raise ValueError("re-randomisation result does not match the PEB table (parameter/covariate order)")
    out = table.copy()
    for column in ("z", "p_rnd", "p_rnd_fwe", "rnd_method"):
        out[column] = extra[column].to_numpy()
    pp = out["Pp"] if "Pp" in out else out["Pp_sign"]
    if finding_p not in ("p_rnd", "p_rnd_fwe"):
        raise ValueError(f"finding_p must be p_rnd or p_rnd_fwe, got {finding_p!r}")
    tested = out[finding_p].notna()
    out["finding"] = tested & (pp > pp_threshold) & (out[finding_p] < finding_alpha)
    return out


def _as_matrix(value) -> np.ndarray:
    """A prior covariance given per subject (list), as a vector of variances or a matrix -> one matrix."""
    value = np.asarray(value[0] if isinstance(value, (list, tuple)) else value, dtype=float)
    if value.ndim == 3:
        value = value[0]
    return np.diag(value) if value.ndim == 1 else value


def _rerandomisation_covariances(fit, X: pd.DataFrame, full: PEBResult) -> dict:
    """Between-subject covariance ``Σ`` of each re-randomisation test (:mod:`ptsd_bidsapp.peb.rnd`):
    the PEB with the mean only for the covariates (unchanged by any permutation of the covariate
    rows), the full model's for the ``mean`` (sign-flip test)."""
    mean_only = fit(X[["mean"]].to_numpy(), ["mean"]).Ce
    return {"mean": full.Ce, **{column: mean_only for column in X.columns[1:]}}


def change_rerandomisation(change: SessionChangeResult, design: pd.DataFrame, *, random_effects: str = "single",
                           prior_options: Mapping | None = None, n_permutations: int = 1000,
                           seed: int = 0, family: str = "covariate") -> RerandomisationResult:
    """Re-randomisation p-values of a session-change model (:mod:`ptsd_bidsapp.peb.rnd`).

    Covariate rows are permuted jointly across subjects; the mean change is tested by swapping
    random subjects' sessions (negating their within-subject ``change`` posteriors). ``Σ``:
    the between level refitted with the mean only (covariates), the full model's (mean).
    ``family``: of the family-wise p (:func:`ptsd_bidsapp.peb.rnd.rerandomisation_test`).
    """
    between = change.between
    posteriors = [w.as_posterior() for w in change.within]
    level_names = posteriors[0]["names"]
    chosen = [k for k, level in enumerate(level_names) if level.split(":")[0] == "change"]
    options = {**dict(prior_options or {}), "hE": between.hE, "hC": between.hC}

    def refit(X, columns):
        return fit_peb([p["Ep"] for p in posteriors], [p["Cp"] for p in posteriors], [p["pE"] for p in posteriors],
                       [p["pC"] for p in posteriors], X, level_names, columns, select=chosen,
                       random_effects=random_effects, **options)

    return rerandomisation_test(
        [p["Ep"][chosen] for p in posteriors], [p["Cp"][np.ix_(chosen, chosen)] for p in posteriors],
        [p["pE"][chosen] for p in posteriors], posteriors[0]["pC"][np.ix_(chosen, chosen)], design.to_numpy(),
        between.param_names, list(design.columns), _rerandomisation_covariances(refit, design, between),
        permute=list(design.columns[1:]), sign_flip=["mean"], flip_centre=0.0, n_permutations=n_permutations,
        seed=seed, family=family, progress="DCM PEB session change: re-randomisation")


def baseline_rerandomisation(peb: PEBResult, Ep, Cp, pE, pC, param_names: Sequence[str], design: pd.DataFrame,
                             select: Sequence[int], *, random_effects: str = "single",
                             prior_options: Mapping | None = None, n_permutations: int = 1000,
                             seed: int = 0, family: str = "covariate") -> RerandomisationResult:
    """Re-randomisation p-values of a one-level PEB over sessions' DCM posteriors.

    ``Ep``/``Cp``/``pE``/``pC`` are the subjects' full first-level posteriors and priors
    (``param_names`` their vector), ``select`` the modelled parameters, as for ``fit_peb``.
    Covariates are permuted across subjects; the group mean is tested by reflecting random
    subjects' posteriors about the prior mean. ``Σ`` as :func:`change_rerandomisation`.
    """
    def refit(X, columns):
        return fit_peb(Ep, Cp, pE, pC, X, param_names, columns, select=select, random_effects=random_effects,
                       **dict(prior_options or {}))

    select = list(select)
    pE_rows = [np.asarray(m, dtype=float)[select] for m in pE] if np.ndim(pE) == 2 else np.asarray(pE)[select]
    return rerandomisation_test(
        [np.asarray(e, dtype=float)[select] for e in Ep],
        [np.asarray(c, dtype=float)[np.ix_(select, select)] for c in Cp],
        pE_rows, _as_matrix(pC)[np.ix_(select, select)], design.to_numpy(), list(peb.param_names),
        list(design.columns), _rerandomisation_covariances(refit, design, peb), permute=list(design.columns[1:]),
        sign_flip=["mean"], n_permutations=n_permutations, seed=seed, family=family,
        progress="DCM PEB baseline: re-randomisation")


_COLUMN_DESCRIPTIONS = {
    "parameter": "DCM parameter <field>[_<input>]_<from>-<to> (A: Hz; B: Hz per unit input)",
    "effect": "within-subject effect the between-subject PEB models (change = post - pre), n/a for one-level PEBs",
    "covariate": "design column the effect belongs to (mean = group mean)",
    "Ep": "posterior mean of the group effect (full PEB)",
    "Cp": "posterior variance of the group effect (full PEB)",
    "Pp_sign": "posterior probability that the effect has the sign of Ep (full PEB)",
    "Ep_bma": "Bayesian model average of the effect over reduced models (greedy BMR search)",
    "Cp_bma": "posterior variance of the Bayesian model average",
    "Pp": "posterior probability that the effect is present (BMR model families; SPM spm_dcm_peb_bmc)",
    "z": "posterior z of the effect in the full PEB, Ep / sqrt(Cp) (the re-randomisation statistic)",
    "p_rnd": "re-randomisation p of this effect (|z| against its own null distribution)",
    "p_rnd_fwe": "re-randomisation p corrected family-wise (null distribution of the minimum p; family: the "
                 "covariate's parameters, or with peb.finding_family: model every effect of the model's covariates; "
                 "the mean's parameters are their own family)",
    "rnd_method": "how the null was drawn: permutation of the covariate across subjects, or sign-flip "
                  "(session order swapped / deviation from the prior mean negated) for the mean",
    "finding": "the app calls this effect a finding: Pp > pp_threshold AND the re-randomisation p "
               "(config peb.finding_p: p_rnd or p_rnd_fwe) < finding_alpha (config peb.pp_threshold, peb.finding_alpha)",
}


def _peb_sidecar(name, description, peb, bma, design, options) -> dict:
    return {
        "Description": description,
        "Model": name,
        "Method": "Parametric Empirical Bayes (Friston et al. 2016, NeuroImage 128:413; Zeidman et al. 2019, "
                  "NeuroImage 200:12) with Bayesian model reduction and averaging; conventions of SPM12 "
                  "spm_dcm_peb / spm_dcm_peb_bmc",
        "Columns": {k: v for k, v in _COLUMN_DESCRIPTIONS.items()},
        "Subjects": list(design.index),
        "NumberOfSubjects": int(len(design)),
        "DesignColumns": list(design.columns),
        "Parameters": list(peb.param_names),
        "FreeEnergy": peb.F,
        "LogPrecisions": peb.Eh,
        "RandomEffectsSD": np.sqrt(np.diag(peb.Ce)),
        "Converged": bool(peb.converged),
        "Iterations": int(peb.n_iter),
        "BMR": None if bma is None else {
            "BestModelFreeEnergyChange": bma.best_model_F,
            "ModelsAveraged": bma.n_models_averaged,
            "SearchedEffects": [peb.effect_names[i] for i in bma.searched],
        },
        "Options": options,
        "PosteriorProbabilityThreshold": options.get("pp_threshold", PP_THRESHOLD),
        "FindingRule": (f"finding = Pp > {options.get('pp_threshold', PP_THRESHOLD)} and "
                        f"{options.get('finding_p', 'p_rnd')} < "
                        f"{options.get('finding_alpha', 0.05)} ({options.get('n_permutations')} re-randomisations, "
                        f"family-wise family: {options.get('finding_family', 'covariate')}, seed {options.get('seed')})"),
    }


def _stack(posteriors: Sequence[DCMPosterior]):
    return ([p.Ep for p in posteriors], [p.Cp for p in posteriors], [p.pE for p in posteriors],
            [p.pC for p in posteriors], [p.F for p in posteriors])


def _write_model(out_dir: Path, name: str, description: str, peb: PEBResult, bma: BMAResult | None,
                 design: pd.DataFrame, options: dict, rnd: RerandomisationResult) -> tuple[Path, pd.DataFrame]:
    table = add_rerandomisation(peb_results_table(peb, bma), rnd, options["pp_threshold"], options["finding_alpha"],
                                options["finding_p"])
    path = write_tsv(out_dir / f"model-{name}_peb.tsv", table,
                     sidecar=_peb_sidecar(name, description, peb, bma, design, options))
    write_tsv(out_dir / f"model-{name}_design.tsv", design.rename_axis("participant_id").reset_index())
    return path, table


def run_dcm_group(
    participant_dir: Path | str,
    output_dir: Path | str,
    clinical: pd.DataFrame,
    config: Mapping,
    *,
    figures: bool = True,
    seed: int = 0,
) -> dict:
    """Run the DCM group models and write their outputs.

    Parameters
    ----------
    participant_dir : path
        Root of the participant-level outputs (``sub-*/ses-*/func/*_dcm.json``).
    output_dir : path
        Output dataset root; results go to ``output_dir/group/dcm/``.
    clinical : DataFrame
        Indexed by subject label (without ``sub-``); ``improvement`` (outcome pre − post)
        and the treatment-arm column (``config['clinical']['group_column']``).
    config : mapping
        Resolved analysis config (``dcm``, ``peb``, ``sessions``, ``clinical`` sections).
    figures : bool
        Build report figures (PNG data URIs).
    seed : int
        Seed of the re-randomisation tests.

    Returns
    -------
    dict
        ``{"models": {name: {"table": DataFrame, "path": Path, "figures": {...}}},
        "loo": {name: {...}}, "excluded": {subject: reason}, "fits": DataFrame (subject, session,
        explained_variance in %, fit_ok) of every session DCM found, "figures": {"explained_variance": ...}}``.
    """
    peb_cfg = dict(config.get("peb", {}) or {})
    dcm_cfg = dict(config.get("dcm", {}) or {})
    clinical_cfg = dict(config.get("clinical", {}) or {})
    sessions = config.get("sessions", {"pre": "pre", "post": "post"})
    pre, post = sessions.get("pre", "pre"), sessions.get("post", "post")
    group_column = clinical_cfg.get("group_column", "group")
    active = clinical_cfg.get("active_group", "ketamine")
    reference = clinical_cfg.get("reference_group", "midazolam")
    covariates = list(peb_cfg.get("covariates", ["improvement", "drug", "improvement_x_drug"]))
    fields = list(peb_cfg.get("fields", ["A", "B"]))
    between_only = bool(peb_cfg.get("between_only", True))
    random_effects = peb_cfg.get("random_effects", "all")
    # Optional PEB priors (defaults of spm_dcm_peb): hE, hC of the log precisions, alpha, beta.
    prior_options = {k: float(peb_cfg[k]) for k in ("hE", "hC", "alpha", "beta") if peb_cfg.get(k) is not None}
    n_permutations = int(peb_cfg.get("n_permutations", 1000))
    pp_threshold = float(peb_cfg.get("pp_threshold", PP_THRESHOLD))
    finding_alpha = float(peb_cfg.get("finding_alpha", 0.05))
    finding_p = str(peb_cfg.get("finding_p", "p_rnd_fwe"))
    finding_family = str(peb_cfg.get("finding_family", "covariate"))
    regions = list(dcm_cfg.get("regions", []))
    out_dir = Path(output_dir) / "group" / "dcm"

    found = collect_dcm_posteriors(participant_dir, dcm_cfg.get("task", "faces"), [pre, post])
    clinical = clinical.copy()
    clinical.index = [str(s).removeprefix("sub-") for s in clinical.index]
    excluded: dict[str, str] = {}
    poor_fits = str(peb_cfg.get("poor_fits", "include"))
    flagged = {f"sub-{subject}_ses-{ses}": {"ExplainedVariance": posterior.explained_variance,
                                            "Problems": posterior.fit_problems}
               for ses in (pre, post) for subject, posterior in found[ses].items() if not posterior.fit_ok}
    # explained variance of every session DCM found (before any exclusion): the report's fit figure
    fits = pd.DataFrame([{"subject": subject, "session": ses, "explained_variance": posterior.explained_variance,
                          "fit_ok": posterior.fit_ok}
                         for ses in (pre, post) for subject, posterior in sorted(found[ses].items())],
                        columns=["subject", "session", "explained_variance", "fit_ok"])
    if poor_fits == "exclude":
        # a poorly fitting DCM leaves its session out: without a baseline the subject goes,
        # without a follow-up the subject stays in the baseline models only
        for ses in (pre, post):
            for subject in [s for s, posterior in found[ses].items() if not posterior.fit_ok]:
                del found[ses][subject]
    for subject in sorted(set(found[pre]) | set(found[post]) | set(clinical.index)):
        if subject not in clinical.index or pd.isna(clinical.loc[subject].get("improvement", np.nan)):
            excluded[subject] = "no clinical improvement score"
        elif subject not in found[pre]:
            excluded[subject] = f"no DCM for session {pre}" + (
                " (poor fit excluded: peb.poor_fits = exclude)" if f"sub-{subject}_ses-{pre}" in flagged
                else _why_no_dcm(participant_dir, subject, pre))
    results: dict = {"models": {}, "loo": {}, "excluded": excluded, "poor_fits": flagged, "poor_fit_policy": poor_fits,
                     "fits": fits, "figures": {}}
    if figures and len(fits):
        results["figures"]["explained_variance"] = dcm_figures.explained_variance_figure(
            fits, float(dcm_cfg.get("min_explained_variance", 10.0)), "DCM fit per subject and session")
    baseline_subjects = [s for s in sorted(found[pre]) if s not in excluded]
    change_subjects = [s for s in baseline_subjects if s in found[post]]
    for s in baseline_subjects:
        if s not in found[post]:
            excluded.setdefault(s, f"no DCM for session {post} (baseline models only)"
                                + _why_no_dcm(participant_dir, s, post))
    if len(baseline_subjects) < 3:
        write_json(out_dir / "dcm_group_summary.json", {"Skipped": "fewer than 3 subjects with a baseline DCM",
                                                        "Excluded": excluded, "PoorFits": flagged,
                                                        "PoorFitPolicy": poor_fits})
        return results

    first = found[pre][baseline_subjects[0]]
    names = first.param_names
    select = select_parameters(names, fields=fields, between_only=between_only, prior_variance=np.diag(first.pC))
    options = {"fields": fields, "between_only": between_only, "random_effects": random_effects, **prior_options}

    options.update({"n_permutations": n_permutations, "pp_threshold": pp_threshold, "finding_alpha": finding_alpha,
                    "finding_p": finding_p, "finding_family": finding_family,
                    "seed": int(seed)})

    def report(name, description, peb, bma, design, rnd):
        path, table = _write_model(out_dir, name, description, peb, bma, design, options, rnd)
        entry = {"table": table, "path": path, "description": description, "F": peb.F, "figures": {}}
        if figures:
            task = dcm_cfg.get("task")
            entry["figures"]["effects"] = dcm_figures.peb_effects_figure(table, f"PEB {name}", task)
            entry["figures"]["network"] = dcm_figures.network_figure(table, regions or dcm_figures.regions_from(names),
                                                                     f"PEB {name}", task)
        results["models"][name] = entry

    rnd_options = {"random_effects": random_effects, "prior_options": prior_options, "n_permutations": n_permutations,
                   "seed": seed, "family": finding_family}
    # Session change: PEB of PEBs.
    if len(change_subjects) >= 3:
        design = peb_design(clinical.loc[change_subjects], covariates, group_column=group_column,
                            active_group=active, reference_group=reference)
        Ep_pre, Cp_pre, pE_pre, pC_pre, F_pre = _stack([found[pre][s] for s in change_subjects])
        Ep_post, Cp_post, _, _, F_post = _stack([found[post][s] for s in change_subjects])
        change = fit_session_change(Ep_pre, Cp_pre, Ep_post, Cp_post, pE_pre, pC_pre, design.to_numpy(), names,
                                    list(design.columns), select=select, F_pre=F_pre, F_post=F_post,
                                    subject_names=change_subjects, random_effects=random_effects,
                                    # the between level's hE is peb.hE shifted by ln 4: see fit_session_change
                                    between_hE=prior_options.get("hE", 0.0) + float(np.log(4.0)),
                                    **{k: v for k, v in prior_options.items() if k != "hE"})
        report("change", "Session change (post - pre) of DCM parameters, PEB of PEBs: within-subject [mean, change], "
               "between-subject design on the change", change.between, bmr_search(change.between), design,
               change_rerandomisation(change, design, **rnd_options))

    # Baseline PEB.
    design = peb_design(clinical.loc[baseline_subjects], covariates, group_column=group_column, active_group=active,
                        reference_group=reference)
    Ep, Cp, pE, pC, F = _stack([found[pre][s] for s in baseline_subjects])
    baseline = fit_peb(Ep, Cp, pE, pC, design.to_numpy(), names, list(design.columns), select=select, F_list=F,
                       random_effects=random_effects, subject_names=baseline_subjects, **prior_options)
    report("baseline", f"PEB over the {pre}-session DCMs", baseline, bmr_search(baseline), design,
           baseline_rerandomisation(baseline, Ep, Cp, pE, pC, names, design, select, **rnd_options))

    # Leave-one-out prediction of improvement from baseline parameters; optionally only the
    # parameters matching config peb.loo_parameters (fnmatch patterns), as one would pass
    # the parameters of interest to spm_dcm_loo.
    loo_patterns = peb_cfg.get("loo_parameters")
    loo_select = select
    if loo_patterns:
        loo_select = select_parameters(names, fields=None, patterns=list(loo_patterns),
                                       prior_variance=np.diag(first.pC))
        loo_select = [i for i in loo_select if i in select] or select
    subsets = {"all": baseline_subjects,
               active: [s for s in baseline_subjects if clinical.loc[s].get(group_column) == active]}
    for label, subjects in subsets.items():
        if len(subjects) < 5:
            continue
        design = peb_design(clinical.loc[subjects], ["improvement"])
        Ep, Cp, pE, pC, _ = _stack([found[pre][s] for s in subjects])
        loo = loo_predict(Ep, Cp, pE, pC, design.to_numpy(), names, list(design.columns), target=1, select=loo_select,
                          subject_names=subjects, random_effects=random_effects,
                          progress=f"DCM PEB leave-one-out ({label} subjects)", **prior_options)
        name = f"loo-{label}"
        path = write_tsv(out_dir / f"model-{name}_loo.tsv", loo.table(), sidecar={
            "Description": f"Leave-one-out posterior predictive of improvement (z) from {pre}-session DCM parameters "
                           f"({label} subjects), as SPM12 spm_dcm_loo",
            "Parameters": [names[i] for i in loo_select],
            "PearsonR": loo.r,
            "PValueOneSided": loo.p,
            "DegreesOfFreedom": loo.df,
            "Columns": {"observed": "improvement, centred and scaled to unit SD within the subset",
                        "predicted": "posterior predictive mean (same units)",
                        "predicted_sd": "posterior predictive SD"},
        })
        entry = {"result": loo, "path": path, "r": loo.r, "p": loo.p, "figures": {}}
        if figures:
            entry["figures"]["loo"] = dcm_figures.loo_figure(
                loo, f"Improvement predicted from {pre}-session DCM parameters, {label} subjects")
        results["loo"][name] = entry

    write_json(out_dir / "dcm_group_summary.json", {
        "Models": {k: {"File": str(v["path"].relative_to(Path(output_dir))), "FreeEnergy": v["F"],
                       "Found": _found_effects(v["table"])} for k, v in results["models"].items()},
        "LOO": {k: {"File": str(v["path"].relative_to(Path(output_dir))), "PearsonR": v["r"], "PValueOneSided": v["p"]}
                for k, v in results["loo"].items()},
        "Excluded": excluded,
        "PoorFits": flagged,
        "PoorFitPolicy": poor_fits,
    })
    return results


def _found_effects(table: pd.DataFrame) -> list[dict]:
    rows = table[table["finding"]]
    keep = [c for c in ("effect", "parameter", "covariate", "Ep_bma", "Pp", "p_rnd", "p_rnd_fwe") if c in rows]
    return rows[keep].to_dict(orient="records")
