"""Output naming and atomic writes."""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ptsd_bidsapp.bids import outputs


def test_entity_order_follows_bids_schema():
    from bidsschematools import schema

    s = schema.load_schema()
    order = [s.objects.entities[e].name for e in s.rules.entities]
    assert list(outputs.ENTITY_ORDER) == order
    name = outputs.bids_filename({"desc": "x", "res": "2", "atlas": "ptsdcircuit", "space": "MNI", "task": "faces",
                                  "session": "pre", "subject": "01"}, "timeseries", ".tsv")
    assert name == "sub-01_ses-pre_task-faces_space-MNI_atlas-ptsdcircuit_res-2_desc-x_timeseries.tsv"


def test_unknown_entity_rejected():
    with pytest.raises(ValueError, match="unknown BIDS entity"):
        outputs.bids_filename({"sub": "01", "colour": "red"}, "bold", ".nii.gz")


def test_atomic_write_leaves_no_partial_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "a" / "file.tsv"
    outputs.atomic_write_text(target, "old\n")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        outputs.atomic_write_text(target, "new content\n")
    assert target.read_text() == "old\n"
    assert [p.name for p in target.parent.iterdir()] == ["file.tsv"]


def test_write_tsv_na_and_sidecar(tmp_path):
    table = pd.DataFrame({"roi": ["a", "b"], "value": [1.5, np.nan]})
    path = outputs.write_tsv(tmp_path / "x.tsv", table, sidecar={"value": "units"})
    assert path.read_text() == "roi\tvalue\na\t1.5\nb\tn/a\n"
    assert (tmp_path / "x.json").read_text() == '{\n  "value": "units"\n}\n'   # the sidecar as given


def test_json_nan_becomes_null(tmp_path):
    path = outputs.write_json(tmp_path / "x.json", {"b": float("nan"), "a": np.float32(2.5), "c": np.arange(2)})
    assert path.read_text() == '{\n  "a": 2.5,\n  "b": null,\n  "c": [\n    0,\n    1\n  ]\n}\n'


@pytest.mark.parametrize("name", [
    "sub-01_ses-pre_task-faces_space-MNI152NLin2009cAsym_atlas-ptsdcircuit_res-2_desc-x_timeseries.tsv",
    "sub-01_ses-pre_task-faces_space-MNI152NLin2009cAsym_model-dcm_dcm.json",
    "sub-01_ses-pre_task-faces_run-1_space-MNI152NLin2009cAsym_atlas-ptsdcircuit_dseg.nii.gz",
])
def test_parse_filename_inverts_bids_filename(name):
    entities, suffix, extension = outputs.parse_filename(name)
    assert outputs.bids_filename(entities, suffix, extension) == name


@pytest.mark.parametrize("bad", ["sub-01_colour-red_bold.nii.gz", "task-faces_sub-01_bold.nii.gz", "sub-01_bold-.nii"])
def test_parse_filename_rejects_names_the_builder_cannot_make(bad):
    with pytest.raises(ValueError):
        outputs.parse_filename(bad)
