#!/usr/bin/env python
"""Benchmark: the group elastic-net models of the default config on 21 and 2000 subjects.

The features tables are fabricated from the generative model
(:func:`ptsd_bidsapp.simulate.features.write_feature_tables`, planted effects + estimation
noise; no images), the change table is built by the group level's own reader, and every
model of ``elastic_net.models`` in ``data/default_config.yml`` is fitted with
:func:`ptsd_bidsapp.group.models.fit_model` — cv.glmnet at λ_min, nested CV (leave-one-out up
to ``nested_max_loo`` subjects, 10 × 10-fold above), the permutation test and the bootstrap
selection frequencies, with the config's permutations and bootstraps (1000 / 500) unless
``--quick``.

Printed per number of subjects and model, in the same run:

* wall time of ``fit_model`` (median and min over ``--repeats`` fresh processes, ``--n-jobs``
  processes for the permutations);
* peak RSS of the main process and of the largest permutation worker;
* tracemalloc peak of one ``fit_model`` in a separate pass (serial, at most 64 permutations:
  one permutation chunk at a time is what is held in memory);
* baselines: one plain cv.glmnet fit (:class:`GlmnetCV`, leave-one-out) of the same model, and
  scikit-learn's ``enet_path`` (coordinate descent) on the same standardised data over the same
  100 λs; the ratios are fit_model / GlmnetCV and (wall per path fit) / (one enet_path), the
  path fits being counted as fit_model runs them (cv.glmnet: 1 + n, nested CV per response
  and the permutations: n + n(n−1)/2 or K(1 + K), bootstrap: one shortened path each);
* a digest of each model's results (coefficients, nested-CV predictions, null R²s, selection
  frequencies) — identical digests across ``--n-jobs`` values show that the results do not
  depend on the number of processes.

Usage::

    python benchmarks/group.py [--subjects 21 2000] [--repeats 3] [--n-jobs 2] [--quick] [--keep DIR]
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import pickle
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

#: Permutations / bootstraps with --quick (the defaults come from the config).
QUICK = {"n_permutations": 50, "n_bootstrap": 50}
#: Permutations of the tracemalloc pass (memory is held one permutation chunk at a time).
MEMORY_PERMUTATIONS = 64
SEED = 1


def fabricate(root: Path, n_subjects: int, config: dict) -> tuple[dict, float]:
    """Features tables of ``n_subjects`` (seed 1, as the demo) and the group level's change table."""
    from ptsd_bidsapp.group.changes import build_change_table
    from ptsd_bidsapp.simulate.features import write_feature_tables

    bids, out = root / "bids", root / "out"
    if not (bids / "participants.tsv").exists():  # written last
        write_feature_tables(out, bids, n_subjects=n_subjects, seed=SEED)
    start = time.perf_counter()
    change = build_change_table(out, bids, config)
    return change, time.perf_counter() - start


def path_fits(n: int, en_cfg: dict) -> int:
    """λ-path fits run by fit_model for n subjects (see module docstring)."""
    if n <= int(en_cfg.get("nested_max_loo", 30)):
        nested = n + n * (n - 1) // 2
    else:
        k = int(en_cfg.get("nested_k_folds", 10))
        nested = k * (1 + k)
    return (1 + n) + (1 + int(en_cfg["n_permutations"])) * nested + int(en_cfg["n_bootstrap"])


def digest(result: dict) -> str:
    h = hashlib.sha1()
    for array in (result["coefficients"][["beta_per_sd", "beta_raw", "selection_frequency"]].to_numpy(),
                  result["nested"]["predicted"], np.asarray(result["permutation"]["null_r2"])):
        h.update(np.ascontiguousarray(array, dtype=float).tobytes())
    return h.hexdigest()[:12]


def worker(designs_path: str, n_jobs: int, memory: bool) -> dict:
    """One timed pass over the models (fresh process), or the tracemalloc pass."""
    from ptsd_bidsapp.glmnet import GlmnetCV
    from ptsd_bidsapp.group.models import fit_model

    with open(designs_path, "rb") as handle:
        data = pickle.load(handle)
    en_cfg = data["en_cfg"]
    out = {}
    if memory:
        import tracemalloc

        en_cfg = dict(en_cfg, n_permutations=min(int(en_cfg["n_permutations"]), MEMORY_PERMUTATIONS))
        tracemalloc.start()
        for name, design in data["designs"].items():
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            fit_model(name, design, en_cfg, SEED, n_jobs=1)
            out[name] = {"tracemalloc_mb": (tracemalloc.get_traced_memory()[1] - base) / 2**20}
        return out
    for name, design in data["designs"].items():
        X, y = design["X"].to_numpy(), design["y"].to_numpy()
        start = time.perf_counter()
        GlmnetCV(alpha=float(en_cfg.get("alpha", 0.5)), n_lambda=int(en_cfg.get("n_lambda", 100)),
                 lambda_min_ratio=en_cfg.get("lambda_min_ratio"), penalty_factor=design["penalty_factor"]).fit(X, y)
        cv_s = time.perf_counter() - start
        start = time.perf_counter()
        result = fit_model(name, design, en_cfg, SEED, n_jobs=n_jobs)
        out[name] = {"fit_s": time.perf_counter() - start, "glmnetcv_s": cv_s, "digest": digest(result)}
    if n_jobs != 1:  # let the permutation workers exit, so that their peak RSS is reported
        from joblib.externals.loky import get_reusable_executor

        get_reusable_executor().shutdown(wait=True)
    out["_rss"] = {"main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                   "worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}
    return out


