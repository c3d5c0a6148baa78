"""Sequential permutation test (Besag & Clifford 1991): definition, validity under the null, determinism."""

import numpy as np
import pytest
import yaml

from ptsd_bidsapp.config import ConfigError, load_config
from ptsd_bidsapp.glmnet import permutation_test, sequential_p_value


def test_definition_on_a_hand_made_sequence():
    null = np.array([0.1, 0.5, 0.2, 0.6, 0.9, 0.3, 0.7])
    # observed 0.45: null values reaching it at positions 2, 4, 5, 7 (1-based)
    assert sequential_p_value(null, 0.45, 2, 7) == (2 / 4, 4)  # stops at the 2nd reaching one: h / L
    assert sequential_p_value(null, 0.45, 4, 7) == (4 / 7, 7)
    assert sequential_p_value(null, 0.45, 5, 7) == ((1 + 4) / (1 + 7), 7)  # never 5: the fixed-size p
    assert sequential_p_value(null, 0.45, None, 7) == ((1 + 4) / (1 + 7), 7)
    assert sequential_p_value(null, 0.7, 2, 7) == (2 / 7, 7)  # 0.9, then the tie 0.7 reaches the observed
    # statistics computed ahead of the stop do not change the result
    assert sequential_p_value(null, 0.45, 2, 5) == sequential_p_value(null[:5], 0.45, 2, 5)


@pytest.mark.parametrize("h", [1, 5, 20])
def test_sequential_p_is_valid_under_the_null(h):
    """Exchangeable null (observed and 199 null statistics iid): P(p ≤ a) ≤ a at every level.

    Besag & Clifford's p is exact at its attainable values, so the observed rate must also be
    close to a when a is attainable (0.05 = 10/200 = h/L for L = 20 h); 20,000 trials give a
    binomial SE of at most 0.0035 (a = 0.5), and the bound allows 4 SE.
    """
    rng = np.random.default_rng(h)
    trials, n_max = 20_000, 199
    stats = rng.uniform(size=(trials, 1 + n_max))
    results = [sequential_p_value(row[1:], row[0], h, n_max) for row in stats]
    p = np.array([r[0] for r in results])
    used = np.array([r[1] for r in results])
    for a in (0.01, 0.05, 0.1, 0.25, 0.5):
        rate = np.mean(p <= a)
        se = np.sqrt(a * (1 - a) / trials)
        assert rate <= a + 4 * se, (a, rate)
    assert abs(np.mean(p <= 0.05) - 0.05) < 4 * np.sqrt(0.05 * 0.95 / trials)
    if h < 20:  # and it saves permutations: under the null the test stops after ~2h on average
        assert used.mean() < 0.2 * n_max


def _noise(n=12, p=5, seed=2):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, p)), rng.normal(size=n)


def test_permutation_test_stops_early_on_the_fixed_tests_sequence():
    """The sequential test reads the fixed-size test's permutations in order: same null, stops at the h-th."""
    X, y = _noise()
    fixed = permutation_test(X, y, -0.2, n_permutations=40, seed=4)
    runs = [permutation_test(X, y, -0.2, n_permutations=40, seed=4, sequential_h=3, n_jobs=jobs) for jobs in (1, 2)]
    # Besag & Clifford by hand on the fixed test's null: stop at the 3rd statistic reaching the
    # observed (>=), p = 3 / (permutations used)
    reaching = np.flatnonzero(fixed["null_r2"] >= -0.2)
    assert reaching.size >= 3
    used = int(reaching[2]) + 1
    expected_p = 3 / used
    assert used < 40
    for run in runs:
        assert run["p_value"] == expected_p == 3 / used
        assert run["n_permutations"] == used and run["n_permutations_max"] == 40
        np.testing.assert_array_equal(run["null_r2"], fixed["null_r2"][:used])


def test_permutation_test_runs_all_permutations_when_few_reach_the_observed():
    X, y = _noise()
    fixed = permutation_test(X, y, 0.99, n_permutations=15, seed=4)
    seq = permutation_test(X, y, 0.99, n_permutations=15, seed=4, sequential_h=2)
    assert seq["n_permutations"] == 15
    assert seq["p_value"] == fixed["p_value"] == 1 / 16
    np.testing.assert_array_equal(seq["null_r2"], fixed["null_r2"])


def test_config_rejects_bad_solver_and_sequential_h(tmp_path):
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump({"elastic_net": {"solver": "fortran", "sequential_h": 0}}))
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    text = str(exc.value)
    assert "elastic_net.solver must be one of auto, compiled, numpy (got 'fortran')" in text
    assert "elastic_net.sequential_h must be null" in text
    path.write_text(yaml.safe_dump({"elastic_net": {"solver": "numpy", "sequential_h": 10}}))
    config = load_config(path)
    assert config["elastic_net"]["sequential_h"] == 10 and config["elastic_net"]["solver"] == "numpy"
