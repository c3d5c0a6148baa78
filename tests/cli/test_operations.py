"""fMRIPrep-style operations (issue 15), the parts testable without a pipeline run: the parser, task
selection of the configuration, console verbosity, the methods boilerplate, provenance, progress.

The end-to-end behaviour of each flag (a run with and without it) is in
``tests/workflows/test_operations_e2e.py``.
"""

import json
import logging
import re
import sys
from pathlib import Path

import pytest

from ptsd_bidsapp import errors
from ptsd_bidsapp.bids.dataset import container_info, dataset_description, source_dataset
from ptsd_bidsapp.cli.logs import setup_console_logging
from ptsd_bidsapp.cli.parser import UsageError, build_parser, parse_args
from ptsd_bidsapp.cli.run import main
from ptsd_bidsapp.config import ConfigError, load_config, select_tasks
from ptsd_bidsapp.contracts import pattern_task
from ptsd_bidsapp.group.changes import patterns_for_present_tasks
from ptsd_bidsapp.progress import Ticker
from ptsd_bidsapp.reports.boilerplate import REFERENCES, citation_files, config_differences

ROOT = Path(__file__).resolve().parents[2]
FLAGS = ["--task-id", "--notrack", "--stop-on-first-crash", "--clean-workdir", "--resource-monitor", "--write-graph",
         "--reports-only", "--boilerplate-only", "--quiet", "--verbose"]


@pytest.fixture
def dirs(tmp_path):
    (tmp_path / "bids").mkdir()
    return [str(tmp_path / "bids"), str(tmp_path / "out"), "participant"]


# --------------------------------------------------------------------------- parser
def test_every_flag_parses_to_its_setting(dirs):
    args = parse_args([*dirs, "-t", "faces", "rest", "--notrack", "--stop-on-first-crash", "--clean-workdir",
                       "--resource-monitor", "--write-graph", "--reports-only", "-qq"])
    assert args.task_id == ["faces", "rest"]
    assert args.notrack and args.stop_on_first_crash and args.clean_workdir
    assert args.resource_monitor and args.write_graph and args.reports_only
    assert args.quiet == 2 and not args.boilerplate_only
    default = parse_args(dirs)
    assert default.task_id is None and default.quiet == 0
    assert not any((default.notrack, default.stop_on_first_crash, default.clean_workdir, default.resource_monitor,
                    default.write_graph, default.reports_only, default.boilerplate_only))
    # fMRIPrep's underscore spellings are accepted too
    assert parse_args([*dirs, "--boilerplate_only", "--task_id", "faces"]).boilerplate_only


def test_contradicting_options_are_one_usage_error(dirs):
    with pytest.raises(UsageError) as err:
        parse_args([*dirs, "--reports-only", "--boilerplate-only", "-v", "-q", "-t", "fa-ces"])
    assert err.value.exit_code == errors.USAGE
    text = " ".join(err.value.problems)
    assert "--reports-only and --boilerplate-only" in text and "-q/--quiet" in text and "'fa-ces'" in text


def test_readme_option_table_lists_every_flag():
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("### Options"):readme.index("Exit codes (BIDS App")]
    listed = set(re.findall(r"`[^`]*?(--[a-z][a-z0-9-]+)", table)) | set(re.findall(r"(--[a-z][a-z0-9-]+)", table))
    declared = {opt for action in build_parser()._actions for opt in action.option_strings
                if opt.startswith("--") and "_" not in opt and opt != "--help"}
    assert declared - listed == set(), "README's option table misses these flags"


# --------------------------------------------------------------------------- task selection
def test_pattern_task_names_the_task_or_nothing():
    assert pattern_task("activation_conflict_conflictRegulation_*") == "conflict"
    assert pattern_task("fc_rest_amygdala-*") == "rest"
    assert pattern_task("dcm_faces_B_*") == "faces"
    assert pattern_task("activation_*") is None and pattern_task("*_faces_*") is None
    assert pattern_task("unknownprefix_faces_x") is None


def test_select_tasks_skips_other_tasks_measures_and_the_dcm():
    config = load_config(None)
    kept, notes = select_tasks(config, ["conflict", "rest"])
    assert list(kept["tasks"]) == ["conflict", "rest"]
    assert all(pattern_task(p) in (None, "conflict", "rest") for p in kept["measures"])
    assert "activation_conflict_conflictRegulation_*" in kept["measures"]
    assert kept["dcm"]["enabled"] is False and config["dcm"]["enabled"] is True   # the input is not changed
    assert any("DCM" in n and "'faces'" in n for n in notes)
    assert any("gppi_faces_fearfulMinusNeutral_amygdala-*" in n for n in notes)
    faces, notes = select_tasks(config, ["faces"])
    assert faces["dcm"]["enabled"] is True and list(faces["tasks"]) == ["faces"]
    assert not [p for p in faces["measures"] if pattern_task(p) in ("conflict", "rest")]
    assert select_tasks(config, None) == (config, [])
    with pytest.raises(ConfigError, match="'stroop' is not a task"):
        select_tasks(config, ["faces", "stroop"])


