"""The group elastic-net models of the config (``elastic_net.models``): design, fit, outputs.

Each model is ``{subset, interactions, covariates}``:

* ``subset``: only subjects whose arm equals this value (e.g. ``ketamine``);
* ``interactions``: add the drug dummy ``drug_<active arm>`` (1 active arm, 0 otherwise) and
  one ``<delta column>_x_drug_<active arm>`` product per measure (so the measure's own
  coefficient is its slope in the reference arm, the interaction the difference between the
  arms); all penalised;
* ``covariates``: clinical covariates entered as their change (``improvement_<score>``,
  pre − post) with penalty factor 0, i.e. always in the model, not shrunk;
* ``measures``: the model's own measure patterns (null: the top-level ``measures`` list).

Subjects with missing values: ``elastic_net.missing`` (:mod:`ptsd_bidsapp.group.changes`):
``listwise`` leaves them out of every model, ``per_model`` only out of the models that use the
missing value; each model's n and exclusions are in its JSON, the summary and the report.

Outcome: ``improvement_<outcome>`` (pre − post), in its own units. Every predictor is
standardised the glmnet way, so ``beta_per_sd`` is the change in outcome per (1/n) SD of
the predictor; ``beta_raw`` is per unit of the predictor.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from ptsd_bidsapp.bids.outputs import write_tsv
from ptsd_bidsapp.glmnet import (
    GlmnetCV,
    TooFewSubjectsError,
    bootstrap_selection,
    nested_cv,
    permutation_test,
)

__all__ = ["model_design", "fit_model", "write_model_outputs", "model_seed"]

R2_DEFINITION = ("1 - sum((y_i - yhat_i)^2) / sum((y_i - mean(y_-i))^2): yhat_i predicted by the model fitted "
                 "without subject i (lambda chosen by an inner leave-one-out cv.glmnet on the n-1 others), "
                 "the reference is the outer-training mean, so R2 < 0 means worse than predicting the mean")


def model_seed(seed: int, name: str) -> int:
    """Seed of one model: the run seed mixed with the model name (stable, independent per model)."""
    return int(np.random.SeedSequence([int(seed), zlib.crc32(name.encode())]).generate_state(1)[0])


def model_design(change: Mapping, name: str, spec: Mapping, config: Mapping) -> dict:
    """Predictor matrix, outcome and penalty factors of one model.

    The model's predictors are the change scores of its measures (``change["model_measures"]``;
    every selected measure when absent). With ``elastic_net.missing: per_model`` the subjects
    of the table missing one of this model's values (``change["incomplete"]``) are left out of
    this model only, with the reason.

    Returns dict with ``X`` (DataFrame, index subject), ``y`` (Series), ``penalty_factor``
    (array), ``excluded`` ({subject: reason} of the model's population), ``subset``.
    """
    table = change["table"]
    group_column = change["group_column"]
    clinical_cfg = config["clinical"]
    active = clinical_cfg.get("active_group", "ketamine")
    subset = spec.get("subset")
    rows = table if subset is None else table[table[group_column] == subset]
    excluded = dict(change["excluded"])
    if subset is not None:
        arms = change["clinical"][group_column] if "clinical" in change else pd.Series(dtype=object)
        excluded = {s: r for s, r in excluded.items() if s not in arms.index or arms.get(s) == subset
                    or pd.isna(arms.get(s))}
    measures = (change.get("model_measures") or {}).get(name, change["measures"])
    measure_columns = [change["columns"][mid] for mid in measures]
    needed = set(measure_columns) | {f"improvement_{cov}" for cov in spec.get("covariates") or []}
    incomplete = {s: "; ".join(reason for column, reason in missing.items() if column in needed)
                  for s, missing in (change.get("incomplete") or {}).items()}
    incomplete = {s: r for s, r in incomplete.items() if r and s in set(rows["subject"])}
    if incomplete:
        rows = rows[~rows["subject"].isin(incomplete)]
        excluded.update(incomplete)
    X = rows.set_index("subject")[measure_columns].astype(float)
    pf = [1.0] * len(measure_columns)
    if spec.get("interactions"):
        drug = (rows.set_index("subject")[group_column] == active).astype(float)
        drug_name = f"drug_{active}"
        X[drug_name] = drug
        pf.append(1.0)
        for column in measure_columns:
            X[f"{column}_x_{drug_name}"] = X[column] * drug
            pf.append(1.0)
    for covariate in spec.get("covariates") or []:
        column = f"improvement_{covariate}"
        X[column] = rows.set_index("subject")[column].astype(float).to_numpy()
        pf.append(0.0)
    y = rows.set_index("subject")[change["outcome"]].astype(float)
    return {"X": X, "y": y, "penalty_factor": np.asarray(pf), "excluded": excluded, "subset": subset,
            "measures": list(measures), "missing": change.get("missing", "listwise")}


def fit_model(name: str, design: Mapping, en_cfg: Mapping, seed: int, n_jobs: int = 1) -> dict:
    """cv.glmnet at λ_min, nested CV, permutation test and bootstrap selection for one model.

    Raises
    ------
    TooFewSubjectsError
        Fewer usable subjects than ``elastic_net.min_subjects``.
    """
    X, y = design["X"], design["y"]
    n = len(y)
    minimum = int(en_cfg.get("min_subjects", 5))
    if n < minimum:
        where = f" (subset {design['subset']})" if design.get("subset") else ""
        raise TooFewSubjectsError(
            f"model '{name}'{where}: {n} usable subject(s), fewer than elastic_net.min_subjects = {minimum}; "
            f"excluded: {', '.join(f'sub-{s} ({r})' for s, r in sorted(design['excluded'].items())) or 'none'}")
    if en_cfg.get("standardize", True) is not True:  # config validation rejects it; guard direct callers
        raise ValueError("elastic_net.standardize: only glmnet's standardize = TRUE is implemented")
    alpha = float(en_cfg.get("alpha", 0.5))
    common = {"alpha": alpha, "n_lambda": int(en_cfg.get("n_lambda", 100)),
              "lambda_min_ratio": en_cfg.get("lambda_min_ratio"), "penalty_factor": design["penalty_factor"],
              "solver": str(en_cfg.get("solver", "auto"))}
    nested_opts = {"nested_max_loo": int(en_cfg.get("nested_max_loo", 30)),
                   "nested_k_folds": int(en_cfg.get("nested_k_folds", 10))}
    mseed = model_seed(seed, name)
    Xa, ya = X.to_numpy(), y.to_numpy()
    cv = GlmnetCV(**common).fit(Xa, ya)
    nested = nested_cv(Xa, ya, seed=mseed, **common, **nested_opts)
    perm = permutation_test(Xa, ya, nested["r2"], n_permutations=int(en_cfg.get("n_permutations", 1000)),
                            seed=mseed, n_jobs=n_jobs, sequential_h=en_cfg.get("sequential_h"), **common,
                            **nested_opts, progress=f"model {name}: permutation test")
    boot = bootstrap_selection(Xa, ya, cv.lambdas_, cv.index_min_, n_bootstrap=int(en_cfg.get("n_bootstrap", 500)),
                               alpha=alpha, penalty_factor=design["penalty_factor"], seed=mseed,
                               solver=common["solver"])
    coefficients = pd.DataFrame({
        "feature": list(X.columns),
        "beta_per_sd": cv.coef_per_sd_,
        "beta_raw": cv.coef_,
        "selected": cv.coef_ != 0,
        "selection_frequency": boot["frequency"],
        "penalty_factor": design["penalty_factor"],
        **_bootstrap_interval(boot["beta_per_sd"], X.shape[1]),
    })
    predictions = pd.DataFrame({"subject": list(X.index), "observed": ya, "predicted": nested["predicted"],
                                "training_mean": nested["train_mean"]})
    return {"name": name, "cv": cv, "nested": nested, "permutation": perm, "bootstrap": boot,
            "coefficients": coefficients, "predictions": predictions, "design": design, "seed": int(seed),
            "model_seed": mseed, "alpha": alpha}


def _p_value_definition(sequential_h) -> str:
    fixed = "(1 + #{R2_perm >= R2_observed}) / (1 + n_permutations)"
    if sequential_h is None:
        return fixed
    return (f"sequential (Besag & Clifford 1991, h = {sequential_h}): h / L when the L-th permutation is the h-th "
            f"whose R2 reaches the observed (NPermutations = L), else {fixed} over all NPermutationsMax")


#: central coverage of the bootstrap percentile interval of β per SD (report's coefficient plot)
BOOTSTRAP_INTERVAL = 0.90


def _bootstrap_interval(per_sd: np.ndarray, p: int) -> dict:
    """5th and 95th percentiles of the bootstrap β per SD (NaN without resamples)."""
    tail = (1 - BOOTSTRAP_INTERVAL) / 2
    if per_sd.shape[0] == 0:
        return {"beta_per_sd_q05": np.full(p, np.nan), "beta_per_sd_q95": np.full(p, np.nan)}
    low, high = np.quantile(per_sd, [tail, 1 - tail], axis=0)
    return {"beta_per_sd_q05": low, "beta_per_sd_q95": high}


def _quantiles(values: np.ndarray) -> dict:
    if values.size == 0:
        return {}
    qs = [0.05, 0.25, 0.5, 0.75, 0.95]
    return {f"q{int(q * 100):02d}": float(v) for q, v in zip(qs, np.quantile(values, qs))}


def write_model_outputs(result: Mapping, out_dir: Path, spec: Mapping, config: Mapping) -> dict:
    """Write ``model-<name>_coefficients.tsv/.json`` and ``model-<name>_predictions.tsv/.json``."""
    name = result["name"]
    cv = result["cv"]
    design = result["design"]
    nested, perm = result["nested"], result["permutation"]
    en_cfg = config["elastic_net"]
    coefficients = result["coefficients"]
    sidecar = {
        "Description": f"Elastic-net model '{name}': coefficients at lambda.min of a leave-one-out cv.glmnet "
                       "(gaussian, standardize = TRUE, intercept), with bootstrap selection frequencies.",
        "Model": {"Name": name, **{k: spec.get(k) for k in ("subset", "interactions", "covariates")}},
        "Outcome": result["design"]["y"].name,
        "Alpha": result["alpha"],
        "LambdaMin": cv.lambda_min_,
        "Lambda1SE": cv.lambda_1se_,
        "LambdaMinIndex": cv.index_min_,
        "Lambda1SEIndex": cv.index_1se_,
        "Intercept": cv.intercept_,
        "LambdaPath": cv.lambdas_.tolist(),
        "CVMeanSquaredError": cv.cvm_.tolist(),
        "CVStandardError": cv.cvsd_.tolist(),
        "NonZero": cv.nzero_.tolist(),
        "CoefficientPathPerSD": {f: cv.coef_per_sd_path_[:, j].tolist() for j, f in enumerate(coefficients.feature)},
        "CrossValidation": "leave-one-out, as cv.glmnet(nfolds = n, grouped = FALSE): each fold on its own lambda "
                           "path, predictions at the full-data lambdas by linear interpolation",
        "NestedCV": {
            "Outer": "leave-one-out" if isinstance(nested["inner_folds"], str) else
                     f"{int(nested['outer_folds'].max()) + 1}-fold",
            "Inner": "leave-one-out cv.glmnet, lambda.min" if isinstance(nested["inner_folds"], str) else
                     f"{nested['inner_folds']}-fold cv.glmnet, lambda.min",
            "R2": nested["r2"], "R2Definition": R2_DEFINITION,
            "PearsonR": nested["pearson_r"], "MeanAbsoluteError": nested["mae"],
        },
        "Permutation": {"NPermutations": perm["n_permutations"], "PValue": perm["p_value"],
                        "Statistic": "nested-CV R2 with y permuted across subjects (the whole nested CV rerun)",
                        "PValueDefinition": _p_value_definition(perm.get("sequential_h")),
                        "NPermutationsMax": perm.get("n_permutations_max", perm["n_permutations"]),
                        "NullR2Quantiles": _quantiles(np.asarray(perm["null_r2"]))},
        "Bootstrap": {"NBootstrap": result["bootstrap"]["n_bootstrap"],
                      "Definition": "fraction of bootstrap resamples (subjects with replacement) whose fit along "
                                    "the full-data lambda path has a non-zero coefficient at lambda.min"},
        "N": int(len(design["y"])),
        "Subjects": [str(s) for s in design["X"].index],
        "ExcludedSubjects": dict(sorted(design["excluded"].items())),
        "Measures": list(design.get("measures") or []),
        "MissingValues": design.get("missing", "listwise"),
        "Seed": result["seed"],
        "ModelSeed": result["model_seed"],
        "LambdaMinRatio": en_cfg.get("lambda_min_ratio"),
        "NLambda": int(en_cfg.get("n_lambda", 100)),
        "Columns": {
            "feature": "predictor (delta_<measure> = post - pre; drug_<arm> dummy; _x_ = product; "
                       "improvement_<score> = pre - post covariate)",
            "beta_per_sd": "coefficient at lambda.min per SD (1/n) of the predictor, in outcome units",
            "beta_raw": "coefficient at lambda.min per unit of the predictor",
            "selected": "non-zero at lambda.min",
            "selection_frequency": "bootstrap selection frequency at lambda.min",
            "penalty_factor": "glmnet penalty.factor (0 = unpenalised covariate)",
            "beta_per_sd_q05": "5th percentile of the bootstrap coefficients at lambda.min per full-data SD",
            "beta_per_sd_q95": "95th percentile of the bootstrap coefficients at lambda.min per full-data SD",
        },
    }
    coef_path = write_tsv(out_dir / f"model-{name}_coefficients.tsv", coefficients, sidecar=sidecar)
    pred_path = write_tsv(out_dir / f"model-{name}_predictions.tsv", result["predictions"], sidecar={
        "Description": f"Nested cross-validation predictions of model '{name}'",
        "Columns": {"observed": "outcome improvement", "predicted": "out-of-sample prediction (outer fold left out)",
                    "training_mean": "mean outcome of the outer training set (reference of the R2)"},
    })
    return {"coefficients": coef_path, "predictions": pred_path, "sidecar": sidecar}
