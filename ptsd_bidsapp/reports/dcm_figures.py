"""Figures of the DCM group models (PEB effects, network diagram, leave-one-out), as PNG data URIs.

Effects the app calls findings (:func:`ptsd_bidsapp.group.dcm_group.add_rerandomisation`) are
red; effects whose posterior probability passes the threshold without the re-randomisation's
support are orange; the rest grey.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

__all__ = ["peb_effects_figure", "network_figure", "loo_figure", "regions_from", "PP_THRESHOLD"]

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


def peb_effects_figure(table: pd.DataFrame, title: str) -> str:
    """Parameter × covariate panels: BMA estimate ± 90% CI, bars coloured by Pp (PNG data URI)."""
    from ptsd_bidsapp.reports.figures import plt, to_png_data_uri

    covariates = list(dict.fromkeys(table["covariate"]))
    fig, axes = plt.subplots(1, len(covariates), figsize=(3.0 * len(covariates) + 1, 3.2), squeeze=False)
    for ax, cov in zip(axes[0], covariates):
        rows = table[table["covariate"] == cov]
        mean = rows["Ep_bma"] if "Ep_bma" in rows else rows["Ep"]
        var = rows["Cp_bma"] if "Cp_bma" in rows else rows["Cp"]
        prob = rows["Pp"] if "Pp" in rows else rows["Pp_sign"]
        y = np.arange(len(rows))
        # findings (calibrated rule) red; Pp above threshold without the re-randomisation's support orange
        found = rows["finding"] if "finding" in rows else prob > PP_THRESHOLD
        colours = ["tab:red" if f else ("tab:orange" if p > PP_THRESHOLD else "0.6") for f, p in zip(found, prob)]
        ax.barh(y, mean, xerr=1.645 * np.sqrt(np.maximum(var, 0)), color=colours, ecolor="k", capsize=2)
        for yi, m, p in zip(y, mean, prob):
            ax.text(0.98, yi, f"Pp={p:.2f}", transform=ax.get_yaxis_transform(), ha="right", va="center", fontsize=6)
        ax.axvline(0, color="k", lw=0.6)
        ax.set_yticks(y, list(rows["parameter"]) if ax is axes[0][0] else [""] * len(rows), fontsize=7)
        ax.set_title(cov, fontsize=9)
        ax.set_xlabel("effect (Hz)", fontsize=8)
        ax.invert_yaxis()
    fig.suptitle(title + f"  (red: finding; orange: Pp > {PP_THRESHOLD} only; BMA mean ± 90% CI)", fontsize=9)
    fig.tight_layout()
    return to_png_data_uri(fig)


def network_figure(table: pd.DataFrame, regions: Sequence[str], title: str) -> str:
    """Network diagram of the regions, one panel per covariate, findings on the arrows."""
    from matplotlib.patches import FancyArrowPatch

    from ptsd_bidsapp.reports.figures import plt, to_png_data_uri

    covariates = list(dict.fromkeys(table["covariate"]))
    fig, axes = plt.subplots(1, len(covariates), figsize=(3.0 * len(covariates), 3.0), squeeze=False)
    angles = np.linspace(np.pi / 2, np.pi / 2 - 2 * np.pi, len(regions), endpoint=False)
    position = {r: np.array([np.cos(a), np.sin(a)]) for r, a in zip(regions, angles)}
    if len(regions) == 2:
        position = {regions[0]: np.array([0.0, -0.8]), regions[1]: np.array([0.0, 0.8])}
    prob_column = "Pp" if "Pp" in table else "Pp_sign"
    mean_column = "Ep_bma" if "Ep_bma" in table else "Ep"
    for ax, cov in zip(axes[0], covariates):
        rows = table[table["covariate"] == cov]
        labels: dict[tuple, list] = {}
        for _, row in rows.iterrows():
            parsed = _parse_connection(str(row["parameter"]))
            if parsed is None or parsed[2] == parsed[3]:
                continue
            field, inp, source, target = parsed
            if source not in position or target not in position:
                continue
            key = (source, target)
            labels.setdefault(key, [])
            if (bool(row["finding"]) if "finding" in row else row[prob_column] > PP_THRESHOLD):
                labels[key].append((f"{field}{'(' + inp + ')' if inp else ''} {row[mean_column]:+.2f}",
                                    row[mean_column]))
        for (source, target), found in labels.items():
            colour = "0.75"
            if found:
                colour = "tab:red" if sum(v for _, v in found) > 0 else "tab:blue"
            arrow = FancyArrowPatch(position[source], position[target], connectionstyle="arc3,rad=0.35",
                                    arrowstyle="-|>", mutation_scale=14, lw=2.2 if found else 1.0, color=colour,
                                    shrinkA=18, shrinkB=18)
            ax.add_patch(arrow)
            if found:
                mid = (position[source] + position[target]) / 2
                normal = np.array([-(position[target] - position[source])[1], (position[target] - position[source])[0]])
                normal = normal / (np.linalg.norm(normal) or 1.0)
                where = mid - 0.55 * normal
                ax.text(where[0], where[1], "\n".join(t for t, _ in found), fontsize=6.5, ha="center", va="center",
                        color=colour)
        for region, xy in position.items():
            ax.scatter(*xy, s=1500, color="white", edgecolor="k", zorder=3)
            ax.text(*xy, region, ha="center", va="center", fontsize=7, zorder=4)
        ax.set_xlim(-1.6, 1.6)
        ax.set_ylim(-1.4, 1.4)
        ax.set_aspect("equal")
        ax.axis("off")
        ax.set_title(cov, fontsize=9)
    fig.suptitle(title + f"  (coloured: Pp > {PP_THRESHOLD}; red +, blue −)", fontsize=9)
    fig.tight_layout()
    return to_png_data_uri(fig)


def loo_figure(loo, title: str) -> str:
    """Leave-one-out predicted vs observed covariate with ±1 SD bars."""
    from ptsd_bidsapp.reports.figures import plt, to_png_data_uri

    fig, ax = plt.subplots(figsize=(3.6, 3.4))
    ax.errorbar(loo.observed, loo.predicted, yerr=loo.predicted_sd, fmt="o", ms=4, color="k", ecolor="0.6", lw=0.8)
    lim = [min(loo.observed.min(), loo.predicted.min()), max(loo.observed.max(), loo.predicted.max())]
    ax.plot(lim, lim, ls="--", color="0.5", lw=0.8)
    ax.set_xlabel(f"observed {loo.covariate} (design units)")
    ax.set_ylabel("LOO predicted")
    ax.set_title(f"{title}\nr = {loo.r:.2f}, p = {loo.p:.3g} (one-sided, df {loo.df})", fontsize=8)
    fig.tight_layout()
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
