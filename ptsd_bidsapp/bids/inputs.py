"""Input discovery with pybids (SPEC §2).

One table of queries (:data:`QUERIES`) describes every input; :func:`collect_subject`
turns it into one :class:`RunInputs` per subject/session/task/run, checking that
every file exists and that the repetition time in the JSON sidecar agrees with
the NIfTI header. Problems raise :class:`InputError` naming the file and the fix,
except the two whose scope is smaller than the subject: a run that cannot be used
(unreadable or 0-byte BOLD, events lacking a configured condition) is an
:class:`UnusableRun` and a configured session without any preprocessed BOLD a
:class:`MissingSession`; the subject's other runs and sessions go on.
:func:`collect_runs` is the strict form (every problem raises).

Size (~630 lines): one module because every check is a row of the fault model
(``docs/fault_model.md``) on the same pybids layout — the index keyed by the dataset's
signature, sidecar/header agreement, clinical tables — and splitting it would scatter that table.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import nibabel as nib
import pandas as pd

from ptsd_bidsapp import errors
from ptsd_bidsapp.errors import InputError

LOGGER = logging.getLogger("ptsd_bidsapp.inputs")

#: pybids queries for each input; ``{space}`` is filled from the config.
QUERIES: dict[str, dict[str, Any]] = {
    "bold": {"desc": "preproc", "suffix": "bold", "extension": [".nii.gz", ".nii"], "scope": "derivatives"},
    "mask": {"desc": "brain", "suffix": "mask", "extension": [".nii.gz", ".nii"], "scope": "derivatives"},
    # fMRIPrep >= 20.2 names it desc-confounds_timeseries; older releases desc-confounds_regressors.
    "confounds": {"desc": "confounds", "suffix": ["timeseries", "regressors"], "extension": ".tsv", "scope": "derivatives"},
    "events": {"suffix": "events", "extension": ".tsv", "scope": "raw"},
}

#: Relative tolerance when comparing RepetitionTime in JSON and the NIfTI header.
TR_TOLERANCE = 1e-3


@dataclass
class RunInputs:
    """Everything the participant level needs for one BOLD run.

    Attributes
    ----------
    subject, session, task : str
        BIDS labels.
    run : int or None
        Run index if the dataset has several runs per task.
    bold, mask, confounds : Path
        fMRIPrep preprocessed BOLD, brain mask and confounds TSV.
    events : Path or None
        Raw ``events.tsv`` (None for task-free runs).
    tr : float
        Repetition time in seconds (JSON, cross-checked with the header).
    slice_time_ref : float
        Slice-timing reference as a fraction of TR (``StartTime / TR``; 0 without slice timing).
    n_volumes : int
        Number of volumes in the BOLD series.
    entities : dict
        Source entities kept for the output names (sub, ses, task, run, space, res).
    """

    subject: str
    session: str
    task: str
    bold: Path
    mask: Path
    confounds: Path
    events: Path | None
    tr: float
    slice_time_ref: float
    n_volumes: int
    run: int | None = None
    entities: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)


class UnusableRunError(InputError):
    """A problem that makes one run unusable but leaves the subject's other runs computable."""


@dataclass
class UnusableRun:
    """A run that cannot be used (its measures are ``n/a`` with ``reason``)."""

    subject: str
    session: str
    task: str
    run: int | None
    bold: Path
    reason: str


@dataclass
class MissingSession:
    """A configured session without any preprocessed BOLD of the subject."""

    subject: str
    session: str
    reason: str


@dataclass
class SubjectInputs:
    """Everything found for one subject: usable runs, unusable runs, missing sessions."""

    runs: list
    unusable: list = field(default_factory=list)
    missing_sessions: list = field(default_factory=list)


#: Top-level folders of a raw dataset that pybids does not index (``bids.layout`` defaults);
#: the derivatives are indexed (and signed) from their own root.
_UNINDEXED = {"code", "derivatives", "sourcedata", "stimuli", "models"}


