"""The identifier contracts: build -> parse -> build is the identity; bad ids are named."""

import pytest

from ptsd_bidsapp import contracts
from ptsd_bidsapp.contracts import UnmatchedPatternError, match_measures, parse_measure_id

IDS = [
    ("activation_conflict_conflictRegulation_dacc", "activation", {"task": "conflict", "roi": "dacc"}),
    ("activation_faces_fearfulMinusNeutral_dacc_L", "activation", {"roi": "dacc_L"}),
    ("gppi_faces_fearfulMinusNeutral_vmpfc-amygdala", "gppi", {"source": "vmpfc", "target": "amygdala"}),
    ("gppidir_faces_fearfulMinusNeutral_amygdala-vmpfc", "gppi_directed", {"source": "amygdala"}),
    ("fc_rest_vmpfc_R-antinsula_L", "fc", {"source": "vmpfc_R", "target": "antinsula_L"}),
    ("dcm_faces_B_fearful_amygdala-vmpfc", "dcm", {"parameter": "B_fearful_amygdala-vmpfc"}),
    ("dcm_faces_decay", "dcm", {"parameter": "decay"}),
]


@pytest.mark.parametrize("measure, kind, fields", IDS)
def test_parse_then_build_is_identity(measure, kind, fields):
    parsed = parse_measure_id(measure)
    assert parsed.kind == kind
    for key, value in fields.items():
        assert getattr(parsed, key) == value
    assert parsed.id == measure


@pytest.mark.parametrize("bad", ["activation_faces", "gppi_faces_c_vmpfc", "fc_rest_a-b-c", "restfc_rest_a-b",
                                 "dcm_faces_Q_x", "dcm_faces_decay_amygdala"])
def test_malformed_ids_are_rejected(bad):
    with pytest.raises(ValueError, match="not|no "):
        parse_measure_id(bad)


def test_labels_with_the_pair_separator_cannot_be_built():
    with pytest.raises(ValueError, match="cannot be part of an identifier"):
        contracts.fc_id("rest", "ant-insula", "vmpfc")
    with pytest.raises(ValueError, match="cannot be part of an identifier"):
        contracts.activation_id("faces", "fearful_minus", "dacc")


def test_undirected_patterns_match_either_order_directed_only_as_written():
    ids = ["fc_rest_vmpfc-amygdala", "fc_rest_dacc-vmpfc", "gppi_faces_c_dacc-amygdala",
           "gppidir_faces_c_vmpfc-amygdala", "gppidir_faces_c_amygdala-vmpfc"]
    hits = match_measures(["fc_rest_amygdala-*", "gppi_faces_c_amygdala-dacc", "gppidir_faces_c_amygdala-*"], ids)
    assert hits["fc_rest_amygdala-*"] == ["fc_rest_vmpfc-amygdala"]
    assert hits["gppi_faces_c_amygdala-dacc"] == ["gppi_faces_c_dacc-amygdala"]
    assert hits["gppidir_faces_c_amygdala-*"] == ["gppidir_faces_c_amygdala-vmpfc"]


def test_a_pattern_matching_nothing_names_itself_and_the_nearest_ids():
    with pytest.raises(UnmatchedPatternError) as err:
        match_measures(["fc_rest_amygdla-*"], ["fc_rest_vmpfc-amygdala", "fc_rest_amygdala-dacc"])
    assert "fc_rest_amygdla-*" in str(err.value) and "fc_rest_amygdala-dacc" in str(err.value)
    assert match_measures(["nothing*"], ["a"], strict=False) == {"nothing*": []}


def test_dcm_vector_follows_spm12_r7771():
    # spm_dcm_fmri_priors (r7771): transit per region, ONE decay, one epsilon
    regions, inputs = ["amygdala", "vmpfc"], ["faces", "fearful"]
    names = contracts.dcm_parameter_names(regions, inputs)
    assert len(names) == contracts.dcm_n_parameters(2, 2) == 20
    assert names[:4] == ["A_amygdala-amygdala", "A_amygdala-vmpfc", "A_vmpfc-amygdala", "A_vmpfc-vmpfc"]
    assert names[-4:] == ["transit_amygdala", "transit_vmpfc", "decay", "epsilon"]
    assert contracts.dcm_n_parameters(3, 1) == 9 + 9 + 3 + 3 + 2
    for name in names:
        parsed = contracts.parse_dcm_parameter(name)
        assert parsed.field == name.split("_")[0]
    b = contracts.parse_dcm_parameter("B_fearful_amygdala-vmpfc")
    assert (b.input, b.source, b.target, b.is_between_regions) == ("fearful", "amygdala", "vmpfc", True)


TOKEN_ONLY = "use letters and digits only"
LABEL_RULE = "use letters, digits and '_' only"

