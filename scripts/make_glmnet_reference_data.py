"""Write the fixed datasets on which R glmnet produced the reference values in tests/data/glmnet.

Run ``python scripts/make_glmnet_reference_data.py`` then ``Rscript scripts/glmnet_reference.R``
(R >= 4 with the glmnet package, e.g. Debian ``r-cran-glmnet``); both write under
``tests/data/glmnet/``. The test (tests/glmnet/test_cv.py) reads only the files.

Cases (one ``case-<name>_data.tsv`` each, columns ``y``, ``x01`` ...):

* ``basic`` — n = 21, p = 12 predictors with AR(1) correlation 0.5, two true effects, alpha 0.5;
* ``penaltyfactor`` — the same plus a covariate ``cov`` correlated with y, penalty factor 0;
* ``wide`` — n = 15, p = 30 (p > n: lambda.min.ratio 0.01, the path stops early), alpha 0.5.
"""

from pathlib import Path

import numpy as np
import pandas as pd

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "glmnet"


def correlated_predictors(rng: np.random.Generator, n: int, p: int, rho: float = 0.5) -> np.ndarray:
    cov = rho ** np.abs(np.subtract.outer(np.arange(p), np.arange(p)))
    return rng.multivariate_normal(np.zeros(p), cov, size=n) * rng.uniform(0.5, 3.0, p) + rng.normal(0, 2, p)


def main() -> None:
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
    for name, (x, y) in cases.items():
        columns = [f"x{j + 1:02d}" for j in range(x.shape[1])]
        if name == "penaltyfactor":
            columns[-1] = "cov"
        table = pd.DataFrame(x, columns=columns)
        table.insert(0, "y", y)
        table.to_csv(OUT / f"case-{name}_data.tsv", sep="\t", index=False, float_format="%.17g")


if __name__ == "__main__":
    main()
