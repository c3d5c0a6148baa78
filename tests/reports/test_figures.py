"""Report figure helpers: the text-overlap check, the coefficient plot's rows, the exclusions table,
the subject report's session order and its n/a cells."""

import warnings

import numpy as np
import pandas as pd
import pytest

from ptsd_bidsapp.group.report import coefficient_bar_figure, coefficient_plot_rows, exclusion_table
from ptsd_bidsapp.reports import dcm_figures
from ptsd_bidsapp.reports.figures import FigureTextOverlapWarning, overlapping_texts, plt, to_png_data_uri
from ptsd_bidsapp.reports.participant import _fmt, session_order


def test_overlap_check_finds_two_texts_on_top_of_each_other():
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.text(0.5, 0.5, "vmPFC–amygdala", transform=ax.transAxes)
    ax.text(0.52, 0.51, "Pp 0.99", transform=ax.transAxes)
    assert overlapping_texts(fig) == [("vmPFC–amygdala", "Pp 0.99")]
    with pytest.warns(FigureTextOverlapWarning, match="Pp 0.99"):
        to_png_data_uri(fig)


def test_overlap_check_passes_texts_apart_and_ignores_ticks_outside_the_view():
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.text(0.1, 0.1, "left", transform=ax.transAxes)
    ax.text(0.7, 0.8, "right", transform=ax.transAxes)
    ax.set_xticks([0, 5, 10], ["a", "b", "c"])
    ax.set_xlim(0, 1)  # ticks 5 and 10 are not drawn
    assert overlapping_texts(fig) == []
    plt.close(fig)


def test_overlap_check_sees_crowded_tick_labels():
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.set_xticks(range(12), [f"anterior hippocampus {k}" for k in range(12)])
    assert len(overlapping_texts(fig)) > 0
    plt.close(fig)


def _peb_table(n_parameters):
    names = ["A_amygdala-vmpfc", "A_vmpfc-amygdala", "B_fearful_amygdala-vmpfc", "B_fearful_vmpfc-amygdala"]
    rows = []
    for cov in ("mean", "improvement", "drug", "improvement_x_drug"):
        for k, name in enumerate((names * 3)[:n_parameters]):
            rows.append({"covariate": cov, "effect": "change", "parameter": name, "Ep_bma": 0.3 - 0.1 * k,
                         "Cp_bma": 0.01, "Pp": 0.99 if k == 0 else 0.5, "finding": k == 0 and cov == "improvement"})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("n_parameters", [2, 4, 12])
def test_peb_figures_draw_without_overlapping_labels(n_parameters):
    """The issue's overlapping Pp labels: at any number of rows the labels stay apart."""
    table = _peb_table(n_parameters)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FigureTextOverlapWarning)
        assert dcm_figures.peb_effects_figure(table, "PEB change", "faces").startswith("data:image/png;base64,")
        assert dcm_figures.network_figure(table.head(4 * n_parameters), ["amygdala", "vmpfc"], "PEB change",
                                          "faces").startswith("data:image/png;base64,")


def _coefficients():
    return pd.DataFrame({
        "feature": [f"delta_fc_rest_vmpfc-{r}" for r in ("dacc", "racc", "anthippo", "antinsula", "amygdala")],
        "beta_per_sd": [0.0, -1.5, 0.0, 2.9, 0.4],
        "selection_frequency": [0.3, 0.8, 0.6, 0.97, 0.5],
        "beta_per_sd_q05": [-0.2, -2.5, -0.1, 1.5, 0.0],
        "beta_per_sd_q95": [0.3, 0.0, 0.4, 3.8, 1.0],
    })


def test_coefficient_plot_rows_put_retained_by_size_then_others_by_selection():
    # retained: antinsula (2.9), racc (-1.5), amygdala (0.4); then anthippo (0.6) before dacc (0.3)
    assert list(coefficient_plot_rows(_coefficients())) == [3, 1, 4, 2, 0]


def test_coefficient_plot_draws_without_overlaps():
    with warnings.catch_warnings():
        warnings.simplefilter("error", FigureTextOverlapWarning)
        assert coefficient_bar_figure(_coefficients(), "all: coefficients at λ_min").startswith("data:image/png")


