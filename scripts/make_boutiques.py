#!/usr/bin/env python
"""Regenerate ``boutiques.json`` from the argparse parser (one source of truth).

Run after changing ``ptsd_bidsapp/cli/parser.py``; ``tests/cli/test_boutiques.py``
fails when the descriptor and the parser disagree.
"""

import argparse
import json
import sys
from pathlib import Path

from ptsd_bidsapp import __version__
from ptsd_bidsapp.cli.parser import build_parser

ROOT = Path(__file__).resolve().parents[1]
SKIP = {"help", "version", "print_config"}  # informational flags, not part of a run


def _input(action: argparse.Action) -> dict:
    long_flags = [o for o in action.option_strings if o.startswith("--")]
    flag = long_flags[0] if long_flags else action.option_strings[0]
    entry = {
        "id": action.dest,
        "name": action.dest.replace("_", " ").capitalize(),
        "description": (action.help or "").replace("%(default)s", str(action.default)),
        "command-line-flag": flag,
        "value-key": f"[{action.dest.upper()}]",
        "optional": True,
    }
    if action.nargs == 0:
        entry["type"] = "Flag"
    elif action.type is int:
        entry.update(type="Number", integer=True)
    elif action.type is float:
        entry["type"] = "Number"
    elif action.type is Path:
        entry["type"] = "File"
    else:
        entry["type"] = "String"
    if action.nargs == "+":
        entry["list"] = True
    if action.choices:
        entry["value-choices"] = list(action.choices)
    if action.default not in (None, False) and entry["type"] != "Flag" and action.dest != "nprocs":
        entry["default-value"] = action.default
    return entry


def build_descriptor() -> dict:
    parser = build_parser()
    inputs = [
        {"id": "bids_dir", "name": "BIDS directory", "type": "File", "value-key": "[BIDS_DIR]", "optional": False,
         "description": "The root folder of a BIDS raw dataset with fMRIPrep derivatives."},
        {"id": "output_dir_name", "name": "Output directory name", "type": "String", "value-key": "[OUTPUT_DIR]",
         "optional": True, "description": "Output folder for a participant-level run (created if needed)."},
        {"id": "participant_level_analysis_dir", "name": "Participant-level output directory", "type": "File",
         "value-key": "[OUTPUT_DIR]", "optional": True,
         "description": "For a group-level run: the output folder of the participant-level runs."},
        {"id": "analysis_level", "name": "Analysis level", "type": "String", "value-key": "[ANALYSIS_LEVEL]",
         "optional": False, "value-choices": ["participant", "group"],
         "description": "participant (per subject, may run in parallel) or group (once all participants are done)."},
    ]
    ordered = ["participant_label", "session_label"]
    actions = {a.dest: a for a in parser._actions if a.option_strings and a.dest not in SKIP}
    for dest in ordered + sorted(d for d in actions if d not in ordered):
        inputs.append(_input(actions[dest]))
    keys = " ".join(f"[{d.upper()}]" for d in sorted(d for d in actions if d not in ordered))
    return {
        "name": "ptsd_bidsapp",
        "tool-version": __version__,
        "description": parser.description,
        "command-line": "mkdir -p [OUTPUT_DIR]; ptsd_bidsapp [BIDS_DIR] [OUTPUT_DIR] [ANALYSIS_LEVEL] "
        f"[PARTICIPANT_LABEL] [SESSION_LABEL] {keys}",
        "container-image": {"type": "docker", "image": f"ptsd_bidsapp:{__version__}"},
        "schema-version": "0.5",
        "inputs": inputs,
        "output-files": [
            {"id": "output_dir", "name": "Output directory", "path-template": "[OUTPUT_DIR]", "optional": False,
             "description": "BIDS derivative dataset with participant- and group-level results."}
        ],
        "groups": [
            {"id": "output_directory", "name": "Output directory", "mutually-exclusive": True, "one-is-required": True,
             "members": ["output_dir_name", "participant_level_analysis_dir"],
             "description": "A new output folder for participant runs, the participant-level output for group runs."}
        ],
        "tags": {"domain": ["neuroinformatics", "fmri", "bids"]},
        "suggested-resources": {"cpu-cores": 2, "ram": 8, "walltime-estimate": 3600},
    }


def main() -> int:
    text = json.dumps(build_descriptor(), indent=2) + "\n"
    if "--check" in sys.argv:
        return 0 if (ROOT / "boutiques.json").read_text() == text else 1
    (ROOT / "boutiques.json").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
