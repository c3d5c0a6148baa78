"""Group HTML report (``<out>/group/group_report.html``): elastic-net models and DCM PEB.

Figures are matplotlib PNGs embedded as data URIs (one self-contained file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape

from ptsd_bidsapp import __version__
from ptsd_bidsapp.bids.outputs import atomic_write_text
from ptsd_bidsapp.group.changes import MISSING_DESCRIPTION
from ptsd_bidsapp.reports.figures import plt, to_png_data_uri
from ptsd_bidsapp.contracts import parse_measure_id
from ptsd_bidsapp.reports.names import covariate_name, dcm_parameter_name, feature_name, measure_name, score_name

__all__ = ["cv_curve_figure", "coefficient_path_figure", "predicted_observed_figure", "coefficient_bar_figure",
           "coefficient_plot_rows", "interaction_figure", "exclusion_table", "group_headline", "write_group_report"]

ARM_COLOURS = ["tab:red", "tab:blue", "tab:green", "tab:purple"]
#: a model "predicted improvement" in the headline when its permutation p is below this
PREDICTION_ALPHA = 0.05
#: retained measures named per model in the headline
HEADLINE_TOP = 3


def cv_curve_figure(cv, title: str) -> str:
    """Leave-one-out mean squared error ± 1 SE against log λ, λ_min and λ_1se marked."""
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    loglam = np.log(cv.lambdas_)
    ax.errorbar(loglam, cv.cvm_, yerr=cv.cvsd_, fmt="o", ms=3, color="tab:red", ecolor="0.7", elinewidth=0.8)
    ax.axvline(np.log(cv.lambda_min_), ls="--", color="k", lw=0.8, label=f"λ_min = {cv.lambda_min_:.3g}")
    ax.axvline(np.log(cv.lambda_1se_), ls=":", color="k", lw=0.8, label=f"λ_1se = {cv.lambda_1se_:.3g}")
    ax.set_xlabel("log λ")
    ax.set_ylabel("leave-one-out mean squared error")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return to_png_data_uri(fig)


def coefficient_path_figure(cv, features, title: str) -> str:
    """Coefficients per SD of the predictor along the λ path; the six largest at λ_min named."""
    fig, ax = plt.subplots(figsize=(6.0, 3.4))
    loglam = np.log(cv.lambdas_)
    path = cv.coef_per_sd_path_
    order = np.argsort(-np.abs(cv.coef_per_sd_), kind="stable")
    for rank, j in enumerate(order):
        label = feature_name(features[j]) if rank < 6 and cv.coef_per_sd_[j] != 0 else None
        ax.plot(loglam, path[:, j], lw=1.0 if label else 0.6, label=label, color=None if label else "0.6")
    ax.axvline(np.log(cv.lambda_min_), ls="--", color="k", lw=0.8)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("log λ (dashed: λ_min)")
    ax.set_ylabel("β per SD of the predictor")
    ax.set_title(title, fontsize=9)
    if any(cv.coef_per_sd_ != 0):
        ax.legend(fontsize=6.5, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return to_png_data_uri(fig)


def predicted_observed_figure(predictions, arms, metrics: Mapping, title: str, outcome: str = "improvement") -> str:
    """Out-of-sample (nested leave-one-out) predicted vs observed improvement, coloured by arm, with r."""
    fig, ax = plt.subplots(figsize=(4.4, 4.0))
    obs, pred = predictions["observed"].to_numpy(), predictions["predicted"].to_numpy()
    arm_values = [arms.get(s, "n/a") for s in predictions["subject"]]
    for k, arm in enumerate(sorted(set(map(str, arm_values)))):
        sel = np.array([str(a) == arm for a in arm_values])
        ax.scatter(obs[sel], pred[sel], s=18, color=ARM_COLOURS[k % len(ARM_COLOURS)], label=arm)
    lo, hi = float(min(obs.min(), pred.min())), float(max(obs.max(), pred.max()))
    ax.plot([lo, hi], [lo, hi], color="k", lw=0.6, ls="--", label="identity")
    ax.set_xlabel(f"observed {outcome} improvement (points)")
    ax.set_ylabel("predicted out of sample (points)")
    outer = "leave-one-out" if isinstance(metrics.get("inner_folds", "loo"), str) else \
        f"{int(np.max(metrics['outer_folds'])) + 1}-fold"
    ax.set_title(f"{title}\nnested {outer} r = {metrics['pearson_r']:.2f}, R² = {metrics['r2']:.2f}, "
                 f"MAE = {metrics['mae']:.2f}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return to_png_data_uri(fig)


#: the coefficient plot shows every retained predictor and fills up to this many with the
#: most often bootstrap-selected others (the rest are zero at λ_min and rarely selected)
COEFFICIENT_PLOT_MIN_ROWS = 8


def coefficient_plot_rows(coefficients) -> "np.ndarray":
    """Row positions of the coefficient plot: retained by |β| descending, then others by selection."""
    beta = coefficients["beta_per_sd"].to_numpy(float)
    freq = np.nan_to_num(coefficients["selection_frequency"].to_numpy(float), nan=0.0)
    retained = np.flatnonzero(beta != 0)
    retained = retained[np.argsort(-np.abs(beta[retained]), kind="stable")]
    others = np.flatnonzero(beta == 0)
    others = others[np.argsort(-freq[others], kind="stable")][: max(0, COEFFICIENT_PLOT_MIN_ROWS - len(retained))]
    return np.concatenate([retained, others]).astype(int)


def coefficient_bar_figure(coefficients, title: str) -> str:
    """β per SD at λ_min, sorted by size, with 90 % bootstrap intervals and the zero line.

    Predictors by human name, the bootstrap selection frequency in brackets.
    """
    rows = coefficient_plot_rows(coefficients)
    table = coefficients.iloc[rows]
    fig, ax = plt.subplots(figsize=(7.0, 0.3 * len(table) + 1.3))
    y = np.arange(len(table))[::-1]
    beta = table["beta_per_sd"].to_numpy(float)
    colours = ["tab:red" if b > 0 else "tab:blue" if b < 0 else "0.6" for b in beta]
    if "beta_per_sd_q05" in table:
        low, high = table["beta_per_sd_q05"].to_numpy(float), table["beta_per_sd_q95"].to_numpy(float)
        ok = np.isfinite(low) & np.isfinite(high)
        ax.hlines(y[ok], low[ok], high[ok], color="0.45", lw=1.2, label="90 % bootstrap interval")
    ax.scatter(beta, y, color=colours, s=28, zorder=3, label="β at λ_min")
    ax.set_yticks(y, [f"{feature_name(f)}  ({fr:.0%})" if np.isfinite(fr) else feature_name(f)
                      for f, fr in zip(table["feature"], table["selection_frequency"])], fontsize=7)
    ax.axvline(0, color="k", lw=0.7)
    ax.set_xlabel("β per SD of the predictor at λ_min (bracket: bootstrap selection frequency)", fontsize=8)
    n_hidden = len(coefficients) - len(table)
    ax.set_title(title + (f"\n{n_hidden} other predictor(s): zero at λ_min, less often selected" if n_hidden else ""),
                 fontsize=9)
    ax.legend(fontsize=7, loc="lower left", bbox_to_anchor=(0.0, 1.0 + 0.5 / (0.3 * len(table) + 1.3)),
              ncol=2, frameon=False)
    return to_png_data_uri(fig)


def interaction_figure(result: Mapping, group_column: str, active: str, title: str, arms: Mapping | None = None):
    """Improvement against the measure with the largest interaction, by arm, with the model's lines."""
    coefficients = result["coefficients"]
    inter = coefficients[coefficients["feature"].str.contains(f"_x_drug_{active}", regex=False)]
    if inter.empty:
        return None
    top = inter.iloc[int(np.argmax(np.abs(inter["beta_raw"].to_numpy())))]
    measure = top["feature"].split("_x_drug_")[0]
    X, y = result["design"]["X"], result["design"]["y"]
    drug = X[f"drug_{active}"].to_numpy()
    beta = dict(zip(coefficients["feature"], coefficients["beta_raw"]))
    cv = result["cv"]
    others = cv.intercept_ + sum(beta[f] * X[f].mean() for f in X.columns
                                 if f not in (measure, top["feature"], f"drug_{active}"))
    reference = sorted({str(arms[s]) for s in X.index if s in (arms or {}) and str(arms[s]) != active})
    fig, ax = plt.subplots(figsize=(4.8, 3.8))
    x = X[measure].to_numpy()
    grid = np.linspace(x.min(), x.max(), 20)
    for k, (label, d) in enumerate(((active, 1.0), (" and ".join(reference) or f"not {active}", 0.0))):
        sel = drug == d
        colour = ARM_COLOURS[k]
        ax.scatter(x[sel], y.to_numpy()[sel], s=18, color=colour, label=label)
        line = others + beta[f"drug_{active}"] * d + (beta[measure] + beta[top["feature"]] * d) * grid
        ax.plot(grid, line, color=colour, lw=1.2)
    ax.set_xlabel(feature_name(measure), fontsize=8)
    ax.set_ylabel("improvement (points)")
    ax.set_title(f"{title}\ninteraction β = {top['beta_raw']:.3g} per unit of the measure", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return to_png_data_uri(fig)


def exclusion_table(exclusions, sessions: Mapping | None = None) -> list[dict]:
    """Compact exclusion rows (subject, session, reason) from :func:`build_change_table`'s records.

    Per subject, session and reason one row; measures are counted by task and listed by
    name (the ids kept for tooltips). Sessions in study order (pre, post, subject-level).
    """
    order = [v for v in (sessions or {}).values()]
    grouped: dict[tuple, list] = {}
    for rec in exclusions:
        grouped.setdefault((rec["subject"], rec.get("session"), rec["reason"]), []).append(rec.get("measure"))

    def key(item):
        (subject, session, _), _ = item
        return (subject, order.index(session) if session in order else len(order), str(session))

    rows = []
    for (subject, session, reason), measures in sorted(grouped.items(), key=key):
        ids = [m for m in measures if m]
        text = reason
        if ids:
            tasks = sorted({parse_measure_id(m).task for m in ids})
            text = f"{reason}: {len(ids)} measure(s) of the {', '.join(tasks)} task(s)"
        rows.append({"subject": subject, "session": session or "all", "reason": text,
                     "names": "; ".join(measure_name(m) for m in ids),
                     "ids": " ".join(ids)})
    return rows


def _finding_rule(config: Mapping) -> str:
    peb = config.get("peb", {}) or {}
    which = "family-wise over the covariate parameters" if peb.get("finding_p", "p_rnd_fwe") == "p_rnd_fwe" \
        else "per effect"
    return (f"an effect is a finding when its posterior probability Pp exceeds {peb.get('pp_threshold', 0.95)} "
            f"and its re-randomisation p ({which}) is below {peb.get('finding_alpha', 0.05)}")


def _dcm_effect(row: Mapping, model: str, task: str | None) -> dict:
    """Human name and id of one PEB effect (a row of ``dcm_group.peb_results_table``)."""
    effect = row.get("effect") if isinstance(row.get("effect"), str) else None
    parameter = dcm_parameter_name(row["parameter"], task)
    if effect == "change":
        parameter = f"session change (post \u2212 pre) in {parameter}"
    elif effect:
        parameter = f"{effect} of {parameter}"
    elif model == "baseline":
        parameter = f"baseline {parameter}"
    return {"name": f"{covariate_name(row['covariate'])} on {parameter}",
            "id": f"{row['covariate']} on {effect + ':' if effect else ''}{row['parameter']}"}


def _named(table, model: str, config: Mapping):
    """The PEB table with a first column naming each effect in words (the id columns stay)."""
    task = (config.get("dcm", {}) or {}).get("task")
    named = table.copy()
    named.insert(0, "effect in words", [_dcm_effect(r, model, task)["name"] for _, r in table.iterrows()])
    return named


def group_headline(change: Mapping, models: Mapping, failed: Mapping, dcm: Mapping | None,
                   config: Mapping) -> dict:
    """The report's opening summary, built from the results (rendered by ``group.html``).

    Returns
    -------
    dict
        ``models``: per elastic-net model (config order) its verdict (predicted the outcome's
        improvement when the permutation p < :data:`PREDICTION_ALPHA`), nested-CV r and R²,
        permutation p and the top retained measures (human name, id, β per SD, bootstrap
        selection frequency), or why it failed; ``dcm``: per PEB model its findings (human
        name, id, Ep, Pp, re-randomisation p), ``dcm_none`` when no effect met the rule,
        ``dcm_note`` when the DCM did not run; ``sample``: n per arm and exclusion counts.
    """
    clinical = config.get("clinical", {}) or {}
    outcome = score_name(clinical.get("outcome") or str(change.get("outcome", "")).removeprefix("improvement_"))
    order = list((config.get("elastic_net", {}) or {}).get("models") or {}) + [n for n in list(models) + list(failed)]
    out_models = []
    for name in dict.fromkeys(order):
        if name in failed:
            out_models.append({"name": name, "failed": failed[name]})
            continue
        if name not in models:
            continue
        result = models[name]
        p = result["permutation"]["p_value"]
        coef = result["coefficients"]
        retained = coef[coef["selected"] & (coef["penalty_factor"] > 0)]
        retained = retained.iloc[np.argsort(-np.abs(retained["beta_per_sd"].to_numpy()), kind="stable")]
        top = [{"name": feature_name(r.feature), "id": r.feature, "beta": f"{r.beta_per_sd:.2g}",
                "frequency": None if not np.isfinite(r.selection_frequency) else f"{r.selection_frequency:.0%}"}
               for r in retained.head(HEADLINE_TOP).itertuples()]
        predicted = p is not None and p < PREDICTION_ALPHA
        out_models.append({
            "name": name, "predicted": predicted, "tested": p is not None,
            "verdict": (f"predicted {outcome} improvement" if predicted
                        else f"did not predict {outcome} improvement better than chance"),
            "r": f"{result['nested']['pearson_r']:.2f}", "r2": f"{result['nested']['r2']:.2f}",
            "p": "not tested" if p is None else f"{p:.2g}", "alpha": PREDICTION_ALPHA,
            "top": top, "n_retained": len(retained), "n": len(result["design"]["y"])})
    peb = config.get("peb", {}) or {}
    finding_p = peb.get("finding_p", "p_rnd_fwe")
    task = (config.get("dcm", {}) or {}).get("task")
    dcm_models, n_effects = [], 0
    for name, entry in ((dcm or {}).get("models") or {}).items():
        table = entry["table"]
        n_effects += int((table["covariate"] != "mean").sum())
        rows = table[table["finding"].astype(bool)] if "finding" in table else table.iloc[0:0]
        dcm_models.append({"name": name, "findings": [
            {**_dcm_effect(r, name, task), "Ep": f"{r.get('Ep_bma', r['Ep']):.2g}", "Pp": f"{r['Pp']:.3f}",
             "p": f"{r[finding_p]:.2g}", "p_kind": "family-wise" if finding_p == "p_rnd_fwe" else "per effect"}
            for _, r in rows.iterrows()]})
    any_finding = any(m["findings"] for m in dcm_models)
    group_column = change["group_column"]
    arms = change["table"][group_column].astype(str).value_counts().sort_index() \
        if group_column in change["table"] else {}
    return {
        "outcome": outcome,
        "models": out_models,
        "dcm": [m for m in dcm_models if m["findings"]],
        "dcm_none": (f"no DCM effect met the finding rule among {n_effects} between-subject effects "
                     f"(rule: {_finding_rule(config)})") if dcm_models and not any_finding else None,
        "dcm_note": (dcm or {}).get("note") or (None if dcm_models else "no DCM group model was fitted"),
        "sample": {"n": len(change["table"]), "arms": [{"arm": a, "n": int(k)} for a, k in dict(arms).items()],
                   "excluded": len(change["excluded"]), "dcm_excluded": len((dcm or {}).get("excluded") or {}),
                   "per_model": change.get("missing") == "per_model",
                   "incomplete": len(change.get("incomplete") or {})},
    }


def write_group_report(path: Path, change: Mapping, models: Mapping, failed: Mapping, dcm: Mapping | None,
                       config: Mapping, seed: int, figures: bool = True) -> Path:
    """Render the group report; ``models`` maps name → fit result (see models.fit_model)."""
    group_column = change["group_column"]
    active = config["clinical"].get("active_group", "ketamine")
    arms = change["table"].set_index("subject")[group_column].to_dict()
    sections = []
    for name, result in models.items():
        cv = result["cv"]
        coef = result["coefficients"]
        selected = coef[coef["selected"]].sort_values("beta_per_sd", key=np.abs, ascending=False)
        entry = {
            "name": name,
            "spec": result["spec"],
            "n": len(result["design"]["y"]),
            "lambda_min": f"{cv.lambda_min_:.4g}",
            "lambda_1se": f"{cv.lambda_1se_:.4g}",
            "nested": {k: f"{result['nested'][k]:.3f}" for k in ("r2", "pearson_r", "mae")},
            "p_value": "n/a" if result["permutation"]["p_value"] is None else f"{result['permutation']['p_value']:.3g}",
            "n_permutations": result["permutation"]["n_permutations"],
            "selected": [{"feature": feature_name(r.feature), "id": r.feature, "beta_per_sd": f"{r.beta_per_sd:.3g}",
                          "beta_raw": f"{r.beta_raw:.3g}", "frequency": "n/a" if not np.isfinite(r.selection_frequency)
                          else f"{r.selection_frequency:.0%}"} for r in selected.itertuples()],
            "excluded": sorted(result["design"]["excluded"].items()),
            "figures": [],
        }
        if figures:
            entry["figures"] = [
                cv_curve_figure(cv, f"{name}: leave-one-out CV curve"),
                coefficient_path_figure(cv, list(coef["feature"]), f"{name}: coefficient paths"),
                predicted_observed_figure(result["predictions"], arms, result["nested"], f"{name}: out-of-sample",
                                          score_name(config["clinical"].get("outcome", ""))),
                coefficient_bar_figure(coef, f"{name}: coefficients at λ_min"),
            ]
            if result["spec"].get("interactions"):
                fig = interaction_figure(result, group_column, active, f"{name}: measure × drug", arms)
                if fig:
                    entry["figures"].append(fig)
        sections.append(entry)
    dcm_sections = []
    if dcm:
        for name, entry in (dcm.get("models") or {}).items():
            table = entry["table"]
            findings = table[table["finding"]] if "finding" in table else table.iloc[0:0]
            dcm_sections.append({"name": name, "description": entry.get("description", ""),
                                 "findings": [{"effect": _dcm_effect(r, name, config.get("dcm", {}).get("task")),
                                               "Ep": f"{r.get('Ep_bma', r['Ep']):.3g}", "Pp": f"{r['Pp']:.3f}",
                                               "p": f"{r['p_rnd']:.3g}", "p_fwe": f"{r['p_rnd_fwe']:.3g}"}
                                              for _, r in findings.iterrows()],
                                 "n_effects": int((table["covariate"] != "mean").sum()),
                                 "figures": list((entry.get("figures") or {}).values()),
                                 "table": _named(table, name, config).to_html(
                                     index=False, float_format=lambda v: f"{v:.3g}", classes="dcm", border=0)})
        for name, entry in (dcm.get("loo") or {}).items():
            dcm_sections.append({"name": name, "description": f"leave-one-out: r = {entry['r']:.3g}, "
                                                              f"p = {entry['p']:.3g}",
                                 "figures": list((entry.get("figures") or {}).values()), "table": ""})
    env = Environment(loader=PackageLoader("ptsd_bidsapp.reports", "templates"), autoescape=select_autoescape())
    html = env.get_template("group.html").render(
        version=__version__, seed=seed, n_included=len(change["table"]), measures=change["measures"],
        excluded=sorted(change["excluded"].items()), sections=sections, failed=sorted(failed.items()),
        exclusions=exclusion_table(change.get("exclusions") or [], config.get("sessions")),
        dcm_fit_figure=((dcm or {}).get("figures") or {}).get("explained_variance"),
        missing=MISSING_DESCRIPTION[change.get("missing", "listwise")],
        incomplete=None if change.get("missing") != "per_model" else
        [(s, sorted(m.items())) for s, m in sorted((change.get("incomplete") or {}).items())],
        dcm=dcm_sections, dcm_excluded=sorted((dcm or {}).get("excluded", {}).items()),
        dcm_note=(dcm or {}).get("note"), alpha=config["elastic_net"].get("alpha"),
        dcm_poor_fits=sorted((dcm or {}).get("poor_fits", {}).items()),
        dcm_poor_fit_policy=(dcm or {}).get("poor_fit_policy"),
        finding_rule=_finding_rule(config), headline=group_headline(change, models, failed, dcm, config),
    )
    return atomic_write_text(path, html)
