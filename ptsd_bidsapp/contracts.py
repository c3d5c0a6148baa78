"""The identifiers other modules exchange: built and parsed here, nowhere else.

Every contract below has one builder and one parser; the rest of the package calls them
(ARCHITECTURE "Contracts"). This module imports nothing of ours.

Measure identifiers (ARCHITECTURE Contract 2)
---------------------------------------------
==================  ==========================================  ============================================
kind                identifier                                  example
==================  ==========================================  ============================================
``activation``      ``activation_<task>_<contrast>_<roi>``      ``activation_conflict_conflictRegulation_dacc``
``gppi``            ``gppi_<task>_<contrast>_<roiA>-<roiB>``    ``gppi_faces_fearfulMinusNeutral_vmpfc-amygdala``
``gppi_directed``   ``gppidir_<task>_<contrast>_<seed>-<tgt>``  ``gppidir_faces_fearfulMinusNeutral_amygdala-vmpfc``
``fc``              ``fc_<task>_<roiA>-<roiB>``                 ``fc_rest_vmpfc-antinsula``
``dcm``             ``dcm_<task>_<parameter name>``             ``dcm_faces_B_fearful_amygdala-vmpfc``
==================  ==========================================  ============================================

Undirected pairs (``gppi``, ``fc``) are written in atlas order (A before B); a pattern
over them matches a pair written in either order (:func:`match_measures`).

DCM parameter vector (SPM12 r7771 ``spm_vec`` of ``pE`` from ``spm_dcm_fmri_priors``)
----------------------------------------------------------------------------------
``A`` column-major (``a[to, from]``, "to" fastest), ``B`` input by input (each
column-major), ``C`` column-major (``c[to, input]``), ``transit`` (one per region),
``decay`` (ONE, shared by all regions — r7771; the 2016 revision $Id 6759 had one per
region), ``epsilon`` (one): ``n^2 (1 + m) + n m + n + 2`` parameters for ``n`` regions and
``m`` inputs (:func:`dcm_n_parameters`: 20 for 2 regions with one driving and one
modulatory input, where the 2016 layout had 21).
Names: ``A_<from>-<to>``, ``B_<input>_<from>-<to>``, ``C_<input>_<to>``,
``transit_<region>``, ``decay``, ``epsilon``.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

__all__ = [
    "MEASURE_KINDS",
    "MeasureId",
    "FEATURE_COLUMNS",
    "check_label",
    "activation_id",
    "gppi_id",
    "gppi_directed_id",
    "fc_id",
    "dcm_measure_id",
    "parse_measure_id",
    "match_measures",
    "UnmatchedPatternError",
    "DCM_FIELDS",
    "dcm_field_sizes",
    "dcm_n_parameters",
    "dcm_parameter_names",
    "parse_dcm_parameter",
    "DCMParameter",
]

#: columns of the participant features table (ARCHITECTURE Contract 3)
FEATURE_COLUMNS = ["measure", "value", "task", "kind", "qc_pass", "note"]

#: measure kind -> identifier prefix
MEASURE_KINDS = {"activation": "activation", "gppi": "gppi", "gppi_directed": "gppidir", "fc": "fc",
                 "dcm": "dcm"}
_KIND_OF_PREFIX = {v: k for k, v in MEASURE_KINDS.items()}
_LABEL = re.compile(r"^[A-Za-z0-9]+(?:_[A-Za-z0-9]+)*$")
_TOKEN = re.compile(r"^[A-Za-z0-9]+$")


def check_label(label: str, what: str = "label", allow_underscore: bool = True) -> str:
    """Return ``label`` if it can be part of an identifier, else raise ``ValueError``.

    ROI labels may contain ``_`` (``dacc_L``) but never ``-`` (the pair separator); task,
    contrast and input labels are alphanumeric (BIDS labels).
    """
    label = str(label)
    pattern = _LABEL if allow_underscore else _TOKEN
    if not pattern.match(label):
        allowed = "letters, digits and '_'" if allow_underscore else "letters and digits"
        raise ValueError(f"{what} {label!r} cannot be part of an identifier: use {allowed} only")
    return label


@dataclass(frozen=True)
class MeasureId:
    """A parsed measure identifier (fields not used by a kind are ``None``)."""

    kind: str
    task: str
    contrast: str | None = None
    roi: str | None = None
    source: str | None = None
    target: str | None = None
    parameter: str | None = None

    @property
    def id(self) -> str:
        """The identifier string (inverse of :func:`parse_measure_id`)."""
        if self.kind == "activation":
            return activation_id(self.task, self.contrast, self.roi)
        if self.kind == "gppi":
            return gppi_id(self.task, self.contrast, self.source, self.target)
        if self.kind == "gppi_directed":
            return gppi_directed_id(self.task, self.contrast, self.source, self.target)
        if self.kind == "fc":
            return fc_id(self.task, self.source, self.target)
        return dcm_measure_id(self.task, self.parameter)

    @property
    def directed(self) -> bool:
        return self.kind in ("gppi_directed", "dcm")


def activation_id(task: str, contrast: str, roi: str) -> str:
    """``activation_<task>_<contrast>_<roi>``: ROI effect size (percent signal change)."""
    return f"activation_{check_label(task, 'task', False)}_{check_label(contrast, 'contrast', False)}_" \
           f"{check_label(roi, 'ROI')}"


def _pair(a: str, b: str) -> str:
    return f"{check_label(a, 'ROI')}-{check_label(b, 'ROI')}"


def gppi_id(task: str, contrast: str, roi_a: str, roi_b: str) -> str:
    """``gppi_<task>_<contrast>_<roiA>-<roiB>``: symmetrised gPPI (pass the pair in atlas order)."""
    return f"gppi_{check_label(task, 'task', False)}_{check_label(contrast, 'contrast', False)}_{_pair(roi_a, roi_b)}"


def gppi_directed_id(task: str, contrast: str, seed: str, target: str) -> str:
    """``gppidir_<task>_<contrast>_<seed>-<target>``: gPPI with ``seed`` as the PPI seed."""
    return f"gppidir_{check_label(task, 'task', False)}_{check_label(contrast, 'contrast', False)}_" \
           f"{_pair(seed, target)}"


def fc_id(task: str, roi_a: str, roi_b: str) -> str:
    """``fc_<task>_<roiA>-<roiB>``: task-free connectivity, Fisher z (pair in atlas order)."""
    return f"fc_{check_label(task, 'task', False)}_{_pair(roi_a, roi_b)}"


def dcm_measure_id(task: str, parameter: str) -> str:
    """``dcm_<task>_<parameter name>`` (:func:`dcm_parameter_names`)."""
    parse_dcm_parameter(parameter)
    return f"dcm_{check_label(task, 'task', False)}_{parameter}"


def parse_measure_id(measure: str) -> MeasureId:
    """Parse an identifier built by this module; ``ValueError`` names what is wrong."""
    prefix, _, rest = str(measure).partition("_")
    if prefix not in _KIND_OF_PREFIX or not rest:
        raise ValueError(f"{measure!r} is not a measure identifier (known prefixes: "
                         f"{', '.join(sorted(_KIND_OF_PREFIX))})")
    kind = _KIND_OF_PREFIX[prefix]
    task, _, rest = rest.partition("_")
    if not _TOKEN.match(task) or not rest:
        raise ValueError(f"{measure!r}: no task label")
    if kind == "dcm":
        parse_dcm_parameter(rest)
        return MeasureId(kind, task, parameter=rest)
    if kind == "fc":
        source, target = _split_pair(measure, rest)
        return MeasureId(kind, task, source=source, target=target)
    contrast, _, rest = rest.partition("_")
    if not _TOKEN.match(contrast) or not rest:
        raise ValueError(f"{measure!r}: no contrast label")
    if kind == "activation":
        check_label(rest, "ROI")
        return MeasureId(kind, task, contrast=contrast, roi=rest)
    source, target = _split_pair(measure, rest)
    return MeasureId(kind, task, contrast=contrast, source=source, target=target)


def _split_pair(measure: str, text: str) -> tuple[str, str]:
    parts = text.split("-")
    if len(parts) != 2 or not all(_LABEL.match(p) for p in parts):
        raise ValueError(f"{measure!r}: {text!r} is not an ROI pair '<roiA>-<roiB>'")
    return parts[0], parts[1]


def pattern_task(pattern: str) -> str | None:
    """The task label a measure pattern names (``activation_conflict_*`` -> ``conflict``).

    ``None`` when the task position holds a wildcard (``activation_*``, ``*_faces_*``) or the
    pattern does not start with a measure prefix: such a pattern is not tied to one task.
    """
    prefix, _, rest = str(pattern).partition("_")
    if prefix not in _KIND_OF_PREFIX:
        return None
    task = rest.partition("_")[0]
    return task if _TOKEN.match(task) else None


class UnmatchedPatternError(ValueError):
    """A measure pattern matched no measure (a configuration error)."""

    def __init__(self, pattern: str, suggestions: Sequence[str]):
        self.pattern = pattern
        self.suggestions = list(suggestions)
        hint = f"; nearest ids: {', '.join(self.suggestions)}" if self.suggestions else ""
        super().__init__(f"measure pattern {pattern!r} matches no measure{hint}")


def _swapped(pattern: str) -> str | None:
    """The pattern with its ROI pair reversed, for undirected kinds (``None`` otherwise)."""
    prefix = pattern.partition("_")[0]
    if prefix not in ("gppi", "fc"):
        return None
    head, sep, pair = pattern.rpartition("_")
    parts = pair.split("-")
    if not sep or len(parts) != 2:
        return None
    return f"{head}_{parts[1]}-{parts[0]}"


def match_measures(patterns: Iterable[str], measures: Iterable[str], strict: bool = True) -> dict[str, list[str]]:
    """Which measures each fnmatch pattern selects.

    Undirected pairs (``gppi_*``, ``fc_*``) match in either order:
    ``fc_rest_amygdala-*`` selects ``fc_rest_vmpfc-amygdala``. Directed ids
    (``gppidir_*``, ``dcm_*``) match only as written.

    Parameters
    ----------
    patterns : iterable of str
    measures : iterable of str
        Available identifiers.
    strict : bool
        Raise :class:`UnmatchedPatternError` (naming the pattern and the nearest ids) when
        a pattern matches nothing.

    Returns
    -------
    dict
        pattern -> sorted list of matched identifiers (sorted as ``measures`` is given).
    """
    measures = list(dict.fromkeys(measures))
    out = {}
    for pattern in patterns:
        alternatives = [pattern] + [p for p in [_swapped(pattern)] if p]
        hits = [m for m in measures if any(fnmatch.fnmatchcase(m, p) for p in alternatives)]
        if not hits and strict:
            raise UnmatchedPatternError(pattern, difflib.get_close_matches(pattern, measures, n=3, cutoff=0.5))
        out[pattern] = hits
    return out


# --------------------------------------------------------------------------- DCM vector
#: fields of the DCM parameter vector, in ``spm_vec`` order
DCM_FIELDS = ("A", "B", "C", "transit", "decay", "epsilon")


#: noise models of the session DCM (config ``dcm.noise``): SPM's white noise per region, or
#: AR(1) noise per region (pre-whitened; :func:`ptsd_bidsapp.dcm.participant.fit_session_dcm`)
DCM_NOISE_MODELS = ("white", "ar1")


def dcm_field_sizes(n_regions: int, n_inputs: int) -> dict[str, int]:
    """Number of entries of each field (SPM12 r7771 ``spm_dcm_fmri_priors``, one-state)."""
    n, m = int(n_regions), int(n_inputs)
    return {"A": n * n, "B": m * n * n, "C": n * m, "transit": n, "decay": 1, "epsilon": 1}


def dcm_n_parameters(n_regions: int, n_inputs: int) -> int:
    """Length of the DCM parameter vector: ``n^2 (1 + m) + n m + n + 2``."""
    return sum(dcm_field_sizes(n_regions, n_inputs).values())


def dcm_parameter_names(regions: Sequence[str], inputs: Sequence[str]) -> list[str]:
    """Names of the DCM parameter vector, in ``spm_vec`` order (see module docstring)."""
    regions = [check_label(r, "region") for r in regions]
    inputs = [check_label(i, "DCM input", False) for i in inputs]
    names = [f"A_{src}-{dst}" for src in regions for dst in regions]  # column-major: "to" fastest
    for inp in inputs:
        names += [f"B_{inp}_{src}-{dst}" for src in regions for dst in regions]
    for inp in inputs:
        names += [f"C_{inp}_{dst}" for dst in regions]
    names += [f"transit_{r}" for r in regions] + ["decay", "epsilon"]
    return names


@dataclass(frozen=True)
class DCMParameter:
    """A parsed DCM parameter name."""

    field: str
    input: str | None = None
    source: str | None = None
    target: str | None = None
    region: str | None = None

    @property
    def is_connection(self) -> bool:
        return self.field in ("A", "B")

    @property
    def is_between_regions(self) -> bool:
        return self.is_connection and self.source != self.target


def parse_dcm_parameter(name: str) -> DCMParameter:
    """Parse a name built by :func:`dcm_parameter_names`."""
    name = str(name)
    if name in ("decay", "epsilon"):
        return DCMParameter(name)
    field, _, rest = name.partition("_")
    if field == "transit" and _LABEL.match(rest):
        return DCMParameter(field, region=rest)
    if field == "A":
        source, target = _split_pair(name, rest)
        return DCMParameter(field, source=source, target=target)
    if field in ("B", "C"):
        inp, _, rest = rest.partition("_")
        if _TOKEN.match(inp) and rest:
            if field == "C" and _LABEL.match(rest):
                return DCMParameter(field, input=inp, target=rest)
            if field == "B":
                source, target = _split_pair(name, rest)
                return DCMParameter(field, input=inp, source=source, target=target)
    raise ValueError(f"{name!r} is not a DCM parameter name (fields: {', '.join(DCM_FIELDS)})")
