#!/usr/bin/env bash
# Mutation testing of the numerical core with mutmut (PyPI, >= 3.3), one module at a time,
# against that module's fast (unit-tier) tests. Appends each module's score to the report.
#
#   scripts/mutation.sh                         # every module of MODULES below (hours of CPU)
#   scripts/mutation.sh ptsd_bidsapp/measures/restfc.py      # one module (its tests from MODULES)
#   JOBS=2 REPORT=scripts/mutation_report.md scripts/mutation.sh ...
#   MUTANTS="ptsd_bidsapp.dcm.model.x_gx__mutmut_28 ..." scripts/mutation.sh ptsd_bidsapp/dcm/model.py
#                                               # re-run only these mutants (e.g. last run's survivors)
#   WORKDIR=/tmp/mut_compiled scripts/mutation.sh ptsd_bidsapp/glmnet/compiled.py
#                                               # keep the scratch copy there (not removed at exit): its statuses
#                                               # stay readable, and a stopped run resumes where it stopped when
#                                               # started again with the same sources and tests (mutmut keeps
#                                               # each verdict in mutants/; after a change of the tests start in
#                                               # a new WORKDIR: the covered lines, hence mutant numbers, may move)
#
# Runs in a scratch copy of the checkout (mutmut writes ./mutants), with nice -n 15. The score
# is killed / (killed + survived + timeout + suspicious); "no tests" mutants (lines no selected
# test reaches) are counted as survivors too. Survivors are listed with their diff in the
# report; the equivalent ones are marked there by hand (scripts/mutation_report.md).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON="$(command -v python3)"
JOBS="${JOBS:-1}"
REPORT="${REPORT:-$ROOT/scripts/mutation_report.md}"

# module -> the unit-tier tests that pin it
declare -A MODULES=(
  [ptsd_bidsapp/dcm/model.py]="tests/dcm/test_conventions.py tests/dcm/test_dcm_model.py"
  [ptsd_bidsapp/dcm/integrate.py]="tests/dcm/test_integrate.py tests/dcm/test_dcm_model.py tests/dcm/test_conventions.py"
  [ptsd_bidsapp/dcm/priors.py]="tests/dcm/test_priors.py tests/dcm/test_dcm_model.py"
  [ptsd_bidsapp/dcm/inversion.py]="tests/dcm/test_inversion.py tests/dcm/test_spm12_reference.py tests/dcm/test_conventions.py tests/dcm/test_unreached_branches.py"
  [ptsd_bidsapp/peb/reduce.py]="tests/peb/test_reduce.py tests/peb/test_bmr_rules.py tests/peb/test_fit.py tests/peb/test_bmr.py tests/peb/test_spm12_peb.py"
  [ptsd_bidsapp/peb/fit.py]="tests/peb/test_fit.py tests/peb/test_fit_units.py tests/peb/test_unreached_branches.py tests/peb/test_conventions.py tests/peb/test_session_change.py tests/peb/test_spm12_peb.py"
  [ptsd_bidsapp/peb/loo.py]="tests/peb/test_loo_units.py tests/peb/test_loo.py tests/peb/test_conventions.py tests/peb/test_spm12_peb.py"
  [ptsd_bidsapp/peb/rnd.py]="tests/peb/test_rnd_units.py tests/peb/test_rnd.py"
  [ptsd_bidsapp/peb/bmr.py]="tests/peb/test_bmr_rules.py tests/peb/test_conventions.py tests/peb/test_reduce.py tests/peb/test_bmr.py tests/peb/test_spm12_peb.py"
  [ptsd_bidsapp/glmnet/solver.py]="tests/glmnet/test_solver.py tests/glmnet/test_cv.py tests/glmnet/test_bootstrap_truth.py tests/glmnet/test_unreached_branches.py"
  [ptsd_bidsapp/glmnet/cv.py]="tests/glmnet/test_cv.py tests/glmnet/test_solver.py"
  [ptsd_bidsapp/measures/restfc.py]="tests/measures/test_conventions.py tests/measures/test_signals.py"
  [ptsd_bidsapp/measures/voi.py]="tests/measures/test_conventions.py tests/measures/test_signals.py"
  [ptsd_bidsapp/measures/qc.py]="tests/measures/test_qc.py tests/measures/test_signals.py"
  [ptsd_bidsapp/measures/gppi.py]="tests/measures/test_conventions.py tests/measures/test_gppi.py tests/measures/test_gppi_spm12.py"
  [ptsd_bidsapp/measures/activation.py]="tests/measures/test_conventions.py tests/measures/test_signals.py"
  [ptsd_bidsapp/contracts.py]="tests/test_contracts.py"
  # (no n_jobs > 1 test: a mutant forked by mutmut hangs on the loky executor its parent started)
  [ptsd_bidsapp/glmnet/inference.py]="tests/glmnet/test_inference_definitions.py tests/glmnet/test_bootstrap_truth.py tests/glmnet/test_sequential.py::test_definition_on_a_hand_made_sequence tests/glmnet/test_sequential.py::test_sequential_p_is_valid_under_the_null tests/glmnet/test_sequential.py::test_permutation_test_runs_all_permutations_when_few_reach_the_observed"
  # compiled.py runs as plain Python here (see JIT_STRIPPED below): test_compiled.py's nested-CV/permutation
  # comparison (2 min without numba) is left out; its fast tests are named one by one
  [ptsd_bidsapp/glmnet/compiled.py]="tests/glmnet/test_compiled_truth.py tests/glmnet/test_compiled.py::test_compiled_paths_equal_numpy_paths tests/glmnet/test_compiled.py::test_wide_design_and_unpenalised_and_constant_predictors tests/glmnet/test_compiled.py::test_all_zero_path_above_lambda_max tests/glmnet/test_compiled.py::test_collinear_columns tests/glmnet/test_compiled.py::test_nearly_collinear_columns_lasso tests/glmnet/test_compiled.py::test_singular_problems_are_flagged_for_the_numpy_solver tests/glmnet/test_compiled.py::test_nested_loo_lambda_min_is_the_inner_cv_minimum tests/glmnet/test_compiled.py::test_cholesky_appends_and_deletes_keep_the_factor_of_the_active_system tests/glmnet/test_compiled.py::test_append_refuses_a_column_that_makes_the_system_singular"
)

