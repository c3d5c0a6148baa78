"""Leave-one-out plumbing and the level probabilities of ``spm_dcm_loo``, on tiny cases (unit tier)."""

import logging

import numpy as np
import pytest

from ptsd_bidsapp.peb import loo as loo_module
from ptsd_bidsapp.peb.loo import _level_probabilities, loo_predict
from tests.peb.peb_fixtures import GROUP_MEAN, LIKELIHOOD_SD, PARAM_NAMES, RANDOM_EFFECT_SD, exact_posteriors

pytestmark = pytest.mark.unit


def _tiny_group(n=5, seed=3):
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.ones(n), rng.normal(size=n)])
    theta = GROUP_MEAN + rng.normal(size=(n, 4)) * RANDOM_EFFECT_SD
    Ep, Cp, pE, pC = exact_posteriors(rng, theta, LIKELIHOOD_SD)
    return Ep, Cp, pE, pC, X


def test_level_probabilities_are_the_savage_dickey_softmax():
    """Evidence for fixing the covariate at a level = ln N(level; posterior) − ln N(level; prior),
    normalised over the levels. Posterior N(1, 0.25), prior N(0, 4), levels 0 and 1:
    ln ratio(1) − ln ratio(0) = [0 − (−½·1/0.25)] − [−⅛ − 0] = 2 + ⅛ nats."""
    p = _level_probabilities(1.0, 0.25, 0.0, 4.0, np.array([0.0, 1.0]))
    expected_1 = 1.0 / (1.0 + np.exp(-2.125))
    np.testing.assert_allclose(p, [1 - expected_1, expected_1], rtol=1e-12)


def test_level_probabilities_survive_log_ratios_beyond_exp_range():
    """A level 30 prior SDs away from the prior mean, where the posterior sits: log ratios of
    ~450 nats (past exp's float range once doubled). Levels 29 and 30, posterior N(30, 1), prior
    N(0, 1): the difference of the log ratios is (−½ + 29²/2) − 30²/2 = −30 nats."""
    p = _level_probabilities(30.0, 1.0, 0.0, 1.0, np.array([29.0, 30.0]))
    np.testing.assert_allclose(p, [np.exp(-30.0) / (1 + np.exp(-30.0)), 1 / (1 + np.exp(-30.0))], rtol=1e-12)


def test_every_training_fit_gets_the_other_subjects_names_and_options(monkeypatch):
    """Each left-out subject's PEB is fitted on the others' rows, with the covariate names,
    the parameter selection and the PEB options given to ``loo_predict``."""
    Ep, Cp, pE, pC, X = _tiny_group()
    calls = []
    real_fit = loo_module.fit_peb

    def spy(Ep_list, Cp_list, pE_list, pC_list, X_train, names, covariates, **options):
        calls.append((X_train.copy(), list(names), covariates, dict(options)))
        return real_fit(Ep_list, Cp_list, pE_list, pC_list, X_train, names, covariates, **options)

    monkeypatch.setattr(loo_module, "fit_peb", spy)
    loo_predict(Ep, Cp, pE, pC, X, PARAM_NAMES, ["mean", "score"], select=[1, 3], beta=8.0)
    assert len(calls) == 5
    for i, (X_train, names, covariates, options) in enumerate(calls):
        np.testing.assert_array_equal(X_train, np.delete(X, i, axis=0))
        assert names == PARAM_NAMES
        assert covariates == ["mean", "score"]
        assert options == {"select": [1, 3], "beta": 8.0}


def test_progress_lines_name_the_step(caplog):
    """The progress lines say which step is running: "PEB leave-one-out" unless named."""
    Ep, Cp, pE, pC, X = _tiny_group(n=3)
    with caplog.at_level(logging.INFO, logger="ptsd_bidsapp.progress"):
        loo_predict(Ep, Cp, pE, pC, X, PARAM_NAMES, ["mean", "score"], select=[3])
        loo_predict(Ep, Cp, pE, pC, X, PARAM_NAMES, ["mean", "score"], select=[3], progress="DCM model 2: LOO")
    lines = [r.getMessage() for r in caplog.records if r.name == "ptsd_bidsapp.progress"]
    assert lines[0].startswith("PEB leave-one-out: 3/3 done")
    assert lines[-1].startswith("DCM model 2: LOO: 3/3 done")
