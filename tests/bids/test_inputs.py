"""Input discovery with pybids on the simulated trial; missing/inconsistent files are named."""

import json
import shutil

import pytest

from ptsd_bidsapp.bids.inputs import (InputError, collect_runs, collect_subject, make_layout, read_arms,
                                      read_clinical, select_participants)
from ptsd_bidsapp.cli.run import main
from ptsd_bidsapp.config import load_config
from ptsd_bidsapp.simulate import simulate_trial

CONFIG = load_config(None)


@pytest.fixture(scope="module")
def trial(tmp_path_factory):
    return simulate_trial(tmp_path_factory.mktemp("insim") / "bids", n_subjects=3, seed=5, resolution=8.0,
                          n_volumes=40)


def _layout(bids, tmp_path):
    return make_layout(bids, bids / "derivatives" / "fmriprep", tmp_path / "work")


def test_every_run_found(trial, tmp_path):
    layout = _layout(trial, tmp_path)
    subjects = select_participants(layout, None)
    assert subjects == ["01", "02", "03"]
    for sub in subjects:
        runs = collect_runs(layout, sub, ["pre", "post"], CONFIG["tasks"], CONFIG["space"])
        assert sorted((r.session, r.task) for r in runs) == sorted(
            (s, t) for s in ("pre", "post") for t in ("faces", "conflict", "rest"))
        for run in runs:
            assert run.bold.is_file() and run.mask.is_file() and run.confounds.is_file()
            assert run.tr == pytest.approx(2.0)
            assert run.n_volumes == 40
            assert (run.events is None) == (run.task == "rest")
            assert 0.0 <= run.slice_time_ref <= 1.0


def test_bids_filter_file_restricts_runs(trial, tmp_path):
    layout = _layout(trial, tmp_path)
    runs = collect_runs(layout, "01", ["pre", "post"], CONFIG["tasks"], CONFIG["space"],
                        filters={"bold": {"session": "pre"}})
    assert {r.session for r in runs} == {"pre"}


def test_arms_and_clinical_scores(trial):
    arms = read_arms(trial)
    assert set(arms.index) == {"01", "02", "03"} and set(arms) <= {"ketamine", "midazolam"}
    clinical = read_clinical(trial, CONFIG["clinical"])
    assert len(clinical) == 6 and clinical["caps5_total"].notna().all()
    truth = json.loads((trial / "sourcedata" / "simulation" / "truth.json").read_text())
    row = clinical[(clinical.subject == "02") & (clinical.session == "post")]
    assert float(row["caps5_total"].iloc[0]) == pytest.approx(truth["subjects"]["sub-02"]["caps5"]["post"])


@pytest.mark.parametrize("what", ["confounds", "events", "mask"])
def test_missing_file_is_named(trial, tmp_path, what):
    bids = tmp_path / "bids"
    shutil.copytree(trial, bids)
    if what == "events":
        victim = bids / "sub-02" / "ses-post" / "func" / "sub-02_ses-post_task-conflict_events.tsv"
    else:
        folder = bids / "derivatives" / "fmriprep" / "sub-02" / "ses-post" / "func"
        pattern = {"confounds": "*task-conflict_desc-confounds_timeseries.tsv",
                   "mask": "*task-conflict_*desc-brain_mask.nii.gz"}[what]
        victim = next(folder.glob(pattern))
    victim.unlink()
    layout = _layout(bids, tmp_path)
    collect_runs(layout, "01", ["pre", "post"], CONFIG["tasks"], CONFIG["space"])  # others unaffected
    with pytest.raises(InputError) as err:
        collect_runs(layout, "02", ["pre", "post"], CONFIG["tasks"], CONFIG["space"])
    assert victim.name in str(err.value)


def test_tr_json_header_mismatch_is_named(trial, tmp_path):
    bids = tmp_path / "bids"
    shutil.copytree(trial, bids)
    sidecar = next((bids / "derivatives" / "fmriprep" / "sub-03" / "ses-pre" / "func").glob(
        "*task-faces*_desc-preproc_bold.json"))
    meta = json.loads(sidecar.read_text())
    meta["RepetitionTime"] = 2.5
    sidecar.write_text(json.dumps(meta))
    layout = _layout(bids, tmp_path)
    with pytest.raises(InputError) as err:
        collect_runs(layout, "03", ["pre", "post"], CONFIG["tasks"], CONFIG["space"])
    assert "task-faces" in str(err.value) and "2.5" in str(err.value)


