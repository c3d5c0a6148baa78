#!/usr/bin/env python
"""Benchmark: the compiled path solver vs the numpy solver (and Fortran glmnet per path), group level.

For each number of subjects (default 21, 50, 100) the group level's four elastic-net models
are fabricated as in ``benchmarks/group.py`` (features tables from the generative model, the
group level's own change table and designs) and every model is fitted with
:func:`ptsd_bidsapp.group.models.fit_model` (cv.glmnet, nested CV, permutation test, bootstrap)
in a fresh process per solver, printing in the same run:

* wall and CPU seconds of the four models (CPU = the process + its permutation workers, which
  counts the work whatever else runs on the shared machine), with the default 1000
  permutations + 500 bootstraps for the compiled solver and ``--numpy-permutations`` for the
  numpy solver (the numpy solver at n = 100 would take hours: its total is then extrapolated
  per permutation, and labelled so);
* equality: the compiled solver's results against the numpy solver's on the same permutations
  (p-values exactly, nested predictions / coefficients / null R² max abs difference,
  selection frequencies exactly);
* per-path CPU time on each model's leave-one-out training sets (one path per set, the λ grid each
  set computes, 100 λs, glmnet's early stop): compiled vs numpy solver, and Fortran glmnet
  (python-glmnet's ``elnet`` on the same standardised data and the same λs, ``thresh`` 1e-7 =
  glmnet's default, and 1e-12) when ``--pyglmnet PYTHON`` names an interpreter that has it;
* the compile cost: CPU seconds of importing the solver and solving one small problem set in
  a fresh process, with the on-disk cache and with an empty ``NUMBA_CACHE_DIR``.

Usage::

    python benchmarks/group_solver.py [--subjects 21 50 100] [--n-jobs 2] [--numpy-permutations 1000 30 10]
        [--pyglmnet /path/to/python-with-glmnet] [--keep DIR]
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
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

HERE = Path(__file__).resolve().parent
SEED = 1


def _group_bench():
    spec = importlib.util.spec_from_file_location("group_bench", HERE / "group.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


# ---------------------------------------------------------------------------------------
# fresh-process workers


def fit_worker(designs_path: str, solver: str, n_permutations: int, n_jobs: int, out_path: str) -> dict:
    """fit_model on every model with ``solver``; results pickled to ``out_path``; timings returned."""
    from ptsd_bidsapp.group.models import fit_model

    with open(designs_path, "rb") as handle:
        data = pickle.load(handle)
    en_cfg = dict(data["en_cfg"], solver=solver, n_permutations=n_permutations)
    wall0, cpu0 = time.perf_counter(), _cpu_seconds()
    timings, results = {}, {}
    for name, design in data["designs"].items():
        start = time.perf_counter()
        result = fit_model(name, design, en_cfg, SEED, n_jobs=n_jobs)
        timings[name] = time.perf_counter() - start
        results[name] = {"p": result["permutation"]["p_value"], "null": np.asarray(result["permutation"]["null_r2"]),
                         "pred": result["nested"]["predicted"], "coef": result["cv"].coef_path_,
                         "freq": result["bootstrap"]["frequency"], "r2": result["nested"]["r2"]}
    if n_jobs != 1:  # let the permutation workers exit, so that their CPU time is counted
        from joblib.externals.loky import get_reusable_executor

        get_reusable_executor().shutdown(wait=True)
    with open(out_path, "wb") as handle:
        pickle.dump(results, handle)
    return {"wall_s": time.perf_counter() - wall0, "cpu_s": _cpu_seconds() - cpu0, "models": timings}


def compile_worker() -> dict:
    """CPU seconds to import the solver and solve a small problem set (compile or cache load included)."""
    cpu0 = time.process_time()
    from ptsd_bidsapp.glmnet import GlmnetCV

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(10, 4)), rng.normal(size=10)
    GlmnetCV(solver="compiled").fit(X, y)
    return {"cpu_s": time.process_time() - cpu0}


def run(args: list[str], env: dict | None = None) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                          env=None if env is None else {**os.environ, **env})
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------
# per-path timing


def loo_problems(design: dict, en_cfg: dict):
    """The leave-one-out training sets of a model's design: standardised moments and their λ paths."""
    from ptsd_bidsapp.glmnet import solver as S

    X, y = design["X"].to_numpy(), design["y"].to_numpy()
    n, p = X.shape
    x0, _, _ = S._prescale(X)
    pf = S._penalty_factor(design["penalty_factor"], p)
    W = 1.0 - np.eye(n)
    args = (x0, W, np.arange(n), y[None, :], np.zeros(n, dtype=int), pf, float(en_cfg["alpha"]),
            int(en_cfg["n_lambda"]), S._lambda_min_ratio(n - 1, p, en_cfg.get("lambda_min_ratio")))
    return args, x0, y, pf


