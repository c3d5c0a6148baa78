"""Screenshots of a finished run's reports for docs/screenshots/ (headless Chromium + PIL).

    python scripts/report_screenshots.py OUTPUT_DIR [--subject 01] [--docs docs/screenshots]

Takes the top of ``OUTPUT_DIR/group/group_report.html`` and ``OUTPUT_DIR/sub-<subject>.html`` in a
1366-pixel-wide window (the smallest screen the reports are made for) and stores them as
palette PNGs (256 colours, optimised) so that they stay small in the repository.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

WIDTH, HEIGHT = 1366, 1100


def screenshot(html: Path, png: Path, width: int = WIDTH, height: int = HEIGHT) -> Path:
    """Chromium screenshot of ``html`` in a ``width`` × ``height`` window, quantised to 256 colours."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("chromium is not installed (make chromium)")
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.png"
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--window-size={width},{height}", "--virtual-time-budget=20000", f"--screenshot={raw}",
                        html.resolve().as_uri()], check=True, capture_output=True, timeout=300)
        with Image.open(raw) as image:
            image.convert("RGB").quantize(colors=256, dither=Image.Dither.NONE).save(png, optimize=True)
    return png


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("--subject", default="01")
    parser.add_argument("--docs", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "screenshots")
    args = parser.parse_args(argv)
    args.docs.mkdir(parents=True, exist_ok=True)
    for html, name in ((args.output_dir / "group" / "group_report.html", "group_report.png"),
                       (args.output_dir / f"sub-{args.subject}.html", "subject_report.png")):
        png = screenshot(html, args.docs / name)
        print(f"{png}: {png.stat().st_size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
