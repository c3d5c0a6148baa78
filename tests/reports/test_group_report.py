"""The group report's headline (:func:`ptsd_bidsapp.group.report.group_headline`), rendered from
small fabricated results: the model verdicts with their numbers, the DCM finding sentence or the
no-finding sentence with its rule, the sample, human names shown with the ids as tooltips."""

from html.parser import HTMLParser
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from ptsd_bidsapp.config import load_default_config
from ptsd_bidsapp.group.report import write_group_report

GPPI = "gppi_faces_fearfulMinusNeutral_vmpfc-amygdala"
FC = "fc_rest_vmpfc-antinsula"
ACT = "activation_conflict_conflictRegulation_dacc"


class _Spans(HTMLParser):
    """Text and title of every ``<span title=...>``, and the text of ``#headline``."""

    def __init__(self):
        super().__init__()
        self.spans, self.headline, self._span, self._depth = [], [], None, 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section" and attrs.get("id") == "headline":
            self._depth = 1
        elif self._depth and tag == "section":
            self._depth += 1
        if tag == "span" and "title" in attrs:
            self._span = [attrs["title"], ""]

    def handle_endtag(self, tag):
        if tag == "span" and self._span:
            self.spans.append(tuple(self._span))
            self._span = None
        if tag == "section" and self._depth:
            self._depth -= 1

    def handle_data(self, data):
        if self._span:
            self._span[1] += data
        if self._depth:
            self.headline.append(data)


def _model(p_value, betas, frequencies, r=0.62, r2=0.35):
    features = list(betas)
    coef = pd.DataFrame({"feature": features, "beta_per_sd": list(betas.values()),
                         "beta_raw": list(betas.values()), "selected": [b != 0 for b in betas.values()],
                         "selection_frequency": frequencies, "penalty_factor": 1.0})
    return {"cv": SimpleNamespace(lambda_min_=0.1, lambda_1se_=0.3), "coefficients": coef,
            "nested": {"r2": r2, "pearson_r": r, "mae": 3.0},
            "permutation": {"p_value": p_value, "n_permutations": 1000},
            "design": {"y": pd.Series(np.zeros(10)), "excluded": {}}, "spec": {"subset": None, "interactions": False}}


def _dcm_table(finding: bool):
    return pd.DataFrame({
        "parameter": ["B_fearful_amygdala-vmpfc", "B_fearful_amygdala-vmpfc", "A_vmpfc-amygdala"],
        "effect": ["change"] * 3, "covariate": ["mean", "improvement_x_drug", "improvement"],
        "Ep": [0.1, 0.38, 0.05], "Ep_bma": [0.1, 0.41, 0.0], "Pp": [0.5, 0.993, 0.4],
        "p_rnd": [0.5, 0.004, 0.7], "p_rnd_fwe": [0.6, 0.012, 0.9], "finding": [False, finding, False]})


def _render(tmp_path, dcm, failed=None):
    table = pd.DataFrame({"subject": [f"{i:02d}" for i in range(1, 11)],
                          "group": ["ketamine"] * 6 + ["midazolam"] * 4})
    change = {"table": table, "group_column": "group", "measures": [GPPI, FC, ACT],
              "excluded": {"11": "no post session", "12": "motion"}, "outcome": "improvement_caps5_total"}
    models = {"all": _model(0.004, {f"delta_{GPPI}": 2.9, f"delta_{FC}": -0.8, f"delta_{ACT}": 0.0},
                            [0.97, 0.55, 0.1]),
              "ketamine_only": _model(0.41, {f"delta_{GPPI}": 0.0, f"delta_{FC}": 0.0, f"delta_{ACT}": 0.0},
                                      [0.2, 0.1, 0.1], r=-0.1, r2=-0.2)}
    path = write_group_report(tmp_path / "group_report.html", change, models, failed or {}, dcm,
                              load_default_config(), seed=3, figures=False)
    html = path.read_text()
    parser = _Spans()
    parser.feed(html)
    return html, parser.spans, " ".join("".join(parser.headline).split())


def test_headline_names_the_models_findings_and_sample(tmp_path):
    dcm = {"models": {"change": {"table": _dcm_table(True), "description": "session change"}},
           "excluded": {"05": "no DCM for session post"}}
    html, spans, headline = _render(tmp_path, dcm)
    assert html.index('id="headline"') < html.index('id="data"')
    assert ("Model all predicted CAPS-5 improvement (n = 10; nested cross-validation r = 0.62, R² = 0.35; "
            "permutation p = 0.004, threshold 0.05)") in headline
    assert ("\u0394 vmPFC\u2013amygdala gPPI, faces (fearful \u2212 neutral): standardised β 2.9, "
            "selected in 97% of bootstraps") in headline
    assert "\u0394 vmPFC\u2013anterior insula functional connectivity, rest: standardised β -0.8" in headline
    assert "dACC activation" not in headline  # not retained
    assert ("Model ketamine_only did not predict CAPS-5 improvement better than chance (n = 10; nested "
            "cross-validation r = -0.10, R² = -0.20; permutation p = 0.41") in headline
    assert "No measure retained at λ_min." in headline
    assert ("improvement \u00d7 drug on session change (post \u2212 pre) in amygdala \u2192 vmPFC modulation by "
            "fearful faces: Ep 0.41, Pp 0.993, re-randomisation p = 0.012 (family-wise)") in headline
    assert "no DCM effect met" not in headline
    assert "<th>effect in words</th>" in html
    assert ("<td>group mean on session change (post \u2212 pre) in amygdala \u2192 vmPFC modulation by "
            "fearful faces</td>") in html
    assert ("Sample: 10 subject(s) with complete change scores (ketamine 6, midazolam 4); 2 excluded from the "
            "change scores, 1 from the DCM group models") in headline
    titles = dict(spans)
    assert titles[f"delta_{GPPI}"] == "\u0394 vmPFC\u2013amygdala gPPI, faces (fearful \u2212 neutral)"
    assert titles["improvement_x_drug on change:B_fearful_amygdala-vmpfc"].startswith("improvement \u00d7 drug on")
    # raw ids appear only inside title attributes, never as visible text
    visible = [text for _, text in spans]
    assert not any(GPPI in text for text in visible)


def test_headline_without_a_dcm_finding_states_the_rule(tmp_path):
    dcm = {"models": {"change": {"table": _dcm_table(False), "description": "session change"}}, "excluded": {}}
    _, _, headline = _render(tmp_path, dcm)
    assert ("DCM: no DCM effect met the finding rule among 2 between-subject effects (rule: an effect is a "
            "finding when its posterior probability Pp exceeds 0.75 and its re-randomisation p (family-wise "
            "over the covariate parameters) is below 0.05).") in headline
    assert "finding(s)" not in headline


@pytest.mark.parametrize("dcm", [None, {"note": "DCM disabled in the config (dcm.enabled: false / --no-dcm)"}])
def test_headline_without_dcm_and_hostile_text_escaped(tmp_path, dcm):
    html, _, headline = _render(tmp_path, dcm, failed={"depression_covariate": "<script>alert(1)</script>"})
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "Model depression_covariate could not be fitted (reason under subjects and measures)." in headline
    assert "failed: &lt;script&gt;alert(1)&lt;/script&gt;" in html  # the reason, escaped, in its warning
    assert ("DCM: no DCM group model was fitted." if dcm is None else "DCM: DCM disabled in the config") in headline
    assert "from the DCM group models" not in headline