def dataset_signature(roots: list[Path], skip_top: Mapping[Path, set] | None = None) -> str:
    """Hash of the relative path, size and modification time of every file under ``roots``.

    Symbolic links are followed, as pybids follows them; a link to a folder that is one of its
    own ancestors (a loop) is refused instead of walked forever.

    Parameters
    ----------
    roots : list of Path
        Dataset roots (raw dataset, fMRIPrep derivatives).
    skip_top : mapping, optional
        Per root, top-level folder names not to walk (not indexed by pybids).

    Returns
    -------
    str
        SHA-1 hex digest; it changes when a file is added, removed, replaced or edited.

    Raises
    ------
    InputError
        Exit 65 (DATAERR) naming a symbolic link that loops.
    """
    digest = hashlib.sha1()
    skip_top = dict(skip_top or {})

    def refuse(link: str, target: str) -> InputError:
        return InputError(
            f"symbolic link loop in the input dataset: {link} points to {target}, which contains the link "
            "itself; remove or fix the link (the dataset cannot be indexed)", link, errors.DATAERR)

    for root in roots:
        root = Path(root)
        stack = [(str(root), (os.path.realpath(root),))]
        while stack:
            folder, ancestors = stack.pop()
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError as err:
                if err.errno == errno.ELOOP:
                    raise refuse(folder, "itself") from err
                raise InputError(f"cannot read folder {folder}: {err.strerror}", folder, errors.NOINPUT) from err
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if folder == str(root) and entry.name in skip_top.get(root, ()):
                    continue
                try:
                    is_dir = entry.is_dir(follow_symlinks=True)
                    info = entry.stat(follow_symlinks=True)
                except OSError as err:
                    if err.errno == errno.ELOOP:  # links pointing at each other
                        raise refuse(entry.path, os.readlink(entry.path)) from err
                    continue  # dangling link: pybids skips it too
                if is_dir:
                    real = os.path.realpath(entry.path)
                    if real in ancestors:
                        raise refuse(entry.path, real)
                    stack.append((entry.path, ancestors + (real,)))
                    continue
                rel = os.path.relpath(entry.path, root)
                digest.update(f"{root.name}/{rel}\0{info.st_size}\0{info.st_mtime_ns}\n".encode("utf-8", "replace"))
    return digest.hexdigest()


def _invalid_json_files(roots: list[Path]) -> list[str]:
    """JSON files under ``roots`` that do not parse, each with the parser's message."""
    bad = []
    for root in roots:
        for path in sorted(Path(root).rglob("*.json")):
            if any(part.startswith(".") for part in path.relative_to(root).parts):
                continue
            try:
                json.loads(path.read_bytes().decode("utf-8"))
            except (ValueError, OSError) as err:
                bad.append(f"{path}: {err}")
    return bad


def subject_ignore_pattern(participants: list[str] | None):
    """pybids ``ignore`` pattern skipping every ``sub-*`` folder but those of ``participants`` (None: none).

    pybids matches it against each path relative to the dataset root (``/sub-02/ses-pre/...``) and
    does not descend into a folder it ignores, so one subject of many is indexed in the time of one.
    """
    if not participants:
        return None
    labels = "|".join(re.escape(label) for label in sorted(set(participants)))
    return re.compile(rf"^/sub-(?!(?:{labels})(?:/|$))")


