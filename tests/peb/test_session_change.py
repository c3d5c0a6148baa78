"""Session change by PEB of PEBs (Zeidman et al. 2019, sec. 2.8)."""

import numpy as np

from ptsd_bidsapp.peb import bmr_search, fit_session_change
from tests.peb.peb_fixtures import (COVARIATES, GROUP_MEAN, LIKELIHOOD_SD, PARAM_NAMES, PLANTED, RANDOM_EFFECT_SD,
                                    centred_design, exact_posteriors)


def test_session_change_peb_of_pebs_recovers_change_effects():
    """Change post − pre depends on improvement (B amygdala→vmPFC) and on the interaction."""
    rng = np.random.default_rng(7)
    n = 24
    X = centred_design(rng, n)
    baseline = GROUP_MEAN + rng.normal(size=(n, 4)) * RANDOM_EFFECT_SD
    change_effects = np.zeros((4, 4))
    for (p, c), value in PLANTED.items():
        change_effects[p, c] = value
    change = X @ change_effects.T + rng.normal(size=(n, 4)) * RANDOM_EFFECT_SD / 2
    Ep_pre, Cp_pre, pE, pC = exact_posteriors(rng, baseline, LIKELIHOOD_SD)
    Ep_post, Cp_post, _, _ = exact_posteriors(rng, baseline + change, LIKELIHOOD_SD)
    result = fit_session_change(Ep_pre, Cp_pre, Ep_post, Cp_post, pE, pC, X, PARAM_NAMES, COVARIATES)
    assert len(result.within) == n
    assert result.within[0].covariate_names == ["mean", "change"]
    between = result.between
    assert between.param_names == [f"change:{name}" for name in PARAM_NAMES]
    bma = bmr_search(between)
    for (p, c), value in PLANTED.items():
        assert bma.Pp[p, c] > 0.95
        assert np.sign(bma.Ep[p, c]) == np.sign(value)
    # nothing was planted on the drug main effect of the change
    assert np.all(bma.Pp[:, 2] < 0.95)
