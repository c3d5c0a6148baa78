#!/usr/bin/env python
"""Re-apply the 17 hand-made mutations of issue 20 that once survived, and check each is killed.

For every mutation: replace one source snippet (exactly one occurrence), run the tests named
as its killers, restore the file (also on Ctrl-C), and record killed / survived. Prints a
Markdown table; exits 1 if any mutation survives or a snippet is no longer found (the code
moved: update the table).

    python scripts/named_survivors.py [--only NAME ...] [--report scripts/named_survivors.md]

The mutations are applied to a private copy of the package and tests (a temporary
directory put first on PYTHONPATH), never to this checkout, so tests running alongside are
not disturbed. CPU: one pytest per mutation on a few fast test files (a few minutes in all).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Mutation:
    name: str
    issue_text: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTATIONS = [
    Mutation("dcm-k2-te", "DCM: k2 of the BOLD equation ignores TE", "ptsd_bidsapp/dcm/model.py",
             "k2 = ep * R0 * E0 * te", "k2 = ep * R0 * E0 * 0.04",
             ("tests/dcm/test_conventions.py::test_bold_coefficients_are_stephan_2007_with_the_model_te",
              "tests/dcm/test_conventions.py::test_bold_signal_is_exactly_linear_in_te_when_epsilon_is_zero")),
    Mutation("dcm-noise-trace", "DCM: noise term tr(Cp·J'J) dropped from dF/dh", "ptsd_bidsapp/dcm/inversion.py",
             " - w * np.sum(Cp * (Ji.T @ Ji)) / 2", "",
             ("tests/dcm/test_spm12_reference.py::test_dcm_noise_precision_and_prediction_match_spm",)),
    Mutation("dcm-fd-step-inversion", "DCM: finite-difference step exp(-8) -> exp(-3) (spm_nlsi_GN dy/dθ)",
             "ptsd_bidsapp/dcm/inversion.py", "FD_STEP = np.exp(-8.0)", "FD_STEP = np.exp(-3.0)",
             ("tests/dcm/test_conventions.py::test_finite_difference_steps_are_spm_diffs",
              "tests/dcm/test_spm12_reference.py::test_dcm_noise_precision_and_prediction_match_spm")),
    Mutation("dcm-fd-step-bireduce", "DCM: finite-difference step exp(-8) -> exp(-3) (spm_bireduce Jacobian)",
             "ptsd_bidsapp/dcm/model.py", "SPM_FD_STEP = np.exp(-8.0)", "SPM_FD_STEP = np.exp(-3.0)",
             ("tests/dcm/test_conventions.py::test_finite_difference_steps_are_spm_diffs",
              "tests/dcm/test_dcm_model.py::test_default_jacobian_is_spm_bireduce_forward_differences")),
    Mutation("dcm-gamma", "DCM: haemodynamic γ (autoregulation) 0.32 -> 0.41", "ptsd_bidsapp/dcm/model.py",
             "GAMMA = 0.32", "GAMMA = 0.41",
             ("tests/dcm/test_conventions.py",)),
    Mutation("dcm-tau", "DCM: haemodynamic τ (transit time) 2 s -> 0.98 s", "ptsd_bidsapp/dcm/model.py",
             "TAU = 2.00", "TAU = 0.98",
             ("tests/dcm/test_conventions.py",)),
    Mutation("peb-precision-floor", "PEB: random-effects precision floor e^-8 -> 1/256", "ptsd_bidsapp/peb/fit.py",
             "_PRECISION_FLOOR = float(np.exp(-8.0))", "_PRECISION_FLOOR = 1.0 / 256",
             ("tests/peb/test_conventions.py::test_random_effects_covariance_has_spm_precision_floor",)),
    Mutation("peb-loo-prior-variance", "PEB: LOO prior variance of the target 4·var -> var", "ptsd_bidsapp/peb/loo.py",
             "v[target] = 4.0 * float(", "v[target] = 1.0 * float(",
             ("tests/peb/test_conventions.py::"
              "test_left_out_subject_prior_on_the_target_is_four_times_the_training_variance",)),
    Mutation("peb-occam-window", "PEB: BMA Occam window 8 -> 1 nat", "ptsd_bidsapp/peb/bmr.py",
             "OCCAM_WINDOW = 8.0", "OCCAM_WINDOW = 1.0",
             ("tests/peb/test_conventions.py::test_bma_averages_the_models_within_8_nats_of_the_best",)),
    Mutation("enet-bootstrap-lambda", "Elastic net: bootstrap selection read 5 λs before λ_min",
             "ptsd_bidsapp/glmnet/inference.py", 'at_min = fits["beta"][:, index_min, :]',
             'at_min = fits["beta"][:, max(index_min - 5, 0), :]',
             ("tests/glmnet/test_bootstrap_truth.py",)),
    Mutation("gppi-slice-time", "Measures: gPPI ignores the slice-time reference", "ptsd_bidsapp/measures/gppi.py",
             "ppi = interaction_regressors(neural, events, conditions, t_r, slice_time_ref, **options)",
             "ppi = interaction_regressors(neural, events, conditions, t_r, 0.0, **options)",
             ("tests/measures/test_conventions.py::test_gppi_matrix_samples_the_interaction_at_the_slice_time_reference",)),
    Mutation("gppi-psy-centring", "Measures: psychological term not mean-centred", "ptsd_bidsapp/measures/gppi.py",
             "convolve_microtime((psy - psy.mean()) * neural", "convolve_microtime(psy * neural",
             ("tests/measures/test_conventions.py::test_psychological_term_is_mean_centred_before_the_product",)),
    Mutation("fc-fisher-z", "Measures: rest FC without Fisher z", "ptsd_bidsapp/measures/restfc.py",
             "np.arctanh(np.clip(r, -1 + 1e-12, 1 - 1e-12))", "np.clip(r, -1 + 1e-12, 1 - 1e-12)",
             ("tests/measures/test_conventions.py::test_fisher_z_of_known_correlations",
              "tests/measures/test_conventions.py::"
              "test_rest_fc_is_fisher_z_of_the_exact_correlation_after_detrending")),
    Mutation("eigenvariate-sign", "Measures: eigenvariate sign convention dropped", "ptsd_bidsapp/measures/voi.py",
             "sign = np.sign(loadings.sum()) or 1.0", "sign = 1.0",
             ("tests/measures/test_conventions.py::test_eigenvariate_sign_follows_the_roi_mean",)),
    Mutation("glm-frame-times", "Measures: GLM frame times ignore the slice-time reference",
             "ptsd_bidsapp/measures/activation.py",
             "frame_times = (np.arange(n_volumes) + slice_time_ref) * t_r", "frame_times = np.arange(n_volumes) * t_r",
             ("tests/measures/test_conventions.py::test_glm_frame_times_follow_the_slice_time_reference",)),
    Mutation("fc-detrend", "Measures: rest FC without detrending", "ptsd_bidsapp/measures/restfc.py",
             "detrend=True", "detrend=False",
             ("tests/measures/test_conventions.py::"
              "test_rest_fc_is_fisher_z_of_the_exact_correlation_after_detrending",)),
    Mutation("config-max-mean-fd", "Config: motion_qc.max_mean_fd 0.5 -> 5.0", "ptsd_bidsapp/data/default_config.yml",
             "max_mean_fd: 0.5 ", "max_mean_fd: 5.0 ",
             ("tests/test_documented_defaults.py",)),
    Mutation("config-enet-permutations", "Config: elastic_net.n_permutations 1000 -> 100",
             "ptsd_bidsapp/data/default_config.yml",
             "  n_permutations: 1000\n  sequential_h: null", "  n_permutations: 100\n  sequential_h: null",
             ("tests/test_documented_defaults.py",)),
]


def _copy_checkout(dest: Path) -> Path:
    """The package, tests and pytest settings of this checkout, copied to ``dest``."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("ptsd_bidsapp", "tests"):
        shutil.copytree(ROOT / folder, dest / folder, ignore=ignore)
    for name in ("setup.cfg", "pyproject.toml", "README.md", "ARCHITECTURE.md", "boutiques.json"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, dest / name)
    return dest


