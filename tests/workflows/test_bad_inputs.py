"""Bad inputs on the simulated trial through the participant level: each damaged subject fails alone, named.

In its own file, not tests/workflows/test_participant.py: it does not use the session fixture
``participant_run``, so under ``--dist loadfile`` it can run on the other worker (test_participant.py
is the longest file of the suite).
"""

import json
import shutil

import pytest

from ptsd_bidsapp.cli.run import main
from tests.workflows.conftest import SESSIONS
from tests.workflows.conftest import features_table as _features

pytestmark = pytest.mark.slow


def test_bad_inputs_fail_only_their_subject(trial, tmp_path, capsys):
    """Missing events (sub-02), truncated BOLD (sub-03), TR mismatch (sub-04): each named; sub-01 complete."""
    bids = tmp_path / "bids"
    shutil.copytree(trial, bids)
    fmriprep = bids / "derivatives" / "fmriprep"
    events = bids / "sub-02" / "ses-pre" / "func" / "sub-02_ses-pre_task-faces_events.tsv"
    events.unlink()
    bold = next((fmriprep / "sub-03" / "ses-post" / "func").glob("*task-conflict*_desc-preproc_bold.nii.gz"))
    data = bold.read_bytes()
    bold.write_bytes(data[: len(data) // 2])
    sidecar = next((fmriprep / "sub-04" / "ses-pre" / "func").glob("*task-rest*_desc-preproc_bold.json"))
    meta = json.loads(sidecar.read_text())
    meta["RepetitionTime"] = 3.0
    sidecar.write_text(json.dumps(meta))
    code = main([str(bids), str(tmp_path / "out"), "participant", "-w", str(tmp_path / "work"), "--nprocs", "2",
                 "--skip-bids-validation"])
    printed = capsys.readouterr().out
    assert code == 1
    assert "1/4 subject(s) succeeded" in printed
    assert f"reports:\n    {tmp_path / 'out' / 'sub-01.html'}\n" in printed
    report = (tmp_path / "out" / "sub-01.html").read_text()
    assert "<h1>sub-01 — PTSD fear-regulation circuit</h1>" in report
    assert 'id="ses-pre"' in report and 'id="ses-post"' in report
    lines = {line.split(":")[0].strip(): line for line in printed.splitlines() if "FAILED" in line}
    assert events.name in lines["FAILED sub-02"]
    assert bold.name in lines["FAILED sub-03"]
    assert sidecar.name in lines["FAILED sub-04"] or "RepetitionTime" in lines["FAILED sub-04"]
    out = tmp_path / "out"
    for ses in SESSIONS:   # sub-01 complete: every measure of the 6-ROI default set, values present
        table = _features(out, "01", ses)
        counts = table["kind"].value_counts()
        assert (counts["activation"], counts["gppi"], counts["gppi_directed"], counts["fc"]) == (12, 15, 30, 15)
        assert table.loc[table["kind"] != "dcm", "value"].notna().mean() > 0.9
    # sub-03: the truncated run's measures are n/a with the reason, everything else of the subject is written
    post = _features(out, "03", "post")
    conflict = post[post["task"].eq("conflict")]
    assert len(conflict) and conflict["value"].isna().all() and conflict["note"].str.contains(bold.name).all()
    assert post["task"].eq("faces").any() and post["task"].eq("rest").any()
    status = json.loads((out / "logs" / "sub-03_status.json").read_text())
    assert any(bold.name in e for e in status["failed_runs"])
