"""Synthetic groups for the PEB tests (offline, deterministic).

Synthetic groups follow the PEB generative model exactly: subject parameters are drawn
from a between-subject GLM with random effects, and each subject's "DCM posterior" is the
exact posterior of a direct Gaussian observation of its parameters (known likelihood
covariance) under the DCM prior — a Bayesian GLM, so the Laplace assumption holds.
"""

import numpy as np

PARAM_NAMES = ["A_amygdala-vmpfc", "A_vmpfc-amygdala", "B_fearful_amygdala-vmpfc", "B_fearful_vmpfc-amygdala"]
#: spm_dcm_fmri_priors-like variances: between-region A 1/64, B 1.
PRIOR_VAR = np.array([1 / 64, 1 / 64, 1.0, 1.0])
COVARIATES = ["mean", "improvement", "drug", "improvement_x_drug"]
GROUP_MEAN = np.array([0.1, -0.1, 0.3, -0.2])
RANDOM_EFFECT_SD = np.array([0.03, 0.03, 0.15, 0.15])
LIKELIHOOD_SD = np.array([0.04, 0.04, 0.15, 0.15])
#: Planted effects (parameter index, covariate index) -> size: improvement lowers the
#: fearful modulation of amygdala→vmPFC; improvement × drug makes vmPFC→amygdala more negative.
PLANTED = {(2, 1): -0.4, (3, 3): -0.8}


def centred_design(rng, n_subjects):
    """[1, improvement (z), drug (±½, centred), improvement × drug (centred)]."""
    improvement = rng.normal(size=n_subjects)
    improvement = (improvement - improvement.mean()) / improvement.std(ddof=1)
    drug = np.where(np.arange(n_subjects) % 2 == 0, 0.5, -0.5)
    drug = drug - drug.mean()
    interaction = improvement * drug
    interaction = interaction - interaction.mean()
    return np.column_stack([np.ones(n_subjects), improvement, drug, interaction])


def exact_posteriors(rng, theta, likelihood_sd, prior_var=PRIOR_VAR):
    """Posterior of θ_i from y_i = θ_i + e, e ~ N(0, diag(sd²)), prior N(0, diag(prior_var))."""
    pE = np.zeros(len(prior_var))
    pC = np.diag(prior_var)
    Ep, Cp = [], []
    for th in np.atleast_2d(theta):
        y = th + rng.normal(size=th.size) * likelihood_sd
        qP = np.diag(1 / likelihood_sd**2) + np.diag(1 / prior_var)
        qC = np.linalg.inv(qP)
        Ep.append(qC @ (y / likelihood_sd**2))
        Cp.append(qC)
    return Ep, Cp, pE, pC


def simulate_group(seed, n_subjects=24, planted=PLANTED):
    rng = np.random.default_rng(seed)
    X = centred_design(rng, n_subjects)
    effects = np.zeros((len(PARAM_NAMES), X.shape[1]))
    effects[:, 0] = GROUP_MEAN
    for (p, c), value in planted.items():
        effects[p, c] = value
    theta = X @ effects.T + rng.normal(size=(n_subjects, len(PARAM_NAMES))) * RANDOM_EFFECT_SD
    Ep, Cp, pE, pC = exact_posteriors(rng, theta, LIKELIHOOD_SD)
    return X, effects, Ep, Cp, pE, pC