def test_group_skips_patterns_of_tasks_no_table_holds_but_not_typos():
    tasks = load_config(None)["tasks"]
    patterns = ["activation_faces_fearfulMinusNeutral_*", "fc_rest_vmpfc-*", "activation_confict_*"]
    kept, notes = patterns_for_present_tasks(patterns, tasks, ["activation_faces_fearfulMinusNeutral_dacc"])
    assert kept == ["activation_faces_fearfulMinusNeutral_*", "activation_confict_*"]   # the typo still fails later
    assert len(notes) == 1 and "fc_rest_vmpfc-*" in notes[0]
    kept, notes = patterns_for_present_tasks(patterns[:2], tasks, ["fc_rest_vmpfc-amygdala",
                                                                   "activation_faces_fearfulMinusNeutral_dacc"])
    assert kept == patterns[:2] and notes == []


def test_unknown_task_id_exits_64_naming_the_tasks(dirs, capsys):
    assert main([*dirs, "-t", "stroop"]) == errors.USAGE
    assert "'stroop' is not a task of the configuration (tasks: faces, conflict, rest)" in capsys.readouterr().err


# --------------------------------------------------------------------------- verbosity
def _emit_all():
    logging.getLogger("bidsschematools").info("third-party info chatter")
    logging.getLogger("matplotlib.font_manager").warning("third-party warning")
    logging.getLogger("ptsd_bidsapp.progress").info("app progress line")
    logging.getLogger("ptsd_bidsapp").debug("app debug line")


@pytest.mark.parametrize("verbose, quiet, shown, hidden", [
    (0, 0, ["third-party warning", "app progress line"], ["third-party info chatter", "app debug line"]),
    (1, 0, ["third-party info chatter", "third-party warning", "app progress line"], ["app debug line"]),
    (2, 0, ["third-party info chatter", "app debug line"], []),
    (0, 1, ["third-party warning"], ["app progress line", "third-party info chatter"]),
])
def test_console_shows_third_party_info_only_with_v(verbose, quiet, shown, hidden, capsys):
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        setup_console_logging(verbose, quiet)
        _emit_all()
    finally:
        for handler in [h for h in root.handlers if getattr(h, "_ptsd_console", False)]:
            root.removeHandler(handler)
        root.handlers[:], root.level = saved[0], saved[1]
        logging.captureWarnings(False)
    err = capsys.readouterr().err
    for text in shown:
        assert text in err
    for text in hidden:
        assert text not in err


# --------------------------------------------------------------------------- boilerplate
def test_boilerplate_names_a_changed_setting_versions_and_citations():
    default = load_config(None)
    config = load_config(None)
    config["elastic_net"]["alpha"] = 0.25
    config["dcm"]["hC"] = 0.0078125
    files = citation_files(config, default, {"seed": 7}, versions={"python": "3.11.0", "ptsd_bidsapp": "9.9.9",
                                                                  "numpy": "1", "scipy": "2", "pandas": "3",
                                                                  "nibabel": "4", "nilearn": "5.5", "nipype": "6.6",
                                                                  "pybids": "7.7"})
    text = files["CITATION.md"]
    assert "elastic_net.alpha: 0.25 (default 0.5)" in text
    assert "dcm.hC: 0.0078125 (default 1.0)" in text
    assert "alpha 0.25" in text and "variance 0.0078125" in text and "random seed 7" in text
    assert "AR(1) noise per region" in text
    for version in ("ptsd_bidsapp 9.9.9", "nilearn 5.5", "Nipype 6.6", "PyBIDS 7.7"):
        assert version in text
    for key in ("norbury2021", "mclaren2012", "friston2003", "zeidman2019", "friedman2010", "abraham2014",
                "gorgolewski2011", "yarkoni2019", "esteban2019"):
        assert f"@article{{{key}," in files["CITATION.bib"]
        assert REFERENCES[key][0] in text
    assert "<li>elastic_net.alpha: 0.25 (default 0.5)</li>" in files["CITATION.html"]
    unchanged = citation_files(default, default, {"seed": 0})["CITATION.md"]
    assert "none: the packaged default configuration was used" in unchanged and "elastic_net.alpha:" not in unchanged