#: every builder with a task / contrast / ROI / input argument: (builder, valid arguments, position, name)
BUILDER_ARGUMENTS = [
    (contracts.activation_id, ("faces", "fearfulMinusNeutral", "dacc"), 0, "task"),
    (contracts.activation_id, ("faces", "fearfulMinusNeutral", "dacc"), 1, "contrast"),
    (contracts.activation_id, ("faces", "fearfulMinusNeutral", "dacc"), 2, "ROI"),
    (contracts.gppi_id, ("faces", "fearfulMinusNeutral", "vmpfc", "amygdala"), 0, "task"),
    (contracts.gppi_id, ("faces", "fearfulMinusNeutral", "vmpfc", "amygdala"), 1, "contrast"),
    (contracts.gppi_id, ("faces", "fearfulMinusNeutral", "vmpfc", "amygdala"), 2, "ROI"),
    (contracts.gppi_id, ("faces", "fearfulMinusNeutral", "vmpfc", "amygdala"), 3, "ROI"),
    (contracts.gppi_directed_id, ("faces", "fearfulMinusNeutral", "vmpfc", "amygdala"), 0, "task"),
    (contracts.gppi_directed_id, ("faces", "fearfulMinusNeutral", "vmpfc", "amygdala"), 1, "contrast"),
    (contracts.gppi_directed_id, ("faces", "fearfulMinusNeutral", "vmpfc", "amygdala"), 2, "ROI"),
    (contracts.gppi_directed_id, ("faces", "fearfulMinusNeutral", "vmpfc", "amygdala"), 3, "ROI"),
    (contracts.fc_id, ("rest", "vmpfc", "amygdala"), 0, "task"),
    (contracts.fc_id, ("rest", "vmpfc", "amygdala"), 1, "ROI"),
    (contracts.fc_id, ("rest", "vmpfc", "amygdala"), 2, "ROI"),
    (contracts.dcm_measure_id, ("faces", "decay"), 0, "task"),
]


@pytest.mark.parametrize("builder, args, position, name", BUILDER_ARGUMENTS)
def test_builders_name_the_part_that_cannot_be_an_identifier(builder, args, position, name):
    """Task and contrast labels are BIDS labels (letters and digits: no '_'); ROI labels may hold '_'
    (dacc_L) but no '-'. The error names the part and its value and says what is allowed."""
    good = builder(*args)
    assert args[position] in good
    if name == "ROI":
        with_underscore = list(args)
        with_underscore[position] = "dacc_L"
        assert "dacc_L" in builder(*with_underscore)
        bad, rule = "da-cc", LABEL_RULE
    else:
        bad, rule = "face_s", TOKEN_ONLY
    broken = list(args)
    broken[position] = bad
    with pytest.raises(ValueError) as err:
        builder(*broken)
    assert str(err.value) == f"{name} '{bad}' cannot be part of an identifier: {rule}"


def test_dcm_names_validate_regions_and_inputs():
    assert contracts.dcm_parameter_names(["dacc_L"], ["faces"])[0] == "A_dacc_L-dacc_L"
    with pytest.raises(ValueError) as err:
        contracts.dcm_parameter_names(["amyg-dala"], ["faces"])
    assert str(err.value) == f"region 'amyg-dala' cannot be part of an identifier: {LABEL_RULE}"
    with pytest.raises(ValueError) as err:
        contracts.dcm_parameter_names(["amygdala"], ["fear_ful"])
    assert str(err.value) == f"DCM input 'fear_ful' cannot be part of an identifier: {TOKEN_ONLY}"
    with pytest.raises(ValueError, match="'B_x' is not a DCM parameter name"):
        contracts.dcm_measure_id("faces", "B_x")


@pytest.mark.parametrize("bad, message", [
    ("restfc_rest_a-b", "'restfc_rest_a-b' is not a measure identifier (known prefixes: activation, dcm, fc, gppi, "
                        "gppidir)"),
    ("fc_rest", "'fc_rest': no task label"),
    ("fc_re-st_a-b", "'fc_re-st_a-b': no task label"),
    ("activation_faces", "'activation_faces': no task label"),
    ("activation_faces_fearful", "'activation_faces_fearful': no contrast label"),
    ("activation_faces_fear-ful_dacc", "'activation_faces_fear-ful_dacc': no contrast label"),
    ("activation_faces_c_da-cc", f"ROI 'da-cc' cannot be part of an identifier: {LABEL_RULE}"),
    ("gppi_faces_c_a-b-c", "'gppi_faces_c_a-b-c': 'a-b-c' is not an ROI pair '<roiA>-<roiB>'"),
    ("fc_rest_a-b-c", "'fc_rest_a-b-c': 'a-b-c' is not an ROI pair '<roiA>-<roiB>'"),
    ("dcm_faces_A_a-b-c", "'A_a-b-c': 'a-b-c' is not an ROI pair '<roiA>-<roiB>'"),
])
def test_parse_errors_name_the_identifier_and_the_problem(bad, message):
    with pytest.raises(ValueError) as err:
        parse_measure_id(bad)
    assert str(err.value) == message


