"""Bootstrap of the output derivative dataset (SPEC §8).

``dataset_description.json``, ``README.md``, ``.bidsignore``, the atlas description and the
resolved configuration are written once, under a file lock, so several
participant jobs started at the same time on a cluster do not race.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

from filelock import FileLock

from ptsd_bidsapp import __version__
from ptsd_bidsapp.bids.outputs import atomic_write_text, write_json
from ptsd_bidsapp.config import dump_config

#: BIDS version the outputs are written against.
BIDS_VERSION = "1.10.0"

#: Output files BIDS cannot name (bids-validator-deno 3.x, schema 1.2: each was checked by removing its
#: entry and validating the demo outputs), each with the reason written above it in ``.bidsignore``.
#: Everything else must validate: the ROI dseg images and tables, the dataset and atlas descriptions.
BIDSIGNORE = [
    ("ROI time series: BIDS has no time-series suffix for func derivatives of atlas ROIs",
     ["*_timeseries.tsv", "*_timeseries.json"]),
    ("ROI GLM effect tables (activation): no BIDS suffix for statistical tables of ROIs",
     ["*_activation.tsv", "*_activation.json"]),
    ("ROI-by-ROI connectivity matrices: relmat (BEP017) is not in the validator's schema",
     ["*_relmat.tsv", "*_relmat.json"]),
    ("the long per-session table of every measure the group level reads: no BIDS suffix",
     ["*_features.tsv", "*_features.json"]),
    ("motion QC per volume: BIDS's motion suffix is the raw motion-capture datatype (needs tracksys)",
     ["*_motion.tsv", "*_motion.json"]),
    ("DCM posteriors (named parameters, arrays): no BIDS suffix for model fits",
     ["*_dcm.json", "*_dcm.npz"]),
    ("HTML reports: no BIDS file type", ["*.html"]),
    ("group-level results (change scores, models, PEB): BIDS has no group-level derivatives; a bare name "
     "because the validator does not honour a trailing slash (bids-standard/bids-validator#291)", ["group"]),
    ("the resolved analysis configuration: YAML is no BIDS file type", ["ptsd_bidsapp_config.yml"]),
]


def bidsignore_lines() -> list[str]:
    """The ``.bidsignore`` content: each group of patterns after a comment saying why."""
    lines = []
    for reason, patterns in BIDSIGNORE:
        lines.append(f"# {reason}")
        lines.extend(patterns)
    return lines


#: ``README.md`` of the output dataset (BIDS recommends one; the validator warns without it).
README_TEXT = """# ptsd_bidsapp derivatives

Written by ptsd_bidsapp {version} from the BIDS dataset and fMRIPrep derivatives listed in
`dataset_description.json` (`SourceDatasets`).

- `sub-<label>/ses-<label>/func/`: per run ROI time series, activation tables, connectivity
  matrices (gPPI, task-free), VOIs, motion QC, DCM posteriors; per session the long
  `desc-measures_features.tsv` table the group level reads;
- `sub-<label>.html`: the per-subject report (figures embedded); `logs/`: run logs;
- `group/`: change scores, elastic-net models, DCM PEB and the group report;
- `ptsd_bidsapp_config.yml`: the resolved analysis configuration.