def make_layout(bids_dir: Path, derivatives: Path, work_dir: Path, reset_database: bool = False,
                participants: list[str] | None = None):
    """Index ``bids_dir`` with the fMRIPrep ``derivatives`` (pybids), database cached in ``work_dir``.

    The database lives in ``work_dir/bids_db/<signature>/<selection>``, keyed by :func:`dataset_signature`
    of both datasets (path, size and modification time of every indexed file): a rerun after a
    file was fixed, added or removed indexes the dataset afresh instead of trusting a stale
    index; databases of earlier signatures are removed. With ``participants``, only those subjects'
    folders are indexed (:func:`subject_ignore_pattern`; ``<selection>`` names the set), so a job of one
    subject does not index the whole dataset; indexes of other selections of the same dataset state
    are kept (concurrent jobs of a cluster may share the work dir).

    Raises
    ------
    InputError
        If a folder is missing (exit 66), the derivatives lack a valid ``dataset_description.json``,
        a JSON sidecar is not valid JSON or a symbolic link loops (65).
    """
    from bids import BIDSLayout, BIDSLayoutIndexer

    bids_dir, derivatives = Path(bids_dir), Path(derivatives)
    if not bids_dir.is_dir():
        raise InputError(f"bids_dir {bids_dir} does not exist or is not a folder", bids_dir)
    if not (bids_dir / "dataset_description.json").is_file():
        raise InputError(
            f"{bids_dir / 'dataset_description.json'} is missing: bids_dir must be the root of a BIDS dataset",
            bids_dir / "dataset_description.json",
        )
    if not derivatives.is_dir():
        raise InputError(
            f"fMRIPrep derivatives folder {derivatives} does not exist; run fMRIPrep first or pass --derivatives PATH",
            derivatives,
        )
    description = derivatives / "dataset_description.json"
    if not description.is_file():
        raise InputError(
            f"{description} is missing: the fMRIPrep output folder must be a BIDS derivative dataset", description
        )
    try:
        desc = json.loads(description.read_text())
    except ValueError as err:
        raise InputError(f"{description} is not valid JSON: {err}", description, errors.DATAERR) from err
    if "GeneratedBy" not in desc and "PipelineDescription" not in desc:
        raise InputError(
            f"{description} has neither 'GeneratedBy' nor 'PipelineDescription'; pybids needs one to index the derivatives",
            description,
            errors.DATAERR,
        )
    roots = [bids_dir, derivatives]  # the raw walk skips derivatives/: they are signed from their own root
    signature = dataset_signature(roots, {bids_dir: _UNINDEXED, derivatives: {"derivatives"}})
    databases = Path(work_dir) / "bids_db"
    ignore = subject_ignore_pattern(participants)
    selection = "all" if ignore is None else "sub-" + hashlib.sha1(ignore.pattern.encode()).hexdigest()[:12]
    database = databases / signature[:20] / selection
    databases.mkdir(parents=True, exist_ok=True)
    for old in databases.iterdir():  # indexes of an earlier state of the dataset (and the unkeyed layout)
        if old != database.parent:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
    indexer = None
    if ignore is not None:
        from bids.layout.validation import DEFAULT_LOCATIONS_TO_IGNORE

        # pybids' default ignores (code/, sourcedata/, ...; dot files always) plus the other subjects
        indexer = BIDSLayoutIndexer(validate=False, ignore=[*DEFAULT_LOCATIONS_TO_IGNORE, ignore])
    try:
        return BIDSLayout(
            str(bids_dir),
            validate=False,
            derivatives=[str(derivatives)],
            database_path=str(database),
            reset_database=reset_database,
            indexer=indexer,
        )
    except (ValueError, OSError) as err:  # pybids: OSError "Error occurred while trying to decode JSON"
        shutil.rmtree(database, ignore_errors=True)  # never keep a half-built index
        bad = _invalid_json_files(roots)
        if bad:
            raise InputError("invalid JSON file(s) in the input datasets (pybids cannot index them):\n  - "
                             + "\n  - ".join(bad[:10]), bad[0].split(": ")[0], errors.DATAERR) from err
        if isinstance(err, OSError):
            raise  # an I/O problem (work dir, disk): mapped to its exit code by the CLI
        raise InputError(f"cannot index {bids_dir} with pybids: {err}", bids_dir, errors.DATAERR) from err


def select_participants(layout, labels: list[str] | None) -> list[str]:
    """Subjects to process: all with preprocessed BOLD, or the requested ``labels``.

    Raises
    ------
    InputError
        Exit 18 when a requested label is unknown or nothing matches.
    """
    available = sorted(set(layout.get_subjects(scope="derivatives", suffix="bold", desc="preproc")))
    if labels:
        missing = [lab for lab in labels if lab not in available]
        if missing:
            # a layout indexed for the requested subjects only (make_layout's participants) does not
            # know the others: list the subject folders of the derivatives instead
            roots = [Path(d.root) for d in layout.derivatives.values()] or [Path(layout.root)]
            available = sorted({p.name[len("sub-"):] for root in roots for p in root.glob("sub-*") if p.is_dir()})
            raise InputError(
                "participant label(s) not found with fMRIPrep outputs: "
                + ", ".join(f"sub-{m}" for m in missing)
                + (f" (available: {', '.join('sub-' + a for a in available)})" if available else ""),
                exit_code=errors.NO_MATCH,
            )
        return sorted(labels)
    if not available:
        raise InputError("no subject with fMRIPrep preprocessed BOLD was found", exit_code=errors.NO_MATCH)
    return available