def sklearn_path_seconds(design: dict, en_cfg: dict, calls: int) -> float:
    """Median wall time of one scikit-learn ``enet_path`` on the glmnet-standardised data, same λs."""
    from sklearn.linear_model import enet_path

    from ptsd_bidsapp.glmnet import glmnet_lambda_path

    X, y = design["X"].to_numpy(), design["y"].to_numpy()
    alpha = float(en_cfg.get("alpha", 0.5))
    lambdas = glmnet_lambda_path(X, y, alpha=alpha, n_lambda=int(en_cfg.get("n_lambda", 100)),
                                 lambda_min_ratio=en_cfg.get("lambda_min_ratio"),
                                 penalty_factor=design["penalty_factor"])
    Xs = (X - X.mean(axis=0)) / np.where(X.std(axis=0) > 0, X.std(axis=0), 1.0)
    ys = (y - y.mean()) / y.std()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        enet_path(Xs, ys, l1_ratio=alpha, alphas=lambdas / y.std(), tol=1e-7, max_iter=100_000)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_worker(designs_path: Path, n_jobs: int, memory: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--worker", str(designs_path), "--n-jobs", str(n_jobs)] + (["--memory"] if memory else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, nargs="+", default=[21, 2000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK['n_permutations']} permutations and {QUICK['n_bootstrap']} bootstraps")
    parser.add_argument("--keep", type=Path, help="keep the fabricated features tables here (reused if present)")
    parser.add_argument("--no-memory", action="store_true", help="skip the tracemalloc pass")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.worker:
        print(json.dumps(worker(opts.worker, opts.n_jobs, opts.memory)))
        return 0

    from ptsd_bidsapp.config import load_config
    from ptsd_bidsapp.group.models import model_design

    config = copy.deepcopy(load_config(None))
    en_cfg = config["elastic_net"]
    if opts.quick:
        en_cfg.update(QUICK)
    root = opts.keep or Path(tempfile.mkdtemp(prefix="ptsd_group_bench_"))
    print(f"group elastic-net benchmark: models {', '.join(en_cfg['models'])}; {en_cfg['n_permutations']} "
          f"permutations, {en_cfg['n_bootstrap']} bootstraps; --n-jobs {opts.n_jobs}; {opts.repeats} repeats "
          f"(fresh process each); cpu count {os.cpu_count()}")
    header = (f"{'model':<21}{'n':>5}{'p':>4}{'path fits':>11}{'median s':>10}{'min s':>8}{'GlmnetCV s':>11}"
              f"{'x GlmnetCV':>11}{'us/path':>9}{'x sklearn':>10}{'RSS MB':>8}{'worker':>8}{'tracemal':>9}"
              f"  digest")
    for n_subjects in opts.subjects:
        start = time.perf_counter()
        change, change_s = fabricate(root / f"n{n_subjects}", n_subjects, config)
        designs = {name: model_design(change, name, spec, config) for name, spec in en_cfg["models"].items()}
        designs_path = root / f"n{n_subjects}" / "designs.pkl"
        with open(designs_path, "wb") as handle:
            pickle.dump({"designs": designs, "en_cfg": en_cfg}, handle)
        print(f"\n{n_subjects} subjects: features tables fabricated + change table in "
              f"{time.perf_counter() - start:.1f} s (change table alone {change_s:.2f} s)")
        sk = {name: sklearn_path_seconds(d, en_cfg, 21 if n_subjects <= 100 else 5) for name, d in designs.items()}
        runs = [run_worker(designs_path, opts.n_jobs) for _ in range(opts.repeats)]
        memory = {} if opts.no_memory else run_worker(designs_path, 1, memory=True)
        print(header)
        print("-" * len(header))
        total = []
        for name, design in designs.items():
            walls = [r[name]["fit_s"] for r in runs]
            cv_s = statistics.median(r[name]["glmnetcv_s"] for r in runs)
            fits = path_fits(len(design["y"]), en_cfg)
            wall = statistics.median(walls)
            per_path = wall / fits
            digests = {r[name]["digest"] for r in runs}
            tm = memory.get(name, {}).get("tracemalloc_mb", float("nan"))
            print(f"{name:<21}{len(design['y']):>5}{design['X'].shape[1]:>4}{fits:>11,}{wall:>10.1f}{min(walls):>8.1f}"
                  f"{cv_s:>11.3f}{wall / cv_s:>11.0f}{per_path * 1e6:>9.1f}{per_path / sk[name]:>10.3f}"
                  f"{statistics.median(r['_rss']['main_mb'] for r in runs):>8.0f}"
                  f"{statistics.median(r['_rss']['worker_mb'] for r in runs):>8.0f}{tm:>9.0f}"
                  f"  {'/'.join(sorted(digests))}")
            total.append(walls)
        sums = [sum(w[i] for w in total) for i in range(opts.repeats)]
        print(f"{'all models':<21}{'':>20}{statistics.median(sums):>10.1f}{min(sums):>8.1f}")
        print("sklearn enet_path (one 100-λ path, coordinate descent, tol 1e-7), ms: "
              + ", ".join(f"{k} {v * 1e3:.2f}" for k, v in sk.items()))
    if opts.keep is None:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
