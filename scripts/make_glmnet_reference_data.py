"""Write the fixed datasets on which R glmnet produced the reference values in tests/data/glmnet.

Run ``python scripts/make_glmnet_reference_data.py [CASE ...]`` then
``Rscript scripts/glmnet_reference.R [DIR [CASE ...]]`` (R >= 4 with the glmnet package, e.g.
Debian ``r-cran-glmnet``); both write under ``tests/data/glmnet/``, every case or only those
named. The test (tests/glmnet/test_cv.py) reads only the files. The draws of
``multivariate_normal`` differ in the last digits between numpy/BLAS builds, so regenerate only
the cases whose R reference is regenerated with them. The fold ratio cases were made with
``python scripts/make_glmnet_reference_data.py foldratio-loo foldratio-kfold nested-outer
nested-inner`` (numpy 2.4.6, 2026-12-03) and ``Rscript scripts/glmnet_reference.R tests/data/glmnet
foldratio-loo foldratio-kfold nested-outer nested-inner`` (R 4.2.2, glmnet 4.1.6, Debian bookworm
``r-cran-glmnet``).

Cases (one ``case-<name>_data.tsv`` each, columns ``y``, ``x01`` ...):

* ``basic`` — n = 21, p = 12 predictors with AR(1) correlation 0.5, two true effects, alpha 0.5;
* ``penaltyfactor`` — the same plus a covariate ``cov`` correlated with y, penalty factor 0;
* ``wide`` — n = 15, p = 30 (p > n: lambda.min.ratio 0.01, the path stops early), alpha 0.5;
* ``foldratio-loo`` — n = p = 10: the full data take lambda.min.ratio 1e-4, every leave-one-out
  fold (9 subjects < 10 predictors) 1e-2 (cv.glmnet's folds compute their own default);
* ``foldratio-kfold`` — n = 9, p = 7, three given folds of 3, 2 and 4 subjects (training sets of
  6, 7 and 5: ratios 1e-2, 1e-4, 1e-2), ``grouped = FALSE``; the folds (1-based, as R's
  ``foldid``) in ``case-foldratio-kfold_foldid.tsv``.
* ``nested-outer``, ``nested-inner`` — the K-fold nested cross-validation of
  ``ptsd_bidsapp.glmnet.nested_cv(X, y, seed=5, nested_max_loo=10, nested_k_folds=3)`` on n = 11
  subjects: outer folds of 4, 4 and 3 (training sets of 7, 7, 8), inner 3-fold cv.glmnet on each
  outer training set (inner training sets of 4-6). ``nested-outer`` (p = 8): the outer fits of 7
  subjects take ratio 1e-2, that of 8 takes 1e-4; ``nested-inner`` (p = 7): every outer fit 1e-4,
  every inner fold 1e-2. ``case-<name>_folds.tsv`` holds each subject's outer fold (``outer``)
  and its inner fold when outer fold f is held out (``inner_f``; 0 in its own outer fold), all
  1-based and drawn from the documented seed streams (``SeedSequence(5)`` with the CRC-32 of
  "outer-folds" / "inner-folds" as spawn key; labels ``arange(m) % K`` permuted, the inner
  labels outer fold after outer fold from one generator). Their data have their own generators
  (seeds 1 and 5, picked among 0-11 as data on which the first outer fold's ratio for every fit
  changes the predictions: it does not on every data set, since the 1e-4 grid is every other λ
  of the 1e-2 grid, so a λ_min on a shared λ comes out the same).

The fold ratio cases have their own generator (seed 20261203), so the first three are unchanged.
"""

import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "glmnet"
#: K and seed of the nested cross-validation cases.
NESTED_K, NESTED_SEED = 3, 5
#: Given folds (R's foldid, 1-based) of the cases not cross-validated leave-one-out.
FOLDIDS = {"foldratio-kfold": [1, 2, 3, 1, 2, 3, 1, 3, 3]}


def correlated_predictors(rng: np.random.Generator, n: int, p: int, rho: float = 0.5) -> np.ndarray:
    cov = rho ** np.abs(np.subtract.outer(np.arange(p), np.arange(p)))
    return rng.multivariate_normal(np.zeros(p), cov, size=n) * rng.uniform(0.5, 3.0, p) + rng.normal(0, 2, p)


