#!/usr/bin/env python
"""Benchmark: calibration of the group DCM (PEB) on null trials built from REAL fMRI signals.

For each seed: build a null pre/post trial with :func:`ptsd_bidsapp.simulate.real_null.build_null_trial`
(real resting-state ROI series from nitime, a real fMRIPrep confounds table from nilearn, random
events, arms and CAPS-5/MADRS scores; nothing planted), run the app's participant level and group
level on it, then read the group DCM tables (``<out>/group/dcm/model-*_peb.tsv``) and count the
between-subject effects (every row but the group mean of a non-change model) that

* reach Pp > 0.95 (the SPM convention the app used before issue 21), and
* are called a finding by the app (boolean ``finding`` column; ``n/a`` while the column does not
  exist),

overall and separately for drug, improvement, improvement x drug and session-change effects (the
``mean`` covariate of the session-change model). Every one of them is null, so every count is a
false positive. The elastic-net permutation p-values (``group/group_summary.json``) are printed for
context, with the median explained variance of the participant DCMs.

Usage::

    python benchmarks/null_calibration.py --seeds 0 1 2 3 4 --n-subjects 12 --work /tmp/nullcal --nprocs 2
    python benchmarks/null_calibration.py --seeds 0 1 --work /tmp/nullcal --group-only   # group level again
    python benchmarks/null_calibration.py --seeds 0 1 2 --work /tmp/nullcal --summarise-only  # tables only

Per seed ``<work>/seed-<S>/{bids,out,work}``; the summary goes to ``<work>/null_calibration.json``
(or ``--json``). ``--group-only`` reuses the trials and participant outputs (e.g. after a change of the
group policy). The app is the ``ptsd_bidsapp`` next to this Python (``--app`` overrides).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

PP_THRESHOLD = 0.95
CATEGORIES = ("drug", "improvement", "interaction", "session_change")
COVARIATE_CATEGORY = {"drug": "drug", "improvement": "improvement", "improvement_x_drug": "interaction"}
TRUE_STRINGS = {"true", "1", "yes", "t", "1.0"}


def _app_default() -> str:
    here = Path(sys.executable).parent / "ptsd_bidsapp"
    if here.exists():
        return str(here)
    repo = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "ptsd_bidsapp"
    return str(repo) if repo.exists() else (shutil.which("ptsd_bidsapp") or "ptsd_bidsapp")


def _run(cmd: list[str], log: Path) -> float:
    """Run ``cmd`` with stdout/stderr to ``log``; return wall seconds; raise on failure (log tail shown)."""
    start = time.perf_counter()
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-25:])
        raise RuntimeError(f"{' '.join(cmd[:5])} ... exited {proc.returncode} after {wall:.0f} s; log {log}:\n{tail}")
    return wall


# --------------------------------------------------------------------------- reading results


def _bool_column(values: pd.Series) -> pd.Series:
    if values.dtype == bool:
        return values
    return values.astype(str).str.strip().str.lower().isin(TRUE_STRINGS)


def _permutation_column(table: pd.DataFrame, fwe: bool = False) -> str | None:
    """The re-randomisation / permutation p column (``p_rnd``), or its FWE-corrected one (``p_rnd_fwe``)."""
    for name in table.columns:
        low = name.lower()
        if low.startswith("p") and ("perm" in low or "rnd" in low or "random" in low) and (("fwe" in low) == fwe):
            return name
    return None


def read_dcm_effects(out: Path) -> pd.DataFrame:
    """One row per null between-subject effect of every group DCM model.

    Columns: ``model``, ``effect``, ``parameter``, ``covariate``, ``category`` (drug, improvement,
    interaction, session_change, other), ``Ep``, ``Pp``, ``p_perm`` and ``p_perm_fwe`` (the app's
    re-randomisation p, uncorrected and corrected over parameters; NaN if absent), ``finding`` (NaN
    if the column is absent).
    """
    rows = []
    for path in sorted((out / "group" / "dcm").glob("model-*_peb.tsv")):
        model = path.name[len("model-"):-len("_peb.tsv")]
        table = pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=True)
        is_change_model = "change" in model or ("effect" in table and table["effect"].astype(str).eq("change").any())
        prob = "Pp" if "Pp" in table else "Pp_sign"
        perm, perm_fwe = _permutation_column(table), _permutation_column(table, fwe=True)
        finding = _bool_column(table["finding"]) if "finding" in table else None
        for i, row in table.iterrows():
            cov = str(row["covariate"])
            effect = str(row.get("effect", "")) if pd.notna(row.get("effect", None)) else ""
            if cov == "mean":
                if is_change_model and effect in ("change", "", "nan"):
                    category = "session_change"
                else:
                    continue  # group mean of a parameter: not a between-subject effect
            else:
                category = COVARIATE_CATEGORY.get(cov, "other")
            rows.append({
                "model": model, "effect": effect, "parameter": row["parameter"], "covariate": cov,
                "category": category, "Ep": float(row.get("Ep_bma", row["Ep"])), "Pp": float(row[prob]),
                "p_perm": float(row[perm]) if perm and pd.notna(row[perm]) else math.nan,
                "p_perm_fwe": float(row[perm_fwe]) if perm_fwe and pd.notna(row[perm_fwe]) else math.nan,
                "finding": (bool(finding.iloc[i]) if finding is not None else math.nan),
            })
    return pd.DataFrame(rows, columns=["model", "effect", "parameter", "covariate", "category", "Ep", "Pp",
                                       "p_perm", "p_perm_fwe", "finding"])


def read_elastic_net(out: Path) -> dict:
    """``{model: permutation p}`` from ``group/group_summary.json`` (failed models: None)."""
    path = out / "group" / "group_summary.json"
    if not path.is_file():
        return {}
    summary = json.loads(path.read_text())
    return {name: m.get("PermutationP") for name, m in summary.get("Models", {}).items()}


def read_dcm_fits(out: Path) -> dict:
    """Median / min explained variance (percent, as the DCM JSON) and how many DCMs were flagged as poor fits."""
    values, flagged, n = [], 0, 0
    for path in out.glob("sub-*/ses-*/func/*_dcm.json"):
        try:
            meta = json.loads(path.read_text())
        except ValueError:
            continue
        n += 1
        diag = meta.get("diagnostics") if isinstance(meta.get("diagnostics"), dict) else {}
        ev = meta.get("explained_variance", diag.get("explained_variance"))
        if isinstance(ev, dict):
            ev = ev.get("total", ev.get("overall"))
        if isinstance(ev, (int, float)):
            values.append(float(ev))
        # flagged: the DCM's diagnostics (spm_dcm_fmri_check) call it a poor fit
        if diag.get("fit_ok", meta.get("qc_pass")) is False:
            flagged += 1
    s = pd.Series(values, dtype=float)
    return {"n_dcms": n, "explained_variance_median": float(s.median()) if len(s) else None,
            "explained_variance_min": float(s.min()) if len(s) else None, "n_flagged": flagged}


def summarise(effects: pd.DataFrame) -> dict:
    """Counts overall and per category: n, n at Pp > 0.95, n findings (None if no ``finding`` column)."""
    def block(frame: pd.DataFrame) -> dict:
        has_finding = len(frame) > 0 and frame["finding"].notna().all()
        has_perm = len(frame) > 0 and frame["p_perm"].notna().any()
        has_fwe = len(frame) > 0 and frame["p_perm_fwe"].notna().any()
        return {
            "n": int(len(frame)),
            "pp95": int((frame["Pp"] > PP_THRESHOLD).sum()),
            "findings": int(frame["finding"].astype(bool).sum()) if has_finding else None,
            "perm_p05": int((frame["p_perm"] < 0.05).sum()) if has_perm else None,
            "perm_fwe_p05": int((frame["p_perm_fwe"] < 0.05).sum()) if has_fwe else None,
        }

    out = {"all": block(effects)}
    for cat in CATEGORIES + ("other",):
        sub = effects[effects["category"] == cat]
        if cat != "other" or len(sub):
            out[cat] = block(sub)
    return out


# --------------------------------------------------------------------------- printing


def _frac(k, n) -> str:
    if k is None:
        return "n/a"
    return f"{k}/{n} ({100.0 * k / n:.0f}%)" if n else "0/0"


def _pvals(en: dict) -> str:
    return ", ".join(f"{k} {v:.2f}" if isinstance(v, (int, float)) else f"{k} n/a" for k, v in en.items()) or "n/a"


def print_seed(seed: int, counts: dict, en: dict, fits: dict, timing: dict, effects: pd.DataFrame) -> None:
    a = counts["all"]
    print(f"\n== seed {seed}: {a['n']} null between-subject DCM effects; Pp > 0.95: {_frac(a['pp95'], a['n'])}; "
          f"findings: {_frac(a['findings'], a['n'])}"
          + (f"; re-randomisation p < 0.05: {_frac(a['perm_p05'], a['n'])}" if a["perm_p05"] is not None else "")
          + (f" (FWE {_frac(a['perm_fwe_p05'], a['n'])})" if a.get("perm_fwe_p05") is not None else ""))
    for cat in CATEGORIES:
        c = counts.get(cat)
        if c:
            print(f"   {cat:<15} Pp>0.95 {_frac(c['pp95'], c['n']):<14} findings {_frac(c['findings'], c['n'])}")
    hits = effects[(effects["Pp"] > PP_THRESHOLD) | (effects["finding"] == True)]  # noqa: E712
    for _, r in hits.iterrows():
        extra = f" p_rnd {r['p_perm']:.3f}" if not math.isnan(r["p_perm"]) else ""
        extra += f" p_fwe {r['p_perm_fwe']:.3f}" if not math.isnan(r["p_perm_fwe"]) else ""
        find = "n/a" if isinstance(r["finding"], float) and math.isnan(r["finding"]) else str(bool(r["finding"]))
        print(f"     {r['model']:<9} {r['parameter']:<32} {r['covariate']:<19} Ep {r['Ep']:+.3f} Pp {r['Pp']:.2f}"
              f"{extra} finding {find}")
    print(f"   elastic-net permutation p: {_pvals(en)}")
    if fits.get("n_dcms"):
        ev = fits["explained_variance_median"]
        ev_text = "n/a" if ev is None else f"{ev:.1f}% (min {fits['explained_variance_min']:.1f}%)"
        print(f"   participant DCMs: {fits['n_dcms']}, explained variance median {ev_text}, "
              f"flagged {fits['n_flagged']}")
    print("   time: " + (", ".join(f"{k} {v:.0f} s" for k, v in timing.items()) or "n/a"))


def print_table(results: list[dict]) -> dict:
    header = ["seed", "n", "Pp>0.95", "findings"] + [f"{c} Pp/find" for c in CATEGORIES] + ["EN perm p", "time s"]
    lines = [header]
    total = {cat: {"n": 0, "pp95": 0, "findings": 0, "findings_known": True} for cat in ("all",) + CATEGORIES}
    for r in results:
        c = r["counts"]
        row = [str(r["seed"]), str(c["all"]["n"]), _frac(c["all"]["pp95"], c["all"]["n"]),
               _frac(c["all"]["findings"], c["all"]["n"])]
        for cat in CATEGORIES:
            cc = c.get(cat, {"n": 0, "pp95": 0, "findings": None})
            row.append(f"{cc['pp95']}/{'n/a' if cc['findings'] is None else cc['findings']} of {cc['n']}")
        row.append(" ".join(f"{v:.2f}" if isinstance(v, (int, float)) else "n/a"
                            for v in r["elastic_net_permutation_p"].values()))
        row.append(f"{sum(r['timing_s'].values()):.0f}")
        lines.append(row)
        for cat in total:
            cc = c.get(cat, {"n": 0, "pp95": 0, "findings": None})
            total[cat]["n"] += cc["n"]
            total[cat]["pp95"] += cc["pp95"]
            if cc["findings"] is None:
                total[cat]["findings_known"] = False
            else:
                total[cat]["findings"] += cc["findings"]
    overall = {cat: {"n": t["n"], "pp95": t["pp95"], "findings": t["findings"] if t["findings_known"] else None}
               for cat, t in total.items()}
    row = ["all", str(overall["all"]["n"]), _frac(overall["all"]["pp95"], overall["all"]["n"]),
           _frac(overall["all"]["findings"], overall["all"]["n"])]
    for cat in CATEGORIES:
        o = overall[cat]
        row.append(f"{o['pp95']}/{'n/a' if o['findings'] is None else o['findings']} of {o['n']}")
    row += ["", f"{sum(sum(r['timing_s'].values()) for r in results):.0f}"]
    lines.append(row)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    print("\nNull calibration of the group DCM (every effect is null; advertised false-positive rate <= 5%)")
    print("per category: <n at Pp > 0.95>/<n findings> of <n effects>; EN perm p: elastic-net models "
          + "all, drug_interaction, depression_covariate, ketamine_only (packaged config order)")
    for k, line in enumerate(lines):
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)))
        if k == 0 or k == len(lines) - 2:
            print("  ".join("-" * w for w in widths))
    return overall


# --------------------------------------------------------------------------- main


def run_seed(seed: int, args) -> dict:
    from ptsd_bidsapp.simulate.real_null import build_null_trial

    root = Path(args.work) / f"seed-{seed}"
    bids, out, work = root / "bids", root / "out", root / "work"
    timing: dict[str, float] = {}
    common = ["--nprocs", str(args.nprocs), "--seed", str(seed), "--skip-bids-validation"]
    if not args.reports:
        common.append("--no-reports")
    if args.config:
        common += ["--config", str(Path(args.config).resolve())]
    if not args.group_only:
        truth = bids / "sourcedata" / "simulation" / "truth.json"
        if args.rebuild or not truth.is_file():
            start = time.perf_counter()
            build_null_trial(bids, n_subjects=args.n_subjects, seed=seed, resolution=args.resolution,
                             n_volumes=args.n_volumes, force=True)
            timing["build"] = time.perf_counter() - start
        for path in (out, work):
            if path.exists():
                shutil.rmtree(path)
        timing["participant"] = _run([args.app, str(bids), str(out), "participant", "-w", str(work), *common],
                                     root / "participant.log")
    elif not any(out.glob("sub-*")):
        raise FileNotFoundError(f"--group-only: no participant outputs in {out}; run without --group-only first")
    if (out / "group").exists():
        shutil.rmtree(out / "group")
    timing["group"] = _run([args.app, str(bids), str(out), "group", "-w", str(work), *common], root / "group.log")
    effects = read_dcm_effects(out)
    if effects.empty:
        raise RuntimeError(f"seed {seed}: no group DCM tables under {out / 'group' / 'dcm'}; see {root / 'group.log'}")
    effects.to_csv(root / "dcm_effects.tsv", sep="\t", index=False, na_rep="n/a")
    counts = summarise(effects)
    en = read_elastic_net(out)
    fits = read_dcm_fits(out)
    print_seed(seed, counts, en, fits, timing, effects)
    result = {"seed": seed, "counts": counts, "elastic_net_permutation_p": en, "dcm_fits": fits, "timing_s": timing,
              "effects_table": str(root / "dcm_effects.tsv")}
    (root / "result.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


def summarise_seed(seed: int, args) -> dict:
    """``--summarise-only``: read an existing seed's group outputs (timings from its ``result.json``)."""
    root = Path(args.work) / f"seed-{seed}"
    out = root / "out"
    effects = read_dcm_effects(out)
    if effects.empty:
        raise FileNotFoundError(f"seed {seed}: no group DCM tables under {out / 'group' / 'dcm'}")
    previous = root / "result.json"
    timing = json.loads(previous.read_text()).get("timing_s", {}) if previous.is_file() else {}
    for summary in ([] if timing else sorted(Path(args.work).glob("*.json"))):  # earlier runs' summaries
        try:
            found = [r for r in json.loads(summary.read_text()).get("results", []) if r.get("seed") == seed]
        except (ValueError, AttributeError):
            continue
        if found and found[0].get("timing_s"):
            timing = found[0]["timing_s"]
            break
    counts, en, fits = summarise(effects), read_elastic_net(out), read_dcm_fits(out)
    print_seed(seed, counts, en, fits, timing, effects)
    return {"seed": seed, "counts": counts, "elastic_net_permutation_p": en, "dcm_fits": fits, "timing_s": timing,
            "effects_table": str(root / "dcm_effects.tsv")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--n-subjects", type=int, default=12)
    parser.add_argument("--work", required=True, help="folder for the trials, outputs and logs")
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--group-only", action="store_true",
                        help="rerun only the group level on existing participant outputs")
    parser.add_argument("--summarise-only", action="store_true",
                        help="run nothing: read the seeds' existing group outputs and print the tables")
    parser.add_argument("--rebuild", action="store_true", help="rebuild trials that already exist in --work")
    parser.add_argument("--resolution", type=float, default=4.0)
    parser.add_argument("--n-volumes", type=int, default=150)
    parser.add_argument("--reports", action="store_true", help="let the app write its HTML reports (slower)")
    parser.add_argument("--config", default=None,
                        help="analysis config YAML passed to the app at both levels (e.g. fewer elastic-net "
                             "permutations for a quick run; default: the app's packaged config)")
    parser.add_argument("--app", default=_app_default(), help="ptsd_bidsapp executable")
    parser.add_argument("--json", default=None, help="summary JSON (default <work>/null_calibration.json)")
    args = parser.parse_args(argv)
    Path(args.work).mkdir(parents=True, exist_ok=True)
    print(f"null calibration: seeds {args.seeds}, {args.n_subjects} subjects, app {args.app}"
          + (" (group level only)" if args.group_only else "")
          + (" (summary of existing outputs)" if args.summarise_only else ""), flush=True)
    results, failed = [], {}
    for seed in args.seeds:
        try:
            results.append(summarise_seed(seed, args) if args.summarise_only else run_seed(seed, args))
        except (RuntimeError, FileNotFoundError) as err:
            print(f"\n== seed {seed}: FAILED: {err}", file=sys.stderr)
            failed[seed] = str(err)
        sys.stdout.flush()
    overall = print_table(results) if results else {}
    summary = {"seeds": args.seeds, "n_subjects": args.n_subjects, "pp_threshold": PP_THRESHOLD,
               "group_only": args.group_only, "summarise_only": args.summarise_only, "app": args.app, "results": results, "overall": overall,
               "failed": failed}
    path = Path(args.json) if args.json else Path(args.work) / "null_calibration.json"
    path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"\nsummary: {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
