"""Take one screenshot per tab for docs/USER_GUIDE.md (docs/tab-<id>.png): a fresh data home with the small
built-in sample converted, checked, split, trained briefly, evaluated and exported through `pipeline.service`, then
each tab shown in headless Chromium as a user leaves it. `--only data` takes the Data tab alone (no training first).

    python bench/tab_screenshots.py [--out docs] [--only data]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def pick(page: object, selector: str, text: str) -> None:
    page.click(f"{selector} input")  # type: ignore[attr-defined]
    page.fill(f"{selector} input", text)  # type: ignore[attr-defined]
    page.keyboard.press("Enter")  # type: ignore[attr-defined]


def pick_first(page: Any, selector: str) -> None:
    """Open the dropdown `selector` and choose its first option."""
    page.click(f"{selector} input")
    page.wait_for_selector("ul[role=listbox] li")
    page.locator("ul[role=listbox] li").first.click()


def shoot(page: object, path: Path, full_page: bool = False) -> None:
    """Wait until no event is running, scroll to the top, screenshot, then store it as a small 256-colour PNG."""
    from PIL import Image

    page.wait_for_function("!document.body.innerText.includes('processing |')")  # type: ignore[attr-defined]
    time.sleep(1)
    page.evaluate("window.scrollTo(0, 0)")  # type: ignore[attr-defined]
    page.screenshot(path=str(path), full_page=full_page)  # type: ignore[attr-defined]
    Image.open(path).convert("RGB").quantize(colors=256).save(path, optimize=True)


def prepare() -> None:
    """The small sample converted, checked, split, trained briefly, evaluated and exported (what the later tabs
    show)."""
    from pipeline import service

    service.convert_inputs([], "shapes", sample=True, tasks=["grounding", "counting"])
    service.validate_dataset("shapes")
    service.split("shapes", "random", "0.6,0.2,0.2", 7)
    job = service.start_training("shapes", preset="quick_test", max_steps=4, name="shapes-quick")
    for _ in service.watch_job(job["job_id"]):
        pass
    run = job["run_id"]
    service.evaluate(run, "best", "test", 4)
    service.export(run, "adapter", "best")


def shoot_data(page: Any, out: Path) -> None:
    """The Data tab after loading the sample and converting it with track and mask clean-up ticked: the whole page
    (the tasks and the video options sit below the preview)."""
    page.click("#load-sample")
    page.wait_for_selector("#detect-status [data-status=ok]")
    page.wait_for_selector("#data-preview img")
    page.get_by_label("track", exact=True).check()
    page.get_by_label("Drop mask fragments").check()
    page.click("#convert")
    page.wait_for_selector("#convert-status [data-status]")
    line = page.inner_text("#convert-status")
    if "Converted dataset" not in line:
        raise SystemExit(f"the Data tab's conversion failed: {line}")
    shoot(page, out / "tab-data.png", full_page=True)


def shoot_rest(page: Any, out: Path) -> None:
    """Every tab after the Data tab, on the prepared dataset and run."""
    page.get_by_role("tab", name="Quality & Split").click()
    pick(page, "#quality-dataset", "shapes")
    page.wait_for_selector("#validate-status [data-status=ok]")
    time.sleep(1)
    shoot(page, out / "tab-quality.png")
    page.get_by_role("tab", name="Dataset viewer").click()
    pick(page, "#viewer-dataset", "shapes")
    page.click("#viewer-show")
    page.wait_for_selector("#viewer-gallery img")
    shoot(page, out / "tab-viewer.png")
    page.get_by_role("tab", name="Train").click()
    page.wait_for_selector("#loss-plot .js-plotly-plot")
    time.sleep(1)
    shoot(page, out / "tab-train.png")
    page.get_by_role("tab", name="Evaluate").click()
    pick_first(page, "#eval-run")
    page.wait_for_selector("#evaluate-status [data-status=ok]")
    page.wait_for_selector("#eval-gallery img")
    shoot(page, out / "tab-evaluate.png")
    page.get_by_role("tab", name="Try").click()
    pick_first(page, "#try-run")
    pick_first(page, "#try-frame")
    page.wait_for_selector("#try-image img")
    page.click("#try")
    page.wait_for_selector("#try-base img")
    shoot(page, out / "tab-try.png")
    page.get_by_role("tab", name="Experiments").click()
    page.wait_for_selector("#experiments-status [data-status=ok]")
    shoot(page, out / "tab-experiments.png")
    page.get_by_role("tab", name="Export").click()
    pick_first(page, "#export-run")
    page.wait_for_selector("#export-status [data-status=ok]")
    shoot(page, out / "tab-export.png")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs"))
    parser.add_argument("--only", choices=["data"], help="take this tab alone")
    args = parser.parse_args()
    os.environ["STUDIO_HOME"] = tempfile.mkdtemp(prefix="studio-tabs-")
    from playwright.sync_api import sync_playwright

    from pipeline import service
    from studio_app.launch import serve

    service.SAMPLE_OPTIONS.update({"frames": 48, "videos": 1, "width": 160, "height": 90, "export_every": 3})
    service.start_scheduler()
    if not args.only:
        prepare()
    demo, url = serve()
    out = Path(args.out)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(240_000)
            page.goto(url)
            shoot_data(page, out)
            if not args.only:
                shoot_rest(page, out)
            browser.close()
    finally:
        demo.close()
        service.backend().stop()
    for shot in sorted(out.glob("tab-*.png")):
        print(shot, shot.stat().st_size // 1024, "KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
