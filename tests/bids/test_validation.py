"""The app's own BIDS-validation step (``bids-validator-deno``) on a valid and an invalid dataset.

Every other CLI test passes ``--skip-bids-validation``; these run the step as a user does.
"""

import logging
import os
import shutil
import sys
from pathlib import Path

import pytest

from ptsd_bidsapp import errors
from ptsd_bidsapp.bids.validation import validate_bids
from ptsd_bidsapp.cli.run import main
from ptsd_bidsapp.simulate import simulate_trial

VENV_BIN = str(Path(sys.executable).parent)


@pytest.fixture(scope="module")
def valid_dataset(tmp_path_factory):
    return simulate_trial(tmp_path_factory.mktemp("validation") / "bids", n_subjects=2, seed=5, resolution=8.0,
                          n_volumes=40)


@pytest.fixture
def validator_on_path(monkeypatch):
    """The validator installed with the test extra (in the interpreter's bin folder) on PATH."""
    monkeypatch.setenv("PATH", VENV_BIN + os.pathsep + os.environ.get("PATH", ""))
    if shutil.which("bids-validator-deno") is None:
        pytest.fail("bids-validator-deno is a test dependency (setup.cfg [test]) and must be installed")


def test_valid_dataset_passes_and_the_run_goes_on(valid_dataset, validator_on_path, tmp_path, capsys):
    """Validation finds no error; the CLI then proceeds to input collection (which refuses the
    unknown participant label: a later, different error)."""
    assert validate_bids(valid_dataset) == []
    code = main([str(valid_dataset), str(tmp_path / "out"), "participant", "--participant-label", "99"])
    err = capsys.readouterr().err
    assert code != errors.INVALID_BIDS and code != errors.SUCCESS
    assert "failed BIDS validation" not in err and "99" in err


def test_invalid_dataset_is_refused_with_the_validator_errors(valid_dataset, validator_on_path, tmp_path, capsys):
    """A missing dataset_description.json: exit
    code INVALID_BIDS, each problem named, nothing written."""
    bids = tmp_path / "bids"
    shutil.copytree(valid_dataset, bids, ignore=shutil.ignore_patterns("derivatives"))
    (bids / "dataset_description.json").unlink()
    problems = validate_bids(bids)
    assert any("dataset_description" in p.lower() or "DATASET_DESCRIPTION" in p for p in problems), problems
    out = tmp_path / "out"
    code = main([str(bids), str(out), "participant"])
    err = capsys.readouterr().err
    assert code == errors.INVALID_BIDS
    assert f"{bids} failed BIDS validation ({len(problems)} error(s))" in err
    assert problems[0] in err and "--skip-bids-validation" in err
    assert not out.exists()


def test_errors_of_other_subjects_are_ignored_with_participant_label(valid_dataset, validator_on_path, tmp_path):
    bids = tmp_path / "bids"
    shutil.copytree(valid_dataset, bids, ignore=shutil.ignore_patterns("derivatives"))
    (bids / "sub-02" / "ses-pre" / "sub-02_ses-pre_notes.txt").write_text("not a BIDS file\n")  # NOT_INCLUDED
    problems = validate_bids(bids)
    assert "NOT_INCLUDED: /sub-02/ses-pre/sub-02_ses-pre_notes.txt" in problems, problems
    assert validate_bids(bids, subjects=["01"]) == []


def test_missing_validator_is_a_warning_not_a_failure(valid_dataset, monkeypatch, caplog):
    monkeypatch.setenv("PATH", "")
    with caplog.at_level(logging.WARNING, logger="ptsd_bidsapp"):
        assert validate_bids(valid_dataset) == []
    assert "no BIDS validator found" in caplog.text


def test_unparseable_validator_output_is_a_warning(valid_dataset, monkeypatch, tmp_path, caplog):
    fake = tmp_path / "bin" / "bids-validator-deno"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'not json'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    with caplog.at_level(logging.WARNING, logger="ptsd_bidsapp"):
        assert validate_bids(valid_dataset) == []
    assert "could not parse" in caplog.text