def test_a_pair_pattern_with_three_rois_is_not_reversed():
    """Only a two-ROI pair has a reversed form: 'a-b-c' must not be read as the pair (b, a)."""
    assert match_measures(["gppi_faces_c_a-b-c"], ["gppi_faces_c_b-a"], strict=False) == {"gppi_faces_c_a-b-c": []}
    assert match_measures(["gppi_faces_c_a-b"], ["gppi_faces_c_b-a"]) == {"gppi_faces_c_a-b": ["gppi_faces_c_b-a"]}


def test_unmatched_pattern_suggests_the_three_nearest_ids_above_half_similarity():
    """difflib similarity of each id to 'fc_rest_amygdla-*': amyg-x 0.84, a-b 0.71, insula-dacc 0.61,
    vmpfc-dacc 0.57, 'fcrest' 0.52, gppi_faces_c_amygdala-dacc 0.56: at most three, best first,
    none below 0.5 ('fcrest' at 0.52 is still offered when fewer are closer)."""
    ids = ["fc_rest_vmpfc-dacc", "fc_rest_a-b", "fc_rest_insula-dacc", "fc_rest_amyg-x", "xyz"]
    with pytest.raises(UnmatchedPatternError) as err:
        match_measures(["fc_rest_amygdla-*"], ids)
    assert err.value.suggestions == ["fc_rest_amyg-x", "fc_rest_a-b", "fc_rest_insula-dacc"]
    with pytest.raises(UnmatchedPatternError) as err:
        match_measures(["fc_rest_amygdla-*"], ["fc_rest_amyg-x", "fcrest", "xyz"])
    assert err.value.suggestions == ["fc_rest_amyg-x", "fcrest"]
    assert str(err.value) == ("measure pattern 'fc_rest_amygdla-*' matches no measure; "
                              "nearest ids: fc_rest_amyg-x, fcrest")
    with pytest.raises(UnmatchedPatternError) as err:
        match_measures(["fc_rest_amygdla-*"], ["xyz"])
    assert str(err.value) == "measure pattern 'fc_rest_amygdla-*' matches no measure"


def test_dcm_field_sizes_follow_spm12_r7771():
    """2 regions, 2 inputs: A 2x2, B 2x2x2, C 2x2, one transit per region, one decay, one epsilon."""
    assert contracts.dcm_field_sizes(2, 2) == {"A": 4, "B": 8, "C": 4, "transit": 2, "decay": 1, "epsilon": 1}
    assert contracts.dcm_field_sizes(3, 1) == {"A": 9, "B": 9, "C": 3, "transit": 3, "decay": 1, "epsilon": 1}
    assert list(contracts.dcm_field_sizes(1, 1)) == list(contracts.DCM_FIELDS)


@pytest.mark.parametrize("name, expected", [
    ("A_amygdala-vmpfc", contracts.DCMParameter("A", source="amygdala", target="vmpfc")),
    ("B_fearful_dacc_L-vmpfc", contracts.DCMParameter("B", input="fearful", source="dacc_L", target="vmpfc")),
    ("C_faces_dacc_L", contracts.DCMParameter("C", input="faces", target="dacc_L")),
    ("transit_dacc_L", contracts.DCMParameter("transit", region="dacc_L")),
    ("decay", contracts.DCMParameter("decay")),
    ("epsilon", contracts.DCMParameter("epsilon")),
])
def test_dcm_parameter_names_parse_into_every_field(name, expected):
    assert contracts.parse_dcm_parameter(name) == expected


@pytest.mark.parametrize("bad, message", [
    ("B_fear-ful_a-b", "'B_fear-ful_a-b' is not a DCM parameter name"),
    ("B_fearful_amygdala", "'B_fearful_amygdala': 'amygdala' is not an ROI pair"),
    ("B_x_a-b-c", "'B_x_a-b-c': 'a-b-c' is not an ROI pair"),
    ("C_faces_a-b", "'C_faces_a-b' is not a DCM parameter name"),
    ("C_faces", "'C_faces' is not a DCM parameter name"),
    ("transit_a-b", "'transit_a-b' is not a DCM parameter name"),
])
def test_malformed_dcm_parameter_names_are_named(bad, message):
    with pytest.raises(ValueError) as err:
        contracts.parse_dcm_parameter(bad)
    assert str(err.value).startswith(message)


def test_error_attributes_and_default_wording():
    """The unmatched pattern is kept on the error; an unnamed label is called 'label'; a bad DCM
    name lists the fields of the vector in spm_vec order."""
    with pytest.raises(UnmatchedPatternError) as err:
        match_measures(["fc_rest_x-*"], ["xyz"])
    assert err.value.pattern == "fc_rest_x-*" and err.value.suggestions == []
    with pytest.raises(ValueError) as err:
        contracts.check_label("a-b")
    assert str(err.value) == f"label 'a-b' cannot be part of an identifier: {LABEL_RULE}"
    with pytest.raises(ValueError) as err:
        contracts.parse_dcm_parameter("Q_x")
    assert str(err.value) == "'Q_x' is not a DCM parameter name (fields: A, B, C, transit, decay, epsilon)"
