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
    assert "group" in lines and "*_relmat.tsv" in lines
    assert "logs" not in lines and "figures" not in lines     # logs/ validates; figures/ is never written
    assert len(lines) == len(set(lines))
    assert lines[0].startswith("# ")                             # every group of entries says why
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


def test_clinical_scores_from_a_phenotype_table(tmp_path):
    """clinical.source: phenotype reads phenotype/<table>.tsv (participant_id, session_id, scores),
    labels without their sub-/ses- prefixes, 'n/a' as missing; a missing table or column is named."""
    import pandas as pd
    import pytest

    from ptsd_bidsapp.bids.inputs import InputError, read_clinical

    config = {**load_config(None)["clinical"], "source": "phenotype", "phenotype_table": "scores"}
    (tmp_path / "phenotype").mkdir()
    table = tmp_path / "phenotype" / "scores.tsv"
    table.write_text("participant_id\tsession_id\tcaps5_total\tmadrs_total\n"
                     "sub-01\tses-pre\t40\t22\nsub-01\tses-post\t25\t10\nsub-02\tpre\t38\tn/a\n")
    clinical = read_clinical(tmp_path, config)
    assert list(clinical.columns) == ["subject", "session", "caps5_total", "madrs_total"]
    assert clinical[["subject", "session"]].values.tolist() == [["01", "pre"], ["01", "post"], ["02", "pre"]]
    assert clinical["caps5_total"].tolist() == [40, 25, 38] and pd.isna(clinical.loc[2, "madrs_total"])
    assert read_clinical(tmp_path, config, subjects=["02"])["subject"].tolist() == ["02"]
    with pytest.raises(InputError, match="phenotype table .*other.tsv is missing"):
        read_clinical(tmp_path, {**config, "phenotype_table": "other.tsv"})
    table.write_text("participant_id\tsession_id\tcaps5_total\nsub-01\tpre\t40\n")
    with pytest.raises(InputError, match="no 'madrs_total' column"):
        read_clinical(tmp_path, config)
