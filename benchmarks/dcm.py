#!/usr/bin/env python
"""Benchmark: DCM estimation time, iterations and recovery for 2-, 4- and 6-region models.

Each model: 200 scans, TR 2 s, 16 microtime bins per TR; fully connected ``A``; one
driving input (block design, 16 s on / 16 s off) into the first region; a second input
(every other block) modulating the forward connections of a chain ``1 -> 2 -> ... -> n``;
generating parameters drawn per repeat (seeded) and data simulated with
:func:`ptsd_bidsapp.dcm.simulate_dcm` at the given SNR (AR(1) noise, as
``spm_dcm_generate``). Reports, per model size: free parameters, median wall time of
:func:`ptsd_bidsapp.dcm.estimate_dcm` over ``--repeats`` fits, median iterations,
convergence, and the recovery error of the free A, B, C parameters (RMSE and max
|posterior mean - truth|), plus the correlation of estimates with the truth pooled over
repeats. With ``--spm``: the SPM12 r7771 reference cases (``tests/data/spm12/dcm_*.json``, made by
``scripts/spm12_reference/make_dcm_reference.m``) estimated here, median wall time over
``--repeats`` fits against the stored ``spm_dcm_estimate`` wall time under Octave (one run
on this class of machine), with the ratio. With ``--demo``: every session DCM of the
simulated demo trial (``--demo-subjects`` subjects x 2 sessions, faces ROI signals from the
simulator without confounds, the participant level's model and options) — share converged by
the ``spm_nlsi_GN`` rule and median iterations; with ``--demo-work WORK``: the session DCMs of
a finished participant run instead (its eigenvariates, events and confounds X0 from the work
directory, as the pipeline fits them). Usage::

    python benchmarks/dcm.py [--regions 2 4 6] [--scans 200] [--repeats 5] [--snr 4] [--spm] [--demo]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np


def model(n: int, n_scans: int, tr: float = 2.0):
    from ptsd_bidsapp.dcm import DCMSpec

    dt = tr / 16
    u = np.zeros((n_scans * 16, 2))
    for i, start in enumerate(range(0, u.shape[0], 256)):
        u[start:start + 128, 0] = 1.0
        if i % 2 == 0:
            u[start:start + 128, 1] = 1.0
    a = np.ones((n, n))
    b = np.zeros((2, n, n))
    for i in range(n - 1):
        b[1, i + 1, i] = 1.0
    c = np.zeros((n, 2))
    c[0, 0] = 1.0
    return lambda y=None: DCMSpec(a, b, c, u, dt, tr, 0.03, y=y, n_scans=None if y is not None else n_scans)


def draw_parameters(n: int, rng: np.random.Generator) -> dict:
    A = rng.uniform(-0.15, 0.15, (n, n))
    for i in range(n - 1):
        A[i + 1, i] = rng.uniform(0.2, 0.5)        # forward chain
    np.fill_diagonal(A, rng.normal(0, 0.1, n))    # log self-inhibition
    B = np.zeros((2, n, n))
    for i in range(n - 1):
        B[1, i + 1, i] = rng.uniform(-0.4, 0.4)
    C = np.zeros((n, 2))
    C[0, 0] = rng.uniform(0.3, 0.6)
    return {"A": A, "B": B, "C": C, "transit": rng.normal(0, 1 / 16, n), "decay": rng.normal(0, 1 / 16),
            "epsilon": float(rng.normal(0, 1 / 16))}


def spm_comparison(repeats: int) -> None:
    """Our estimate_dcm against spm_dcm_estimate on the stored SPM12 r7771 cases."""
    import json
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root))
    from ptsd_bidsapp.dcm import estimate_dcm
    from tests.dcm.test_spm12_reference import _spec_from_reference

    print("DCM vs SPM12 r7771 spm_dcm_estimate (Octave) on the reference cases")
    header = f"{'case':>10} {'ours s':>8} {'SPM s':>8} {'ratio':>7} {'max|dEp|':>9} {'dF':>8} {'iters':>9}"
    print(header)
    print("-" * len(header))
    for path in sorted((root / "tests" / "data" / "spm12").glob("dcm_*.json")):
        ref = json.loads(path.read_text())
        times = []
        for _ in range(repeats):
            spec = _spec_from_reference(ref)
            start = time.perf_counter()
            result = estimate_dcm(spec)
            times.append(time.perf_counter() - start)
        out = ref["outputs"]
        free = np.asarray(out["pC_diag"], dtype=float) > 0
        dep = np.abs(result.Ep_vector - np.asarray(out["Ep"], dtype=float))[free].max()
        med = statistics.median(times)
        print(f"{path.stem[4:]:>10} {med:>8.2f} {out['seconds']:>8.1f} {out['seconds'] / med:>6.0f}x "
              f"{dep:>9.1e} {result.F - out['F']:>8.3f} {result.n_iter:>4}/{out['n_iter']:<4}")


def demo_convergence(n_subjects: int, seed: int = 1) -> None:
    """Converged share and iterations of the demo trial's session DCMs (simulator seed 1)."""
    import pandas as pd

    from ptsd_bidsapp.config import load_config
    from ptsd_bidsapp.dcm.participant import fit_session_dcm
    from ptsd_bidsapp.simulate import design, generative
    from ptsd_bidsapp.simulate.trial import ROI, faces_signals

    tr, n_scans = 2.0, 150
    cfg = load_config(None)["dcm"]
    groups = generative.assign_groups(n_subjects, seed)
    iters, conv, ev = [], [], []
    for index in range(n_subjects):
        params = generative.subject_parameters(seed, index, groups[index])
        for s_idx, ses in enumerate(("pre", "post")):
            rng = np.random.default_rng([seed, index, 10 + s_idx, 0])
            events = design.faces_events(n_scans, tr, rng)
            sig, _ = faces_signals(params, ses, events, n_scans, tr, tr / 2, rng)
            voi = pd.DataFrame({"amygdala": sig[ROI["amygdala"]], "vmpfc": sig[ROI["vmpfc"]]})
            result = fit_session_dcm(voi, events, tr, cfg, confounds=None, slice_timing_ref=tr / 2)
            iters.append(result.n_iter)
            conv.append(result.converged)
            ev.append(result.explained_variance)
    print(f"demo trial (seed {seed}, {n_subjects} subjects x 2 sessions, {n_scans} scans): "
          f"converged {sum(conv)}/{len(conv)} ({100 * np.mean(conv):.0f} %), median iterations "
          f"{statistics.median(iters):.0f} (max {max(iters)}), median explained variance {np.median(ev):.0f} %")


