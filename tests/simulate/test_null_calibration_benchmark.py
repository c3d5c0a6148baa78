"""benchmarks/null_calibration.py: its reader on group DCM tables, and a small run end to end.

Apart from tests/simulate/test_real_null.py (which builds its own null trial, module fixture): under
``--dist loadfile`` the end-to-end run, the longest test of the suite after the participant level, can
then run on one worker while that file runs on the other.
"""

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("nitime", reason="the real ROI series ship in nitime (test extra)")


@pytest.mark.slow
def test_null_calibration_benchmark_end_to_end(tmp_path, capsys):
    """Small CI version of benchmarks/null_calibration.py: 6 subjects, 8 mm, 80 volumes (the fewest
    the null trial allows at TR 2 s: 160 s for fMRIPrep's 128 s cosine basis), one seed.

    The elastic-net permutations/bootstraps (context only here) are cut to keep it short; the group
    DCM, which the benchmark measures, runs with the packaged defaults.
    """
    null_calibration = _benchmark_module()
    config = tmp_path / "quick.yml"
    config.write_text("elastic_net:\n  n_permutations: 19\n  n_bootstrap: 10\n")
    code = null_calibration.main(["--seeds", "0", "--n-subjects", "6", "--resolution", "8", "--n-volumes", "80",
                                  "--work", str(tmp_path / "work"), "--nprocs", "2", "--config", str(config)])
    out = capsys.readouterr().out
    assert code == 0, out
    summary = json.loads((tmp_path / "work" / "null_calibration.json").read_text())
    counts = summary["results"][0]["counts"]
    assert counts["all"]["n"] >= 24  # A and B between-region effects x covariates, baseline and change models
    assert {"drug", "improvement", "interaction", "session_change"} <= set(counts)
    assert 0 <= counts["all"]["pp95"] <= counts["all"]["n"]
    assert "Null calibration of the group DCM" in out


def _benchmark_module():
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    try:
        import null_calibration
    finally:
        sys.path.pop(0)
    return null_calibration


def test_benchmark_reads_and_counts_group_dcm_tables(tmp_path):
    """The benchmark's reader on tables shaped as group/dcm/model-*_peb.tsv (with and without ``finding``)."""
    bench = _benchmark_module()
    dcm = tmp_path / "group" / "dcm"
    dcm.mkdir(parents=True)
    params = ["A_amygdala-vmpfc", "B_fearful_vmpfc-amygdala"]
    covs = ["mean", "improvement", "drug", "improvement_x_drug"]
    rows = [{"parameter": p, "effect": "change", "covariate": c, "Ep": 0.1, "Cp": 0.01, "Pp_sign": 0.9,
             "Ep_bma": 0.1, "Cp_bma": 0.01, "Pp": 0.99 if c == "drug" else 0.2} for p in params for c in covs]
    pd.DataFrame(rows).to_csv(dcm / "model-change_peb.tsv", sep="\t", index=False)
    base = [dict(r, effect="n/a", Pp=0.97 if r["covariate"] == "mean" else 0.5) for r in rows]
    for r in base:
        r["finding"] = r["covariate"] == "mean"
        r["p_perm"] = 0.5
    pd.DataFrame(base).to_csv(dcm / "model-baseline_peb.tsv", sep="\t", index=False, na_rep="n/a")
    effects = bench.read_dcm_effects(tmp_path)
    # baseline group means are not between-subject effects; the change model's mean is the session change
    assert len(effects) == 2 * 4 + 2 * 3
    counts = bench.summarise(effects)
    assert counts["session_change"]["n"] == 2 and counts["drug"]["n"] == 4
    assert counts["all"]["pp95"] == 2 and counts["drug"]["pp95"] == 2
    assert counts["all"]["findings"] is None  # the change table has no finding column: n/a, not 0
    baseline_only = bench.summarise(effects[effects["model"] == "baseline"])
    assert baseline_only["all"]["findings"] == 0 and baseline_only["all"]["perm_p05"] == 0
