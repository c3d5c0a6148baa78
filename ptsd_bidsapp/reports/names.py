"""Human-readable names of measure ids, DCM parameters and model terms: one owner.

The ids themselves are built and parsed in :mod:`ptsd_bidsapp.contracts`; this module only
turns a parsed id into the words a clinician-researcher reads in a report
(``gppi_faces_fearfulMinusNeutral_vmpfc-amygdala`` → "vmPFC–amygdala gPPI, faces
(fearful − neutral)"). Reports show the name and keep the id in a ``title=`` tooltip.

==========================  ==========================================================
id                          name
==========================  ==========================================================
``activation_<t>_<c>_<r>``  "<ROI> activation, <task> (<contrast>)"
``gppi_<t>_<c>_<a>-<b>``    "<A>–<B> gPPI, <task> (<contrast>)"
``gppidir_<t>_<c>_<s>-<x>`` "<seed> → <target> gPPI, <task> (<contrast>)"
``fc_<t>_<a>-<b>``          "<A>–<B> functional connectivity, <task>"
``dcm_<t>_<parameter>``     the parameter's name (:func:`dcm_parameter_name`), "(DCM, <task>)"
==========================  ==========================================================
"""

from __future__ import annotations

import re

from ptsd_bidsapp.contracts import parse_dcm_parameter, parse_measure_id

__all__ = ["ROI_DISPLAY_NAMES", "roi_name", "contrast_name", "measure_name", "dcm_parameter_name",
           "covariate_name", "feature_name", "score_name"]

#: atlas-ptsdcircuit labels (Contract 1) -> display names (atlas description: Norbury et al. 2021)
ROI_DISPLAY_NAMES = {"dacc": "dACC", "racc": "rACC", "vmpfc": "vmPFC", "anthippo": "anterior hippocampus",
                     "antinsula": "anterior insula", "amygdala": "amygdala"}
_HEMISPHERES = {"L": "left", "R": "right"}
#: clinical scores of the trial (config ``clinical``) -> display names
_SCORES = {"caps5_total": "CAPS-5", "madrs_total": "MADRS"}
_MINUS = "\u2212"  # − (minus sign)
_EN_DASH = "\u2013"  # – (undirected pair)
_ARROW = "\u2192"  # → (directed: from → to)
_TIMES = "\u00d7"  # ×


def _words(label: str) -> str:
    """``conflictRegulation`` → "conflict regulation"; ``user_label`` → "user label"."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", str(label)).replace("_", " ").lower()


def roi_name(label: str) -> str:
    """Display name of an atlas ROI label: ``vmpfc`` → "vmPFC", ``dacc_L`` → "left dACC".

    A user atlas's label without a known name is shown in words (``my_roi`` → "my roi").
    """
    base, _, hemi = str(label).rpartition("_")
    if base and hemi in _HEMISPHERES:
        return f"{_HEMISPHERES[hemi]} {roi_name(base)}"
    return ROI_DISPLAY_NAMES.get(label, _words(label))


def contrast_name(contrast: str) -> str:
    """``fearfulMinusNeutral`` → "fearful − neutral"; ``conflictRegulation`` → "conflict regulation"."""
    return f" {_MINUS} ".join(_words(part) for part in re.split(r"Minus(?=[A-Z])", contrast))


def _input_name(inp: str, task: str | None) -> str:
    """A DCM input in words: ``fearful`` of task ``faces`` → "fearful faces"; ``faces`` → "faces"."""
    words = _words(inp)
    return words if task is None or _words(task) in words else f"{words} {_words(task)}"


def dcm_parameter_name(parameter: str, task: str | None = None) -> str:
    """A DCM parameter (:func:`ptsd_bidsapp.contracts.dcm_parameter_names`) in words.

    ``B_fearful_amygdala-vmpfc`` (task ``faces``) → "amygdala → vmPFC modulation by fearful faces";
    ``A_amygdala-amygdala`` → "amygdala self-connection".
    """
    p = parse_dcm_parameter(parameter)
    if p.field in ("A", "B"):
        link = (f"{roi_name(p.source)} self-connection" if p.source == p.target
                else f"{roi_name(p.source)} {_ARROW} {roi_name(p.target)}")
        if p.field == "A":
            return link if p.source == p.target else f"{link} connection"
        return f"{link} modulation by {_input_name(p.input, task)}"
    if p.field == "C":
        return f"{_input_name(p.input, task)} input to {roi_name(p.target)}"
    if p.field == "transit":
        return f"{roi_name(p.region)} transit time"
    if p.field == "decay":
        return "haemodynamic decay"
    return "intra-/extravascular signal ratio (epsilon)"


def measure_name(measure: str) -> str:
    """Human-readable name of a measure id (module docstring); ``ValueError`` if not an id."""
    m = parse_measure_id(measure)
    task = _words(m.task)
    if m.kind == "dcm":
        return f"{dcm_parameter_name(m.parameter, m.task)} (DCM, {task})"
    if m.kind == "fc":
        return f"{roi_name(m.source)}{_EN_DASH}{roi_name(m.target)} functional connectivity, {task}"
    condition = f"{task} ({contrast_name(m.contrast)})"
    if m.kind == "activation":
        return f"{roi_name(m.roi)} activation, {condition}"
    pair = (f"{roi_name(m.source)} {_ARROW} {roi_name(m.target)}" if m.directed
            else f"{roi_name(m.source)}{_EN_DASH}{roi_name(m.target)}")
    return f"{pair} gPPI, {condition}"


def score_name(score: str) -> str:
    """A clinical score column: ``caps5_total`` → "CAPS-5"; unknown scores in words."""
    return _SCORES.get(score, _words(score))


def covariate_name(covariate: str) -> str:
    """A PEB design column (:func:`ptsd_bidsapp.group.dcm_group.peb_design`) in words.

    ``improvement_x_drug`` → "improvement × drug"; ``mean`` → "group mean".
    """
    if covariate == "mean":
        return "group mean"
    return f" {_TIMES} ".join(score_name(part) for part in str(covariate).split("_x_"))


def feature_name(feature: str) -> str:
    """An elastic-net predictor (:func:`ptsd_bidsapp.group.models.model_design`) in words.

    ``delta_<measure id>`` → "Δ <measure name>"; ``delta_<id>_x_drug_ketamine`` →
    "Δ <measure name> × ketamine"; ``drug_ketamine`` → "ketamine arm";
    ``improvement_madrs_total`` → "MADRS improvement".
    """
    feature = str(feature)
    head, sep, arm = feature.partition("_x_drug_")
    if sep:
        return f"{feature_name(head)} {_TIMES} {_words(arm)}"
    if feature.startswith("delta_"):
        return f"\u0394 {measure_name(feature.removeprefix('delta_'))}"
    if feature.startswith("drug_"):
        return f"{_words(feature.removeprefix('drug_'))} arm"
    if feature.startswith("improvement_"):
        return f"{score_name(feature.removeprefix('improvement_'))} improvement"
    return _words(feature)