def test_cli_unknown_participant_exits_18(trial, tmp_path, capsys):
    code = main([str(trial), str(tmp_path / "out"), "participant", "--participant-label", "99",
                 "-w", str(tmp_path / "work"), "--skip-bids-validation"])
    assert code == 18
    err = capsys.readouterr().err
    assert "99" in err
    assert "available: sub-01, sub-02, sub-03" in err  # listed from disk: only sub-99 was to be indexed


def test_cli_missing_fmriprep_exits_66(trial, tmp_path, capsys):
    code = main([str(trial), str(tmp_path / "out"), "participant", "--derivatives", str(tmp_path / "nope"),
                 "-w", str(tmp_path / "work"), "--skip-bids-validation"])
    assert code == 66
    assert str(tmp_path / "nope") in capsys.readouterr().err


def test_layout_indexes_only_the_selected_subjects_and_follows_dataset_changes(trial, tmp_path):
    bids = tmp_path / "bids"
    shutil.copytree(trial, bids)
    work = tmp_path / "work"
    one = make_layout(bids, bids / "derivatives" / "fmriprep", work, participants=["02"])
    assert one.get_subjects() == ["02"] and one.get_subjects(scope="derivatives") == ["02"]
    assert select_participants(one, ["02"]) == ["02"]
    assert len(collect_runs(one, "02", ["pre", "post"], CONFIG["tasks"], CONFIG["space"])) == 6
    every = make_layout(bids, bids / "derivatives" / "fmriprep", work)
    assert every.get_subjects() == ["01", "02", "03"]
    states = list((work / "bids_db").iterdir())
    assert len(states) == 1 and len(list(states[0].iterdir())) == 2  # both selections of this dataset state kept
    # the dataset changes: the selected subject's index is rebuilt (its faces run of ses-post is gone)
    for path in (bids / "derivatives" / "fmriprep" / "sub-02" / "ses-post" / "func").glob("*task-faces*"):
        path.unlink()
    again = make_layout(bids, bids / "derivatives" / "fmriprep", work, participants=["02"])
    with pytest.raises(InputError, match="no preprocessed BOLD for sub-02 ses-post task-faces"):
        collect_subject(again, "02", ["pre", "post"], CONFIG["tasks"], CONFIG["space"])  # a stale index had it
    states = list((work / "bids_db").iterdir())
    assert len(states) == 1 and len(list(states[0].iterdir())) == 1  # the old state's indexes removed


def test_one_query_per_subject_finds_what_each_pybids_query_finds(trial, tmp_path):
    # collect_subject asks pybids once per query and subject (_SubjectFiles) and matches the runs'
    # entities itself: the reference is pybids' own answer to each full query (_query)
    from ptsd_bidsapp.bids.inputs import QUERIES, _query, _SubjectFiles

    bids = tmp_path / "bids"
    shutil.copytree(trial, bids, ignore=shutil.ignore_patterns("sub-02", "sub-03"))
    for folder in (bids / "sub-01" / "ses-pre" / "func", bids / "derivatives" / "fmriprep" / "sub-01" / "ses-pre" / "func"):
        for path in sorted(folder.glob("*task-faces_*")):   # faces: two runs
            for run in ("1", "2"):
                shutil.copy(path, path.with_name(path.name.replace("task-faces_", f"task-faces_run-{run}_")))
            path.unlink()
    layout = _layout(bids, tmp_path)
    space = CONFIG["space"]
    queries = [{"session": s, "task": t, "space": space} for s in ("pre", "post", "mid") for t in ("faces", "rest")]
    queries += [{"session": "pre", "task": "faces", "run": r, "space": space} for r in (1, 2, None, [1, 2])]
    queries += [{"session": "post", "task": "faces", "run": None}, {"session": "pre", "task": "faces", "run": 1},
                {"task": "conflict"}, {"session": ["pre", "post"], "task": "rest"}]
    for filters in ({}, {"bold": {"session": "post"}, "mask": {"run": 2}, "events": {"task": "rest"}}):
        files = _SubjectFiles(layout, "01", filters)
        for name in QUERIES:
            for entities in queries:
                expected = [f.path for f in _query(layout, name, dict(entities, subject="01"), filters)]
                got = [f.path for f in files.get(name, entities)]
                assert got == expected, (name, entities, filters)
    assert len(_SubjectFiles(layout, "01", {}).get("bold", {"session": "pre", "task": "faces", "space": space})) == 2