def time_paths(args, solver: str, repeats: int = 5) -> tuple[float, dict]:
    """Median CPU seconds per path of ``_fit_computed_paths`` over the training sets (one call for all).

    One BLAS thread, as Fortran glmnet and the permutation workers (joblib's loky backend limits
    them): with OpenBLAS's two threads the small matrix products of the moments cost ~5× the
    CPU time on a busy machine (threads spinning).
    """
    from threadpoolctl import threadpool_limits

    from ptsd_bidsapp.glmnet import solver as S

    times, fit = [], S._fit_computed_paths(*args, solver=solver)  # the first call loads the compiled code
    with threadpool_limits(limits=1):
        for _ in range(repeats):
            start = time.process_time()
            fit = S._fit_computed_paths(*args, solver=solver)
            times.append(time.process_time() - start)
    return statistics.median(times) / args[2].size, fit


PYGLMNET = r"""
import json, sys, time, statistics
import numpy as np
from _glmnet import elnet  # python-glmnet's f2py wrapper of glmnet's Fortran elnet
d = np.load(sys.argv[1])
x0, y, W, lam, pf, alpha, thresh = d["x0"], d["y"], d["W"], d["lam"], d["pf"], float(d["alpha"]), float(sys.argv[2])
n, p = x0.shape
bounds = np.vstack([np.full(p, -np.inf), np.full(p, np.inf)])
times = []
for rep in range(5):
    betas = []
    start = time.process_time()
    for i in range(W.shape[0]):
        keep = W[i] > 0
        ulam = lam[i][lam[i] > 0]
        # ka = 1: covariance updates (R glmnet's type.gaussian for < 500 predictors); flmin = 1: the λs given
        lmu, a0, ca, ia, nin, rsq, alm, nlp, jerr = elnet(
            1, alpha, np.asfortranarray(x0[keep]), y[keep].copy(), np.ones(int(keep.sum())),
            np.array([0], dtype=np.int32), pf.copy(), bounds, p + 1, 1.0, ulam, thresh, p + 1, ulam.size, 1, 1, 100000)
        if jerr != 0:
            raise RuntimeError(f"elnet error {jerr}")
        beta = np.zeros((lam.shape[1], p))
        for k in range(lmu):
            beta[k, ia[: nin[k]] - 1] = ca[: nin[k], k]
        betas.append(beta)
    times.append((time.process_time() - start) / W.shape[0])
np.save(sys.argv[3], np.array(betas))
print(json.dumps({"per_path_s": statistics.median(times)}))
"""


def time_fortran(python: str, x0, y, W, lam, pf, alpha, thresh, workdir: Path):
    """python-glmnet's Fortran elnet on the same data and λs: (seconds per path, raw coefficients)."""
    data = workdir / "elnet_input.npz"
    np.savez(data, x0=x0, y=y, W=W, lam=lam, pf=pf, alpha=alpha)
    script = workdir / "elnet.py"
    script.write_text(PYGLMNET)
    out = workdir / "elnet_beta.npy"
    proc = subprocess.run([python, str(script), str(data), str(thresh), str(out)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])["per_path_s"], np.load(out)


# ---------------------------------------------------------------------------------------


