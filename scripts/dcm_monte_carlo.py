#!/usr/bin/env python
"""Monte Carlo of the simulated trial's DCM stage: are the planted PEB effects detectable?

For each seed, the 21 subjects of ``ptsd-bidsapp-simulate --seed SEED`` get their faces ROI
signals from the simulator's own :func:`ptsd_bidsapp.simulate.trial.faces_signals` (the image
stage -- voxel noise, motion, eigenvariate extraction, denoising -- is skipped, so this is an
optimistic bound for the full pipeline); each session's DCM is estimated as the participant
level does (:func:`ptsd_bidsapp.dcm.participant.fit_session_dcm`, packaged default config), then
the change PEB (PEB of PEBs) and BMR/BMA as the group level does. Printed: how often the planted
covariate effects reach posterior probability > 0.95 (and with which sign), how often truly null
covariate effects do, and the per-session estimation error of the planted DCM parameters against
their median posterior SD.

This is the script behind the effect sizes in :mod:`ptsd_bidsapp.simulate.generative`.
About 20 s per seed on one core.

Usage::

    python scripts/dcm_monte_carlo.py [--seeds 1-20] [--n-subjects 21]
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from ptsd_bidsapp.config import load_config
from ptsd_bidsapp.dcm.participant import dcm_result_to_json, fit_session_dcm
from ptsd_bidsapp.peb import bmr_search, fit_session_change
from ptsd_bidsapp.group.dcm_group import change_rerandomisation, peb_design, select_parameters
from ptsd_bidsapp.simulate import design, generative
from ptsd_bidsapp.simulate.trial import ROI, faces_signals

TR, N_SCANS = 2.0, 150
COVARIATES = ["improvement", "drug", "improvement_x_drug"]
#: (parameter, covariate) planted on the session change
PLANTED = {("change:B_fearful_amygdala-vmpfc", "improvement"): -1,
           ("change:A_vmpfc-amygdala", "improvement_x_drug"): -1}
#: parameters with no planted relation to improvement or drug (A vmPFC->amygdala's improvement
#: and drug effects are implied by the ketamine-only slope under this coding, so not counted)
NULL = ([("change:A_amygdala-vmpfc", c) for c in COVARIATES] + [("change:B_fearful_vmpfc-amygdala", c) for c in COVARIATES]
        + [("change:B_fearful_amygdala-vmpfc", c) for c in ("drug", "improvement_x_drug")])


def _cov(c):
    c = np.asarray(c, float)
    return np.diag(c) if c.ndim == 1 else c


def one_trial(seed: int, n_subjects: int, dcm_cfg: dict, peb_cfg: dict) -> dict:
    groups = generative.assign_groups(n_subjects, seed)
    posts, truth = [], []
    for index in range(n_subjects):
        params = generative.subject_parameters(seed, index, groups[index])
        row = {}
        for s_idx, ses in enumerate(("pre", "post")):
            rng = np.random.default_rng([seed, index, 10 + s_idx, 0])
            events = design.faces_events(N_SCANS, TR, rng)
            sig, _ = faces_signals(params, ses, events, N_SCANS, TR, TR / 2, rng)
            voi = pd.DataFrame({"amygdala": sig[ROI["amygdala"]], "vmpfc": sig[ROI["vmpfc"]]})
            j = dcm_result_to_json(fit_session_dcm(voi, events, TR, dcm_cfg, confounds=None, slice_timing_ref=TR / 2),
                                   include_timeseries=False)
            row[ses] = j
        posts.append(row)
        truth.append(params)
    names = list(posts[0]["pre"]["param_names"])
    arr = lambda j, k: np.asarray(j[k], float)  # noqa: E731
    select = select_parameters(names, fields=["A", "B"], between_only=True,
                               prior_variance=np.diag(_cov(arr(posts[0]["pre"], "pC"))))
    clin = pd.DataFrame({"improvement": [p["improvement"] for p in truth], "group": [p["group"] for p in truth]},
                        index=[f"{i + 1:02d}" for i in range(n_subjects)])
    X = peb_design(clin, COVARIATES)
    # the PEB options of the group level (config peb section)
    prior_options = {k: float(peb_cfg[k]) for k in ("hC", "alpha", "beta")}
    change = fit_session_change(
        [arr(p["pre"], "Ep") for p in posts], [_cov(arr(p["pre"], "Cp")) for p in posts],
        [arr(p["post"], "Ep") for p in posts], [_cov(arr(p["post"], "Cp")) for p in posts],
        [arr(p["pre"], "pE") for p in posts], [_cov(arr(p["pre"], "pC")) for p in posts], X.to_numpy(), names,
        list(X.columns), select=select, F_pre=[p["pre"]["F"] for p in posts], F_post=[p["post"]["F"] for p in posts],
        random_effects=peb_cfg["random_effects"], between_hE=float(peb_cfg["hE"]) + float(np.log(4.0)),
        **prior_options)
    bma = bmr_search(change.between)
    peb = change.between
    rnd_options = dict(random_effects=peb_cfg["random_effects"], prior_options=prior_options,
                       n_permutations=int(peb_cfg["n_permutations"]), seed=seed)
    rnd = change_rerandomisation(change, X, family=peb_cfg["finding_family"], **rnd_options)
    other = "model" if peb_cfg["finding_family"] == "covariate" else "covariate"
    rnd_other = change_rerandomisation(change, X, family=other, **rnd_options)
    p_used = rnd.p if peb_cfg["finding_p"] == "p_rnd" else rnd.p_fwe
    finding = (bma.Pp > float(peb_cfg["pp_threshold"])) & (p_used < float(peb_cfg["finding_alpha"]))
    at = lambda pc: (peb.param_names.index(pc[0]), peb.covariate_names.index(pc[1]))  # noqa: E731
    out = {"planted": {pc: (float(bma.Pp[at(pc)]), float(peb.Ep[at(pc)]), bool(finding[at(pc)]),
                            float(rnd.p_fwe[at(pc)]), float(rnd.p[at(pc)]), float(rnd_other.p_fwe[at(pc)]))
                       for pc in PLANTED},
           "null_p": [float(rnd.p[at(pc)]) for pc in NULL], "null_Pp": [float(bma.Pp[at(pc)]) for pc in NULL],
           "null_hits": int(sum(bma.Pp[at(pc)] > 0.95 for pc in NULL)),
           "null_findings": int(sum(finding[at(pc)] for pc in NULL)), "error": {}}
    out["classical"] = {}
    for par, true_of in (("B_fearful_amygdala-vmpfc", lambda d: d["B"]["fearful"][1][0]),
                         ("A_vmpfc-amygdala", lambda d: d["A"][0][1])):
        i = names.index(par)
        cov = [c for (p_, c) in PLANTED if p_ == f"change:{par}"][0]
        true_change = [true_of(t["dcm"]["post"]) - true_of(t["dcm"]["pre"]) for t in truth]
        est_change = [arr(p["post"], "Ep")[i] - arr(p["pre"], "Ep")[i] for p in posts]
        out["classical"][par] = (_ols_p(X, cov, true_change), _ols_p(X, cov, est_change))
        err = [arr(p[s], "Ep")[i] - true_of(t["dcm"][s]) for p, t in zip(posts, truth) for s in ("pre", "post")]
        sd = [np.sqrt(_cov(arr(p[s], "Cp"))[i, i]) for p in posts for s in ("pre", "post")]
        out["error"][par] = (float(np.std(err)), float(np.median(sd)))
    return out


def _ols_p(X: pd.DataFrame, covariate: str, y) -> float:
    """Two-sided OLS t-test p of one design column for per-subject values ``y`` (classical check)."""
    from scipy import stats

    A, y = X.to_numpy(float), np.asarray(y, float)
    beta, *_ = np.linalg.lstsq(A, y, rcond=None)
    dof = len(y) - A.shape[1]
    s2 = float(np.sum((y - A @ beta) ** 2)) / dof
    j = list(X.columns).index(covariate)
    se = np.sqrt(s2 * np.linalg.inv(A.T @ A)[j, j])
    return float(2 * stats.t.sf(abs(beta[j]) / se, dof))


def _seeds(text: str) -> list[int]:
    if "-" in text:
        a, b = text.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(s) for s in text.split(",")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1-20", help="e.g. 1-20 or 1,5,9")
    parser.add_argument("--n-subjects", type=int, default=21)
    parser.add_argument("--config", default=None, help="analysis YAML merged over the default (as --config of the app)")
    opts = parser.parse_args(argv)
    config = load_config(opts.config)
    dcm_cfg, peb_cfg = config["dcm"], config["peb"]
    results = []
    for seed in _seeds(opts.seeds):
        results.append(one_trial(seed, opts.n_subjects, dcm_cfg, peb_cfg))
        other = "model" if peb_cfg["finding_family"] == "covariate" else "covariate"
        print(f"seed {seed}: " + "; ".join(f"{p.split(':')[1]} x {c}: Pp {v[0]:.3f} Ep {v[1]:+.3f} "
                                           f"p_rnd_fwe {v[3]:.3f} p_rnd {v[4]:.3f} p_rnd_fwe({other}) {v[5]:.3f} "
                                           f"finding {v[2]}"
                                           for (p, c), v in results[-1]["planted"].items())
              + "; OLS p (true change / posterior-mean change): "
              + ", ".join(f"{k} {v[0]:.3f}/{v[1]:.3f}" for k, v in results[-1]["classical"].items()), flush=True)
    n = len(results)
    print(f"\n{n} simulated trials of {opts.n_subjects} subjects")
    for pc, sign in PLANTED.items():
        found = [r["planted"][pc] for r in results if r["planted"][pc][0] > 0.95]
        right = sum(np.sign(v[1]) == sign for v in found)
        called = [r["planted"][pc] for r in results if r["planted"][pc][2]]
        print(f"  planted {pc[0]} x {pc[1]}: finding in {len(called)}/{n} "
              f"(right sign {sum(np.sign(v[1]) == sign for v in called)}); "
              f"Pp > 0.95 in {len(found)}/{n} (right sign {right}); "
              f"posterior mean right sign in {sum(np.sign(r['planted'][pc][1]) == sign for r in results)}/{n}")
    print(f"  truly null covariate effects Pp > 0.95: {sum(r['null_hits'] for r in results)}/{n * len(NULL)}; "
          f"called findings: {sum(r['null_findings'] for r in results)}/{n * len(NULL)}")
    for par in results[0]["classical"]:
        c = np.array([r["classical"][par] for r in results])
        print(f"  {par}: OLS t-test p < 0.05 of the planted covariate on the true change in {(c[:, 0] < 0.05).sum()}/{n}, "
              f"on the change of the first-level posterior means in {(c[:, 1] < 0.05).sum()}/{n}")
    for par in results[0]["error"]:
        e = np.array([r["error"][par] for r in results])
        print(f"  {par}: per-session estimation error SD {e[:, 0].mean():.3f} Hz, "
              f"median posterior SD {e[:, 1].mean():.3f} Hz")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
