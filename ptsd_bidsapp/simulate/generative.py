"""Per-subject generative parameters and the planted effects (Contract 4).

Every planted effect is a linear function of the subject's standardised improvement
``z = (improvement - IMPROVEMENT_MEAN) / IMPROVEMENT_SD`` (improvement = CAPS-5 pre -
post, in points; population constants, so one subject's parameters do not depend on
the others), with a slope per treatment arm::

    post - pre = slope_by_group[arm] * z + Normal(0, noise_sd)

In :data:`EFFECTS` ``slope_improvement`` is the slope in the arm(s) named by
``applies_to`` (``all``: both arms, reference midazolam; ``ketamine``: ketamine only)
and ``slope_interaction`` = ketamine slope - midazolam slope.

Effect sizes are chosen so that a 21-subject trial can detect them through the whole
pipeline (images -> participant estimates -> group models), not only in the generative
parameters. The DCM slopes were sized with a 20-seed Monte Carlo of the faces DCM stage
(``scripts/dcm_monte_carlo.py``: simulator ROI signals -> per-session DCM -> change PEB + BMR,
no image stage): with B slope -0.40 Hz, A slope -0.30 Hz and ``trial.GPPI_SHARED_PSC`` 0.5,
the planted B x improvement effect reached posterior probability > 0.95 in 17/20 trials (right sign 20/20), the A x improvement x
drug effect in 12/20 (right sign in 11 of them); at -0.10 / -0.08 in 2/20 and 8/20 (right sign
5). Truly null covariate effects exceeded 0.95 in 3/160. The dACC slope (-2.5 PSC; was -1.5)
was sized on the demo trial (seed 1): at -1.5 the ketamine-only elastic net (n = 11) did not
retain the dACC change (r = -0.61 with improvement there), at -2.0 and -2.5 it did.

Implied, not listed: the fearful modulation of amygdala -> vmPFC drives vmPFC's fearful-face
response, so its planted fall with improvement also lowers the vmPFC fearful-minus-neutral
activation change (demo: r = -0.63 with improvement across subjects).
"""

from __future__ import annotations

import numpy as np

IMPROVEMENT_MEAN = 10.5  # CAPS-5 points, mixture of the two arms below
IMPROVEMENT_SD = 9.0
ARM_IMPROVEMENT = {"ketamine": (14.0, 8.0), "midazolam": (7.0, 8.0)}  # mean, sd (CAPS-5 points)

#: Planted effects: measure id (Contract 2) -> definition.
EFFECTS: dict[str, dict] = {
    "gppi_faces_fearfulMinusNeutral_vmpfc-amygdala": {
        "description": "fearful-minus-neutral gain with which the amygdala follows vmPFC's neural fluctuation "
                       "(top-down coupling; gain 0.2 outside fearful blocks, 0.2 + value during them): the "
                       "vmPFC-seed -> amygdala gPPI contrast estimates it; change increases with improvement in "
                       "both arms, twice as steeply under ketamine",
        "slope_by_group": {"ketamine": 0.90, "midazolam": 0.40},
        "applies_to": "all",
        "noise_sd": 0.20,
        "pre_mean": 0.50,
        "pre_sd": 0.24,
        "units": "interaction beta (percent signal change per percent signal change)",
    },
    "activation_conflict_conflictRegulation_dacc": {
        "description": "dACC response to iI minus cI trials (amplitude of the HRF-convolved 1 s event regressor, "
                       "percent signal change); change decreases with improvement under ketamine only",
        "slope_by_group": {"ketamine": -2.50, "midazolam": 0.0},
        "applies_to": "ketamine",
        "noise_sd": 0.50,
        "pre_mean": -0.50,
        "pre_sd": 0.40,
        "units": "percent signal change",
    },
    "fc_rest_vmpfc-antinsula": {
        "description": "Fisher z of the correlation between the noise-free vmPFC and anterior-insula rest signals "
                       "(shared latent fluctuation); change increases with improvement under ketamine only",
        "slope_by_group": {"ketamine": 0.35, "midazolam": 0.0},
        "applies_to": "ketamine",
        "noise_sd": 0.10,
        "pre_mean": 0.45,
        "pre_sd": 0.12,
        "units": "Fisher z",
    },
    "dcm_faces_B_fearful_amygdala-vmpfc": {
        "description": "DCM modulation of the amygdala->vmPFC connection by fearful faces (B, Hz); decreases with "
                       "improvement under either drug",
        "slope_by_group": {"ketamine": -0.40, "midazolam": -0.40},
        "applies_to": "all",
        "noise_sd": 0.04,
        "pre_mean": 0.40,
        "pre_sd": 0.08,
        "units": "Hz",
    },
    "dcm_faces_A_vmpfc-amygdala": {
        "description": "DCM intrinsic vmPFC->amygdala connection (A, Hz; negative = inhibition); becomes more "
                       "negative with improvement under ketamine only, and a weaker (less negative) baseline "
                       "predicts improvement under ketamine (baseline_slope_by_group)",
        "slope_by_group": {"ketamine": -0.30, "midazolam": 0.0},
        "baseline_slope_by_group": {"ketamine": 0.06, "midazolam": 0.0},
        "applies_to": "ketamine",
        "noise_sd": 0.03,
        "pre_mean": -0.25,
        "pre_sd": 0.05,
        "units": "Hz",
    },
    # null measures: generated with no relation to improvement or drug
    "activation_faces_fearfulMinusNeutral_dacc": {
        "description": "null: dACC fearful-minus-neutral block amplitude (PSC), unrelated to improvement",
        "slope_by_group": {"ketamine": 0.0, "midazolam": 0.0},
        "applies_to": "all",
        "noise_sd": 0.10,
        "pre_mean": 0.15,
        "pre_sd": 0.10,
        "units": "percent signal change",
    },
    "fc_rest_amygdala-anthippo": {
        "description": "null: amygdala-anterior hippocampus rest coupling (Fisher z of the noise-free signals), "
                       "unrelated to improvement",
        "slope_by_group": {"ketamine": 0.0, "midazolam": 0.0},
        "applies_to": "all",
        "noise_sd": 0.10,
        "pre_mean": 0.35,
        "pre_sd": 0.10,
        "units": "Fisher z",
    },
    "gppi_faces_fearfulMinusNeutral_anthippo-antinsula": {
        "description": "null: no condition-dependent coupling between anterior hippocampus and anterior insula is "
                       "generated (planted value 0 in both sessions)",
        "slope_by_group": {"ketamine": 0.0, "midazolam": 0.0},
        "applies_to": "all",
        "noise_sd": 0.0,
        "pre_mean": 0.0,
        "pre_sd": 0.0,
        "units": "interaction beta (dimensionless)",
    },
}