def compare(a: dict, b: dict) -> dict:
    """Max abs differences and exact equalities of two fit_worker results (same permutations)."""
    out = {"p_equal": True, "freq_equal": True, "pred": 0.0, "coef": 0.0, "null": 0.0}
    for name in a:
        out["p_equal"] &= a[name]["p"] == b[name]["p"]
        out["freq_equal"] &= bool(np.array_equal(a[name]["freq"], b[name]["freq"]))
        out["pred"] = max(out["pred"], float(np.max(np.abs(a[name]["pred"] - b[name]["pred"]))))
        out["coef"] = max(out["coef"], float(np.max(np.abs(a[name]["coef"] - b[name]["coef"]))))
        out["null"] = max(out["null"], float(np.max(np.abs(a[name]["null"] - b[name]["null"]))))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, nargs="+", default=[21, 50, 100])
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--numpy-permutations", type=int, nargs="+", default=[1000, 30, 10],
                        help="permutations of the numpy solver's run, per --subjects entry")
    parser.add_argument("--pyglmnet", help="a Python interpreter with python-glmnet (Fortran glmnet) installed")
    parser.add_argument("--permutations", type=int, help="the compiled run's permutations (default: the config's)")
    parser.add_argument("--keep", type=Path)
    parser.add_argument("--skip-fits", action="store_true", help="only the per-path timings (and compile cost)")
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--compile-worker", action="store_true", help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.worker:
        designs, solver, perms, jobs, out = opts.worker
        print(json.dumps(fit_worker(designs, solver, int(perms), int(jobs), out)))
        return 0
    if opts.compile_worker:
        print(json.dumps(compile_worker()))
        return 0

    from ptsd_bidsapp.config import load_config
    from ptsd_bidsapp.glmnet import compiled
    from ptsd_bidsapp.group.models import model_design

    if not compiled.AVAILABLE:
        print("numba is not installed: nothing to compare")
        return 1
    bench = _group_bench()
    config = copy.deepcopy(load_config(None))
    en_cfg = config["elastic_net"]
    en_cfg_default = dict(en_cfg)
    if opts.permutations is not None:
        en_cfg["n_permutations"] = opts.permutations
    root = opts.keep or Path(tempfile.mkdtemp(prefix="ptsd_solver_bench_"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"group elastic-net, compiled vs numpy solver: models {', '.join(en_cfg['models'])}; compiled: "
          f"{en_cfg['n_permutations']} permutations + {en_cfg['n_bootstrap']} bootstraps; --n-jobs {opts.n_jobs}; "
          f"cpu count {os.cpu_count()}; load average at start {os.getloadavg()[0]:.1f}")

    with tempfile.TemporaryDirectory() as empty:
        cold = run(["--compile-worker"], env={"NUMBA_CACHE_DIR": empty})
    warm = [run(["--compile-worker"])["cpu_s"] for _ in range(3)]
    print(f"\ncompile cost (CPU s, import + one small GlmnetCV fit in a fresh process): empty cache "
          f"{cold['cpu_s']:.2f}, on-disk cache median {statistics.median(warm):.2f}")

    numpy_perms = dict(zip(opts.subjects, opts.numpy_permutations + [opts.numpy_permutations[-1]] * 10))
    for n_subjects in opts.subjects:
        change, _ = bench.fabricate(root / f"n{n_subjects}", n_subjects, config)
        designs = {name: model_design(change, name, spec, config) for name, spec in en_cfg["models"].items()}
        designs_path = root / f"n{n_subjects}" / "designs.pkl"
        with open(designs_path, "wb") as handle:
            pickle.dump({"designs": designs, "en_cfg": en_cfg}, handle)
        shapes = ", ".join(f"{k} {d['X'].shape[0]}x{d['X'].shape[1]}" for k, d in designs.items())
        print(f"\n== {n_subjects} subjects ({shapes}), load average {os.getloadavg()[0]:.1f}")
        P, Pn = int(en_cfg["n_permutations"]), numpy_perms[n_subjects]
        res = {}
        for label, solver, perms in () if opts.skip_fits else (("compiled", "compiled", P), ("numpy", "numpy", Pn),
                                     ("compiled@numpy-perms", "compiled", Pn)):
            if label == "compiled@numpy-perms" and Pn == P:
                res[label] = res["compiled"]
                continue
            out = root / f"n{n_subjects}" / f"{label}.pkl"
            timing = run(["--worker", str(designs_path), solver, str(perms), str(opts.n_jobs), str(out)])
            with open(out, "rb") as handle:
                timing["results"] = pickle.load(handle)
            res[label] = timing
            print(f"{label:<22} {perms:>5} permutations: wall {timing['wall_s']:8.1f} s  CPU {timing['cpu_s']:8.1f} s"
                  f"  (idle-machine wall >= CPU / {opts.n_jobs} = {timing['cpu_s'] / opts.n_jobs:.1f} s)"
                  f"   per model wall: " + ", ".join(f"{k} {v:.1f}" for k, v in timing["models"].items()))
        full = res.get("compiled")
        if opts.skip_fits:
            pass
        elif Pn != P:  # extrapolate the numpy solver's total to P permutations from the two runs' difference
            # the nested CV runs 1 + P times; the cv.glmnet fit and the bootstrap once (small)
            print(f"numpy solver at {P} permutations: not run; extrapolated (1 + {P}) / (1 + {Pn}) × its CPU ≈ "
                  f"{res['numpy']['cpu_s'] / (Pn + 1) * (P + 1):.0f} CPU s "
                  f"({res['numpy']['cpu_s'] / (Pn + 1) * (P + 1) / full['cpu_s']:.0f}x the compiled solver's)")
        else:
            print(f"ratio numpy / compiled: wall {res['numpy']['wall_s'] / full['wall_s']:.1f}x, "
                  f"CPU {res['numpy']['cpu_s'] / full['cpu_s']:.1f}x")
        if not opts.skip_fits and P != int(en_cfg_default["n_permutations"]) and Pn != P:
            # two permutation counts separate the fixed cost (cv.glmnet, nested CV, bootstrap) from the per-permutation one
            slope = (full["cpu_s"] - res["compiled@numpy-perms"]["cpu_s"]) / (P - Pn)
            target = int(en_cfg_default["n_permutations"])
            print(f"compiled solver extrapolated to {target} permutations: CPU ≈ "
                  f"{full['cpu_s'] + (target - P) * slope:.0f} s ({slope * 1e3:.0f} ms per permutation, all models)")
        if not opts.skip_fits:
            eq = compare(res["numpy"]["results"], res["compiled@numpy-perms"]["results"])
            print(f"equality compiled vs numpy ({Pn} permutations): p-values identical {eq['p_equal']}, "
                  f"selection frequencies identical {eq['freq_equal']}; max |diff| nested predictions "
                  f"{eq['pred']:.1e}, coefficient paths {eq['coef']:.1e}, null R2 {eq['null']:.1e}")
            print("p-values (compiled, " + f"{P} permutations): "
                  + ", ".join(f"{k} {v['p']:.4f}" for k, v in full["results"].items()))

        print(f"per path (each model's {n_subjects} leave-one-out training sets, 100-λ computed paths), CPU µs:")
        for name, design in designs.items():
            args, x0, y, pf = loo_problems(design, en_cfg)
            t_c, fit_c = time_paths(args, "compiled")
            t_n, fit_n = time_paths(args, "numpy", repeats=3)
            line = (f"  {name:<21} p={x0.shape[1]:>3}  compiled {t_c * 1e6:7.1f}  numpy {t_n * 1e6:7.1f}  "
                    f"numpy/compiled {t_n / t_c:5.1f}x  max|diff| {np.max(np.abs(fit_c['beta'] - fit_n['beta'])):.1e}")
            if opts.pyglmnet and n_subjects == opts.subjects[0]:
                # the same standardised data (glmnet re-standardises; weights 0 = left out) and λs (units of y)
                lam = np.where(np.arange(fit_c["lam"].shape[1])[None, :] < fit_c["n_used"][:, None], fit_c["lam"], 0)
                for thresh in (1e-7, 1e-12):
                    t_f, beta_f = time_fortran(opts.pyglmnet, x0, y, args[1], lam, pf, args[6], thresh, root)
                    raw = fit_c["ys"][:, None, None] * fit_c["beta"] / fit_c["xs"][:, None, :]  # per unit of x0
                    line += (f"\n    Fortran glmnet thresh {thresh:.0e}: {t_f * 1e6:7.1f} CPU µs/path, "
                             f"compiled / Fortran {t_c / t_f:4.2f}, max|coef diff| {np.max(np.abs(raw - beta_f)):.1e}")
            print(line)
    if opts.keep is None:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