def _query(layout, name: str, entities: Mapping[str, Any], filters: Mapping[str, Any]) -> list:
    query = dict(QUERIES[name])
    query.update(entities)
    query.update(filters.get(name, {}))
    return layout.get(return_type="object", **query)


def _entity_matches(value: Any, wanted: Any) -> bool:
    """pybids' rule for one entity of a query: ``None`` = the entity is absent, a list = any of its values."""
    if wanted is None:
        return value is None
    if isinstance(wanted, (list, tuple)):
        return value in wanted
    return value == wanted


class _SubjectFiles:
    """One subject's files of each query in :data:`QUERIES`, fetched from pybids once per query.

    ``get(name, entities)`` returns what ``_query(layout, name, dict(entities, subject=...), filters)``
    returns -- the files of ``layout.get`` for the query, the subject and the user's filters, in pybids'
    order -- keeping those whose other ``entities`` match (:func:`_entity_matches`); an entity the
    user's filters set for that query is left to the filter, as in ``_query``, where the filter's
    value replaces the run's. Each pybids query costs tens of milliseconds (its SQL is built anew),
    so a subject's ≈ 30 lookups become 4 queries.
    """

    def __init__(self, layout, subject: str, filters: Mapping[str, Any]):
        self.layout, self.subject, self.filters = layout, subject, filters
        self._files: dict[str, list] = {}

    def get(self, name: str, entities: Mapping[str, Any]) -> list:
        if name not in self._files:
            found = _query(self.layout, name, {"subject": self.subject}, self.filters)
            self._files[name] = [(f, f.get_entities()) for f in found]
        overridden = self.filters.get(name, {})
        wanted = {k: v for k, v in entities.items() if k != "subject" and k not in overridden}
        return [f for f, ents in self._files[name]
                if all(_entity_matches(ents.get(k), v) for k, v in wanted.items())]


def _repetition_time(bold: Path, metadata: Mapping[str, Any]) -> tuple[float, int]:
    """RepetitionTime (s) from JSON, cross-checked with the NIfTI header; returns (TR, n_volumes)."""
    sidecar = Path(str(bold).replace(".nii.gz", ".json").replace(".nii", ".json"))
    try:
        img = nib.load(str(bold))
        shape = img.shape
    except Exception as err:  # nibabel raises several types on corrupt files
        raise UnusableRunError(f"cannot read BOLD image {bold}: {err}", bold, errors.DATAERR) from err
    if len(shape) != 4:
        raise UnusableRunError(f"BOLD image {bold} is not 4D (shape {shape})", bold, errors.DATAERR)
    if "RepetitionTime" not in metadata:
        raise InputError(f"RepetitionTime missing from {sidecar}", sidecar, errors.DATAERR)
    try:
        tr = float(metadata["RepetitionTime"])
    except (TypeError, ValueError) as err:
        raise InputError(f"RepetitionTime {metadata['RepetitionTime']!r} in {sidecar} is not a number of seconds",
                         sidecar, errors.DATAERR) from err
    if not (tr > 0 and tr < float("inf")):
        raise InputError(f"RepetitionTime {metadata['RepetitionTime']!r} in {sidecar} must be a positive number of "
                         f"seconds (NIfTI header of {bold.name}: {img.header.get_zooms()[3]})", sidecar, errors.DATAERR)
    header_tr = float(img.header.get_zooms()[3])
    unit = img.header.get_xyzt_units()[1]
    if unit == "msec":
        header_tr /= 1000.0
    elif unit == "usec":
        header_tr /= 1e6
    if header_tr > 0 and abs(header_tr - tr) > TR_TOLERANCE * tr:
        raise InputError(
            f"RepetitionTime {tr} s in {sidecar} disagrees with the NIfTI header of {bold} ({header_tr} s); "
            "fix the sidecar or the header",
            sidecar,
            errors.DATAERR,
        )
    return tr, int(shape[3])