def pipeline_convergence(work_dir: str, bids_dir: str, tr: float = 2.0) -> None:
    """Refit the faces session DCMs of a finished participant run from its work directory."""
    import glob

    import pandas as pd

    from ptsd_bidsapp.config import load_config
    from ptsd_bidsapp.dcm.participant import fit_session_dcm
    from ptsd_bidsapp.workflows.participant import load_result

    cfg = load_config(None)["dcm"]
    conv, iters = [], []
    for d in sorted(glob.glob(f"{work_dir}/ptsd_bidsapp_wf/sub_*_wf/ses_*_task_faces_run/")):
        sub = d.split("sub_")[1].split("_wf")[0]
        ses = d.split("/ses_")[1].split("_task")[0]
        inputs = load_result(d + "run_result.pkl.gz")["dcm_inputs"]  # the run node's result
        voi = inputs["voi"]
        events = pd.read_csv(glob.glob(f"{bids_dir}/sub-{sub}/ses-{ses}/func/*faces*_events.tsv")[0], sep="\t")
        conf = inputs["confounds"].to_numpy(float)
        result = fit_session_dcm(voi, events, tr, cfg, confounds=conf if conf.size else None, slice_timing_ref=tr / 2)
        conv.append(result.converged)
        iters.append(result.n_iter)
    print(f"participant-run session DCMs ({work_dir}): converged {sum(conv)}/{len(conv)} "
          f"({100 * np.mean(conv):.0f} %), median iterations {statistics.median(iters):.0f} (max {max(iters)})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regions", type=int, nargs="+", default=[2, 4, 6])
    parser.add_argument("--scans", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--snr", type=float, default=4.0)
    parser.add_argument("--spm", action="store_true", help="time the SPM12 reference cases against SPM")
    parser.add_argument("--demo", action="store_true", help="convergence over the demo trial's session DCMs")
    parser.add_argument("--demo-subjects", type=int, default=21)
    parser.add_argument("--demo-work", default=None, help="work dir of a finished participant run (with --demo)")
    parser.add_argument("--demo-bids", default=None, help="its BIDS dataset (events), with --demo-work")
    args = parser.parse_args(argv)
    if args.spm:
        spm_comparison(args.repeats)
    if args.demo:
        if args.demo_work:
            pipeline_convergence(args.demo_work, args.demo_bids)
        else:
            demo_convergence(args.demo_subjects)
    if args.spm or args.demo:
        return 0

    from ptsd_bidsapp.dcm import estimate_dcm, simulate_dcm
    from ptsd_bidsapp.dcm.api import parameter_vector

    print(f"DCM benchmark: {args.scans} scans, TR 2 s, SNR {args.snr}, {args.repeats} repeats per size, "
          f"cpu count {os.cpu_count()}")
    header = (f"{'regions':>7} {'free':>5} {'median s':>9} {'min s':>7} {'s/iter':>7} {'iters':>6} "
              f"{'conv':>5} {'RMSE':>6} {'max err':>8} {'r':>6}")
    print(header)
    print("-" * len(header))
    for n in args.regions:
        make = model(n, args.scans)
        times, iters, conv, errs, truth_all, est_all = [], [], [], [], [], []
        free = None
        for rep in range(args.repeats):
            rng = np.random.default_rng(1000 * n + rep)
            params = draw_parameters(n, rng)
            y, _ = simulate_dcm(make(), params, snr=args.snr, rng=rng)
            spec = make(y)
            start = time.perf_counter()
            result = estimate_dcm(spec)
            times.append(time.perf_counter() - start)
            iters.append(result.n_iter)
            conv.append(result.converged)
            idx = [i for i, name in enumerate(result.param_names) if name[0] in "ABC" and result.pC[i, i] > 0]
            free = int(np.count_nonzero(np.diag(result.pC)))
            truth = parameter_vector(spec, params)[idx]
            est = result.Ep_vector[idx]
            errs.append(est - truth)
            truth_all.append(truth)
            est_all.append(est)
        err = np.concatenate(errs)
        r = np.corrcoef(np.concatenate(truth_all), np.concatenate(est_all))[0, 1]
        med = statistics.median(times)
        print(f"{n:>7} {free:>5} {med:>9.2f} {min(times):>7.2f} {med / statistics.median(iters):>7.3f} "
              f"{statistics.median(iters):>6.0f} {sum(conv):>2}/{len(conv):<2} {np.sqrt(np.mean(err ** 2)):>6.3f} "
              f"{np.abs(err).max():>8.3f} {r:>6.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