def run(mutation: Mutation, python: str, root: Path) -> tuple[str, float]:
    path = root / mutation.path
    original = path.read_text()
    if mutation.old and original.count(mutation.old) != 1:
        return f"snippet found {original.count(mutation.old)}x", 0.0
    start = time.perf_counter()
    try:
        path.write_text(original.replace(mutation.old, mutation.new))
        proc = subprocess.run([python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                               *mutation.tests], cwd=root, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"})
    finally:
        path.write_text(original)
    seconds = time.perf_counter() - start
    status = {0: "SURVIVED", 1: "killed"}.get(proc.returncode, f"error (pytest exit {proc.returncode})")
    return status, seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="mutation names to run (default all)")
    parser.add_argument("--report", type=Path, help="also write the Markdown table here")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    lines = ["| mutation | issue 20 survivor | file: `old` -> `new` | killing test(s) | result |",
             "|---|---|---|---|---|"]
    bad = 0
    scratch = Path(tempfile.mkdtemp(prefix="named_survivors_"))
    root = _copy_checkout(scratch / "repo")
    try:
        # control: the killing tests pass on the unmutated copy (else "killed" would mean nothing)
        control = Mutation("control", "", chosen[0].path, "", "", tuple(dict.fromkeys(t for m in chosen for t in m.tests)))
        status, seconds = run(control, sys.executable, root)
        print(f"control (no mutation): {'pass' if status == 'SURVIVED' else status} ({seconds:.0f} s)", flush=True)
        if status != "SURVIVED":
            return 2
        for m in chosen:
            status, seconds = run(m, sys.executable, root)
            bad += status != "killed"
            tests = "<br>".join(f"`{t}`" for t in m.tests)
            new = m.new.replace("\n", "\\n") or "(deleted)"
            old = m.old.replace("\n", "\\n")
            lines.append(f"| {m.name} | {m.issue_text} | {m.path}: `{old}` -> `{new}` | {tests} "
                         f"| {status} ({seconds:.0f} s) |")
            print(lines[-1], flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    table = "\n".join(lines) + "\n"
    if args.report:
        args.report.write_text("# Named survivors of issue 20 (`python scripts/named_survivors.py`)\n\n" + table)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
