"""Report figures (matplotlib/nilearn), returned as inline PNG data URIs for HTML embedding.

Every figure goes through :func:`to_png_data_uri`, which draws the figure once and checks
that no two drawn text boxes overlap (:func:`overlapping_texts`); an overlap is reported as a
:class:`FigureTextOverlapWarning` naming both texts (the report tests turn it into an error).
Tick labels are horizontal or vertical only, so that their bounding boxes are their outlines.
"""

from __future__ import annotations

import base64
import io
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.image import imsave  # noqa: E402
from matplotlib.text import Text  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

from ptsd_bidsapp.reports.names import roi_name  # noqa: E402

#: shrink of each text box (pixels at the figure's dpi) before testing overlap: glyph boxes of
#: stacked lines touch by design (line spacing), a touch is not an overlap
OVERLAP_TOLERANCE_PX = 1.0


class FigureTextOverlapWarning(UserWarning):
    """Two texts of a report figure overlap (their drawn bounding boxes intersect)."""


def _drawn_texts(fig) -> list[Text]:
    """Texts drawn in the last draw of ``fig``: visible, non-empty, tick labels inside the view."""
    skip = set()
    for ax in fig.axes:
        for axis, lo_hi in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            lo, hi = min(lo_hi), max(lo_hi)
            hidden = not ax.axison or not axis.get_visible()  # ax.axis("off") draws no tick label
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if hidden or not lo <= tick.get_loc() <= hi or not tick.get_visible():
                    skip.update({id(tick.label1), id(tick.label2)})
    texts = []
    for text in fig.findobj(Text):
        if id(text) in skip or not text.get_visible() or not text.get_text().strip():
            continue
        if text.axes is not None and not text.axes.get_visible():
            continue
        texts.append(text)
    return texts


def _overlapping(fig, renderer) -> list[tuple[str, str]]:
    """Pairs of drawn texts of ``fig`` whose boxes overlap, as laid out by ``renderer``'s last draw."""
    texts = _drawn_texts(fig)
    boxes = [t.get_window_extent(renderer).padded(-OVERLAP_TOLERANCE_PX) for t in texts]
    pairs = []
    for i in range(len(texts)):
        for j in range(i + 1, len(texts)):
            if boxes[i].width > 0 and boxes[j].width > 0 and boxes[i].overlaps(boxes[j]):
                pairs.append((texts[i].get_text(), texts[j].get_text()))
    return pairs


def overlapping_texts(fig) -> list[tuple[str, str]]:
    """Pairs of drawn texts of ``fig`` whose bounding boxes (display pixels) overlap.

    The figure is laid out once (``Figure.draw_without_rendering``: every artist's layout at the
    figure's dpi, no pixels rasterised), then every visible text's window extent is compared
    with every other's, each shrunk by :data:`OVERLAP_TOLERANCE_PX`.

    Returns
    -------
    list of (str, str)
        The overlapping texts, empty when none overlap.
    """
    fig.draw_without_rendering()
    return _overlapping(fig, fig.canvas.get_renderer())


#: Margin (inches) added on every side of the canvas of :func:`to_png_data_uri`'s single draw, so
#: that what lies past the figure's edges (a legend beside the axes, the x label of a short figure)
#: is drawn too; 1.5 in = 165 whole pixels at 110 dpi.
DRAW_MARGIN_IN = 1.5


