"""Leave-one-out plumbing and the level probabilities of ``spm_dcm_loo``, on tiny cases (unit tier)."""

import logging
import re

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
    # a line at most every 10 s, and one when the last subject is done
    assert all(re.match(r"(PEB leave-one-out|DCM model 2: LOO): [123]/3 done, ", line) for line in lines), lines
    assert [line.split(",")[0] for line in lines if "3/3" in line] == ["PEB leave-one-out: 3/3 done",
                                                                       "DCM model 2: LOO: 3/3 done"]


def _stubbed_loo(monkeypatch, predicted_of_x, variances=None, **kwargs):
    """``loo_predict`` with the training fits and ``spm_dcm_ppd`` replaced by stubs: the left-out
    subject's predictive mean is ``predicted_of_x(x)`` of its design row, its variance
    ``variances[i]`` (default 0.5), and its prior N(0, 9), so the bookkeeping around them
    (r, one-sided p, SDs, level probabilities, names) is checked on known numbers."""
    seen = []

    def fake_predict(peb, qE, qC, pE, pC, x, target, train_column, spm_parameter_order=False):
        i = len(seen)
        seen.append((np.array(x), target, np.array(train_column)))
        var = 0.5 if variances is None else variances[i]
        return float(predicted_of_x(np.asarray(x))), var, 0.0, 9.0

    monkeypatch.setattr(loo_module, "fit_peb", lambda *args, **options: None)
    monkeypatch.setattr(loo_module, "predict_design", fake_predict)
    X = kwargs.pop("X")
    n = X.shape[0]
    Ep = [np.zeros(4)] * n
    Cp = [np.eye(4)] * n
    return loo_predict(Ep, Cp, np.zeros(4), np.eye(4), X, PARAM_NAMES, **kwargs), seen


def test_correlation_and_one_sided_p_of_the_predictions(monkeypatch):
    """r = Pearson correlation of predicted with observed; p = one-sided p of a positive slope
    (t with n − 2 df, as spm_dcm_loo's spm_ancova), i.e. scipy's pearsonr(alternative='greater')."""
    from scipy import stats

    observed = np.array([0.0, 1.0, 1.0, 2.0, 3.0, 5.0, 8.0])
    noise = np.array([0.3, -0.8, 0.5, 1.1, -0.4, 0.2, -1.3])
    X = np.column_stack([np.ones(7), observed])
    variances = np.linspace(0.2, 0.8, 7)
    result, seen = _stubbed_loo(monkeypatch, lambda x: 0.5 * x[1] + noise[int(round(x[1] * 10)) % 7],
                                variances=variances, X=X, covariate_names=["mean", "caps"], target=1)
    predicted = np.array([0.5 * o + noise[int(round(o * 10)) % 7] for o in observed])
    np.testing.assert_array_equal(result.predicted, predicted)
    np.testing.assert_allclose(result.predicted_sd, np.sqrt(variances), rtol=1e-15)
    np.testing.assert_array_equal(result.observed, observed)
    reference = stats.pearsonr(predicted, observed, alternative="greater")
    assert result.r == pytest.approx(reference.statistic, rel=1e-12)
    assert result.p == pytest.approx(reference.pvalue, rel=1e-9)
    assert result.df == 5
    assert result.covariate == "caps"
    assert result.subject_names == [f"subject{i}" for i in range(1, 8)]
    # each left-out subject: its own design row, the target column of the others
    for i, (x, target, train_column) in enumerate(seen):
        np.testing.assert_array_equal(x, X[i])
        assert target == 1
        np.testing.assert_array_equal(train_column, np.delete(observed, i))
    # level probabilities: Savage–Dickey softmax over the unique observed values (0, 1, 2, 3, 5, 8)
    np.testing.assert_array_equal(result.levels, [0.0, 1.0, 2.0, 3.0, 5.0, 8.0])
    for i in range(7):
        log_ratio = (stats.norm.logpdf(result.levels, predicted[i], np.sqrt(variances[i]))
                     - stats.norm.logpdf(result.levels, 0.0, 3.0))
        expected = np.exp(log_ratio - log_ratio.max())
        np.testing.assert_allclose(result.probabilities[:, i], expected / expected.sum(), rtol=1e-10, atol=1e-300)
    table = result.table()
    assert list(table.columns) == ["subject", "observed", "predicted", "predicted_sd"]
    np.testing.assert_array_equal(table["predicted"], predicted)


@pytest.mark.parametrize("sign, p_expected", [(1.0, 0.0), (-1.0, 1.0)])
def test_perfect_predictions_have_p_0_or_1(monkeypatch, sign, p_expected):
    """r = ±1 exactly: no t statistic; the one-sided p is 0 for a positive slope, 1 for a negative."""
    X = np.column_stack([np.ones(4), [1.0, 2.0, 4.0, 8.0]])
    result, _ = _stubbed_loo(monkeypatch, lambda x: sign * x[1], X=X, subject_names=list("abcd"))
    assert result.r == pytest.approx(sign, abs=1e-12)
    assert result.p == pytest.approx(p_expected, abs=1e-12)
    assert result.subject_names == ["a", "b", "c", "d"]
    assert result.covariate == "covariate2"


def test_an_integer_design_gives_float_observations(monkeypatch):
    """Design columns as integers (e.g. a 0/1 drug column): the observed values and levels are floats."""
    X = np.array([[1, 0], [1, 1], [1, 0], [1, 1]])
    result, _ = _stubbed_loo(monkeypatch, lambda x: 0.5 * x[1] + 0.1 * x[0], X=X)
    assert result.observed.dtype == np.float64 and result.levels.dtype == np.float64
    np.testing.assert_array_equal(result.levels, [0.0, 1.0])


def test_constant_predictions_have_no_correlation(monkeypatch):
    X = np.column_stack([np.ones(4), [1.0, 2.0, 4.0, 8.0]])
    result, _ = _stubbed_loo(monkeypatch, lambda x: 0.7, X=X)
    assert np.isnan(result.r) and np.isnan(result.p)


def test_default_selection_is_every_free_parameter_of_the_first_subjects_prior(monkeypatch):
    """``select=None``: spm_dcm_loo's PEB takes every parameter field (no A/B restriction: a C
    parameter is kept) and drops the fixed ones, those whose prior variance in the first subject's
    prior is not above 1/1024 of the mean (spm_find_pC): here the zero-variance parameter 1. The
    second subject's prior fixes parameter 3 instead, which must not matter."""
    names = ["A_amygdala-vmpfc", "A_vmpfc-amygdala", "C_fearful_amygdala", "B_fearful_vmpfc-amygdala"]
    n = 4
    pC = [np.diag([1 / 64, 0.0, 1.0, 1.0])] + [np.diag([1 / 64, 1 / 64, 1.0, 0.0])] * (n - 1)
    selections = []

    def fake_fit(*args, select=None, **options):
        selections.append(list(select))

    def fake_predict(peb, qE, qC, pE, pC, x, target, train_column, spm_parameter_order=False):
        return float(x[1]), 0.5, 0.0, 9.0

    monkeypatch.setattr(loo_module, "fit_peb", fake_fit)
    monkeypatch.setattr(loo_module, "predict_design", fake_predict)
    X = np.column_stack([np.ones(n), [0.0, 1.0, 3.0, 2.0]])
    loo_predict([np.zeros(4)] * n, [np.eye(4)] * n, [np.zeros(4)] * n, pC, X, names, ["mean", "score"])
    assert selections == [[0, 2, 3]] * n
