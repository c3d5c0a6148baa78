"""Figures of the DCM group models (PEB effects, network diagram, leave-one-out), as PNG data URIs.

Effects the app calls findings (:func:`ptsd_bidsapp.group.dcm_group.add_rerandomisation`) are
red; effects whose posterior probability passes the threshold without the re-randomisation's
support are orange; the rest grey.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

__all__ = ["peb_effects_figure", "network_figure", "loo_figure", "explained_variance_figure", "regions_from",
           "PP_THRESHOLD"]

#: posterior probability threshold of SPM's convention
PP_THRESHOLD = 0.95


def _parse_connection(name: str):
    """``'change:B_fearful_amygdala-vmpfc'`` → ``('B', 'fearful', 'amygdala', 'vmpfc')``."""
    base = name.split(":")[-1]
    parts = base.split("_")
    field = parts[0]
    if field not in ("A", "B") or "-" not in parts[-1]:
        return None
    source, target = parts[-1].split("-", 1)
    inp = "_".join(parts[1:-1]) or None
    return field, inp, source, target


def _columns(table: pd.DataFrame) -> tuple[str, str, str]:
    """(mean, variance, probability) columns: the BMA's when present, else the full PEB's."""
    return ("Ep_bma" if "Ep_bma" in table else "Ep", "Cp_bma" if "Cp_bma" in table else "Cp",
            "Pp" if "Pp" in table else "Pp_sign")


def _is_finding(row) -> bool:
    return bool(row["finding"]) if "finding" in row and row["finding"] == row["finding"] else False


def _effect_words(row, task: str | None) -> str:
    """A PEB row's parameter in words, with its within-subject effect (session change or mean)."""
    from ptsd_bidsapp.reports.names import dcm_parameter_name

    base = dcm_parameter_name(str(row["parameter"]).split(":")[-1], task)
    effect = row.get("effect") if isinstance(row.get("effect"), str) else None
    if effect == "change":
        return f"change in {base}"
    if effect == "mean":
        return f"mean over sessions of {base}"
    return base