def test_boilerplate_follows_task_selection_and_no_dcm():
    default = load_config(None)
    config, _ = select_tasks(default, ["conflict"])
    text = citation_files(config, default, {"task_id": ["conflict"], "seed": 0})["CITATION.md"]
    assert "Only the tasks conflict were processed (--task-id)" in text
    assert "No DCM was estimated" in text and "friston2003" not in citation_files(config, default, {})["CITATION.bib"]
    assert "dcm.enabled: False (default True)" in text


def test_config_differences_lists_added_and_removed_keys():
    assert config_differences({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "d": 3}}) == [("a.d", None, 3), ("a.c", 2, None)]


def test_boilerplate_only_writes_the_methods_and_nothing_else(tmp_path, capsys):
    user = tmp_path / "user.yml"
    user.write_text("elastic_net:\n  n_permutations: 123\n")
    out = tmp_path / "out"
    # bids_dir need not exist: nothing is read from it
    code = main([str(tmp_path / "absent"), str(out), "participant", "--boilerplate-only", "--config", str(user)])
    assert code == errors.SUCCESS
    assert sorted(p.name for p in out.rglob("*")) == ["CITATION.bib", "CITATION.html", "CITATION.md", "logs"]
    assert "elastic_net.n_permutations: 123 (default 1000)" in (out / "logs" / "CITATION.md").read_text()
    assert str(out / "logs" / "CITATION.md") in capsys.readouterr().out


# --------------------------------------------------------------------------- provenance
def test_generated_by_container_only_from_the_image_itself(tmp_path):
    assert container_info({}) == {}          # a pip install, even inside someone's container (/.dockerenv)
    assert container_info({"PTSD_BIDSAPP_CONTAINER_IMAGE": "ptsd_bidsapp:0.1.0"}) == {
        "Type": "docker", "Tag": "ptsd_bidsapp:0.1.0"}
    assert container_info({"PTSD_BIDSAPP_CONTAINER_IMAGE": "ptsd_bidsapp:0.1.0",
                           "APPTAINER_CONTAINER": "/images/app.sif"}) == {
        "Type": "apptainer", "URI": "/images/app.sif", "Tag": "ptsd_bidsapp:0.1.0"}
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "PTSD_BIDSAPP_CONTAINER_IMAGE=${IMAGE_NAME}:${IMAGE_TAG}" in dockerfile


def test_pip_run_says_pip_and_has_no_container(tmp_path, monkeypatch):
    for name in ("PTSD_BIDSAPP_CONTAINER_IMAGE", "APPTAINER_CONTAINER", "SINGULARITY_CONTAINER"):
        monkeypatch.delenv(name, raising=False)
    bids = tmp_path / "bids"
    bids.mkdir()
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "x", "BIDSVersion": "1.8.0",
                                                               "Authors": ["A. Author"]}))
    desc = dataset_description(bids, bids / "derivatives" / "fmriprep")
    generated = desc["GeneratedBy"][0]
    assert "Container" not in generated and "pip installation" in generated["Description"]
    assert desc["Authors"][0] == "A. Author" and len(desc["Authors"]) == 2
    assert desc["SourceDatasets"][0] == {"URL": bids.resolve().as_uri()}   # no BIDSVersion posing as a version


def test_source_dataset_doi_and_version(tmp_path):
    (tmp_path / "dataset_description.json").write_text(json.dumps({
        "Name": "x", "BIDSVersion": "1.8.0", "DatasetDOI": "https://doi.org/10.18112/openneuro.ds000001.v1.0.0"}))
    (tmp_path / "CHANGES").write_text("1.0.2 2023-01-01\n  - fixed events\n1.0.0 2020-01-01\n  - initial\n")
    entry = source_dataset(tmp_path)
    assert entry["DOI"] == "doi:10.18112/openneuro.ds000001.v1.0.0"
    assert entry["Version"] == "1.0.2"


# --------------------------------------------------------------------------- progress
def test_ticker_reports_at_its_interval_and_at_the_end(monkeypatch, caplog):
    clock = iter([0.0, 1.0, 5.0, 11.0, 12.0, 13.0])
    monkeypatch.setattr("ptsd_bidsapp.progress.time.monotonic", lambda: next(clock))
    ticker = Ticker("model all: permutation test", 4, interval=10.0)
    with caplog.at_level(logging.INFO, logger="ptsd_bidsapp.progress"):
        written = [ticker.update(i) for i in (1, 2, 3, 4)]
    assert written == [False, False, True, True]   # t = 1, 5: quiet; t = 11: 10 s passed; the end always
    assert "model all: permutation test: 3/4 done, 0:00:11 elapsed" in caplog.text
    assert "model all: permutation test: 4/4 done, 0:00:12 elapsed" in caplog.text


