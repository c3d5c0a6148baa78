"""Output dataset bootstrap (dataset_description.json, .bidsignore, saved config)."""

import json

from ptsd_bidsapp.bids.dataset import bootstrap_output
from ptsd_bidsapp.config import load_config


def test_bidsignore_uses_names_the_validator_honours(tmp_path):
    bids, out = tmp_path / "bids", tmp_path / "out"
    bids.mkdir()
    config = load_config(None)
    bootstrap_output(out, bids, bids / "derivatives" / "fmriprep", config)
    bootstrap_output(out, bids, bids / "derivatives" / "fmriprep", config)  # idempotent
    lines = (out / ".bidsignore").read_text().splitlines()
    # bids-validator ignores entries with a trailing slash (bids-standard/bids-validator#291)
    assert not [line for line in lines if line.endswith("/")]
    assert {"figures", "logs", "group"} <= set(lines)
    assert len(lines) == len(set(lines))
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert (out / "ptsd_bidsapp_config.yml").is_file()
    assert "ptsd_bidsapp" in (out / "README.md").read_text()
