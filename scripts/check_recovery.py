#!/usr/bin/env python
"""Participant-level recovery on a simulated trial: estimated vs planted pre->post change.

For every measure planted in ``sourcedata/simulation/truth.json`` (Contract 4), correlates
across subjects the change (post - pre) read from the participant features tables with the
planted change, and prints Pearson r, its p value, the slope sign and n. Planted gPPI effects
are directed (seed vmPFC -> target amygdala), so the directed ``gppidir_`` measure is also shown.

Usage::

    python scripts/check_recovery.py BIDS_DIR OUTPUT_DIR
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats


def read_features(out: Path) -> pd.DataFrame:
    rows = []
    for path in sorted(out.glob("sub-*/ses-*/*_desc-measures_features.tsv")):
        table = pd.read_csv(path, sep="\t", na_values="n/a")
        table["subject"] = path.parts[-3]
        table["session"] = path.parts[-2].removeprefix("ses-")
        rows.append(table)
    return pd.concat(rows, ignore_index=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bids_dir", type=Path)
    parser.add_argument("output_dir", type=Path)
    opts = parser.parse_args()
    truth = json.loads((opts.bids_dir / "sourcedata" / "simulation" / "truth.json").read_text())
    feats = read_features(opts.output_dir)
    wide = feats.pivot_table(index=["subject", "session"], columns="measure", values="value")
    print(f"{'measure':<58}{'planted':>9}{'r':>8}{'p':>10}{'sign ok':>9}{'n':>4}")
    for measure, effect in sorted(truth["effects"].items()):
        candidates = [measure]
        if measure.startswith("gppi_"):
            candidates.append(measure.replace("gppi_", "gppidir_", 1))
        for column in candidates:
            if column not in wide.columns:
                continue
            planted, estimated = [], []
            for sub, info in sorted(truth["subjects"].items()):
                try:
                    est = wide.loc[(sub, "post"), column] - wide.loc[(sub, "pre"), column]
                except KeyError:
                    continue
                if np.isfinite(est):
                    planted.append(info["measures"]["post"][measure] - info["measures"]["pre"][measure])
                    estimated.append(est)
            if len(planted) < 3 or np.std(planted) == 0:
                print(f"{column:<58}{'null':>9}{'':>8}{'':>10}{'':>9}{len(planted):>4}")
                continue
            r, p = stats.pearsonr(planted, estimated)
            kind = "null" if effect.get("null") else "yes"
            print(f"{column:<58}{kind:>9}{r:>8.2f}{p:>10.2g}{str(r > 0):>9}{len(planted):>4}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