def to_png_data_uri(fig, dpi: int = 110) -> str:
    """Render a matplotlib figure to a ``data:image/png;base64`` URI (no timestamps) and close it.

    Warns :class:`FigureTextOverlapWarning` when texts of the figure overlap (checked at ``dpi``,
    the resolution of the PNG). The figure is laid out and drawn once, on a canvas enlarged by
    :data:`DRAW_MARGIN_IN` on every side; the overlap check and the tight bounding box
    (``Figure.get_tightbbox`` padded by ``savefig.pad_inches``, what ``bbox_inches="tight"``
    computes) are read from that draw, and the PNG is the tight box cut out of its pixels.
    Only when the tight box reaches past the enlarged canvas is the figure drawn again, by
    ``savefig`` with that box.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure; closed on return.
    dpi : int
        Resolution of the PNG (dots per inch).

    Returns
    -------
    str
        ``data:image/png;base64,...``
    """
    title = fig.get_suptitle() or next((ax.get_title() for ax in fig.axes if ax.get_title()), "")
    fig.set_dpi(dpi)
    width, height = fig.get_size_inches()
    margin = DRAW_MARGIN_IN
    seen = {}

    def read_layout(event):  # during the draw: the laid-out texts and the tight box, in canvas pixels
        seen["pairs"] = _overlapping(fig, event.renderer)
        seen["box"] = fig.get_tightbbox(event.renderer).padded(matplotlib.rcParams["savefig.pad_inches"])
        seen["size"] = (int(event.renderer.width), int(event.renderer.height))

    raw = io.BytesIO()
    cid = fig.canvas.mpl_connect("draw_event", read_layout)
    try:
        fig.savefig(raw, format="rgba", dpi=dpi,
                    bbox_inches=Bbox.from_extents(-margin, -margin, width + margin, height + margin))
    finally:
        fig.canvas.mpl_disconnect(cid)
    for a, b in seen["pairs"]:
        warnings.warn(FigureTextOverlapWarning(f"figure '{title}': text {a!r} overlaps {b!r}"), stacklevel=2)
    box, (W, H) = seen["box"], seen["size"]  # box in inches from the enlarged canvas's lower left
    x0, x1 = int(round(box.x0 * dpi)), int(round(box.x1 * dpi))
    top, bottom = H - int(round(box.y1 * dpi)), H - int(round(box.y0 * dpi))
    buffer = io.BytesIO()
    if x0 >= 0 and top >= 0 and x1 <= W and bottom <= H:
        pixels = np.frombuffer(raw.getvalue(), dtype=np.uint8).reshape(H, W, 4)
        imsave(buffer, pixels[top:bottom, x0:x1], format="png", dpi=dpi, metadata={"Software": None})
    else:  # content beyond the margin: draw again, as savefig(bbox_inches=box) in figure inches
        fig.savefig(buffer, format="png", dpi=dpi, bbox_inches=box.translated(-margin, -margin),
                    metadata={"Software": None})
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _run_lengths(runs) -> list[int]:
    lengths = []
    for run in runs:
        fd, signals = run.get("fd"), run.get("signals")
        lengths.append(len(fd) if fd is not None else len(signals) if signals is not None else
                       int(run.get("n_volumes") or 0))
    return lengths


