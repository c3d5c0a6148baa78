"""Test tiers.

* ``pytest -m unit`` — pure functions on arrays and small files (< 1 min on 2 cores): every test
  outside :data:`INTEGRATION_FILES` that is not ``slow``; also the target of mutation testing
  (``scripts/mutation.sh``).
* default ``pytest -m "not slow"`` — adds the integration files below (DCM/PEB fits, CLI and
  nipype runs on small simulated trials).
* ``pytest -m slow`` — end-to-end runs (participant level on the simulated trial, calibrations).

``make test`` runs all three, as CI does; ``make test-unit`` / ``test-default`` / ``test-slow``
run one tier.
"""

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

#: Files whose tests fit models on simulated cohorts, run the CLI / nipype, or simulate trials
#: (seconds to minutes each): in the default tier, not in ``unit``.
INTEGRATION_FILES = {
    "bids/test_inputs.py",
    "bids/test_validation.py",
    "dcm/test_dcm_inversion.py",
    "dcm/test_dcm_participant.py",
    "dcm/test_noise_model.py",
    "glmnet/test_inference.py",
    "group/test_changes.py",
    "group/test_dcm_group.py",
    "group/test_missing_per_model.py",
    "group/test_models.py",
    "group/test_run_group.py",
    "peb/test_bmr.py",
    "peb/test_loo.py",
    "peb/test_rnd.py",
    "peb/test_spm12_peb.py",
    "reports/test_browser.py",
    "simulate/test_real_null.py",
    "simulate/test_trial.py",
    "test_atlas.py",
    "test_readme.py",
}
#: Folders whose every file is integration (nipype workflows, deployment, clusters; the fault-model
#: tests damage a simulated trial and run the CLI or a run's measures on it: seconds to minutes each).
INTEGRATION_FOLDERS = ("workflows/", "faults/")


#: Session fixtures that run the app end to end (tests/workflows/conftest.py): ``make test`` distributes
#: by file (``--dist loadfile``) and every xdist worker builds its own session fixtures, so each of
#: these may be requested from one test file only, or it is built once per worker that runs such a file
#: (the participant run: ~90 CPU-s). Issue 20: "the participant fixture built once per session".
ONE_FILE_SESSION_FIXTURES = ("participant_run",)


def _check_one_file_session_fixtures(items) -> None:
    for fixture in ONE_FILE_SESSION_FIXTURES:
        files = sorted({Path(str(item.fspath)).resolve().relative_to(HERE).as_posix()
                        for item in items if fixture in getattr(item, "fixturenames", ())})
        if len(files) > 1:
            raise pytest.UsageError(
                f"the session fixture {fixture!r} is requested from {len(files)} test files ({', '.join(files)}): "
                "under `--dist loadfile` each of their workers would build it again; move the tests into one file")


def pytest_collection_modifyitems(config, items):
    _check_one_file_session_fixtures(items)
    for item in items:
        relative = Path(str(item.fspath)).resolve().relative_to(HERE).as_posix()
        integration = relative in INTEGRATION_FILES or relative.startswith(INTEGRATION_FOLDERS)
        if not integration and item.get_closest_marker("slow") is None and item.get_closest_marker("slurm") is None:
            item.add_marker(pytest.mark.unit)