def peb_effects_figure(table: pd.DataFrame, title: str, task: str | None = None) -> str:
    """Parameter × covariate panels: BMA estimate ± 90% CI; findings red, Pp > threshold only orange.

    Each bar carries its posterior probability at the panel's right edge ("finding" added when
    the effect is one); rows are spaced so that the labels never overlap.
    """
    from ptsd_bidsapp.reports.figures import plt, to_png_data_uri
    from ptsd_bidsapp.reports.names import covariate_name

    mean_col, var_col, prob_col = _columns(table)
    covariates = list(dict.fromkeys(table["covariate"]))
    n_rows = max(int((table["covariate"] == c).sum()) for c in covariates)
    n_cols = min(2, len(covariates))
    n_grid = -(-len(covariates) // n_cols)
    fig, axes = plt.subplots(n_grid, n_cols, figsize=(3.3 * n_cols + 3.0, n_grid * (0.34 * n_rows + 1.1) + 0.4),
                             squeeze=False, sharey=True)
    for ax in axes.ravel()[len(covariates):]:
        ax.set_visible(False)
    for ax, cov in zip(axes.ravel(), covariates):
        rows = table[table["covariate"] == cov]
        mean, var, prob = rows[mean_col].to_numpy(float), rows[var_col].to_numpy(float), rows[prob_col].to_numpy(float)
        found = [_is_finding(r) for _, r in rows.iterrows()]
        y = np.arange(len(rows))
        colours = ["tab:red" if f else ("tab:orange" if p > PP_THRESHOLD else "0.6") for f, p in zip(found, prob)]
        half = 1.645 * np.sqrt(np.maximum(var, 0))
        ax.barh(y, mean, xerr=half, color=colours, ecolor="k", capsize=2, height=0.6)
        # at least ±0.05 Hz: effects pruned to zero by model reduction must not get a 1e-9 Hz axis
        reach = max(float(np.nanmax(np.abs(np.concatenate([mean + half, mean - half])))) if len(rows) else 0.0, 0.05)
        ax.set_xlim(-1.25 * reach, 2.1 * reach)
        for yi, p, f in zip(y, prob, found):
            ax.text(0.99, yi, f"Pp {p:.2f}" + (" finding" if f else ""), transform=ax.get_yaxis_transform(),
                    ha="right", va="center", fontsize=7, fontweight="bold" if f else "normal")
        ax.axvline(0, color="k", lw=0.6)
        ax.set_yticks(y, [_effect_words(r, task) for _, r in rows.iterrows()], fontsize=7)
        ax.set_title(covariate_name(cov), fontsize=8)
        ax.set_xlabel("effect (Hz)", fontsize=7)
        ax.tick_params(axis="x", labelsize=6)
    axes[0][0].invert_yaxis()
    fig.suptitle(f"{title}: BMA mean ± 90% CI (red: finding; orange: Pp > {PP_THRESHOLD} only)", fontsize=9)
    fig.tight_layout()
    return to_png_data_uri(fig)


def _arc_label_point(start, end, rad: float, offset: float):
    """Point beside the middle of an ``arc3`` arrow (matplotlib: control point at mid + rad·R(end − start))."""
    d = end - start
    normal = np.array([d[1], -d[0]])
    return (start + end) / 2 + (rad / 2) * normal + offset * normal / (np.linalg.norm(normal) or 1.0)


def network_figure(table: pd.DataFrame, regions: Sequence[str], title: str, task: str | None = None) -> str:
    """Connectivity diagram per covariate: one arrow per between-region parameter.

    Arrow width grows with |Ep| (BMA, Hz); red for positive and blue for negative effects when
    the effect is a finding (solid, labelled "finding"), orange dashed when only Pp > threshold,
    thin grey otherwise. Each arrow is labelled with its parameter, Ep and Pp.
    """
    from matplotlib.patches import FancyArrowPatch

    from ptsd_bidsapp.reports.figures import plt, to_png_data_uri
    from ptsd_bidsapp.reports.names import covariate_name, roi_name

    mean_col, _, prob_col = _columns(table)
    covariates = [c for c in dict.fromkeys(table["covariate"])]
    n_cols = min(2, len(covariates))
    n_grid = -(-len(covariates) // n_cols)
    fig, axes = plt.subplots(n_grid, n_cols, figsize=(4.4 * n_cols, 3.6 * n_grid + 0.3), squeeze=False)
    for ax in axes.ravel()[len(covariates):]:
        ax.set_visible(False)
    angles = np.linspace(np.pi / 2, np.pi / 2 - 2 * np.pi, len(regions), endpoint=False)
    position = {r: np.array([np.cos(a), np.sin(a)]) for r, a in zip(regions, angles)}
    if len(regions) == 2:
        position = {regions[0]: np.array([0.0, -0.9]), regions[1]: np.array([0.0, 0.9])}
    biggest = float(np.nanmax(np.abs(table[mean_col].to_numpy(float)))) if len(table) else 1.0
    for ax, cov in zip(axes.ravel(), covariates):
        rows = table[table["covariate"] == cov]
        links: dict[tuple, list] = {}
        for _, row in rows.iterrows():
            parsed = _parse_connection(str(row["parameter"]))
            if parsed is None or parsed[2] == parsed[3]:
                continue
            field, inp, source, target = parsed
            effect = row.get("effect") if isinstance(row.get("effect"), str) else None
            if source in position and target in position and effect != "mean":
                # the change model's session mean is not a between-subject effect of interest here
                links.setdefault((source, target), []).append((field, inp, row))
        reach = 1.2
        for (source, target), params in links.items():
            start, end = position[source], position[target]
            labels = []
            for k, (field, inp, row) in enumerate(params):
                ep, pp, found = float(row[mean_col]), float(row[prob_col]), _is_finding(row)
                width = 0.8 + 4.0 * abs(ep) / (biggest or 1.0)
                if found:
                    colour, style = ("tab:red" if ep > 0 else "tab:blue"), "solid"
                elif pp > PP_THRESHOLD:
                    colour, style = "tab:orange", "dashed"
                else:
                    colour, style, width = "0.7", "solid", 0.8
                rad = 0.3 + 0.4 * k
                ax.add_patch(FancyArrowPatch(start, end, connectionstyle=f"arc3,rad={rad}", arrowstyle="-|>",
                                             mutation_scale=12 + 2 * width, lw=width, color=colour, linestyle=style,
                                             shrinkA=22, shrinkB=22))
                what = "connection" if field == "A" else f"modulation by {inp}"
                labels.append((f"{what}\nEp {ep:+.2f} Hz, Pp {pp:.2f}" + ("\nfinding" if found else ""),
                               colour if colour != "0.7" else "0.35", found))
            # labels in one column beside the outermost arc, stacked in points (not data units) so that
            # they cannot overlap whatever the panel's scale: line height 1.3 x font size, 4 pt apart
            outer = _arc_label_point(start, end, 0.3 + 0.4 * (len(params) - 1), 0.12)
            left = outer[0] < (start + end)[0] / 2 - 1e-9
            heights = [1.3 * 7 * (text.count("\n") + 1) + 4.0 for text, _, _ in labels]
            top = sum(heights) / 2
            for (text, colour, found), height in zip(labels, heights):
                ax.annotate(text, xy=outer, xytext=(0.0, top - height / 2), textcoords="offset points",
                            fontsize=7, ha="right" if left else "left", va="center", color=colour,
                            fontweight="bold" if found else "normal")
                top -= height
            reach = max(reach, abs(outer[0]) + 1.5, abs(outer[1]) + 0.5)
        for region, xy in position.items():
            ax.scatter(*xy, s=1700, color="white", edgecolor="k", zorder=3)
            ax.text(*xy, roi_name(region), ha="center", va="center", fontsize=7, zorder=4)
        ax.set_xlim(-reach, reach)
        ax.set_ylim(-1.5, 1.5)
        ax.set_aspect("equal")
        ax.axis("off")
        ax.set_title(covariate_name(cov), fontsize=8)
    fig.suptitle(f"{title}: arrow width ∝ |Ep|; red +, blue − when a finding; orange dashed: Pp > {PP_THRESHOLD} "
                 "only", fontsize=9)
    fig.tight_layout()
    return to_png_data_uri(fig)


def loo_figure(loo, title: str, outcome: str = "improvement") -> str:
    """Leave-one-out predicted vs observed outcome (z-scores within the subset) with ±1 SD bars."""
    from ptsd_bidsapp.reports.figures import plt, to_png_data_uri

    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.errorbar(loo.observed, loo.predicted, yerr=loo.predicted_sd, fmt="o", ms=4, color="k", ecolor="0.6", lw=0.8)
    lim = [min(loo.observed.min(), loo.predicted.min()), max(loo.observed.max(), loo.predicted.max())]
    ax.plot(lim, lim, ls="--", color="0.5", lw=0.8)
    ax.set_xlabel(f"observed {outcome} (z-score)")
    ax.set_ylabel(f"predicted {outcome} (z-score)")
    ax.set_title(f"{title}\nleave-one-out r = {loo.r:.2f}, one-sided p = {loo.p:.3g}", fontsize=8)
    fig.tight_layout()
    return to_png_data_uri(fig)


def explained_variance_figure(table: pd.DataFrame, threshold: float, title: str) -> str:
    """Explained variance (%) of every subject's DCM per session, the poor-fit threshold marked.

    Parameters
    ----------
    table : DataFrame
        ``subject``, ``session``, ``explained_variance`` (%), ``fit_ok`` (bool).
    threshold : float
        ``dcm.min_explained_variance`` (%).
    """
    from ptsd_bidsapp.reports.figures import plt, to_png_data_uri

    subjects = sorted(set(table["subject"]))
    sessions = list(dict.fromkeys(table["session"]))
    fig, ax = plt.subplots(figsize=(min(max(4.5, 0.3 * len(subjects) + 2.0), 11.0), 3.0))
    x = {s: i for i, s in enumerate(subjects)}
    for k, (ses, marker) in enumerate(zip(sessions, "os^D")):
        rows = table[table["session"] == ses]
        colours = ["0.2" if ok else "tab:red" for ok in rows["fit_ok"]]
        ax.scatter([x[s] + (k - (len(sessions) - 1) / 2) * 0.2 for s in rows["subject"]],
                   rows["explained_variance"].to_numpy(float), c=colours, marker=marker, s=22,
                   label=f"session {ses}")
    ax.axhline(threshold, color="tab:red", ls="--", lw=0.8, label=f"poor-fit threshold {threshold:g} %")
    ax.set_xticks(range(len(subjects)), subjects, rotation=90, fontsize=7)
    ax.set_xlabel("subject (red markers: poor fit, flagged)")
    ax.set_ylabel("variance explained (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return to_png_data_uri(fig)


# ---------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------


def regions_from(names: Sequence[str]) -> list[str]:
    regions: list[str] = []
    for name in names:
        parsed = _parse_connection(name)
        if parsed:
            for region in parsed[2:]:
                if region not in regions:
                    regions.append(region)
    return regions
