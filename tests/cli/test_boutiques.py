"""boutiques.json passes `bosh validate --bids` and stays in sync with the parser."""

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ptsd_bidsapp.cli.parser import build_parser

ROOT = Path(__file__).resolve().parents[2]
DESCRIPTOR = ROOT / "boutiques.json"
INFORMATIONAL = {"--help", "--version", "--print-config"}


def descriptor_flags(descriptor: dict) -> set[str]:
    return {i["command-line-flag"] for i in descriptor["inputs"] if "command-line-flag" in i}


def parser_flags(parser: argparse.ArgumentParser) -> set[str]:
    flags = set()
    for action in parser._actions:
        if not action.option_strings or set(action.option_strings) & INFORMATIONAL:
            continue
        long_flags = [o for o in action.option_strings if o.startswith("--")]
        flags.add(long_flags[0] if long_flags else action.option_strings[0])
    return flags


def test_descriptor_matches_parser():
    descriptor = json.loads(DESCRIPTOR.read_text())
    assert descriptor_flags(descriptor) == parser_flags(build_parser())


def test_sync_check_detects_one_sided_option():
    descriptor = json.loads(DESCRIPTOR.read_text())
    parser = build_parser()
    parser.add_argument("--brand-new-option")
    assert descriptor_flags(descriptor) != parser_flags(parser)
    descriptor["inputs"].append({"id": "x", "command-line-flag": "--brand-new-option"})
    assert descriptor_flags(descriptor) == parser_flags(parser)


def test_bosh_validate_bids():
    bosh = shutil.which("bosh") or str(Path(sys.executable).parent / "bosh")
    if not Path(bosh).exists():
        pytest.fail("bosh (boutiques) is not installed; `pip install -e .[test]` installs it")
    proc = subprocess.run([bosh, "validate", "--bids", str(DESCRIPTOR)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "BIDS validation OK" in proc.stdout + proc.stderr
