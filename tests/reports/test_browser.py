"""The demo reports in a real browser (issue 18): headless Chromium at 1366×768 and 1920×1080.

Demo reports, as small as keeps the planted findings:

* group: the 21 subjects of the simulated trial (default seed) as fabricated features tables and
  DCM posteriors (:mod:`tests.reports.demo_trial`), through the real group level (few
  permutations and bootstraps); sub-04 fails motion QC on the conflict task;
* subject: sub-01 of a 2-subject, 10 mm, 40-volume simulated trial through the participant
  level (CLI), the report re-rendered in-process from the run's node results to see the figure
  warnings (the file written by the run must be byte-identical).

Checks: no horizontal overflow (a script measures the layout after load, read back with
``--dump-dom``), no overlapping text in any figure (:class:`FigureTextOverlapWarning` at
figure-build time), the headline names the planted findings, measures are shown by name with
the id only in the tooltip, screenshots of the window size.
"""

from __future__ import annotations

import copy
import glob
import json
import re
import shutil
import subprocess
import warnings
from html.parser import HTMLParser
from pathlib import Path

import pytest

from ptsd_bidsapp.cli.run import main
from ptsd_bidsapp.config import load_config
from ptsd_bidsapp.reports.figures import FigureTextOverlapWarning
from ptsd_bidsapp.reports.names import feature_name
from ptsd_bidsapp.simulate import simulate_trial
from ptsd_bidsapp.simulate.features import write_feature_tables
from tests.faults.conftest import TINY
from tests.reports.demo_trial import write_dcm_posteriors

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed: `make chromium` "
                                "(Debian: apt-get install chromium); .ci/run installs it")
WINDOWS = [(1366, 768), (1920, 1080)]
#: planted findings of the simulated trial (Contract 4, simulate/generative.py) as the report names them
PLANTED = ["vmPFC–amygdala gPPI, faces (fearful − neutral)", "dACC activation, conflict (conflict regulation)",
           "vmPFC–anterior insula functional connectivity, rest"]
PLANTED_DCM = "session change (post − pre) in amygdala → vmPFC modulation by fearful faces"
ROI_NAMES = ["dACC", "rACC", "vmPFC", "anterior hippocampus", "anterior insula", "amygdala"]
#: a raw measure id (Contract 2) or elastic-net predictor in visible text
RAW_ID = re.compile(r"\b(?:delta_)?(?:activation|gppi|gppidir|fc|dcm)_[A-Za-z0-9]+_[\w-]+")
#: a raw DCM parameter name (contracts.dcm_parameter_names) in visible text
RAW_PARAMETER = re.compile(r"\b[ABC]_[a-z]+(?:_[a-z]+)?-[a-z]+")

PROBE = """<script>
window.addEventListener("load", function () {
  var width = window.innerWidth, wide = [];
  document.querySelectorAll("body *").forEach(function (el) {
    var r = el.getBoundingClientRect();
    if (r.right > width + 0.5 && !(el.parentElement && el.parentElement.closest(".scroll"))) {
      wide.push(el.tagName + (el.id ? "#" + el.id : "") + " " + Math.round(r.right) + "px");
    }
  });
  var out = document.createElement("pre");
  out.id = "layout-probe";
  out.textContent = JSON.stringify({innerWidth: width, scrollWidth: document.documentElement.scrollWidth,
                                    bodyScrollWidth: document.body.scrollWidth, wide: wide.slice(0, 20),
                                    images: document.images.length,
                                    loaded: Array.prototype.every.call(document.images, function (i) {
                                      return i.complete && i.naturalWidth > 0; })});
  document.body.appendChild(out);
});
</script>"""


def _chromium(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--no-first-run", "--disable-extensions", *args],
                          capture_output=True, text=True, timeout=300, check=False)


def layout(report: Path, size: tuple[int, int], tmp: Path) -> dict:
    """The probe's measurements of ``report`` laid out in a window of ``size`` (CSS pixels)."""
    probe = tmp / f"{report.stem}_{size[0]}x{size[1]}.html"
    probe.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
    proc = _chromium(f"--window-size={size[0]},{size[1]}", "--virtual-time-budget=20000", "--dump-dom",
                     probe.as_uri())
    found = re.search(r'<pre id="layout-probe">(.*?)</pre>', proc.stdout, re.S)
    assert found, f"no layout probe in Chromium's DOM dump of {probe} (stderr: {proc.stderr[-500:]})"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<")
                      .replace("&gt;", ">"))


class _Text(HTMLParser):
    """Visible text (no script/style/title attributes), ``span.id`` tooltips with their text, headline."""

    def __init__(self):
        super().__init__()
        self.text, self.spans, self.headline = [], [], []
        self._skip, self._span, self._headline = 0, None, 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("script", "style", "title"):
            self._skip += 1
        if tag == "section" and attrs.get("id") == "headline":
            self._headline = 1
        elif self._headline and tag == "section":
            self._headline += 1
        if tag == "span" and "id" in (attrs.get("class") or "").split() and "title" in attrs:
            self._span = [attrs["title"], ""]

    def handle_endtag(self, tag):
        if tag in ("script", "style", "title"):
            self._skip -= 1
        if tag == "span" and self._span:
            self.spans.append(tuple(self._span))
            self._span = None
        if tag == "section" and self._headline:
            self._headline -= 1

    def handle_data(self, data):
        if self._skip:
            return
        self.text.append(data)
        if self._span:
            self._span[1] += data
        if self._headline:
            self.headline.append(data)


def parse(html: str) -> _Text:
    parser = _Text()
    parser.feed(html)
    parser.text = " ".join(" ".join(parser.text).split())
    parser.headline = " ".join(" ".join(parser.headline).split())
    return parser