def test_exclusion_table_is_one_row_per_subject_session_reason():
    records = [{"subject": "04", "session": "pre", "reason": "measure failed QC",
                "measure": f"activation_conflict_conflictRegulation_{r}"} for r in ("dacc", "racc", "vmpfc")]
    records += [{"subject": "04", "session": "post", "reason": "no caps5_total", "measure": None},
                {"subject": "02", "session": None, "reason": "no treatment arm ('group') in participants.tsv",
                 "measure": None}]
    rows = exclusion_table(records, {"pre": "pre", "post": "post"})
    assert [(r["subject"], r["session"]) for r in rows] == [("02", "all"), ("04", "pre"), ("04", "post")]
    assert rows[1]["reason"] == "measure failed QC: 3 measure(s) of the conflict task(s)"
    assert rows[1]["names"].startswith("dACC activation, conflict (conflict regulation)")
    assert rows[2]["reason"] == "no caps5_total" and rows[2]["names"] == ""


def test_sessions_in_study_order_and_missing_values_as_na():
    assert session_order(["post", "pre", "followup"], {"sessions": {"pre": "pre", "post": "post"}}) == \
        ["pre", "post", "followup"]
    assert session_order(["b", "a"], {"sessions": {"pre": "b", "post": "a"}}) == ["b", "a"]
    assert session_order(["post", "pre"], {}) == ["pre", "post"]
    assert [_fmt(v) for v in (None, float("nan"), np.float64(np.inf), 2.0, 0.12345)] == \
        ["n/a", "n/a", "n/a", "2", "0.123"]


def test_overlap_check_ignores_the_ticks_of_a_hidden_axis():
    fig, ax = plt.subplots(figsize=(3, 3))
    ax.set_xlim(-1, 1)
    ax.set_ylim(-1, 1)
    ax.text(-1.0, -1.08, "label on the hidden tick labels", fontsize=8)
    ax.axis("off")
    assert overlapping_texts(fig) == []
    plt.close(fig)


def _png_size(data_uri_or_bytes) -> tuple[int, int]:
    """(width, height) in pixels of a PNG data URI or PNG bytes."""
    import base64
    import io

    from PIL import Image

    raw = data_uri_or_bytes
    if isinstance(raw, str):
        raw = base64.b64decode(raw.split(",", 1)[1])
    return Image.open(io.BytesIO(raw)).size


def _savefig_tight_size(make_fig, dpi: int) -> tuple[int, int]:
    import io

    fig = make_fig()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return _png_size(buffer.getvalue())


def _inside():
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0, 1], [0, 1])
    ax.set_title("content well inside the canvas")
    return fig


def _outside():
    fig, ax = plt.subplots(figsize=(5, 1.2))   # too short for its x label: savefig must grow the canvas
    ax.plot(np.arange(10))
    ax.set_xlabel("volume")
    ax.legend(["FD"], loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes, past the right edge
    return fig


def _far_outside():
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot(np.arange(10))
    fig.text(2.2, 0.5, "far beyond the right edge")  # 3.6 in past the canvas: more than DRAW_MARGIN_IN
    return fig


@pytest.mark.unit
@pytest.mark.parametrize("make_fig", [_inside, _outside, _far_outside], ids=["inside", "outside", "far-outside"])
def test_png_is_cropped_as_savefig_tight_crops(make_fig):
    # matplotlib's own bbox_inches="tight" is the reference; the single-draw crop may differ by a
    # pixel of rounding per edge (2 per dimension)
    dpi = 110
    expected = _savefig_tight_size(make_fig, dpi)
    got = _png_size(to_png_data_uri(make_fig(), dpi=dpi))
    assert abs(got[0] - expected[0]) <= 2 and abs(got[1] - expected[1]) <= 2, (got, expected)
    whole = tuple(int(round(v * dpi)) for v in make_fig().get_size_inches())
    plt.close("all")
    if make_fig is _inside:
        assert got[0] < whole[0] and got[1] < whole[1]     # cropped: the white margins are gone
    elif make_fig is _far_outside:  # past the single draw's margin: drawn again with the whole box
        assert got[0] > whole[0] + 2 * 1.5 * dpi
    else:
        assert got[0] > whole[0] and got[1] > whole[1]     # grown: the legend and the x label are kept
