"""Fixtures: a small simulated trial shared by the simulator tests.

Other test folders can reuse :func:`small_trial` (import it from here) or call
``ptsd_bidsapp.simulate.simulate_trial`` directly.
"""

import pytest

from ptsd_bidsapp.simulate import simulate_trial

SMALL = {"n_subjects": 4, "seed": 11, "resolution": 8.0, "n_volumes": 80}


def small_trial(tmp_path_factory, **overrides):
    """Write a 4-subject, 8 mm, 80-volume trial (a few seconds) and return its path."""
    kwargs = dict(SMALL, **overrides)
    return simulate_trial(tmp_path_factory.mktemp("sim") / "trial", **kwargs)


@pytest.fixture(scope="session")
def sim_small(tmp_path_factory):
    return small_trial(tmp_path_factory)