def collect_runs(
    layout,
    subject: str,
    sessions: list[str],
    tasks: Mapping[str, Mapping[str, Any]],
    space: str = "MNI152NLin2009cAsym",
    filters: Mapping[str, Any] | None = None,
) -> list[RunInputs]:
    """Collect every run of one subject, strictly: an unusable run or a missing session raises.

    Same parameters as :func:`collect_subject`.

    Returns
    -------
    list of RunInputs

    Raises
    ------
    InputError
        Naming the missing or inconsistent file (BOLD, mask, confounds, events, TR).
    """
    found = collect_subject(layout, subject, sessions, tasks, space, filters)
    if found.missing_sessions:
        raise InputError(found.missing_sessions[0].reason)
    if found.unusable:
        gap = found.unusable[0]
        raise InputError(gap.reason, gap.bold, errors.DATAERR)
    return found.runs


def collect_subject(
    layout,
    subject: str,
    sessions: list[str],
    tasks: Mapping[str, Mapping[str, Any]],
    space: str = "MNI152NLin2009cAsym",
    filters: Mapping[str, Any] | None = None,
) -> SubjectInputs:
    """Collect every run of one subject, setting aside unusable runs and missing sessions.

    Parameters
    ----------
    layout : bids.BIDSLayout
        From :func:`make_layout`.
    subject : str
        Subject label without ``sub-``.
    sessions : list of str
        Session labels to collect.
    tasks : mapping
        The config ``tasks`` section (labels and designs).
    space : str
        Template space of the preprocessed BOLD.
    filters : mapping, optional
        ``--bids-filter-file`` content: per-query extra pybids filters.

    Returns
    -------
    SubjectInputs
        ``runs`` (usable), ``unusable`` (:class:`UnusableRun`: unreadable, 0-byte or non-4D BOLD, events
        lacking a configured condition) and ``missing_sessions`` (:class:`MissingSession`: no
        preprocessed BOLD of any configured task in the session).

    Raises
    ------
    InputError
        Naming the missing or inconsistent file (mask, confounds, events, TR; one task's BOLD
        missing in a session that has others); also when no session has any BOLD.
    """
    filters = dict(filters or {})
    files = _SubjectFiles(layout, subject, filters)
    found = SubjectInputs(runs=[])
    for session in sessions:
        bolds_by_task = {task: files.get("bold", {"session": session, "task": task, "space": space})
                         for task in tasks}
        if not any(bolds_by_task.values()):
            found.missing_sessions.append(MissingSession(
                subject, session, f"no preprocessed BOLD for sub-{subject} ses-{session} in space {space} "
                f"(none of the tasks {', '.join(tasks)} in the fMRIPrep derivatives)"))
            continue
        for task, spec in tasks.items():
            bolds = bolds_by_task[task]
            if not bolds:
                raise InputError(
                    f"no preprocessed BOLD for sub-{subject} ses-{session} task-{task} in space {space} "
                    f"(expected sub-{subject}/ses-{session}/func/sub-{subject}_ses-{session}_task-{task}_space-{space}"
                    "[_res-*]_desc-preproc_bold.nii.gz in the fMRIPrep derivatives)"
                )
            by_run: dict[Any, list] = {}
            for bold in bolds:
                by_run.setdefault(bold.get_entities().get("run"), []).append(bold)
            for run, candidates in sorted(by_run.items(), key=lambda kv: (kv[0] is not None, kv[0] or 0)):
                if len(candidates) > 1:
                    names = ", ".join(Path(c.path).name for c in candidates)
                    raise InputError(
                        f"several preprocessed BOLD files match sub-{subject} ses-{session} task-{task}: {names}; "
                        "select one with --bids-filter-file (e.g. {\"bold\": {\"resolution\": \"2\"}})",
                        Path(candidates[0].path),
                        errors.DATAERR,
                    )
                try:
                    found.runs.append(_run_inputs(layout, files, candidates[0], task, spec))
                except UnusableRunError as err:
                    label = f"sub-{subject} ses-{session} task-{task}" + (f" run-{run}" if run is not None else "")
                    found.unusable.append(UnusableRun(subject, session, task, run, Path(candidates[0].path),
                                                      f"{label}: {err}"))
    if len(found.missing_sessions) == len(sessions):
        raise InputError(f"no preprocessed BOLD for sub-{subject} in any of the sessions {', '.join(sessions)} "
                         f"(space {space})")
    return found


