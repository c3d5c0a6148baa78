"""Test tiers.

* ``pytest -m unit`` — pure functions on arrays and small files (< 1 min on 2 cores): every test
  outside :data:`INTEGRATION_FILES` that is not ``slow``; also the target of mutation testing
  (``scripts/mutation.sh``).
* default ``pytest -m "not slow"`` — adds the integration files below (DCM/PEB fits, CLI and
  nipype runs on small simulated trials).
* ``pytest -m slow`` — end-to-end runs (participant level on the simulated trial, calibrations).

``make test`` runs all three, as CI does; ``make test-unit`` / ``test-default`` / ``test-slow``
run one tier.

Order: ``make test`` distributes whole files (``--dist loadfile``), so the suite's wall time is the
longest worker's. The files in :data:`FILE_SECONDS` (the slowest) are collected first, longest first,
and xdist is told to keep that order (``--no-loadscope-reorder``, unless ``--loadscope-reorder`` is
given): each worker starts on a long file and the short ones fill the gaps at the end (longest
processing time first). Without it, xdist 3.8 hands out files with the most tests first, and a long
file with few tests (the null calibration, the SLURM runs) could start last and run alone.
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
    "simulate/test_null_calibration_benchmark.py",
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


def _file_of(item) -> str:
    """The test file of ``item``, relative to tests/ (as in :data:`INTEGRATION_FILES`)."""
    return Path(str(item.fspath)).resolve().relative_to(HERE).as_posix()


def _check_one_file_session_fixtures(items) -> None:
    for fixture in ONE_FILE_SESSION_FIXTURES:
        files = sorted({_file_of(item) for item in items if fixture in getattr(item, "fixturenames", ())})
        if len(files) > 1:
            raise pytest.UsageError(
                f"the session fixture {fixture!r} is requested from {len(files)} test files ({', '.join(files)}): "
                "under `--dist loadfile` each of their workers would build it again; move the tests into one file")


#: Wall seconds of the slowest test files on one worker of ``make test`` (per file, the sum of its tests'
#: setup, call and teardown), measured on 2026-12-04 on an idle 2-core machine (main after 6681217, -n 2
#: --dist loadfile, SLURM cluster up: 940 passed in 235 s). Only the order matters (longest first); a file
#: not listed counts as 0 s and keeps its collection place after these. The SLURM file is mostly waiting
#: for its cluster jobs, which run on the same two cores.
FILE_SECONDS = {
    "workflows/test_slurm.py": 102,
    "workflows/test_participant.py": 52,         # the session fixture participant_run and its users
    "workflows/test_operations_e2e.py": 40,
    "reports/test_browser.py": 30,
    "faults/test_participant_faults.py": 27,
    "simulate/test_null_calibration_benchmark.py": 26,
    "workflows/test_deployment.py": 17,
    "workflows/test_bad_inputs.py": 12,
    "workflows/test_run_isolation.py": 10,
    "workflows/test_run_measures.py": 9,
    "bids/test_inputs.py": 9,
    "dcm/test_dcm_inversion.py": 8,
    "faults/test_run_faults.py": 8,
    "group/test_dcm_group.py": 6,
    "simulate/test_trial.py": 6,
    "group/test_run_group.py": 6,
    "test_atlas.py": 6,
    "group/test_missing_per_model.py": 6,
    "workflows/test_cluster.py": 6,
    "simulate/test_real_null.py": 5,
    "faults/test_input_faults.py": 5,
    "reports/test_figures.py": 4,
    "peb/test_rnd.py": 4,
}


def _longest_files_first(items) -> None:
    """Sort ``items`` (in place, stable: each file's tests keep their order) by :data:`FILE_SECONDS`."""
    items.sort(key=lambda item: -FILE_SECONDS.get(_file_of(item), 0.0))


#: BLAS/OpenMP threads of each pytest process. ``make test`` runs two xdist workers on two cores; with
#: OpenBLAS's default of one thread per core, two workers multiplying matrices at once run four busy
#: threads on two cores. Measured on an idle 2-core machine (``pytest -n 2 --dist loadfile tests/dcm
#: tests/peb tests/group tests/glmnet tests/measures``, twice each): 43.8/47.2 s wall and 84.6/86.5 CPU s
#: with the default, 40.2/39.6 s and 75.9/75.7 CPU s with this limit (37.0/37.5 s, 70.9/71.3 CPU s with
#: OPENBLAS_NUM_THREADS=1 for every process, subprocesses included). Only this process is limited
#: (threadpoolctl, at run time): the app's own processes (subprocesses, nipype workers) keep their
#: defaults and the limits the app sets (``--omp-nthreads``), which tests check.
TEST_PROCESS_THREADS = 1
_thread_limit = None


def pytest_configure(config):
    global _thread_limit
    import numpy  # noqa: F401  (threadpoolctl limits the libraries loaded: numpy's and SciPy's OpenBLAS)
    import scipy.linalg  # noqa: F401
    from threadpoolctl import threadpool_limits

    _thread_limit = threadpool_limits(limits=TEST_PROCESS_THREADS)
    # xdist >= 3.8: schedule files in collection order (see the module docstring); an explicit
    # --loadscope-reorder on the command line wins
    explicit = any(arg.startswith("--loadscope-reorder") for arg in config.invocation_params.args)
    if hasattr(config.option, "loadscopereorder") and not explicit:
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    _check_one_file_session_fixtures(items)
    _longest_files_first(items)
    for item in items:
        relative = _file_of(item)
        integration = relative in INTEGRATION_FILES or relative.startswith(INTEGRATION_FOLDERS)
        if not integration and item.get_closest_marker("slow") is None and item.get_closest_marker("slurm") is None:
            item.add_marker(pytest.mark.unit)
