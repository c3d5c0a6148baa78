#!/usr/bin/env python
"""Benchmark: truth recovery of the two gPPI variants on the simulated trial.

Regenerates the faces runs of the simulated trial exactly as
:func:`ptsd_bidsapp.simulate.trial.simulate_trial` draws them (same subjects, groups,
per-run random streams ``default_rng([seed, subject, 10 + session, 0])``, events, DCM and
gPPI ground truth, slice-time reference mid-TR), at the ROI-signal level (no image stage,
so no voxel noise or motion; ``--noise`` adds white noise in percent signal change to every
ROI signal). For ``method="spm"`` (default, ``spm_peb_ppi``) and ``method="slice_reference"``
(the earlier variant) it prints:

* ``neural r``: correlation of the deconvolved vmPFC seed ``xn`` with the planted vmPFC neural
  fluctuation ``z`` (the signal the amygdala follows), at microtime and averaged per TR
  (median over runs);
* ``gPPI r (runs)``: correlation over runs of the directed vmPFC -> amygdala fearful-neutral gPPI
  estimate with its planted value;
* ``gPPI r (change)``: correlation over subjects of the estimated pre -> post change with the
  planted change (the trial's recovery target, as ``scripts/check_recovery.py`` on the full
  pipeline).

Usage::

    python benchmarks/gppi_variants.py [--subjects 21] [--seed 20210701] [--volumes 150] [--tr 2.0] [--noise 0 0.3]
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import pandas as pd

METHODS = ("spm", "slice_reference")
MEASURE = "gppi_faces_fearfulMinusNeutral_vmpfc-amygdala"


def simulate_runs(n_subjects: int, seed: int, n_volumes: int, tr: float) -> list[dict]:
    """Faces runs of the simulated trial: ROI signals, events, planted z and gPPI value."""
    from ptsd_bidsapp.atlas import ROI_LABELS
    from ptsd_bidsapp.simulate import design, generative, trial

    groups = generative.assign_groups(n_subjects, seed)
    start = tr / 2.0  # trial._write_subject: StartTime mid-TR
    runs = []
    for index in range(n_subjects):
        params = generative.subject_parameters(seed, index, groups[index])
        for s_idx, ses in enumerate(trial.SESSIONS):
            rng = np.random.default_rng([seed, index, 10 + s_idx, trial.TASKS.index("faces")])
            events = design.faces_events(n_volumes, tr, rng)
            z = design.smooth_noise(n_volumes * design.MICROTIME, copy.deepcopy(rng), tr)  # first draw in faces_signals
            sig, _ = trial.faces_signals(params, ses, events, n_volumes, tr, start, rng)
            signals = np.column_stack([sig[trial.ROI[name]] for name in ROI_LABELS])
            u = design.boxcar(events, ["fearful", "neutral"], n_volumes, tr)
            task = pd.DataFrame(design.convolve_and_sample(np.stack([u["fearful"], u["neutral"]], axis=1), tr, start,
                                                           n_volumes), columns=["fearful", "neutral"])
            runs.append({"subject": index, "session": ses, "signals": signals, "names": list(ROI_LABELS),
                         "events": events, "task": task, "z": z, "planted": params["measures"][ses][MEASURE],
                         "slice_time_ref": start / tr})
    return runs


def recovery(runs: list[dict], tr: float, method: str, noise: float, seed: int) -> dict:
    from ptsd_bidsapp.measures import gppi

    rng = np.random.default_rng([seed, 99])
    r_micro, r_tr, est, planted, keys = [], [], [], [], []
    for run in runs:
        signals = run["signals"] + noise * rng.standard_normal(run["signals"].shape)
        vmpfc = run["names"].index("vmpfc")
        xn = gppi.deconvolve_seed(signals[:, vmpfc], tr, slice_time_ref=run["slice_time_ref"], method=method)
        z = run["z"]
        r_micro.append(np.corrcoef(xn, z)[0, 1])
        n = signals.shape[0]
        r_tr.append(np.corrcoef(xn.reshape(n, -1).mean(1), z.reshape(n, -1).mean(1))[0, 1])
        directed, _ = gppi.gppi_matrix(signals, run["names"], run["task"], run["events"], ["fearful", "neutral"],
                                       "fearful - neutral", tr, seeds=["vmpfc"],
                                       slice_time_ref=run["slice_time_ref"], method=method)
        est.append(directed.loc["vmpfc", "amygdala"])
        planted.append(run["planted"])
        keys.append((run["subject"], run["session"]))
    table = pd.DataFrame(keys, columns=["subject", "session"]).assign(est=est, planted=planted)
    wide = table.pivot(index="subject", columns="session")
    d_est = wide[("est", "post")] - wide[("est", "pre")]
    d_true = wide[("planted", "post")] - wide[("planted", "pre")]
    return {"neural_r_micro": float(np.median(r_micro)), "neural_r_tr": float(np.median(r_tr)),
            "gppi_r_runs": float(np.corrcoef(est, planted)[0, 1]),
            "gppi_r_change": float(np.corrcoef(d_est, d_true)[0, 1]),
            "gppi_slope_runs": float(np.polyfit(planted, est, 1)[0])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=21)
    parser.add_argument("--seed", type=int, default=20210701)
    parser.add_argument("--volumes", type=int, default=150)
    parser.add_argument("--tr", type=float, default=2.0)
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.3],
                        help="white noise SD (percent signal change) added to every ROI signal")
    opts = parser.parse_args()
    t0 = time.perf_counter()
    runs = simulate_runs(opts.subjects, opts.seed, opts.volumes, opts.tr)
    print(f"simulated trial: {opts.subjects} subjects x 2 sessions faces runs, {opts.volumes} volumes, TR {opts.tr} s, "
          f"seed {opts.seed} ({time.perf_counter() - t0:.1f} s)")
    header = (f"{'noise':>6} {'method':<16}{'neural r':>10}{'neural r/TR':>13}{'gPPI r runs':>13}"
              f"{'gPPI r change':>15}{'slope':>8}")
    print(header)
    for noise in opts.noise:
        for method in METHODS:
            res = recovery(runs, opts.tr, method, noise, opts.seed)
            print(f"{noise:>6.2f} {method:<16}{res['neural_r_micro']:>10.3f}{res['neural_r_tr']:>13.3f}"
                  f"{res['gppi_r_runs']:>13.3f}{res['gppi_r_change']:>15.3f}{res['gppi_slope_runs']:>8.2f}")
    print("neural r: median over runs of corr(deconvolved vmPFC xn, planted z); gPPI r: vmPFC -> amygdala "
          "fearful-neutral estimate vs planted, over runs / over subjects' pre->post change; slope: estimate per "
          "unit planted")


if __name__ == "__main__":
    main()