def test_still_working_beats_during_a_silent_call_and_stops_with_it(caplog):
    import time

    from ptsd_bidsapp.progress import still_working

    with caplog.at_level(logging.INFO, logger="ptsd_bidsapp.progress"):
        with still_working("indexing the inputs with pybids", interval=0.05):
            time.sleep(0.32)                        # a call that prints nothing: about 6 beats
        during = caplog.text.count("indexing the inputs with pybids: still working")
        time.sleep(0.2)                             # after the block: no more lines
        after = caplog.text.count("indexing the inputs with pybids: still working")
    assert 3 <= during <= 7, during
    assert after == during


def test_graph_progress_counts_nodes_and_beats(caplog):
    import time

    from ptsd_bidsapp.workflows.participant import DerivativesSink, RunMeasures
    from ptsd_bidsapp.workflows.progress import GraphProgress

    class FakeNode:
        def __init__(self, interface, fullname):
            self.interface, self.fullname, self.name = interface, fullname, fullname.rsplit(".", 1)[-1]

    run = FakeNode(RunMeasures(), "ptsd_bidsapp_wf.sub_01_wf.ses_pre_task_faces_run")
    sink = FakeNode(DerivativesSink(), "ptsd_bidsapp_wf.sub_01_wf.ds_sub_01")
    with caplog.at_level(logging.INFO, logger="ptsd_bidsapp.progress"):
        progress = GraphProgress({"run": 2, "session": 1, "subject": 1}, heartbeat=0.2)
        progress(run, "start")
        progress(run, "end")
        progress(sink, "start")
        time.sleep(1.6)                      # the sink runs long: the heartbeat speaks
        progress(sink, "exception")
        progress.stop()
    assert "[1/2 runs, 0/1 sessions, 0/1 subjects |" in caplog.text
    assert "sub-01 ses_pre_task_faces_run: run measures" in caplog.text
    assert "running: 1 node(s): sub_01_wf.ds_sub_01" in caplog.text
    assert "FAILED sub-01 ds_sub_01" in caplog.text and progress.by_subject == {"01": ["ds_sub_01"]}


def test_notrack_is_accepted_and_nothing_phones_home(dirs, monkeypatch, capsys):
    monkeypatch.delenv("NIPYPE_NO_ET", raising=False)
    code = main([*dirs, "--notrack", "--print-config"])
    assert code == errors.SUCCESS and "tasks:" in capsys.readouterr().out
    import os

    assert os.environ["NIPYPE_NO_ET"] == "1"      # nipype's telemetry is off whatever the flags
    assert sys.modules.get("ptsd_bidsapp.cli.run") is not None


def test_reports_only_without_cached_results_names_the_fix(tmp_path, capsys):
    bids, out = tmp_path / "bids", tmp_path / "out"
    bids.mkdir()
    (out / "sub-01").mkdir(parents=True)
    common = [str(bids), str(out), "-w", str(tmp_path / "work"), "--skip-bids-validation", "--reports-only"]
    assert main([common[0], common[1], "group", *common[2:]]) == errors.NOINPUT
    assert "no cached group results" in capsys.readouterr().err
    assert main([common[0], common[1], "participant", *common[2:]]) == errors.NOINPUT
    printed = capsys.readouterr().out
    assert "FAILED sub-01: no cached session results" in printed and "without --reports-only" in printed
    assert not (out / "sub-01.html").exists() and not (out / "group").exists()


@pytest.mark.parametrize("quiet", [0, 2])
def test_quiet_reaches_the_console_through_the_cli(tmp_path, capsys, quiet):
    """-qq hides the app's warnings (here: the tasks --task-id skips) on the console, not in the run log."""
    bids, out = tmp_path / "bids", tmp_path / "out"
    bids.mkdir()
    code = main([str(bids), str(out), "participant", "-w", str(tmp_path / "work"), "--skip-bids-validation",
                 "-t", "faces"] + ["-q"] * quiet)
    assert code != errors.SUCCESS                       # an empty dataset: no subjects; beside the point
    shown = "task 'conflict' skipped" in capsys.readouterr().err
    assert shown is (quiet == 0)
    log = next((out / "logs").glob("participant-*.log")).read_text()
    assert "task 'conflict' skipped" in log
