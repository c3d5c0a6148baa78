"""The subject report's figures, inspected as drawn (matplotlib artists) before they become PNGs:
where the runs, censored volumes, ROI traces, bars and DCM traces land, against values computed
here from the inputs."""

import warnings

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.container import BarContainer

from ptsd_bidsapp.reports import figures
from ptsd_bidsapp.reports.figures import FigureTextOverlapWarning

pytestmark = pytest.mark.unit


@pytest.fixture
def drawn(monkeypatch):
    """Call a figure function and get its matplotlib figure (laid out, checked for overlaps) instead of the PNG."""
    kept = []

    def keep(fig, dpi=110):
        with warnings.catch_warnings():
            warnings.simplefilter("error", FigureTextOverlapWarning)
            assert figures.overlapping_texts(fig) == []
        kept.append(fig)
        return "data:image/png;base64,"

    monkeypatch.setattr(figures, "to_png_data_uri", keep)
    yield lambda call: (call(), kept[-1])[1]
    figures.plt.close("all")


def _run(label, n, censored=(), rois=("dacc", "amygdala"), seed=0, with_fd=True):
    rng = np.random.default_rng(seed)
    flags = np.zeros(n, bool)
    flags[list(censored)] = True
    return {"label": label, "n_volumes": n,
            "fd": rng.uniform(0, 0.3, n) + 1.0 * flags if with_fd else None, "censored": flags if with_fd else None,
            "signals": pd.DataFrame(rng.normal(0, 1, (n, len(rois))) + 10, columns=list(rois))}


def test_joined_runs_follow_one_another_with_a_break_between():
    x, y = figures._joined([np.array([1.0, 2.0]), None, np.array([5.0])], [2, 3, 1])
    np.testing.assert_array_equal(x, [0, 1, np.nan, 2, 3, 4, np.nan, 5])
    np.testing.assert_array_equal(y, [1, 2, np.nan, np.nan, np.nan, np.nan, np.nan, 5])


def test_session_overview_places_runs_censoring_and_roi_traces(drawn):
    runs = [_run("faces", 30, censored=(4, 5, 20)), _run("conflict", 20, seed=1, with_fd=False),
            _run("rest", 25, censored=(0, 24), seed=2)]
    fig = drawn(lambda: figures.session_overview(runs, 0.5, "ses-pre"))
    top, bottom = fig.axes
    # the censored volumes, shifted by the runs before them (30 + 20 volumes before rest)
    spans = [c for c in top.collections if isinstance(c, PolyCollection)]
    assert len(spans) == 1
    starts = sorted(round(float(path.vertices[:, 0].min()), 6) for path in spans[0].get_paths())
    assert starts == [3.5, 4.5, 19.5, 49.5, 73.5]
    # the FD trace: the run without FD is a gap of its 20 volumes
    fd_line = top.lines[0]
    xs, ys = np.asarray(fd_line.get_xdata(), float), np.asarray(fd_line.get_ydata(), float)
    assert np.isnan(ys[(xs >= 30) & (xs < 50)]).all() and np.isfinite(ys[xs < 30]).all()
    np.testing.assert_allclose(ys[(xs >= 50)], runs[2]["fd"])
    # the threshold at 0.5 mm, dotted run boundaries at 29.5 and 49.5 on both panels
    assert any(np.allclose(line.get_ydata(), 0.5) for line in top.lines)
    for ax in (top, bottom):
        edges = sorted(float(line.get_xdata()[0]) for line in ax.lines if line.get_linestyle() == ":")
        assert edges == [29.5, 49.5]
    # runs named at their centres, ROIs by name, first ROI on top
    assert [t.get_text() for t in bottom.get_xticklabels()] == ["faces", "conflict", "rest"]
    np.testing.assert_allclose(bottom.get_xticks(), [14.5, 39.5, 62])
    assert [t.get_text() for t in bottom.get_yticklabels()] == ["dACC", "amygdala"]
    np.testing.assert_allclose(bottom.get_yticks(), [figures.ROI_TRACE_SPACING, 0])
    # each ROI trace is its run-centred signal plus its offset
    roi_lines = [line for line in bottom.lines if line.get_linestyle() != ":"]
    dacc = np.asarray(roi_lines[0].get_ydata(), float)
    xs = np.asarray(roi_lines[0].get_xdata(), float)
    signal = runs[1]["signals"]["dacc"].to_numpy()
    np.testing.assert_allclose(dacc[(xs >= 30) & (xs < 50)], signal - signal.mean() + figures.ROI_TRACE_SPACING)
    assert bottom.get_ylim() == (-1.5 * figures.ROI_TRACE_SPACING, 2.5 * figures.ROI_TRACE_SPACING)