def _seed_stream(seed: int, key: str) -> np.random.Generator:
    """The first generator of a documented seed stream (ptsd_bidsapp.glmnet.inference docstring)."""
    root = np.random.SeedSequence(entropy=seed, spawn_key=(zlib.crc32(key.encode()),))
    return np.random.default_rng(root.spawn(1)[0])


def nested_folds(n: int, k: int, seed: int) -> pd.DataFrame:
    """Outer and inner folds (1-based) of the K-fold nested CV, one row per subject."""
    outer = _seed_stream(seed, "outer-folds").permutation(np.arange(n) % k)
    inner_rng = _seed_stream(seed, "inner-folds")
    table = pd.DataFrame({"outer": outer + 1})
    for f in range(k):
        train = outer != f
        inner = np.zeros(n, dtype=int)
        inner[train] = inner_rng.permutation(np.arange(train.sum()) % k) + 1
        table[f"inner_{f + 1}"] = inner
    return table


def main(names: list[str]) -> None:
    rng = np.random.default_rng(20210701)
    OUT.mkdir(parents=True, exist_ok=True)
    cases = {}
    x = correlated_predictors(rng, 21, 12)
    y = 3.0 + 2.0 * (x[:, 0] - x[:, 0].mean()) / x[:, 0].std() - 1.5 * (x[:, 4] - x[:, 4].mean()) / x[:, 4].std()
    y = y + rng.normal(0, 2.0, 21)
    cases["basic"] = (x, y)
    cov = 0.6 * y + rng.normal(0, 2.0, 21)
    cases["penaltyfactor"] = (np.column_stack([x, cov]), y)
    xw = correlated_predictors(rng, 15, 30, rho=0.3)
    yw = 1.0 + 1.5 * (xw[:, 2] - xw[:, 2].mean()) / xw[:, 2].std() + rng.normal(0, 1.0, 15)
    cases["wide"] = (xw, yw)
    rng_folds = np.random.default_rng(20261203)
    xl = correlated_predictors(rng_folds, 10, 10, rho=0.3)
    yl = 2.0 + 1.5 * (xl[:, 1] - xl[:, 1].mean()) / xl[:, 1].std() + rng_folds.normal(0, 1.5, 10)
    cases["foldratio-loo"] = (xl, yl)
    xk = correlated_predictors(rng_folds, 9, 7, rho=0.3)
    yk = -1.0 + 2.5 * (xk[:, 3] - xk[:, 3].mean()) / xk[:, 3].std() + rng_folds.normal(0, 1.0, 9)
    cases["foldratio-kfold"] = (xk, yk)
    for name, p, seed in (("nested-outer", 8, 1), ("nested-inner", 7, 5)):
        rng_nested = np.random.default_rng(seed)
        xn = correlated_predictors(rng_nested, 11, p, rho=0.3)
        yn = 0.5 + 2.0 * (xn[:, 0] - xn[:, 0].mean()) / xn[:, 0].std() + rng_nested.normal(0, 1.0, 11)
        cases[name] = (xn, yn)
    unknown = set(names) - set(cases)
    if unknown:
        raise SystemExit(f"unknown case(s): {', '.join(sorted(unknown))}; cases: {', '.join(cases)}")
    for name, (x, y) in cases.items():
        if names and name not in names:
            continue
        columns = [f"x{j + 1:02d}" for j in range(x.shape[1])]
        if name == "penaltyfactor":
            columns[-1] = "cov"
        table = pd.DataFrame(x, columns=columns)
        table.insert(0, "y", y)
        table.to_csv(OUT / f"case-{name}_data.tsv", sep="\t", index=False, float_format="%.17g")
        if name.startswith("nested"):
            nested_folds(len(y), NESTED_K, NESTED_SEED).to_csv(OUT / f"case-{name}_folds.tsv", sep="\t", index=False)
        if name in FOLDIDS:
            pd.DataFrame({"foldid": FOLDIDS[name]}).to_csv(OUT / f"case-{name}_foldid.tsv", sep="\t", index=False)


if __name__ == "__main__":
    main(sys.argv[1:])
