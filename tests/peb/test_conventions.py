"""PEB conventions pinned against SPM12's definitions (spm_dcm_peb r7720, spm_dcm_bmr_all r7717,
spm_dcm_ppd r6737), with the numbers typed in from those routines, not read from the modules."""

import numpy as np
import pytest

from ptsd_bidsapp.peb import bmr_search, fit_peb
from ptsd_bidsapp.peb.loo import predict_design
from tests.peb.peb_fixtures import COVARIATES, PARAM_NAMES, PRIOR_VAR, simulate_group

pytestmark = pytest.mark.unit


def test_random_effects_covariance_has_spm_precision_floor():
    """spm_dcm_peb r7720: between-subject precision rP = pQ·e⁻⁸ + e^γ Q with one component
    (Q = pQ, pQ = (pC/β)⁻¹, β = 16), so Ce · (e⁻⁸ + e^γ) = pC/16 exactly for the fitted γ."""
    X, _, Ep, Cp, pE, pC = simulate_group(3)
    peb = fit_peb(Ep, Cp, pE, pC, X, PARAM_NAMES, COVARIATES, random_effects="single")
    assert peb.Eh.size == 1
    floor = np.exp(-8.0)
    assert np.exp(peb.Eh[0]) < 3        # e^γ ~ 1 here: a floor of 1/256 would move Ce by ~4e-3
    # Ce is read at the last evaluated point and Eh after the last step: they differ by that
    # step's dγ (measured 1.3e-4 relative), well below the 3.6e-3 a 1/256 floor would make
    np.testing.assert_allclose(peb.Ce * (floor + np.exp(peb.Eh[0])), np.diag(PRIOR_VAR) / 16, rtol=1e-3,
                               atol=1e-15)


def test_bma_averages_the_models_within_8_nats_of_the_best():
    """spm_dcm_bmr_all: Occam's window of 8 nats — every model of the last search whose reduced
    free energy is within 8 nats of the best is averaged. The case has models between 1 and 8
    nats below the best, so a narrower window averages fewer."""
    X, _, Ep, Cp, pE, pC = simulate_group(4)
    peb = fit_peb(Ep, Cp, pE, pC, X, PARAM_NAMES, COVARIATES, select=[2, 3])
    bma = bmr_search(peb)
    G = bma.free_energies
    within_8 = int(np.sum(G > G.max() - 8.0))
    within_1 = int(np.sum(G > G.max() - 1.0))
    assert within_1 < within_8, "the case must separate a 1-nat from an 8-nat window"
    assert bma.n_models_averaged == within_8
    assert bma.averaged_free_energies.size == within_8


def test_left_out_subject_prior_on_the_target_is_four_times_the_training_variance():
    """spm_dcm_ppd: the design entry to predict has prior mean 0 and variance 4·var(training
    column) + 1 in the first fit (then 4·var + e^{-i}); one refit returns that first prior."""
    X, _, Ep, Cp, pE, pC = simulate_group(5, n_subjects=16)
    train = np.arange(1, 16)
    peb = fit_peb([Ep[i] for i in train], [Cp[i] for i in train], pE, pC, X[train], PARAM_NAMES, COVARIATES)
    column = X[train, 1]
    variance = np.var(column, ddof=1)
    args = (peb, Ep[0], Cp[0], pE, pC, X[0], 1, column)
    _, _, prior_mean, prior_var = predict_design(*args, n_refits=1)
    assert prior_mean == 0.0
    assert prior_var == pytest.approx(4 * variance + 1.0, rel=1e-12)
    mean, _, prior_mean, prior_var = predict_design(*args, n_refits=3)
    assert prior_var == pytest.approx(4 * variance + np.exp(-2.0), rel=1e-12)
    assert np.isfinite(mean) and prior_mean != 0.0       # later fits centre on the last estimate