def _run_inputs(layout, files: _SubjectFiles, bold_file, task: str, spec: Mapping[str, Any]) -> RunInputs:
    ents = bold_file.get_entities()
    bold = Path(bold_file.path)
    base = {k: ents[k] for k in ("subject", "session", "task", "run") if k in ents}
    if "run" not in ents:
        base["run"] = None
    mask_ents = dict(base, space=ents.get("space"))
    if "resolution" in ents:
        mask_ents["resolution"] = ents["resolution"]
    masks = files.get("mask", mask_ents)
    if not masks:
        expected = bold.name.replace("desc-preproc_bold", "desc-brain_mask")
        raise InputError(f"brain mask {bold.parent / expected} is missing (needed for {bold.name})", bold.parent / expected)
    confounds = [c for c in files.get("confounds", base) if "space" not in c.get_entities()]
    if not confounds:
        stem = bold.name.split("_space-")[0]
        expected = bold.parent / f"{stem}_desc-confounds_timeseries.tsv"
        raise InputError(f"confounds file {expected} is missing (needed for {bold.name})", expected)
    events = None
    if spec.get("design") != "rest":
        found = files.get("events", base)
        if not found:
            stem = bold.name.split("_space-")[0]
            sub_dir = layout.root
            parts = [f"sub-{ents['subject']}"] + ([f"ses-{ents['session']}"] if "session" in ents else [])
            expected = Path(sub_dir, *parts, "func", f"{stem}_events.tsv")
            raise InputError(f"events file {expected} is missing (task '{task}' needs its trial_type onsets)", expected)
        events = Path(found[0].path)
        _check_events(events, spec)
    metadata = bold_file.get_metadata()
    tr, n_volumes = _repetition_time(bold, metadata)
    start_time = float(metadata.get("StartTime", 0.0) or 0.0)
    keep = {k: ents[k] for k in ("subject", "session", "task", "run", "space", "resolution") if k in ents}
    return RunInputs(
        subject=ents["subject"],
        session=ents.get("session"),
        task=task,
        run=ents.get("run"),
        bold=bold,
        mask=Path(masks[0].path),
        confounds=Path(confounds[0].path),
        events=events,
        tr=tr,
        slice_time_ref=min(max(start_time / tr, 0.0), 1.0),
        n_volumes=n_volumes,
        entities=keep,
        metadata=dict(metadata),
    )


def _check_events(events: Path, spec: Mapping[str, Any]) -> None:
    try:
        table = read_tsv(events)
    except InputError:
        raise
    except Exception as err:
        raise InputError(f"cannot read events file {events}: {err}", events, errors.DATAERR) from err
    missing = [c for c in ("onset", "duration", "trial_type") if c not in table.columns]
    if missing:
        raise InputError(f"events file {events} lacks column(s) {', '.join(missing)}", events, errors.DATAERR)
    absent = [c for c in spec.get("conditions") or [] if c not in set(table["trial_type"].astype(str))]
    if absent:
        raise UnusableRunError(
            f"events file {events} has no trial_type {', '.join(absent)} (configured conditions: {spec.get('conditions')})",
            events,
            errors.DATAERR,
        )


def read_tsv(path: Path, **kwargs) -> pd.DataFrame:
    """A BIDS TSV (UTF-8, ``n/a`` for missing values) as a DataFrame.

    Raises
    ------
    InputError
        Exit 65 (DATAERR) naming the file and the byte when it is not UTF-8 text, or the line
        when it is not a tab-separated table.
    """
    path = Path(path)
    try:
        return pd.read_csv(path, sep="\t", na_values="n/a", encoding="utf-8", **kwargs)
    except UnicodeDecodeError as err:
        raise InputError(f"{path} is not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start}): "
                         "save it as UTF-8 (BIDS requires it)", path, errors.DATAERR) from err
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise InputError(f"{path} is not a readable tab-separated table: {err}", path, errors.DATAERR) from err


