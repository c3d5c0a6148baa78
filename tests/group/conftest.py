"""Group-level fixtures: participant features tables fabricated from the generative model.

The participant level is slow (images); the group level only reads the long features
tables, so these fixtures write them straight from ``ptsd_bidsapp.simulate.generative``
(the planted effects of truth.json + estimation noise) with
:func:`ptsd_bidsapp.simulate.features.write_feature_tables`, plus a tiny BIDS root with
``participants.tsv`` and ``sessions.tsv``. Permutation and bootstrap counts are small here
(``FAST_ELASTIC_NET``); the packaged defaults stay 1000 / 500.
"""

import copy
import fnmatch

import pytest

from ptsd_bidsapp.config import load_config
from ptsd_bidsapp.simulate.features import measure_ids, write_feature_tables

FAST_ELASTIC_NET = {"n_permutations": 19, "n_bootstrap": 50}



def a_priori_measures(config: dict) -> list[str]:
    """Simulated measure ids the configured patterns select, worked out without the app's code: as
    written or, for an undirected gppi_/fc_ pair, with the pair reversed (README: measure patterns)."""
    def reversed_pair(measure):
        head, _, pair = measure.rpartition("_")
        a, b = pair.split("-")
        return f"{head}_{b}-{a}"

    def selected(measure):
        candidates = [measure] + ([reversed_pair(measure)] if measure.startswith(("gppi_", "fc_")) else [])
        return any(fnmatch.fnmatchcase(c, p) for c in candidates for p in config["measures"])

    return [m for m, _, _ in measure_ids() if selected(m)]


def fast_config(**elastic_net):
    """The default config with few permutations/bootstraps, DCM off (no DCM JSONs here)."""
    config = copy.deepcopy(load_config(None))
    config["elastic_net"].update(FAST_ELASTIC_NET, **elastic_net)
    config["dcm"]["enabled"] = False
    return config


def fabricate(tmp_path, n_subjects=21, seed=20210701, missing=None):
    """Write BIDS clinical files + features tables under ``tmp_path``; returns (bids, out, truth)."""
    bids, out = tmp_path / "bids", tmp_path / "out"
    truth = write_feature_tables(out, bids, n_subjects=n_subjects, seed=seed, missing=missing)
    return bids, out, truth


@pytest.fixture(scope="session")
def demo_features(tmp_path_factory):
    """21 fabricated subjects with the simulator's default seed."""
    return fabricate(tmp_path_factory.mktemp("groupdemo"))
