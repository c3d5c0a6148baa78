"""The reports' demo trial, as small as keeps the planted findings: fabricated group-level inputs.

The group report needs the planted findings of the simulated trial (Contract 4) at the
group level: :func:`ptsd_bidsapp.simulate.features.write_feature_tables` writes the 21
subjects' features tables (planted measures + estimation noise, the simulator's subjects,
arms and scores), and :func:`write_dcm_posteriors` writes each subject's session DCM
posterior from the planted DCM parameters of the same subjects: the exact posterior of a
direct Gaussian observation of the planted parameters (observation SD
:data:`DCM_OBSERVATION_SD` Hz on the between-region A and B parameters, the SPM priors of
``dcm_fmri_priors``), so that the PEB stage sees the planted session change of B with
improvement without fitting 42 DCMs to images.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ptsd_bidsapp import contracts
from ptsd_bidsapp.dcm.priors import dcm_fmri_priors, pack_parameters

#: SD (Hz) of the fabricated observation of each free parameter: a well-estimated session DCM
#: (the demo's posterior SDs of A and B are 0.3-0.55 Hz under the app's noise model, so this
#: is a best case, chosen to keep the planted B change x improvement a finding at n = 21)
DCM_OBSERVATION_SD = 0.1
#: explained variance (%) written into the fabricated diagnostics; sub-05 pre is a poor fit
EXPLAINED_VARIANCE = 35.0
POOR_FIT = ("05", "pre", 4.0)


def write_dcm_posteriors(participant_dir: Path, truth: dict, config: dict, seed: int = 0) -> list[Path]:
    """Write ``sub-*/ses-*/func/*_model-dcm_dcm.json`` (+ ``.npz``) for every subject of ``truth``.

    Parameters
    ----------
    participant_dir : path
        Root of the fabricated participant outputs.
    truth : dict
        ``{"subjects": {label: parameters}}`` as returned by ``write_feature_tables``.
    config : dict
        Resolved configuration (its ``dcm`` section names regions, inputs and masks).
    """
    dcm = config["dcm"]
    regions, inputs = list(dcm["regions"]), list(dcm["inputs"])
    b = np.stack([np.asarray(dcm["b"].get(name, np.zeros((len(regions),) * 2)), float) for name in inputs])
    c = np.stack([np.asarray(dcm["c"].get(name, np.zeros(len(regions))), float) for name in inputs], axis=1)
    pE, pC = dcm_fmri_priors(np.asarray(dcm["a"], float), b, c, input_names=inputs)
    prior_mean = pack_parameters(pE, len(regions), len(inputs), inputs)
    prior_var = pack_parameters(pC, len(regions), len(inputs), inputs)
    names = contracts.dcm_parameter_names(regions, inputs)
    free = prior_var > 0
    rng = np.random.default_rng(seed)
    paths = []
    for label, params in sorted(truth["subjects"].items()):
        for session in ("pre", "post"):
            planted = params["dcm"][session]
            theta = pack_parameters({k: planted[k] for k in ("A", "B", "C", "transit", "decay", "epsilon")},
                                    len(regions), len(inputs), inputs)
            obs_var = np.full(theta.size, DCM_OBSERVATION_SD ** 2)
            y = theta + rng.normal(size=theta.size) * np.sqrt(obs_var)
            post_var = np.zeros(theta.size)
            post_var[free] = 1 / (1 / obs_var[free] + 1 / prior_var[free])
            Ep = prior_mean.copy()
            Ep[free] = post_var[free] * (y[free] / obs_var[free] + prior_mean[free] / prior_var[free])
            poor = (label, session) == POOR_FIT[:2]
            explained = POOR_FIT[2] if poor else EXPLAINED_VARIANCE
            stem = f"sub-{label}_ses-{session}_task-{dcm['task']}_space-MNI152NLin2009cAsym_model-dcm_dcm"
            path = Path(participant_dir) / f"sub-{label}" / f"ses-{session}" / "func" / f"{stem}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({
                "subject": label, "session": session, "region_names": regions, "input_names": inputs,
                "param_names": names, "F": -100.0,
                "diagnostics": {"explained_variance": explained, "fit_ok": not poor,
                                "problems": [f"explained variance {explained} % is below 10 %"] if poor else []}}))
            np.savez(path.with_suffix(".npz"), Ep=Ep, Cp=np.diag(post_var), pE=prior_mean, pC=np.diag(prior_var))
            paths.append(path)
    return paths