def test_activation_bars_per_session_in_the_given_order(drawn):
    tables = {
        "ses-pre": pd.DataFrame({"roi": ["dacc", "amygdala"], "effect_size": [0.3, -0.6], "stderr": [0.1, 0.2]}),
        "ses-post": pd.DataFrame({"roi": ["amygdala", "dacc"], "effect_size": [-0.2, 0.25], "stderr": [0.05, 0.1]}),
    }
    fig = drawn(lambda: figures.activation_by_session(tables, "activation, faces task"))
    ax = fig.axes[0]
    pre, post = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert [bar.get_width() for bar in pre] == [0.3, -0.6]      # ROIs in the first table's order
    assert [bar.get_width() for bar in post] == [0.25, -0.2]    # the second table re-ordered to match
    # dACC (first) above amygdala; within an ROI the first session above the second
    y = {(s, i): bar.get_y() + bar.get_height() / 2 for s, c in (("pre", pre), ("post", post))
         for i, bar in enumerate(c)}
    assert y[("pre", 0)] > y[("post", 0)] > y[("pre", 1)] > y[("post", 1)]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["dACC", "amygdala"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["ses-pre", "ses-post"]


def test_dcm_fit_traces_scaled_by_the_observed_sd(drawn):
    rng = np.random.default_rng(3)
    observed = rng.normal(0, 1, (40, 2)) * [2.0, 0.5] + [100.0, -3.0]
    predicted = observed + rng.normal(0, 0.1, (40, 2))
    fig = drawn(lambda: figures.observed_vs_predicted(observed, predicted, ["amygdala", "vmpfc"], 2.0, "ses-pre",
                                                      explained={"amygdala": 61.6, "vmpfc": float("nan")}))
    ax = fig.axes[0]
    obs_amygdala, pred_amygdala, obs_vmpfc, _ = ax.lines
    np.testing.assert_allclose(obs_amygdala.get_xdata(), np.arange(40) * 2.0)
    # observed: mean = its offset (6 SD per region, first on top), SD 1; predicted on the same scale
    for line, offset in ((obs_amygdala, 6.0), (obs_vmpfc, 0.0)):
        values = np.asarray(line.get_ydata())
        assert values.mean() == pytest.approx(offset, abs=1e-12) and values.std() == pytest.approx(1.0)
    expected = (predicted[:, 0] - observed[:, 0].mean()) / observed[:, 0].std() + 6.0
    np.testing.assert_allclose(pred_amygdala.get_ydata(), expected)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["amygdala (62 %)", "vmPFC"]


def test_report_pairs_each_runs_activation_across_sessions(monkeypatch):
    # render_subject_report gives activation_by_session one figure per task, run and contrast, its
    # sessions in study order; every other figure is stubbed
    from ptsd_bidsapp.config import load_config
    from ptsd_bidsapp.reports.participant import render_subject_report

    calls = []
    monkeypatch.setattr(figures, "activation_by_session", lambda tables, title: calls.append((title, tables)) or "x")
    monkeypatch.setattr(figures, "session_overview", lambda *a, **k: "x")

    def table(value):
        return pd.DataFrame({"roi": ["dacc"], "effect_size": [value], "stderr": [0.1]})

    def run(session, task, number, value):
        return {"session": session, "task": task, "run": number, "n_volumes": 10, "tr": 2.0, "qc": {},
                "report": {"activation": {"fearfulMinusNeutral": table(value)}}}

    results = [{"session": s, "warnings": [], "runs": [run(s, "faces", 1, v), run(s, "faces", 2, v + 1)]}
               for s, v in (("post", 10.0), ("pre", 20.0))]
    render_subject_report(results, "01", load_config(None))
    assert [title for title, _ in calls] == ["activation, faces task, run 1: fearful − neutral",
                                             "activation, faces task, run 2: fearful − neutral"]
    for (_, tables), extra in zip(calls, (0.0, 1.0)):
        assert list(tables) == ["ses-pre", "ses-post"]
        assert [t["effect_size"].iloc[0] for t in tables.values()] == [20.0 + extra, 10.0 + extra]