def _joined(parts: list, lengths: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate per-run arrays (None: a run without them) on one volume axis, NaN between runs.

    Returns the x positions (volume index over the runs, one NaN-valued gap between runs so that
    a line breaks there) and the values.
    """
    xs, ys, start = [], [], 0
    for part, n in zip(parts, lengths):
        values = np.full(n, np.nan) if part is None else np.asarray(part, dtype=float)
        xs.append(np.append(np.arange(start, start + n, dtype=float), np.nan))
        ys.append(np.append(values, np.nan))
        start += n
    return np.concatenate(xs)[:-1], np.concatenate(ys)[:-1]


#: vertical distance between two ROIs' traces in :func:`session_overview` (% signal change)
ROI_TRACE_SPACING = 4.0


def session_overview(runs: list[dict], threshold: float, title: str) -> str:
    """Framewise displacement above the ROI mean signals, the session's runs side by side.

    Two panels sharing one volume axis on which the runs follow one another (dotted lines at their
    boundaries, each run named at its centre): framewise displacement (mm) with the censoring
    threshold dashed and the censored volumes shaded, then every ROI's mean signal (% signal change,
    traces :data:`ROI_TRACE_SPACING` apart, the first ROI on top, labelled by ROI name).

    Parameters
    ----------
    runs : list of dict
        The session's runs in report order, each ``{"label": str, "fd": array (mm) or None,
        "censored": bool array or None, "signals": DataFrame (volumes x ROI labels, %) or None,
        "n_volumes": int}``; a run without FD or signals leaves its stretch of the axis empty.
    threshold : float
        FD censoring threshold (mm).
    title : str
        Figure title.

    Returns
    -------
    str
        The PNG data URI (:func:`to_png_data_uri`).
    """
    lengths = _run_lengths(runs)
    rois = list(dict.fromkeys(c for run in runs if run.get("signals") is not None for c in run["signals"].columns))
    height = 0.32 * max(len(rois), 2) + 0.6
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 1.5 + height), sharex=True,
                                      gridspec_kw={"height_ratios": [1.2, height]})
    x, fd = _joined([run.get("fd") for run in runs], lengths)
    top.plot(x, fd, lw=0.8, color="k")
    top.axhline(threshold, color="tab:red", lw=0.8, ls="--")
    _, censored = _joined([None if run.get("censored") is None else np.asarray(run["censored"], dtype=float)
                           for run in runs], lengths)
    flagged = x[censored > 0]  # one collection of one-volume-wide spans, the full height of the panel
    top.broken_barh([(v - 0.5, 1.0) for v in flagged], (0, 1), transform=top.get_xaxis_transform(),
                    color="tab:red", alpha=0.25, lw=0)
    top.set_ylabel("FD (mm)", fontsize=8)
    top.tick_params(labelsize=7)
    top.set_title(f"{title}: framewise displacement (dashed: {threshold:g} mm threshold; shaded: censored volumes)",
                  fontsize=8, loc="left")
    colours = plt.get_cmap("tab10")
    for i, roi in enumerate(rois):
        parts = [None if run.get("signals") is None or roi not in run["signals"] else
                 run["signals"][roi].to_numpy(dtype=float) for run in runs]
        parts = [None if p is None or not np.isfinite(p).any() else p - np.nanmean(p) for p in parts]
        _, values = _joined(parts, lengths)
        bottom.plot(x, values + ROI_TRACE_SPACING * (len(rois) - 1 - i), lw=0.6, color=colours(i % 10))
    bottom.set_yticks([ROI_TRACE_SPACING * (len(rois) - 1 - i) for i in range(len(rois))],
                      [roi_name(r) for r in rois], fontsize=7)
    # the axis ends 1.5 spacings beyond the outer traces: a single spike (a run's first volumes) is clipped
    # there instead of squeezing every trace into a few pixels
    bottom.set_ylim(-1.5 * ROI_TRACE_SPACING, ROI_TRACE_SPACING * (len(rois) - 1 + 1.5))
    bottom.set_title(f"ROI mean signals (% signal change; traces {ROI_TRACE_SPACING:g} % apart, clipped "
                     f"{1.5 * ROI_TRACE_SPACING:g} % beyond the outer ones)", fontsize=8, loc="left")
    edges = np.cumsum([0, *lengths])
    for ax in (top, bottom):
        for edge in edges[1:-1]:
            ax.axvline(edge - 0.5, color="0.5", lw=0.6, ls=":")
    bottom.set_xlim(-0.5, max(edges[-1] - 0.5, 0.5))
    bottom.set_xticks((edges[:-1] + edges[1:] - 1) / 2, [run["label"] for run in runs], fontsize=7)
    bottom.set_xlabel("volumes of each run", fontsize=8)
    return to_png_data_uri(fig)


def design_matrix(table: pd.DataFrame, title: str) -> str:
    """nilearn's design-matrix plot, column names vertical."""
    from nilearn.plotting import plot_design_matrix

    fig, ax = plt.subplots(figsize=(max(6.0, 0.16 * table.shape[1] + 1.5), 4.2))
    plot_design_matrix(table, axes=ax)
    ax.set_xticks(range(table.shape[1]), list(table.columns), rotation=90, fontsize=6, ha="center")
    ax.set_title(title, fontsize=9)
    return to_png_data_uri(fig)


