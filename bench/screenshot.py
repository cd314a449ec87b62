"""Take docs/screenshot.png: start the app on a fresh data home, walk the tabs in headless Chromium (built-in sample,
convert, quality report, split, a short training run) and screenshot the Train tab.

    python bench/screenshot.py [--out docs/screenshot.png] [--steps 30]

Uses the system Chromium (/usr/bin/chromium); never downloads a browser.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshot.png"))
    parser.add_argument("--steps", type=int, default=30, help="training steps of the quick_test run shown")
    args = parser.parse_args()
    os.environ["STUDIO_HOME"] = tempfile.mkdtemp(prefix="studio-screenshot-")
    from playwright.sync_api import sync_playwright

    from pipeline import service
    from studio_app.launch import serve
    from tests.test_browser import ARGS, CHROMIUM, SMALL_SAMPLE, run_steps

    service.SAMPLE_OPTIONS.update(SMALL_SAMPLE)
    started = time.monotonic()
    demo, url = serve()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(300_000)
            page.goto(url)
            steps, _ = run_steps(page, "shapes", args.steps)
            page.wait_for_selector("#loss-plot .js-plotly-plot")
            time.sleep(1.0)  # let the last plot update paint
            page.screenshot(path=args.out, full_page=True)
            browser.close()
    finally:
        demo.close()
        service.backend().stop()
    print(f"wrote {args.out} (steps seen {steps[:1]}..{steps[-1:]}, {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
