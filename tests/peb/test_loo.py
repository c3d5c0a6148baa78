"""Leave-one-out prediction of a covariate (``spm_dcm_loo``)."""

import numpy as np

from ptsd_bidsapp.peb import loo_predict
from tests.peb.peb_fixtures import GROUP_MEAN, LIKELIHOOD_SD, PARAM_NAMES, RANDOM_EFFECT_SD, exact_posteriors


def test_loo_prediction_of_improvement_from_baseline():
    """Baseline vmPFC→amygdala (A) lower with greater improvement → positive LOO correlation."""
    rng = np.random.default_rng(8)
    n = 20
    improvement = rng.normal(size=n)
    improvement -= improvement.mean()
    X = np.column_stack([np.ones(n), improvement])
    theta = np.zeros((n, 4))
    theta[:] = GROUP_MEAN
    theta[:, 1] += -0.05 * improvement
    theta[:, 3] += -0.3 * improvement
    theta += rng.normal(size=(n, 4)) * RANDOM_EFFECT_SD
    Ep, Cp, pE, pC = exact_posteriors(rng, theta, LIKELIHOOD_SD)
    result = loo_predict(Ep, Cp, pE, pC, X, PARAM_NAMES, ["mean", "improvement"], select=[1, 3])
    assert result.r > 0.5
    assert result.p < 0.01
    # predictions are in the units of the covariate (no systematic scale collapse)
    assert 0.3 < np.std(result.predicted) / np.std(improvement) < 2.0


def test_loo_on_unrelated_covariate_is_not_significant():
    rng = np.random.default_rng(9)
    n = 20
    X = np.column_stack([np.ones(n), rng.normal(size=n)])
    theta = GROUP_MEAN + rng.normal(size=(n, 4)) * RANDOM_EFFECT_SD
    Ep, Cp, pE, pC = exact_posteriors(rng, theta, LIKELIHOOD_SD)
    result = loo_predict(Ep, Cp, pE, pC, X, PARAM_NAMES, ["mean", "noise"], select=[1, 3])
    assert result.p > 0.05
