"""Defaults the container image relies on (Dockerfile ENV) and the Dockerfile's build arguments."""

import re
from pathlib import Path

from ptsd_bidsapp.cli.parser import parse_args

ROOT = Path(__file__).resolve().parents[2]


def test_work_dir_default_follows_the_environment(tmp_path, monkeypatch):
    (tmp_path / "bids").mkdir()
    argv = [str(tmp_path / "bids"), str(tmp_path / "out"), "participant"]
    monkeypatch.delenv("PTSD_BIDSAPP_WORK_DIR", raising=False)
    assert parse_args(argv).work_dir == tmp_path / "work"
    monkeypatch.setenv("PTSD_BIDSAPP_WORK_DIR", str(tmp_path / "scratch"))
    assert parse_args(argv).work_dir == tmp_path / "scratch"
    assert parse_args([*argv, "-w", str(tmp_path / "mine")]).work_dir == tmp_path / "mine"


def test_dockerfile_offline_settings():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", text, re.M)
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", text, re.M)
    assert re.search(r"^ARG PREFETCH_TEMPLATES=1$", text, re.M)
    for env in ("NIPYPE_NO_ET=1", "PTSD_BIDSAPP_WORK_DIR=/tmp/work", "TEMPLATEFLOW_AUTOUPDATE=0"):
        assert env in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".git" in ignored and ".venv" in ignored