def read_arms(bids_dir: Path, group_column: str = "group", arms: list[str] | None = None) -> pd.Series:
    """Treatment arm per subject label from ``participants.tsv``.

    Parameters
    ----------
    bids_dir : Path
        Raw BIDS dataset.
    group_column : str
        Column holding the arm (config ``clinical.group_column``).
    arms : list of str, optional
        The configured arms (``clinical.reference_group``, ``clinical.active_group``); any other
        value is an error (a typo such as ``"Ketamine "`` would otherwise become a third arm).

    Raises
    ------
    InputError
        If the file or the column is missing (66/65), the file is not UTF-8 (65), or a subject's
        arm is not one of ``arms`` (65, naming the subjects and the values).
    """
    path = Path(bids_dir) / "participants.tsv"
    if not path.is_file():
        raise InputError(f"{path} is missing: it must list each participant's treatment arm", path)
    table = read_tsv(path, dtype=str, keep_default_na=False)
    for column in ("participant_id", group_column):
        if column not in table.columns:
            hint = "; set clinical.group_column in the config" if column == group_column else ""
            raise InputError(f"{path} has no '{column}' column (treatment arm){hint}", path, errors.DATAERR)
    labels = table["participant_id"].str.replace("^sub-", "", regex=True)
    values = table[group_column].where(~table[group_column].isin(["n/a", ""]))
    if arms is not None:
        wrong = [(label, value) for label, value in zip(labels, values)
                 if isinstance(value, str) and value not in arms]
        if wrong:
            raise InputError(
                f"{path}: column '{group_column}' has value(s) that are not a configured treatment arm "
                f"({', '.join(repr(a) for a in arms)}; clinical.reference_group / clinical.active_group): "
                + ", ".join(f"sub-{label} {value!r}" for label, value in wrong), path, errors.DATAERR)
    return pd.Series(values.values, index=labels.values, name=group_column)


def read_clinical(bids_dir: Path, clinical: Mapping[str, Any], subjects: list[str] | None = None) -> pd.DataFrame:
    """Per-session clinical scores in long format (subject, session, <score columns>).

    Reads ``sub-<label>/sub-<label>_sessions.tsv`` files (``clinical.source: sessions``) or
    ``phenotype/<table>.tsv`` with ``participant_id`` and ``session_id`` columns.

    Raises
    ------
    InputError
        Exit 65 when a table is not UTF-8, lacks a column, or holds a score that is not a number
        (naming the file, subject, session and value); ``n/a`` is a missing score.
    """
    bids_dir = Path(bids_dir)
    columns = [c for c in (clinical.get("outcome"), clinical.get("covariate")) if c]
    frames = []
    if clinical.get("source", "sessions") == "phenotype":
        table_name = clinical["phenotype_table"]
        path = bids_dir / "phenotype" / (table_name if table_name.endswith(".tsv") else f"{table_name}.tsv")
        if not path.is_file():
            raise InputError(f"phenotype table {path} is missing", path)
        frames.append((path, read_tsv(path)))
    else:
        for path in sorted(bids_dir.glob("sub-*/sub-*_sessions.tsv")):
            table = read_tsv(path)
            table["participant_id"] = path.parent.name
            frames.append((path, table))
    rows = []
    for path, table in frames:
        for needed in ["session_id", *columns]:
            if needed not in table.columns:
                raise InputError(f"{path} has no '{needed}' column", path, errors.DATAERR)
        for _, row in table.iterrows():
            rec = {
                "subject": str(row["participant_id"]).removeprefix("sub-"),
                "session": str(row["session_id"]).removeprefix("ses-"),
            }
            for column in columns:
                value = row[column]
                if not pd.isna(value) and not isinstance(value, (int, float)):
                    try:
                        value = float(str(value).strip())
                    except ValueError:
                        raise InputError(
                            f"{path}: {column} of sub-{rec['subject']} ses-{rec['session']} is {value!r}, not a number "
                            "(write n/a for a missing score)", path, errors.DATAERR) from None
                rec[column] = value
            rows.append(rec)
    result = pd.DataFrame(rows, columns=["subject", "session", *columns])
    if subjects is not None:
        result = result[result["subject"].isin(subjects)]
    return result.reset_index(drop=True)
