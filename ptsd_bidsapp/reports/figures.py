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


def fd_trace(fd: np.ndarray, censored: np.ndarray, threshold: float, title: str) -> str:
    """Framewise displacement (mm) per volume with censored volumes shaded."""
    fig, ax = plt.subplots(figsize=(7, 1.9))
    frames = np.arange(len(fd))
    ax.plot(frames, fd, lw=0.8, color="k")
    ax.axhline(threshold, color="tab:red", lw=0.8, ls="--", label=f"threshold {threshold} mm")
    for idx in np.flatnonzero(censored):
        ax.axvspan(idx - 0.5, idx + 0.5, color="tab:red", alpha=0.25, lw=0)
    ax.set_xlabel("volume")
    ax.set_ylabel("FD (mm)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return to_png_data_uri(fig)


def design_matrix(table: pd.DataFrame, title: str) -> str:
    """nilearn's design-matrix plot, column names vertical."""
    from nilearn.plotting import plot_design_matrix

    fig, ax = plt.subplots(figsize=(max(6.0, 0.16 * table.shape[1] + 1.5), 4.2))
    plot_design_matrix(table, axes=ax)
    ax.set_xticks(range(table.shape[1]), list(table.columns), rotation=90, fontsize=6, ha="center")
    ax.set_title(title, fontsize=9)
    return to_png_data_uri(fig)


def roi_timeseries(table: pd.DataFrame, tr: float, title: str) -> str:
    """ROI mean signals (% signal change) over time (s), offset per ROI, labelled by ROI name."""
    fig, ax = plt.subplots(figsize=(7, 0.45 * max(len(table.columns), 2) + 1))
    times = np.arange(len(table)) * tr
    for i, column in enumerate(table.columns):
        values = table[column].to_numpy(dtype=float)
        ax.plot(times, values - np.nanmean(values) + 4 * i, lw=0.7)
    ax.set_yticks([4 * i for i in range(len(table.columns))], [roi_name(c) for c in table.columns], fontsize=7)
    ax.set_xlabel("time (s)")
    ax.set_title(title, fontsize=9)
    return to_png_data_uri(fig)


def activation_bars(table: pd.DataFrame, title: str) -> str:
    """Effect size (% signal change) per ROI with ±1 standard error, ROI names horizontal."""
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(table) + 1.0))
    y = np.arange(len(table))[::-1]
    ax.barh(y, table["effect_size"], xerr=table.get("stderr"), color="tab:blue", alpha=0.8, capsize=2)
    ax.axvline(0, color="k", lw=0.6)
    ax.set_yticks(y, [roi_name(r) for r in table["roi"]], fontsize=7)
    ax.set_xlabel("effect size (% signal change) ± 1 SE")
    ax.set_title(title, fontsize=9)
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
    """DCM fit: observed and predicted BOLD per region over time (s), explained variance (%) per panel."""
    fig, axes = plt.subplots(len(regions), 1, figsize=(7, 1.7 * len(regions) + 0.4), squeeze=False, sharex=True)
    times = np.arange(observed.shape[0]) * tr
    for i, region in enumerate(regions):
        ax = axes[i, 0]
        ax.plot(times, observed[:, i], lw=0.7, color="0.4", label="observed")
        ax.plot(times, predicted[:, i], lw=1.0, color="tab:red", label="predicted")
        ax.set_ylabel("BOLD", fontsize=8)
        value = (explained or {}).get(region)
        extra = "" if value is None or not np.isfinite(value) else f": {value:.0f} % of variance explained"
        ax.set_title(f"{roi_name(region)}{extra}", fontsize=8, loc="left")
    axes[0, 0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axes[-1, 0].set_xlabel("time (s)")
    fig.suptitle(title, fontsize=9)
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
