"""Report figures (matplotlib/nilearn), returned as inline SVG/PNG strings for HTML embedding."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def to_png_data_uri(fig, dpi: int = 90) -> str:
    """Render a matplotlib figure to a ``data:image/png;base64`` URI (no timestamps) and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def fd_trace(fd: np.ndarray, censored: np.ndarray, threshold: float, title: str) -> str:
    """Framewise displacement (mm) per volume with censored volumes shaded."""
    fig, ax = plt.subplots(figsize=(7, 1.8))
    frames = np.arange(len(fd))
    ax.plot(frames, fd, lw=0.8, color="k")
    ax.axhline(threshold, color="tab:red", lw=0.8, ls="--", label=f"threshold {threshold} mm")
    for idx in np.flatnonzero(censored):
        ax.axvspan(idx - 0.5, idx + 0.5, color="tab:red", alpha=0.25, lw=0)
    ax.set_xlabel("volume")
    ax.set_ylabel("FD (mm)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    return to_png_data_uri(fig)


def design_matrix(table: pd.DataFrame, title: str) -> str:
    """nilearn's design-matrix plot."""
    from nilearn.plotting import plot_design_matrix

    fig, ax = plt.subplots(figsize=(6, 4))
    plot_design_matrix(table, axes=ax)
    ax.set_title(title, fontsize=9)
    return to_png_data_uri(fig)


def roi_timeseries(table: pd.DataFrame, tr: float, title: str) -> str:
    """ROI mean signals (% signal change) over time (s), offset per ROI."""
    fig, ax = plt.subplots(figsize=(7, 0.45 * max(len(table.columns), 2) + 1))
    times = np.arange(len(table)) * tr
    for i, column in enumerate(table.columns):
        values = table[column].to_numpy(dtype=float)
        ax.plot(times, values - np.nanmean(values) + 4 * i, lw=0.7)
    ax.set_yticks([4 * i for i in range(len(table.columns))], list(table.columns), fontsize=7)
    ax.set_xlabel("time (s)")
    ax.set_title(title, fontsize=9)
    return to_png_data_uri(fig)


def activation_bars(table: pd.DataFrame, title: str) -> str:
    """Effect size (% signal change) per ROI with ±1 standard error."""
    fig, ax = plt.subplots(figsize=(5, 2.4))
    x = np.arange(len(table))
    ax.bar(x, table["effect_size"], yerr=table.get("stderr"), color="tab:blue", alpha=0.8, capsize=2)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(x, table["roi"], rotation=30, fontsize=7)
    ax.set_ylabel("% signal change")
    ax.set_title(title, fontsize=9)
    return to_png_data_uri(fig)


def connectivity_matrices(matrices: dict[str, pd.DataFrame], title: str) -> str:
    """Side-by-side ROI x ROI matrices (e.g. pre and post) on a common symmetric colour scale."""
    names = list(matrices)
    fig, axes = plt.subplots(1, len(names), figsize=(3.4 * len(names), 3.2), squeeze=False)
    vmax = max(float(np.nanmax(np.abs(m.to_numpy(dtype=float)))) for m in matrices.values()) or 1.0
    for ax, name in zip(axes[0], names):
        mat = matrices[name]
        im = ax.imshow(mat.to_numpy(dtype=float), cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax.set_xticks(range(len(mat.columns)), mat.columns, rotation=60, fontsize=6)
        ax.set_yticks(range(len(mat.index)), mat.index, fontsize=6)
        ax.set_title(name, fontsize=8)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    fig.suptitle(title, fontsize=9)
    return to_png_data_uri(fig)


def observed_vs_predicted(observed: np.ndarray, predicted: np.ndarray, regions: list[str], tr: float, title: str) -> str:
    """DCM fit: observed and predicted BOLD per region over time (s)."""
    fig, axes = plt.subplots(len(regions), 1, figsize=(7, 1.6 * len(regions)), squeeze=False, sharex=True)
    times = np.arange(observed.shape[0]) * tr
    for i, region in enumerate(regions):
        ax = axes[i, 0]
        ax.plot(times, observed[:, i], lw=0.7, color="0.4", label="observed")
        ax.plot(times, predicted[:, i], lw=1.0, color="tab:red", label="predicted")
        ax.set_ylabel(region, fontsize=8)
    axes[0, 0].legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("time (s)")
    fig.suptitle(title, fontsize=9)
    return to_png_data_uri(fig)


def roi_overlay(dseg, title: str) -> str:
    """ROI set (a dseg image or its path) over the MNI template (nilearn ``plot_roi``)."""
    from nilearn.plotting import plot_roi

    fig = plt.figure(figsize=(7, 2.4))
    bg = None
    try:
        from ptsd_bidsapp.templates import template_image

        bg = template_image()
    except Exception:  # no packaged template: plot on a blank background
        bg = None
    kwargs = {"bg_img": bg} if bg is not None else {"bg_img": False}
    plot_roi(dseg, figure=fig, display_mode="ortho", cut_coords=(2, 20, -10), title=title, draw_cross=False,
             cmap="tab10", **kwargs)
    return to_png_data_uri(fig)