# Modules whose functions carry numba's decorator `@_jit`: mutmut does not mutate decorated
# functions (mutmut/mutation/file_mutation.py skips them), so the scratch copy drops the decorator
# lines and the run sets NUMBA_DISABLE_JIT=1 (`_jit` itself reads no variable; numba's own
# switch keeps anything else from compiling). The functions then run as plain Python through
# mutmut's trampolines: same results, ~100x slower, hence the short test list above.
declare -A JIT_STRIPPED=(
  [ptsd_bidsapp/glmnet/compiled.py]=1
)

if [ "$#" -gt 0 ]; then targets=("$@"); else targets=("${!MODULES[@]}"); fi

if [ -n "${WORKDIR:-}" ]; then
  scratch="$WORKDIR"; mkdir -p "$scratch"
else
  scratch="$(mktemp -d "${TMPDIR:-/tmp}/mutation.XXXXXX")"
  trap 'rm -rf "$scratch"' EXIT
fi
[ -f "$REPORT" ] || printf '# Mutation testing (mutmut)\n\nMade by `scripts/mutation.sh`; newest runs last.\n' > "$REPORT"

for module in "${targets[@]}"; do
  tests="${MODULES[$module]:?no tests listed for $module in scripts/mutation.sh}"
  work="$scratch/$(echo "$module" | tr '/.' '__')"
  mkdir -p "$work"
  cp -r "$ROOT/ptsd_bidsapp" "$ROOT/tests" "$ROOT/README.md" "$work/"
  # mutmut reads [mutmut] from setup.cfg (pyproject.toml has no [tool.mutmut] here)
  cp "$ROOT/setup.cfg" "$work/setup.cfg"
  {
    printf '\n[mutmut]\nsource_paths = ptsd_bidsapp\nonly_mutate = %s\n' "$module"
    printf 'mutate_only_covered_lines = true\n'
    # one pytest argument per line (mutmut passes a one-line value as a single argument)
    printf 'pytest_add_cli_args =\n    -p\n    no:cacheprovider\n    -q\n    -m\n    not slow\n'
    printf 'pytest_add_cli_args_test_selection =\n'
    for t in $tests; do printf '    %s\n' "$t"; done
  } >> "$work/setup.cfg"
  jit_env=()
  if [ -n "${JIT_STRIPPED[$module]:-}" ]; then
    sed -i '/^@_jit[[:space:]]*$/d' "$work/$module"
    if grep -n '^[[:space:]]*@' "$work/$module"; then
      echo "$module: decorators left after stripping @_jit (mutmut would skip those functions)" >&2
      exit 1
    fi
    jit_env=(NUMBA_DISABLE_JIT=1)
  fi
  # a kept WORKDIR: mutmut's copy of the module is its trampolined file from the last run, and mutmut
  # would measure the covered lines on that (and mutate the wrong lines); remove it so mutmut copies
  # the source afresh (its verdicts, in mutants/<module>.meta, are kept)
  rm -f "$work/mutants/$module"
  start=$(date +%s)
  (cd "$work" && env -u PYTHONPATH ${jit_env[@]+"${jit_env[@]}"} nice -n 15 "$PYTHON" -m mutmut run --max-children "$JOBS" ${MUTANTS:-} > run.log 2>&1) || true
  (cd "$work" && env -u PYTHONPATH ${jit_env[@]+"${jit_env[@]}"} "$PYTHON" -m mutmut results --all true > results.txt 2>&1) || true
  seconds=$(( $(date +%s) - start ))
  "$PYTHON" - "$work" "$module" "$tests" "$seconds" "$REPORT" "$PYTHON" <<'EOF'
import collections, subprocess, sys
from pathlib import Path
work, module, tests, seconds, report, python = sys.argv[1:]
status = {}
for line in (Path(work) / "results.txt").read_text().splitlines():
    if ": " in line and "__mutmut_" in line:
        name, state = line.strip().rsplit(": ", 1)
        status[name] = state.strip()
counts = collections.Counter(status.values())
killed = counts.get("killed", 0)
considered = sum(v for k, v in counts.items() if k not in ("skipped", "not checked"))
score = 100.0 * killed / considered if considered else float("nan")
lines = [f"\n## `{module}`\n",
         f"`scripts/mutation.sh {module}` — tests: {', '.join(f'`{t}`' for t in tests.split())}; "
         f"{seconds} s wall\n",
         f"**score {score:.1f} %** ({killed} killed of {considered}; " +
         ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + ")\n"]
survivors = [n for n, s in status.items() if s not in ("killed", "skipped", "not checked")]
if survivors:
    lines.append("\nSurvivors (equivalent ones to be marked):\n")
for name in survivors:
    diff = subprocess.run([python, "-m", "mutmut", "show", name], cwd=work, capture_output=True, text=True).stdout
    body = "\n".join(l for l in diff.splitlines() if l.startswith(("+", "-")) and not l.startswith(("+++", "---")))
    lines.append(f"- `{name}` ({status[name]})\n\n```diff\n{body}\n```\n")
with open(report, "a") as fh:
    fh.write("\n".join(lines))
print(f"{module}: score {score:.1f} % ({killed}/{considered}) in {seconds} s")
EOF
done
