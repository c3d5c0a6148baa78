"""Analysis configuration: default, merge, validation messages."""

import pytest
import yaml

from ptsd_bidsapp.config import ConfigError, dump_config, load_config, parse_contrast


def test_default_reproduces_reference_design():
    config = load_config()
    assert config["tasks"]["faces"]["contrasts"] == {"fearfulMinusNeutral": "fearful - neutral"}
    assert config["tasks"]["conflict"]["contrasts"] == {"conflictRegulation": "iI - cI"}
    assert config["elastic_net"]["alpha"] == 0.5
    assert set(config["elastic_net"]["models"]) == {"all", "drug_interaction", "depression_covariate", "ketamine_only"}


def test_user_yaml_merges_key_by_key(tmp_path):
    path = tmp_path / "c.yml"
    path.write_text("elastic_net:\n  alpha: 1.0\nmotion_qc:\n  max_mean_fd: 0.3\n")
    config = load_config(path)
    assert config["elastic_net"]["alpha"] == 1.0
    assert config["elastic_net"]["n_lambda"] == 100  # untouched sibling kept
    assert config["motion_qc"]["max_mean_fd"] == 0.3


def test_every_problem_is_reported(tmp_path):
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump({
        "tasks": {"faces": {"contrasts": {"bad": "fearful - angry"}}},
        "elastic_net": {"alpha": "high", "modelz": 1},
        "atlas": {"min_coverage": [1]},
    }))
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    text = str(exc.value)
    assert str(path) in text
    assert "unknown key 'elastic_net.modelz'" in text
    assert "'elastic_net.alpha' should be of type float" in text
    assert "'atlas.min_coverage' should be of type float" in text
    assert "condition 'angry'" in text
    assert len(exc.value.problems) == 4


def test_new_task_validated_against_task_template(tmp_path):
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump({"tasks": {"gonogo": {"design": "event", "conditions": ["go", "nogo"],
                                                          "contrasts": {"nogoMinusGo": "nogo - go"},
                                                          "denoising": "task_default", "gppi": False, "colour": 1}}}))
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert exc.value.problems == ["unknown key 'tasks.gonogo.colour' (allowed here: conditions, contrasts, denoising, design, gppi, unmodelled_trial_types)"]


def test_parse_contrast():
    assert parse_contrast("iI - cI", ["cC", "cI", "iC", "iI"]) == {"iI": 1.0, "cI": -1.0}
    assert parse_contrast("0.5*a + 0.5 b - c", ["a", "b", "c"]) == {"a": 0.5, "b": 0.5, "c": -1.0}
    with pytest.raises(ValueError, match="not one of"):
        parse_contrast("a - z", ["a", "b"])
    with pytest.raises(ValueError):
        parse_contrast("a -- ", ["a"])


def test_dump_roundtrip():
    config = load_config()
    assert yaml.safe_load(dump_config(config)) == config


def test_dcm_shape_checked(tmp_path):
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump({"dcm": {"a": [[1, 1, 1], [1, 1, 1]], "inputs": {"faces": ["fearful", "sad"]}}}))
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    text = str(exc.value)
    assert "dcm.a must be a 2x2 matrix" in text and "'sad'" in text


def test_unimplemented_standardize_false_rejected(tmp_path):
    path = tmp_path / "c.yml"
    path.write_text("elastic_net:\n  standardize: false\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert "elastic_net.standardize" in str(exc.value)


def _string_constants_outside_config() -> set[str]:
    import ast
    from pathlib import Path

    import ptsd_bidsapp

    root = Path(ptsd_bidsapp.__file__).parent
    found = set()
    for path in root.rglob("*.py"):
        if path.name == "config.py" and path.parent == root:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.add(node.value)
    return found


def test_every_default_config_key_is_read_somewhere():
    """Each key of the packaged default is a string the code looks up (outside config.py): no
    key is accepted and then ignored. Children of user-named mappings (tasks, models, ...) are
    names, not keys, and are skipped; their template's keys are checked once."""
    from ptsd_bidsapp.config import OPEN_MAPPINGS, _pattern_match, load_default_config

    constants = _string_constants_outside_config()
    unread = []

    def walk(node, path):
        for key, value in node.items():
            child = f"{path}.{key}" if path else str(key)
            is_name = path and any(_pattern_match(path, k) for k in OPEN_MAPPINGS)
            if not is_name and str(key) not in constants:
                unread.append(child)
            if isinstance(value, dict):
                walk(value, child)

    walk(load_default_config(), "")
    assert not unread, f"config keys no module reads: {unread}"
