"""Participant features tables straight from the generative model, without images.

For testing and benchmarking the group level in seconds: writes a minimal BIDS root
(``participants.tsv`` with the arm, ``sub-<s>/sub-<s>_sessions.tsv`` with the clinical
scores) and, in a participant-output root, the long features tables of ARCHITECTURE.md
Contract 3 — the planted measures of :data:`ptsd_bidsapp.simulate.generative.EFFECTS` at their
planted values plus estimation noise, every other measure identifier of the default ROI set
as noise. The subjects, arms and clinical scores are exactly those of
``ptsd_bidsapp.simulate.simulate_trial`` with the same seed and number of subjects.
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from ptsd_bidsapp import contracts
from ptsd_bidsapp.atlas import ROI_LABELS
from ptsd_bidsapp.bids.outputs import write_tsv
from ptsd_bidsapp.simulate import generative

__all__ = ["measure_ids", "write_feature_tables"]

FEATURES_NAME = "sub-{s}_ses-{t}_space-MNI152NLin2009cAsym_atlas-ptsdcircuit_desc-measures_features.tsv"


def measure_ids(rois=ROI_LABELS) -> list[tuple[str, str, str]]:
    """(measure id, task, kind) of the default participant measures (Contract 2)."""
    out = []
    for roi in rois:
        out.append((contracts.activation_id("faces", "fearfulMinusNeutral", roi), "faces", "activation"))
        out.append((contracts.activation_id("conflict", "conflictRegulation", roi), "conflict", "activation"))
    for a, b in combinations(rois, 2):
        out.append((contracts.gppi_id("faces", "fearfulMinusNeutral", a, b), "faces", "gppi"))
        out.append((contracts.fc_id("rest", a, b), "rest", "fc"))
    for a in rois:
        for b in rois:
            if a != b:
                out.append((contracts.gppi_directed_id("faces", "fearfulMinusNeutral", a, b), "faces",
                            "gppi_directed"))
    return out


def write_feature_tables(participant_dir, bids_dir, n_subjects: int = 21, seed: int = 20210701,
                         estimation_noise: float = 0.5, missing: dict | None = None) -> dict:
    """Write the BIDS clinical files and the participants' features tables.

    Parameters
    ----------
    participant_dir, bids_dir : path
        Output root of the (fabricated) participant level, and the raw BIDS root.
    n_subjects, seed : int
        As for ``simulate_trial``.
    estimation_noise : float
        SD of the estimation noise added to each planted value, as a fraction of the effect's
        ``noise_sd`` (the participant level estimates the measures from noisy BOLD).
    missing : dict, optional
        ``{subject label: what}`` to fabricate incomplete data: ``"session"`` (no post
        features table), ``"measure"`` (planted gPPI n/a in post), ``"qc"`` (qc_pass False for
        the conflict task in pre), ``"score"`` (no post CAPS-5).

    Returns
    -------
    dict
        ``{"subjects": {label: subject parameters (truth.json entry)}, "measures": [...]}``.
    """
    participant_dir, bids_dir = Path(participant_dir), Path(bids_dir)
    missing = dict(missing or {})
    groups = generative.assign_groups(n_subjects, seed)
    width = max(2, len(str(n_subjects)))
    ids = measure_ids()
    participants, truth = [], {}
    for index in range(n_subjects):
        label = f"{index + 1:0{width}d}"
        params = generative.subject_parameters(seed, index, groups[index])
        truth[label] = params
        participants.append({"participant_id": f"sub-{label}", "group": params["group"], "age": params["age"],
                             "sex": params["sex"]})
        sessions = pd.DataFrame({
            "session_id": ["ses-pre", "ses-post"],
            "caps5_total": [params["caps5"]["pre"], params["caps5"]["post"]],
            "madrs_total": [params["madrs"]["pre"], params["madrs"]["post"]],
        })
        if missing.get(label) == "score":
            sessions.loc[1, "caps5_total"] = np.nan
        write_tsv(bids_dir / f"sub-{label}" / f"sub-{label}_sessions.tsv", sessions)
        rng = np.random.default_rng([seed, index, 99])
        baseline = {mid: rng.normal(0.0, 0.2) for mid, _, _ in ids}
        for ses in ("pre", "post"):
            if ses == "post" and missing.get(label) == "session":
                continue
            rows = []
            for mid, task, kind in ids:
                if mid in generative.EFFECTS:
                    eff = generative.EFFECTS[mid]
                    value = params["measures"][ses][mid] + estimation_noise * eff["noise_sd"] * rng.standard_normal()
                else:
                    value = baseline[mid] + 0.1 * rng.standard_normal()
                qc_pass = not (missing.get(label) == "qc" and ses == "pre" and task == "conflict")
                if missing.get(label) == "measure" and ses == "post" and mid == "gppi_faces_fearfulMinusNeutral_vmpfc-amygdala":
                    value, note = np.nan, "ROI coverage below threshold"
                else:
                    note = "" if qc_pass else "run excluded by motion QC"
                rows.append({"measure": mid, "value": value, "task": task, "kind": kind, "qc_pass": qc_pass,
                             "note": note or "n/a"})
            write_tsv(participant_dir / f"sub-{label}" / f"ses-{ses}" / FEATURES_NAME.format(s=label, t=ses),
                      pd.DataFrame(rows))
    write_tsv(bids_dir / "participants.tsv", pd.DataFrame(participants))
    return {"subjects": truth, "measures": [m for m, _, _ in ids]}
