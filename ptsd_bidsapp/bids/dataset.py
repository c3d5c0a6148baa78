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

#: Output files BIDS cannot name yet (ROI-level GLM tables, connectivity matrices,
#: DCM posteriors, group-level results, reports). Everything else must validate.
BIDSIGNORE = [
    "*.html",
    "*_timeseries.tsv",
    "*_timeseries.json",
    "*_activation.tsv",
    "*_activation.json",
    "*_relmat.tsv",
    "*_relmat.json",
    "*_features.tsv",
    "*_features.json",
    "*_motion.tsv",
    "*_motion.json",
    "*_dcm.json",
    "*_dcm.npz",
    "*_design.tsv",
    # bare names: the validator does not honour a trailing slash (bids-standard/bids-validator#291)
    "figures",
    "logs",
    "group",
    "ptsd_bidsapp_config.yml",
]


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


def container_info() -> dict:
    """Describe the execution container (Docker/Apptainer) if any, for ``GeneratedBy``."""
    if os.environ.get("APPTAINER_CONTAINER") or os.environ.get("SINGULARITY_CONTAINER"):
        image = os.environ.get("APPTAINER_CONTAINER") or os.environ.get("SINGULARITY_CONTAINER")
        return {"Type": "singularity", "Tag": os.path.basename(image)}
    if Path("/.dockerenv").exists() or os.environ.get("PTSD_BIDSAPP_DOCKER"):
        return {"Type": "docker", "Tag": f"ptsd_bidsapp:{__version__}"}
    return {}


def dataset_description(bids_dir: Path, fmriprep_dir: Path) -> dict:
    """Content of the output ``dataset_description.json``."""
    generated = {
        "Name": "ptsd_bidsapp",
        "Version": __version__,
        "Description": "ROI activation, gPPI and task-free connectivity, DCM and group models of the PTSD fear-regulation circuit",
        "CodeURL": "https://pypi.org/project/ptsd-bidsapp/",
    }
    container = container_info()
    if container:
        generated["Container"] = container
    sources = []
    for path in (Path(bids_dir), Path(fmriprep_dir)):
        desc = path / "dataset_description.json"
        entry = {"URL": path.resolve().as_uri()}
        if desc.is_file():
            try:
                info = json.loads(desc.read_text())
                if info.get("DatasetDOI"):
                    entry["DOI"] = info["DatasetDOI"]
                if info.get("Name"):
                    entry["Version"] = str(info.get("BIDSVersion", ""))
            except ValueError:
                pass
        sources.append(entry)
    return {
        "Name": "ptsd_bidsapp derivatives",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [generated],
        "SourceDatasets": sources,
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
        wanted = existing + [line for line in BIDSIGNORE + [".ptsd_bidsapp.lock"] if line not in existing]
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
