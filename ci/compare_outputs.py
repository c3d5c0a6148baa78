#!/usr/bin/env python3
"""Compare two ptsd_bidsapp output datasets (container run vs pip run): same files, and every
TSV and JSON equal value for value (numbers exactly, NaN == NaN).

    python ci/compare_outputs.py REFERENCE CANDIDATE

Provenance that must differ between the two runs is skipped: ``GeneratedBy[].Container``
(the container run says docker, the pip run nothing), ``GeneratedBy[].Description`` (which names
the installation) and absolute paths of the run's own
folders (``--path-map REF=CAND``: a candidate string starting with CAND is read as starting with REF;
the first matching map applies), and the run logs (one per run, named by its start time).
Exit 0 when equal; 1 with the differences listed.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

SKIP_KEYS = {"Container"}
PATH_MAPS: list[tuple[str, str]] = []


def _mapped(text):
    if isinstance(text, str):
        for ref, cand in PATH_MAPS:
            if text.startswith(cand):
                return ref + text[len(cand):]
    return text


def _number(text: str):
    try:
        return float(text)
    except ValueError:
        return None


def _equal_scalars(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b


def compare_json(a, b, where: str, out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key in SKIP_KEYS or (key == "Description" and where.rsplit(".", 1)[-1].startswith("GeneratedBy[")):
                continue  # GeneratedBy[].Description says how the app was installed (container or pip)
            if key not in a or key not in b:
                out.append(f"{where}.{key}: only in {'candidate' if key in b else 'reference'}")
            else:
                compare_json(a[key], b[key], f"{where}.{key}", out)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{where}: {len(a)} vs {len(b)} items")
        for i, (x, y) in enumerate(zip(a, b)):
            compare_json(x, y, f"{where}[{i}]", out)
    elif not _equal_scalars(a, _mapped(b)):
        out.append(f"{where}: {a!r} != {b!r}")


def compare_tsv(a: str, b: str, where: str, out: list[str]) -> None:
    rows_a = list(csv.reader(a.splitlines(), delimiter="\t"))
    rows_b = list(csv.reader(b.splitlines(), delimiter="\t"))
    if len(rows_a) != len(rows_b):
        out.append(f"{where}: {len(rows_a)} vs {len(rows_b)} rows")
        return
    for r, (ra, rb) in enumerate(zip(rows_a, rows_b)):
        if len(ra) != len(rb):
            out.append(f"{where} row {r}: {len(ra)} vs {len(rb)} columns")
            continue
        for c, (x, y) in enumerate(zip(ra, rb)):
            nx, ny = _number(x), _number(y)
            same = _equal_scalars(nx, ny) if nx is not None and ny is not None else x == _mapped(y)
            if not same:
                out.append(f"{where} row {r} col {c}: {x!r} != {y!r}")


def _run_record(path: Path) -> bool:
    """Run logs and resource-monitor tables (``logs/*.log``, ``logs/resource_monitor-*``): named by the run's
    start time, so they differ between any two runs."""
    return path.parent.name == "logs" and (path.suffix == ".log" or path.name.startswith("resource_monitor-"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", type=Path)
    parser.add_argument("candidate", type=Path)
    parser.add_argument("--path-map", action="append", default=[], metavar="REF=CAND",
                        help="a candidate string starting with CAND is compared as starting with REF")
    args = parser.parse_args(argv)
    PATH_MAPS[:] = [tuple(mapping.split("=", 1)) for mapping in args.path_map]
    files_a = {p.relative_to(args.reference) for p in args.reference.rglob("*") if p.is_file() and not _run_record(p)}
    files_b = {p.relative_to(args.candidate) for p in args.candidate.rglob("*") if p.is_file() and not _run_record(p)}
    problems = [f"only in reference: {p}" for p in sorted(files_a - files_b)]
    problems += [f"only in candidate: {p}" for p in sorted(files_b - files_a)]
    compared = others = same_bytes = 0
    for rel in sorted(files_a & files_b):
        if rel.suffix not in (".tsv", ".json"):
            others += 1
            same_bytes += (args.reference / rel).read_bytes() == (args.candidate / rel).read_bytes()
            continue
        text_a = (args.reference / rel).read_text()
        text_b = (args.candidate / rel).read_text()
        found: list[str] = []
        if rel.suffix == ".json":
            compare_json(json.loads(text_a), json.loads(text_b), str(rel), found)
        else:
            compare_tsv(text_a, text_b, str(rel), found)
        problems += found
        compared += 1
    print(f"compared {compared} TSV/JSON files ({len(files_a)} files in the reference); "
          f"of the {others} other files (images, arrays, reports) {same_bytes} are byte-identical (not required)")
    for line in problems[:50]:
        print(f"  DIFFERENT {line}")
    if len(problems) > 50:
        print(f"  ... and {len(problems) - 50} more")
    return 1 if problems or not compared else 0


if __name__ == "__main__":
    sys.exit(main())