File formats and columns are documented in the ptsd_bidsapp README ("Outputs").
"""


def container_info(environ: Mapping[str, str] | None = None) -> dict:
    """The container the app runs in, for ``GeneratedBy.Container``; ``{}`` when it runs from pip.

    Only what the image itself declares counts: the Dockerfile sets ``PTSD_BIDSAPP_CONTAINER_IMAGE``
    (``name:tag``, build arguments ``IMAGE_NAME``/``IMAGE_TAG``); Apptainer/Singularity add
    ``APPTAINER_CONTAINER``/``SINGULARITY_CONTAINER`` (the image file). A ``/.dockerenv`` alone
    proves nothing about the app (a pip install inside any container has one).
    """
    environ = os.environ if environ is None else environ
    image = environ.get("PTSD_BIDSAPP_CONTAINER_IMAGE")
    sif = environ.get("APPTAINER_CONTAINER") or environ.get("SINGULARITY_CONTAINER")
    if sif:
        info = {"Type": "apptainer" if environ.get("APPTAINER_CONTAINER") else "singularity", "URI": sif}
        if image:
            info["Tag"] = image
        return info
    if image:
        return {"Type": "docker", "Tag": image}
    return {}


def installation(environ: Mapping[str, str] | None = None) -> str:
    """How this copy of the app was installed, in words (container image, or pip and from where)."""
    container = container_info(environ)
    if container:
        return f"run in the {container['Type']} container {container.get('Tag') or container.get('URI')}"
    from importlib import metadata

    try:
        dist = metadata.distribution("ptsd_bidsapp")
        direct = json.loads(dist.read_text("direct_url.json") or "{}")
    except (metadata.PackageNotFoundError, ValueError):
        return "run from source (not installed)"
    if direct.get("dir_info", {}).get("editable"):
        return f"run from an editable pip installation of {direct.get('url', 'a local folder')}"
    if direct.get("url"):
        return f"run from a pip installation of {direct['url']}"
    return "run from a pip installation (no container)"


def source_dataset(path: Path) -> dict:
    """``SourceDatasets`` entry of a BIDS dataset: URL, and DOI/Version when the dataset states them.

    DOI: ``DatasetDOI`` of its ``dataset_description.json`` (as ``doi:<id>``). Version: the first
    version line of its ``CHANGES`` file (BIDS's changelog, newest first), never ``BIDSVersion``
    (the version of the standard, not of the data).
    """
    path = Path(path)
    entry = {"URL": path.resolve().as_uri()}
    desc = path / "dataset_description.json"
    if desc.is_file():
        try:
            doi = str(json.loads(desc.read_text()).get("DatasetDOI") or "").strip()
        except (ValueError, AttributeError):
            doi = ""
        if doi:
            for prefix in ("https://doi.org/", "http://doi.org/", "http://dx.doi.org/", "doi:"):
                if doi.lower().startswith(prefix):
                    doi = doi[len(prefix):]
            entry["DOI"] = f"doi:{doi}"
    changes = path / "CHANGES"
    if changes.is_file():
        for line in changes.read_text(errors="replace").splitlines():
            if line.strip() and not line[0].isspace():
                entry["Version"] = line.split()[0]
                break
    return entry


def dataset_description(bids_dir: Path, fmriprep_dir: Path) -> dict:
    """Content of the output ``dataset_description.json``.

    ``Authors``: the source dataset's authors (the derivatives are theirs), then the app, so that
    the list names who the data belong to and what derived them.
    """
    generated = {
        "Name": "ptsd_bidsapp",
        "Version": __version__,
        "Description": "ROI activation, gPPI and task-free connectivity, DCM and group models of the PTSD "
                       f"fear-regulation circuit; {installation()}",
        "CodeURL": "https://pypi.org/project/ptsd-bidsapp/",
    }
    container = container_info()
    if container:
        generated["Container"] = container
    authors = []
    try:
        authors = [str(a) for a in json.loads((Path(bids_dir) / "dataset_description.json").read_text())
                   .get("Authors") or []]
    except (OSError, ValueError, AttributeError):
        authors = []
    return {
        "Name": "ptsd_bidsapp derivatives",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "Authors": [*authors, f"ptsd_bidsapp {__version__} (automated derivatives)"],
        "GeneratedBy": [generated],
        "SourceDatasets": [source_dataset(bids_dir), source_dataset(fmriprep_dir)],
    }


def bootstrap_output(output_dir: Path, bids_dir: Path, fmriprep_dir: Path, config: Mapping) -> Path:
    """Create the derivative dataset skeleton (idempotent, safe under concurrency).

    Parameters
    ----------
    output_dir : Path
        Output dataset root.
    bids_dir, fmriprep_dir : Path
        Source datasets (recorded in ``SourceDatasets``).
    config : mapping
        Resolved analysis configuration, saved as ``ptsd_bidsapp_config.yml``.

    Returns
    -------
    Path
        ``output_dir``.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(output_dir / ".ptsd_bidsapp.lock"), timeout=120):
        description = output_dir / "dataset_description.json"
        if not description.exists():
            write_json(description, dataset_description(bids_dir, fmriprep_dir))
        readme = output_dir / "README.md"
        if not readme.exists():
            atomic_write_text(readme, README_TEXT.format(version=__version__))
        ignore = output_dir / ".bidsignore"
        existing = ignore.read_text().splitlines() if ignore.exists() else []
        ours = bidsignore_lines()
        # lines someone else added stay; ours come first, once, with their comments
        wanted = ours + [line for line in existing if line.strip() and line not in ours]
        if wanted != existing:
            atomic_write_text(ignore, "\n".join(wanted) + "\n")
        atomic_write_text(output_dir / "ptsd_bidsapp_config.yml", dump_config(config))
        _write_atlas_description(output_dir, config)
    return output_dir


def _write_atlas_description(output_dir: Path, config: Mapping) -> None:
    """``atlas-<name>_description.json`` at the dataset root (BIDS derivatives atlas description)."""
    from ptsd_bidsapp.atlas import DESCRIPTION_JSON

    atlas = config.get("atlas", {})
    name = atlas.get("name", "ptsdcircuit")
    path = output_dir / f"atlas-{name}_description.json"
    if path.exists():
        return
    if atlas.get("dseg"):
        content = {"Name": name, "Description": f"User-supplied ROI set {atlas['dseg']} (labels {atlas.get('labels')})"}
    else:
        content = json.loads(DESCRIPTION_JSON.read_text())
        if atlas.get("split_hemispheres"):
            content["Description"] += " Split into left and right hemispheres at x = 0 (desc-lateralized)."
    write_json(path, content)
