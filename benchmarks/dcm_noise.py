#!/usr/bin/env python
"""Diagnosis of the session DCMs' noise model on null trials built from real signals.

Reads the faces-run VOIs, events and confounds that the participant level left in the work
folders of ``benchmarks/null_calibration.py`` (``<work>/seed-<S>/work``), refits every session
DCM twice -- with SPM12's noise model (``spm``: white noise, hyperprior hE 6, hC 1/128) and with
the app's ``dcm`` config (``app``: by default AR(1) noise, pre-whitened, hC 1) -- and prints, per
model and overall:

* ``resid/noise``: variance of the residuals (after confounds) over the variance the model
  assigns to the noise (``exp(-Eh)``, or ``exp(-Eh) / (1 - rho^2)`` for AR(1) noise) -- 1 when
  the noise estimate follows the data;
* ``lag1``: lag-1 autocorrelation of the residuals (of the whitened residuals with AR(1) noise)
  -- 0 for noise the model treats as white;
* ``post SD``: median posterior SD of the between-region A and B parameters;
* ``EV``: explained variance (%).

With ``--figure PATH`` it draws the per-session distributions (PNG). Usage::

    python benchmarks/dcm_noise.py --work /tmp/nullcal --seeds 0 1 2 3 4 --figure docs/figures/dcm_noise.png
    python benchmarks/dcm_noise.py --work /tmp/nullcal --seeds 0 --config my.yml     # other dcm settings
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ptsd_bidsapp.config import load_config
from ptsd_bidsapp.dcm.inversion import _whitener
from ptsd_bidsapp.dcm.participant import fit_session_dcm, residual_ar1
from ptsd_bidsapp.peb import select_parameters
from ptsd_bidsapp.workflows.participant import load_result

#: noise settings compared: SPM12's defaults, and the app's config as it stands
MODELS = {"spm": {"noise": "white", "hE": 6.0, "hC": 1.0 / 128.0}, "app": {}}


def _run_summaries(work: Path, task: str) -> list[Path]:
    found = sorted(work.glob(f"**/ses_*_task_{task}_run/run_result.pkl.gz"))
    if not found:
        raise FileNotFoundError(f"no {task} run summaries under {work} (run benchmarks/null_calibration.py first)")
    return found


def session_rows(summary_path: Path, dcm_config: dict) -> list[dict]:
    """Fit one session's DCM under each noise model; one row of diagnostics per model."""
    rs = load_result(summary_path)  # the run node's result (workflows/participant.py)
    work = rs["dcm_inputs"]
    voi = work["voi"]
    events = pd.read_csv(work["events"], sep="\t", na_values="n/a", dtype={"trial_type": str})
    confounds = work["confounds"].to_numpy(float)
    tr = float(rs["tr"])
    rows = []
    for model, settings in MODELS.items():
        cfg = {**dcm_config, **settings}
        res = fit_session_dcm(voi, events, tr, cfg, confounds=confounds if confounds.size else None,
                              slice_timing_ref=float(work.get("slice_time_ref") or 0.0) * tr,
                              echo_time=rs.get("echo_time"))
        rho = res.spec.noise_ar1
        noise_var = np.exp(-np.asarray(res.Eh, float))
        if rho is not None:
            noise_var = noise_var / (1.0 - rho ** 2)
            whiten, _ = _whitener(rho, res.residuals.shape[0])
            innov = whiten(res.residuals.ravel(order="F")).reshape(res.residuals.shape, order="F")
        else:
            innov = res.residuals
        free = select_parameters(res.param_names, fields=("A", "B"), between_only=True,
                                 prior_variance=np.diag(res.pC))
        rows.append({"subject": rs["subject"], "session": rs["session"], "model": model,
                     "resid_over_noise": float(np.median(res.residuals.var(axis=0) / noise_var)),
                     "lag1": float(np.median(residual_ar1(innov))),
                     "ar1": None if rho is None else float(np.median(rho)),
                     "post_sd": float(np.median(np.sqrt(np.diag(res.Cp)[free]))),
                     "explained_variance": float(res.explained_variance), "converged": bool(res.converged)})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="--work folder of benchmarks/null_calibration.py")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--config", default=None, help="analysis YAML merged over the default")
    parser.add_argument("--figure", default=None, help="write a PNG of the per-session distributions")
    parser.add_argument("--tsv", default=None, help="write the per-session table")
    parser.add_argument("--from-tsv", default=None, help="summarise / draw a table written by --tsv (no fitting)")
    opts = parser.parse_args(argv)
    config = load_config(opts.config)
    dcm_config = copy.deepcopy(config["dcm"])
    rows = [] if not opts.from_tsv else pd.read_csv(opts.from_tsv, sep="\t").to_dict("records")
    for seed in ([] if opts.from_tsv else opts.seeds):
        for path in _run_summaries(Path(opts.work) / f"seed-{seed}" / "work", dcm_config["task"]):
            for row in session_rows(path, dcm_config):
                rows.append({"seed": seed, **row})
        print(f"seed {seed}: {sum(r['seed'] == seed for r in rows) // len(MODELS)} sessions", file=sys.stderr)
    table = pd.DataFrame(rows)
    if opts.tsv:
        table.to_csv(opts.tsv, sep="\t", index=False, na_rep="n/a")
    q = lambda s: f"{s.median():6.2f} [{s.quantile(0.1):.2f}-{s.quantile(0.9):.2f}]"  # noqa: E731
    print(f"{len(table) // len(MODELS)} session DCMs; median [10th-90th percentile] over sessions")
    print(f"{'model':6s} {'resid/noise':>20s} {'lag1 of residuals':>20s} {'post SD (A, B)':>20s} {'EV %':>20s}")
    for model in MODELS:
        t = table[table.model == model]
        print(f"{model:6s} {q(t.resid_over_noise):>20s} {q(t.lag1):>20s} {q(t.post_sd):>20s} "
              f"{q(t.explained_variance):>20s}")
    ratio = (table[table.model == "app"].post_sd.to_numpy() / table[table.model == "spm"].post_sd.to_numpy())
    print(f"posterior SD app / spm: median {np.median(ratio):.2f} (10th-90th {np.quantile(ratio, 0.1):.2f}-"
          f"{np.quantile(ratio, 0.9):.2f})")
    if opts.figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
        for ax, col, label in zip(axes, ("resid_over_noise", "lag1", "post_sd"),
                                  ("residual variance / model noise variance", "lag-1 autocorrelation of residuals",
                                   "posterior SD of A, B (Hz)")):
            data = [table[table.model == m][col].to_numpy() for m in MODELS]
            ax.boxplot(data)
            ax.set_xticks([1, 2], ["SPM12 defaults", "app defaults"])
            ax.set_title(label, fontsize=9)
            if col == "resid_over_noise":
                ax.set_yscale("log")
                ax.axhline(1.0, color="grey", lw=0.8, ls="--")
            if col == "lag1":
                ax.axhline(0.0, color="grey", lw=0.8, ls="--")
        fig.suptitle(f"Session DCMs of {table.seed.nunique()} null trials from real signals "
                     f"({len(table) // len(MODELS)} sessions; benchmarks/dcm_noise.py)", fontsize=10)
        fig.tight_layout()
        Path(opts.figure).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(opts.figure, dpi=110)
        print(f"figure: {opts.figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