# ------------------------------------------------------------------------------------- demo reports
@pytest.fixture(scope="module")
def group_demo(tmp_path_factory):
    from ptsd_bidsapp.group.run import run_group

    base = tmp_path_factory.mktemp("report_group")
    bids, out = base / "bids", base / "out"
    config = copy.deepcopy(load_config(None))
    # few resamples: the report's content, not the p-values' resolution, is under test (elastic net
    # p >= 1/40); the PEB re-randomisation keeps 100 (its family-wise p of the planted B change is 0.04)
    config["elastic_net"].update({"n_permutations": 39, "n_bootstrap": 40})
    config["peb"]["n_permutations"] = 100
    truth = write_feature_tables(out, bids, n_subjects=21, missing={"04": "qc"})
    write_dcm_posteriors(out, truth, config)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_group(bids, out, config, seed=1, n_jobs=1)
    return {"report": Path(result["report"]), "warnings": caught, "tmp": base, "truth": truth}


@pytest.fixture(scope="module")
def subject_demo(tmp_path_factory):
    from ptsd_bidsapp.reports.participant import render_subject_report
    from ptsd_bidsapp.workflows.participant import load_result

    base = tmp_path_factory.mktemp("report_subject")
    bids = simulate_trial(base / "bids", **TINY)
    code = main([str(bids), str(base / "out"), "participant", "--participant-label", "01", "-w", str(base / "work"),
                 "--nprocs", "1", "--skip-bids-validation", "--seed", "1"])
    assert code == 0
    sessions = sorted(glob.glob(str(base / "work" / "**" / "ses_*_summary" / "session_result.pkl.gz"), recursive=True))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        html = render_subject_report([load_result(p) for p in sessions], "01", load_config(None))
    return {"report": base / "out" / "sub-01.html", "rerendered": html, "warnings": caught, "tmp": base}


def _overlaps(caught) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, FigureTextOverlapWarning)]


# ------------------------------------------------------------------------------------- checks
@pytest.mark.parametrize("size", WINDOWS, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("which", ["group_demo", "subject_demo"])
def test_no_horizontal_overflow(which, size, request):
    demo = request.getfixturevalue(which)
    measured = layout(demo["report"], size, demo["tmp"])
    assert measured["innerWidth"] == size[0]  # the window size took effect
    assert measured["images"] > 3 and measured["loaded"]
    assert measured["scrollWidth"] <= size[0] and measured["bodyScrollWidth"] <= size[0], measured
    assert measured["wide"] == []


@pytest.mark.parametrize("size", WINDOWS, ids=lambda s: f"{s[0]}x{s[1]}")
def test_screenshots_have_the_window_size(group_demo, subject_demo, size):
    from PIL import Image

    for demo in (group_demo, subject_demo):
        png = demo["tmp"] / f"{demo['report'].stem}_{size[0]}.png"
        _chromium(f"--window-size={size[0]},{size[1]}", "--virtual-time-budget=20000", f"--screenshot={png}",
                  demo["report"].as_uri())
        with Image.open(png) as image:
            assert image.size == size
            extrema = image.convert("L").getextrema()
        assert extrema[0] < 100 and extrema[1] > 200  # text on a light page, not a blank frame


def test_figures_have_no_overlapping_text(group_demo, subject_demo):
    assert _overlaps(group_demo["warnings"]) == []
    assert _overlaps(subject_demo["warnings"]) == []
    # the checked figures are the ones in the written report
    assert subject_demo["rerendered"] == subject_demo["report"].read_text()


def test_headline_names_the_planted_findings(group_demo):
    page = parse(group_demo["report"].read_text())
    assert page.headline.startswith("Model all predicted CAPS-5 improvement")
    for name in PLANTED:
        assert name in page.headline, name
    assert PLANTED_DCM in page.headline
    # the arms of the simulator's subjects (its input), sub-04 excluded (motion QC, conflict task)
    arms = [params["group"] for label, params in group_demo["truth"]["subjects"].items() if label != "04"]
    # text nodes are joined with a space: "<b>Sample</b>: 20" reads "Sample : 20"
    assert re.search(rf"Sample ?: 20 subject\(s\) with complete change scores \(ketamine {arms.count('ketamine')}, "
                     rf"midazolam {arms.count('midazolam')}\); 1 excluded", page.headline), page.headline


def test_measures_shown_by_name_with_the_id_in_the_tooltip(group_demo):
    page = parse(group_demo["report"].read_text())
    assert RAW_ID.findall(page.text) == []
    predictors = [(title, text) for title, text in page.spans if RAW_ID.fullmatch(title)]
    assert len(predictors) >= 10
    for title, text in predictors:
        assert text == feature_name(title) and text != title
    shown = {text for _, text in predictors}
    assert {"Δ " + name for name in PLANTED} <= shown
    # the exclusion is one compact row: subject, session, reason (measure names in the tooltip)
    assert "sub-04 pre measure failed QC: 6 measure(s) of the conflict task(s)" in page.text


def test_subject_report_reads_plainly(subject_demo):
    page = parse(subject_demo["report"].read_text())
    assert page.text.index("Session pre") < page.text.index("Session post")
    assert not re.search(r"\bNone\b|design units|other arm", page.text)
    legend = [text for title, text in page.spans if title in ("dacc", "racc", "vmpfc", "anthippo", "antinsula",
                                                              "amygdala")]
    assert legend == ROI_NAMES
    assert RAW_PARAMETER.findall(page.text) == []
    assert re.search(r"Session pre: (poor fit, )?[\d.]+ % of variance explained", page.text)
    assert "amygdala → vmPFC modulation by fearful faces" in page.text
