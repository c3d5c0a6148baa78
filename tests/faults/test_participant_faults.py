"""Fault model, participant level through the CLI: a write that fails is a failed subject, and
a run (participant + group) never touches the network."""

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ptsd_bidsapp import errors as exitcodes
from ptsd_bidsapp.cli.run import main
from tests.faults.conftest import copy_trial
from tests.group.conftest import fabricate

REPO = Path(__file__).parents[2]

#: both tests run the CLI end to end (participant level, and group level too): minutes each
pytestmark = pytest.mark.slow


def test_report_that_cannot_be_written_fails_the_subject(tiny_trial, tmp_path, capsys):
    """The subject report path blocked by a folder: the sink crashes, so sub-01 is FAILED with
    the reason and the exit code is 1 (was '1/1 subject(s) succeeded', exit 0)."""
    out = tmp_path / "out"
    (out / "sub-01.html").mkdir(parents=True)
    code = main([str(tiny_trial), str(out), "participant", "-w", str(tmp_path / "work"), "--participant-label", "01",
                 "--skip-bids-validation", "--no-dcm", "--nprocs", "1"])
    stdout = capsys.readouterr().out
    assert code == exitcodes.FAILURE
    assert "0/1 subject(s) succeeded" in stdout and "FAILED sub-01" in stdout
    assert "sub-01.html" in stdout.split("FAILED sub-01", 1)[1]


def test_faces_events_outside_the_scan_reach_features_status_summary_and_report(tiny_trial, tmp_path, capsys):
    """Through the CLI with the DCM on: every 'fearful' block of sub-01 ses-pre after the end of the
    scan. The subject succeeds (exit 0) with the faces contrast, its gPPI and the session DCM n/a
    with the reason in the features table, the status JSON, the printed summary and the report;
    ses-post keeps its DCM (was: activations of ~1e-7 with qc_pass, a DCM of an all-zero input)."""
    import json

    import pandas as pd

    bids = copy_trial(tiny_trial, tmp_path / "bids")
    events = bids / "sub-01" / "ses-pre" / "func" / "sub-01_ses-pre_task-faces_events.tsv"
    table = pd.read_csv(events, sep="\t")
    table.loc[table["trial_type"] == "fearful", "onset"] += 10000.0
    table.to_csv(events, sep="\t", index=False)
    out = tmp_path / "out"
    code = main([str(bids), str(out), "participant", "-w", str(tmp_path / "work"), "--participant-label", "01",
                 "--skip-bids-validation", "--nprocs", "2"])
    printed = capsys.readouterr().out
    assert code == exitcodes.SUCCESS, printed
    features = pd.read_csv(next((out / "sub-01" / "ses-pre").glob("*_features.tsv")), sep="\t", dtype=str,
                           keep_default_na=False)
    faces = features[features["task"] == "faces"]
    assert set(faces["kind"]) == {"activation", "gppi", "gppi_directed", "dcm"}
    assert (faces["value"] == "n/a").all() and faces["note"].str.contains("outside the scan").all()
    assert (features[features["task"] != "faces"]["value"] != "n/a").all()
    assert not list((out / "sub-01" / "ses-pre" / "func").glob("*_dcm.json"))
    (post_dcm,) = (out / "sub-01" / "ses-post" / "func").glob("*_dcm.json")     # ses-post keeps its fitted DCM
    content = json.loads(post_dcm.read_text())
    assert (content["subject"], content["session"], content["task"]) == ("01", "post", "faces")
    assert content["region_names"] == ["amygdala", "vmpfc"] and math.isfinite(content["F"]) and content["explained_variance"] > 0
    status = json.loads((out / "logs" / "sub-01_status.json").read_text())
    assert status["failed_runs"] == []
    assert any("DCM of sub-01 ses-pre not fitted" in w and events.name in w for w in status["warnings"])
    assert "WARNED sub-01: 2 warning(s)" in printed and "sub-01_status.json" in printed
    assert "DCM of sub-01 ses-pre not fitted" in (out / "sub-01.html").read_text()


SITECUSTOMIZE = '''
import os, socket, sys

_LOG = os.environ["PTSD_NET_AUDIT_LOG"]


def _record(text):
    with open(_LOG, "a") as handle:
        handle.write(text + "\\n")


def _hook(event, args):
    if event in ("socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex"):
        _record(f"{os.getpid()} {event} {args[0]!r}")
        raise OSError("network access during a ptsd_bidsapp run")
    if event == "socket.connect" and args[0].family in (socket.AF_INET, socket.AF_INET6):
        _record(f"{os.getpid()} {event} {args[1]!r}")
        raise OSError("network access during a ptsd_bidsapp run")


sys.addaudithook(_hook)
'''


def test_no_network_access_in_a_participant_and_group_run(tiny_trial, tmp_path):
    """Audit hook on name lookups and IPv4/IPv6 connects in every Python process of the run
    (sitecustomize, so nipype's worker processes too). nipype's telemetry looked up rig.mit.edu
    on every run; the package now switches it off (NIPYPE_NO_ET, execution.check_version)."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(textwrap.dedent(SITECUSTOMIZE))
    log = tmp_path / "network.log"
    log.write_text("")
    env = {k: v for k, v in os.environ.items() if k not in ("NIPYPE_NO_ET", "NO_ET")}  # as a user's shell
    env.update(PYTHONPATH=os.pathsep.join([str(hooks), str(REPO)] + sys.path), PTSD_NET_AUDIT_LOG=str(log))
    bids = copy_trial(tiny_trial, tmp_path / "bids")
    participant = subprocess.run(
        [sys.executable, "-m", "ptsd_bidsapp", str(bids), str(tmp_path / "out"), "participant", "-w",
         str(tmp_path / "work"), "--participant-label", "01", "--skip-bids-validation", "--no-dcm", "--no-reports",
         "--nprocs", "2"], capture_output=True, text=True, env=env, timeout=900)
    assert participant.returncode == 0, participant.stdout[-2000:] + participant.stderr[-2000:]
    group_bids, group_out, _ = fabricate(tmp_path / "group", n_subjects=10)
    config = tmp_path / "fast.yml"
    config.write_text("elastic_net:\n  n_permutations: 9\n  n_bootstrap: 9\n")
    group = subprocess.run(
        [sys.executable, "-m", "ptsd_bidsapp", str(group_bids), str(group_out), "group", "--skip-bids-validation",
         "--no-dcm", "--config", str(config), "--nprocs", "2"], capture_output=True, text=True, env=env, timeout=900)
    assert group.returncode == 0, group.stderr[-2000:]
    # the hook was active in these processes (it logs nothing otherwise): prove it on a lookup
    probe = subprocess.run([sys.executable, "-c", "import socket\ntry:\n socket.getaddrinfo('example.org', 443)\n"
                            "except OSError:\n pass"], env=env, timeout=60)
    assert probe.returncode == 0
    lines = log.read_text().splitlines()
    assert len(lines) == 1 and "example.org" in lines[0], lines