def effects_for_truth() -> dict:
    """EFFECTS in Contract 4 form (adds slope_improvement / slope_interaction)."""
    out = {}
    for mid, eff in EFFECTS.items():
        by = eff["slope_by_group"]
        ref = by["ketamine"] if eff["applies_to"] == "ketamine" else by["midazolam"]
        entry = dict(eff)
        entry["slope_improvement"] = ref
        entry["slope_interaction"] = by["ketamine"] - by["midazolam"]
        entry["null"] = all(v == 0.0 for v in by.values())
        out[mid] = entry
    return out


def assign_groups(n_subjects: int, seed: int) -> list[str]:
    """Balanced random allocation (ketamine gets the extra subject when n is odd)."""
    arms = ["ketamine" if k < (n_subjects + 1) // 2 else "midazolam" for k in range(n_subjects)]
    rng = np.random.default_rng([seed, 7919])
    return [arms[k] for k in rng.permutation(n_subjects)]


def subject_parameters(seed: int, index: int, group: str) -> dict:
    """All generative parameters of one subject (deterministic in ``seed`` and ``index``).

    Returns a JSON-serialisable dict (the subject's entry of truth.json, without motion).
    """
    rng = np.random.default_rng([seed, index, 1])
    mean, sd = ARM_IMPROVEMENT[group]
    caps_pre = float(np.clip(np.round(rng.normal(46.0, 8.0)), 30, 70))
    improvement = float(np.clip(np.round(rng.normal(mean, sd)), -10, caps_pre - 5))
    caps_post = caps_pre - improvement
    z = (improvement - IMPROVEMENT_MEAN) / IMPROVEMENT_SD
    madrs_pre = float(np.clip(np.round(rng.normal(28.0, 6.0)), 12, 50))
    madrs_change = float(np.round(0.45 * improvement + rng.normal(0.0, 4.0)))  # depression tracks PTSD (r ~ 0.7)
    madrs_post = float(np.clip(madrs_pre - madrs_change, 0, 60))

    measures = {"pre": {}, "post": {}}
    for mid, eff in EFFECTS.items():
        pre = eff["pre_mean"] + eff["pre_sd"] * rng.standard_normal()
        pre += eff.get("baseline_slope_by_group", {}).get(group, 0.0) * z
        post = pre + eff["slope_by_group"][group] * z + eff["noise_sd"] * rng.standard_normal()
        measures["pre"][mid] = float(pre)
        measures["post"][mid] = float(post)

    dcm = {}
    for ses in ("pre", "post"):
        a_va = 0.35 + 0.03 * rng.standard_normal()  # amygdala -> vmPFC (A[vmpfc][amygdala])
        b_av = -0.10 + 0.03 * rng.standard_normal()  # fearful modulation of vmPFC -> amygdala
        dcm[ses] = {
            "regions": ["amygdala", "vmpfc"],
            "inputs": ["faces", "fearful"],
            "convention": "A[to][from] Hz (diagonal: log self-inhibition, -exp(a)/2 Hz); B[input][to][from]; C[to][input]",
            "A": [[float(0.05 * rng.standard_normal()), measures[ses]["dcm_faces_A_vmpfc-amygdala"]],
                  [float(a_va), float(0.05 * rng.standard_normal())]],
            "B": {"faces": [[0.0, 0.0], [0.0, 0.0]],
                  "fearful": [[0.0, float(b_av)], [measures[ses]["dcm_faces_B_fearful_amygdala-vmpfc"], 0.0]]},
            "C": [[float(1.4 + 0.1 * rng.standard_normal()), 0.0], [0.0, 0.0]],  # SPM units (C u / 16)
            "transit": [float(0.05 * rng.standard_normal()) for _ in range(2)],
            # one decay shared by the regions (SPM12 r7771); the second draw keeps the random
            # stream (and so every other planted value) of the per-region layout it replaced
            "decay": [float(0.05 * rng.standard_normal()) for _ in range(2)][0],
            "epsilon": 0.0,
        }
    return {
        "group": group,
        "improvement": improvement,
        "improvement_z": float(z),
        "caps5": {"pre": caps_pre, "post": caps_post},
        "madrs": {"pre": madrs_pre, "post": madrs_post},
        "age": int(rng.integers(21, 62)),
        "sex": "F" if rng.random() < 0.55 else "M",
        "measures": measures,
        "dcm": dcm,
        "motion_level_mm": float(rng.uniform(0.04, 0.16)),
    }