def activation_by_session(tables: dict[str, pd.DataFrame], title: str) -> str:
    """Effect size (% signal change) per ROI with ±1 standard error, one bar per session.

    Parameters
    ----------
    tables : dict
        Session label → the contrast's activation table (columns ``roi``, ``effect_size`` and
        optionally ``stderr``), in the order the bars are drawn (study order); ROIs in the order of
        the first table, named by :func:`roi_name`, top to bottom.
    title : str
        Figure title.
    """
    sessions = list(tables)
    rois = list(dict.fromkeys(r for table in tables.values() for r in table["roi"]))
    fig, ax = plt.subplots(figsize=(7, (0.16 + 0.12 * len(sessions)) * len(rois) + 1.0))
    y = np.arange(len(rois))[::-1].astype(float)
    height = 0.8 / max(len(sessions), 1)
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:purple"]
    for k, session in enumerate(sessions):
        table = tables[session].set_index("roi").reindex(rois)
        stderr = table["stderr"].to_numpy(dtype=float) if "stderr" in table else None
        ax.barh(y + 0.4 - height * (k + 0.5), table["effect_size"].to_numpy(dtype=float), height=height,
                xerr=stderr, color=colours[k % len(colours)], alpha=0.85, capsize=1.5, label=session,
                error_kw={"lw": 0.7})
    ax.axvline(0, color="k", lw=0.6)
    ax.set_yticks(y, [roi_name(r) for r in rois], fontsize=7)
    ax.set_xlabel("effect size (% signal change) ± 1 SE", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return to_png_data_uri(fig)


def connectivity_matrices(matrices: dict[str, pd.DataFrame], title: str) -> str:
    """Side-by-side ROI × ROI matrices (pre then post) on a common symmetric colour scale."""
    names = list(matrices)
    fig, axes = plt.subplots(1, len(names), figsize=(3.9 * len(names) + 0.8, 3.9), squeeze=False)
    vmax = max(float(np.nanmax(np.abs(m.to_numpy(dtype=float)))) if np.isfinite(m.to_numpy(dtype=float)).any()
               else 0.0 for m in matrices.values()) or 1.0
    for k, (ax, name) in enumerate(zip(axes[0], names)):
        mat = matrices[name]
        im = ax.imshow(mat.to_numpy(dtype=float), cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax.set_xticks(range(len(mat.columns)), [roi_name(c) for c in mat.columns], rotation=90, fontsize=7)
        ax.set_yticks(range(len(mat.index)), [roi_name(r) for r in mat.index] if k == 0 else [], fontsize=7)
        ax.set_title(name, fontsize=8)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    fig.suptitle(title, fontsize=9)
    return to_png_data_uri(fig)


def observed_vs_predicted(observed: np.ndarray, predicted: np.ndarray, regions: list[str], tr: float, title: str,
                          explained: dict | None = None) -> str:
    """DCM fit: observed and predicted BOLD of every region over time (s), in one panel.

    Each region's observed and predicted signals are centred on the observed mean and divided by
    the observed standard deviation (the regions' BOLD scales differ), then drawn 6 SD apart, the
    first region on top, labelled with its name and explained variance (%) when given.

    Parameters
    ----------
    observed, predicted : ndarray, shape (n_scans, n_regions)
        Data and DCM prediction (BOLD, scanner units).
    regions : list of str
        Region labels (Contract 1), shown by name.
    tr : float
        Repetition time (s).
    title : str
        Figure title.
    explained : dict, optional
        Region label → variance explained (%).
    """
    observed, predicted = np.asarray(observed, dtype=float), np.asarray(predicted, dtype=float)
    fig, ax = plt.subplots(figsize=(7, 0.55 * len(regions) + 1.1))
    times = np.arange(observed.shape[0]) * tr
    ticks, names = [], []
    for i, region in enumerate(regions):
        centre = np.nanmean(observed[:, i])
        scale = np.nanstd(observed[:, i])
        scale = scale if np.isfinite(scale) and scale > 0 else 1.0
        offset = 6.0 * (len(regions) - 1 - i)
        ax.plot(times, (observed[:, i] - centre) / scale + offset, lw=0.7, color="0.45",
                label="observed" if i == 0 else None)
        ax.plot(times, (predicted[:, i] - centre) / scale + offset, lw=0.9, color="tab:red",
                label="predicted" if i == 0 else None)
        value = (explained or {}).get(region)
        ticks.append(offset)
        names.append(roi_name(region) + ("" if value is None or not np.isfinite(value) else f" ({value:.0f} %)"))
    ax.set_yticks(ticks, names, fontsize=7)
    ax.set_ylabel("BOLD (SD units)", fontsize=8)
    ax.set_xlabel("time (s)", fontsize=8)
    ax.set_title(f"{title} (% of variance explained per region)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return to_png_data_uri(fig)


def roi_colours(n: int) -> list:
    """One colour per ROI index 1..n (tab10, then tab20), shared by the overlay and its legend."""
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(k % cmap.N) for k in range(n)]


def roi_overlay(dseg, labels: dict[int, str], background, title: str, background_name: str) -> str:
    """The ROI set on the subject's own image (mean BOLD or brain mask) with a named legend.

    Parameters
    ----------
    dseg : nibabel image or path
        ROI set on the BOLD grid (integer labels).
    labels : dict
        ROI index → atlas label (Contract 1), shown as ROI names in the legend.
    background : nibabel image or path
        The subject's mean BOLD (or brain mask) on the same grid.
    title, background_name : str
        Figure title; what the background is ("mean BOLD, ses-pre task-faces").
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch
    from nilearn.plotting import plot_roi

    indices = sorted(labels)
    colours = roi_colours(max(indices) if indices else 1)
    fig = plt.figure(figsize=(9.0, 2.6))
    # six axial cuts (MNI z, mm) through the circuit: amygdala/hippocampus, vmPFC, insula, rACC, dACC
    display = plot_roi(dseg, bg_img=background, figure=fig, axes=(0.0, 0.12, 1.0, 0.78), display_mode="z",
                       cut_coords=(-20, -12, -4, 6, 18, 30), draw_cross=False, cmap=ListedColormap(colours), vmin=0.5,
                       vmax=len(colours) + 0.5, colorbar=False, black_bg=False, dim=0, annotate=False)
    del display
    handles = [Patch(facecolor=colours[i - 1], edgecolor="k", label=f"{i} {roi_name(labels[i])}") for i in indices]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(f"{title} on the {background_name}", fontsize=9)
    return to_png_data_uri(fig)
