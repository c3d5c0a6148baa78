"""BIDS validation of the input dataset with the official validator (``bids-validator-deno``)."""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

LOGGER = logging.getLogger("ptsd_bidsapp")

__all__ = ["validate_bids"]


def validate_bids(bids_dir: Path, subjects: list[str] | None = None) -> list[str]:
    """Run the BIDS validator (``bids-validator-deno``) on ``bids_dir``; return its error codes.

    Returns an empty list when the dataset is valid. If no validator is installed a
    warning is logged and validation is skipped (use ``--skip-bids-validation`` to silence it).
    """
    import json

    exe = shutil.which("bids-validator-deno") or shutil.which("bids-validator")
    if exe is None:
        LOGGER.warning("no BIDS validator found on PATH; skipping validation of %s", bids_dir)
        return []
    proc = subprocess.run([exe, str(bids_dir), "--json"], capture_output=True, text=True, check=False)
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        LOGGER.warning("could not parse the BIDS validator output; skipping validation")
        return []
    issues = report.get("issues", {}).get("issues", [])
    errors = []
    for issue in issues:
        if issue.get("severity") != "error":
            continue
        location = issue.get("location", "")
        if subjects and location.startswith("/sub-") and location.split("/")[1][4:] not in subjects:
            continue
        errors.append(f"{issue.get('code')}: {location}")
    return errors
