"""Human-readable names (:mod:`ptsd_bidsapp.reports.names`): explicit strings per kind of id,
and every id the contracts can build for the default config and packaged atlases has a name."""

from itertools import permutations

import pandas as pd
import pytest

from ptsd_bidsapp import contracts
from ptsd_bidsapp.atlas import PACKAGED_LABELS, PACKAGED_LABELS_LATERALIZED
from ptsd_bidsapp.config import load_default_config
from ptsd_bidsapp.reports.names import (covariate_name, dcm_parameter_name, feature_name, measure_name,
                                        roi_name)


@pytest.mark.parametrize("measure, expected", [
    ("activation_conflict_conflictRegulation_dacc", "dACC activation, conflict (conflict regulation)"),
    ("activation_faces_fearfulMinusNeutral_anthippo",
     "anterior hippocampus activation, faces (fearful \u2212 neutral)"),
    ("gppi_faces_fearfulMinusNeutral_vmpfc-amygdala", "vmPFC\u2013amygdala gPPI, faces (fearful \u2212 neutral)"),
    ("gppidir_faces_fearfulMinusNeutral_amygdala-vmpfc",
     "amygdala \u2192 vmPFC gPPI, faces (fearful \u2212 neutral)"),
    ("fc_rest_vmpfc-antinsula", "vmPFC\u2013anterior insula functional connectivity, rest"),
    ("dcm_faces_B_fearful_amygdala-vmpfc", "amygdala \u2192 vmPFC modulation by fearful faces (DCM, faces)"),
    ("dcm_faces_C_faces_amygdala", "faces input to amygdala (DCM, faces)"),
    ("activation_faces_fearfulMinusNeutral_racc_L", "left rACC activation, faces (fearful \u2212 neutral)"),
])
def test_measure_names(measure, expected):
    assert measure_name(measure) == expected


def test_dcm_covariate_and_feature_names():
    assert dcm_parameter_name("B_fearful_amygdala-vmpfc", "faces") == \
        "amygdala \u2192 vmPFC modulation by fearful faces"
    assert dcm_parameter_name("A_vmpfc-amygdala") == "vmPFC \u2192 amygdala connection"
    assert dcm_parameter_name("A_amygdala-amygdala") == "amygdala self-connection"
    assert covariate_name("improvement_x_drug") == "improvement \u00d7 drug"
    assert covariate_name("mean") == "group mean"
    assert feature_name("delta_fc_rest_vmpfc-antinsula") == \
        "\u0394 vmPFC\u2013anterior insula functional connectivity, rest"
    assert feature_name("delta_fc_rest_vmpfc-antinsula_x_drug_ketamine").endswith("rest \u00d7 ketamine")
    assert feature_name("drug_ketamine") == "ketamine arm"
    assert feature_name("improvement_madrs_total") == "MADRS improvement"


def test_roi_names_cover_the_packaged_atlases():
    assert [roi_name(r) for r in ("dacc", "racc", "vmpfc", "anthippo", "antinsula", "amygdala")] == [
        "dACC", "rACC", "vmPFC", "anterior hippocampus", "anterior insula", "amygdala"]
    assert roi_name("amygdala_R") == "right amygdala"


def _every_id(config, rois):
    ids = []
    for task, spec in config["tasks"].items():
        for contrast in spec.get("contrasts") or {}:
            ids += [contracts.activation_id(task, contrast, r) for r in rois]
            for a, b in permutations(rois, 2):
                ids += [contracts.gppi_id(task, contrast, a, b), contracts.gppi_directed_id(task, contrast, a, b)]
        ids += [contracts.fc_id(task, a, b) for a, b in permutations(rois, 2)]
    dcm = config["dcm"]
    ids += [contracts.dcm_measure_id(dcm["task"], p)
            for p in contracts.dcm_parameter_names(dcm["regions"], list(dcm["inputs"]))]
    return ids


@pytest.mark.parametrize("labels", [PACKAGED_LABELS, PACKAGED_LABELS_LATERALIZED])
def test_every_buildable_id_has_a_name(labels):
    """No name falls back to the raw id or shows a raw label (underscores, lower-case ROI codes)."""
    rois = list(pd.read_csv(labels, sep="\t")["name"])
    ids = _every_id(load_default_config(), rois)
    kinds = {contracts.parse_measure_id(i).kind for i in ids}
    assert kinds == set(contracts.MEASURE_KINDS)
    for measure in ids:
        name = measure_name(measure)
        assert measure not in name and "_" not in name, (measure, name)
        assert not any(code in name.split() for code in ("dacc", "racc", "vmpfc", "anthippo", "antinsula")), name
