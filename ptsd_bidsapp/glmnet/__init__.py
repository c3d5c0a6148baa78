"""Elastic net equivalent to R glmnet (gaussian) and ``cv.glmnet(nfolds = n, grouped = FALSE)``.

* :mod:`~ptsd_bidsapp.glmnet.solver` — the λ path and the batched exact path solver
  (``glmnet``; Friedman, Hastie & Tibshirani 2010, J Stat Softw 33(1));
* :mod:`~ptsd_bidsapp.glmnet.cv` — ``cv.glmnet``: leave-one-out / K-fold CV curve, λ_min,
  λ_1se (:class:`GlmnetCV`, scikit-learn style: ``fit`` returns self, learned attributes end in ``_``);
* :mod:`~ptsd_bidsapp.glmnet.inference` — nested cross-validation, permutation test of the
  nested R², bootstrap selection frequencies, prediction metrics.

Plain numpy on arrays; imports nothing else of ours. Tested against R glmnet 4.1.6
(``tests/glmnet/``, reference values from ``scripts/glmnet_reference.R``).
"""

from ptsd_bidsapp.glmnet.cv import GlmnetCV, TooFewSubjectsError
from ptsd_bidsapp.glmnet.inference import (
    bootstrap_selection,
    nested_cv,
    permutation_test,
    prediction_metrics,
    sequential_p_value,
)
from ptsd_bidsapp.glmnet.solver import glmnet_lambda_path

__all__ = [
    "GlmnetCV",
    "glmnet_lambda_path",
    "nested_cv",
    "permutation_test",
    "bootstrap_selection",
    "prediction_metrics",
    "sequential_p_value",
    "TooFewSubjectsError",
]
