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
    assert load_config(out / "ptsd_bidsapp_config.yml") == config     # the saved config round-trips
    assert "ptsd_bidsapp" in (out / "README.md").read_text()


def test_saved_config_round_trips_a_user_config(tmp_path):
    """A run's non-default settings are saved and reload to the same resolved configuration
    (not merely a file: the values a user would re-run with)."""
    bids, out = tmp_path / "bids", tmp_path / "out"
    bids.mkdir()
    user = tmp_path / "user.yml"
    user.write_text("motion_qc:\n  max_mean_fd: 0.7\nelastic_net:\n  n_permutations: 250\n  alpha: 0.3\n"
                    "measures: [fc_rest_vmpfc-*]\n")
    config = load_config(user)
    assert config["motion_qc"]["max_mean_fd"] == 0.7 and config["elastic_net"]["n_permutations"] == 250
    bootstrap_output(out, bids, bids / "derivatives" / "fmriprep", config)
    saved = load_config(out / "ptsd_bidsapp_config.yml")
    assert saved == config
    assert saved["motion_qc"]["max_mean_fd"] == 0.7 and saved["elastic_net"]["alpha"] == 0.3
    assert saved["measures"] == ["fc_rest_vmpfc-*"]
    assert saved["motion_qc"]["fd_threshold"] == 0.5                  # untouched defaults kept
