"""Headless Chromium drives the app like a user: built-in sample -> convert -> quality report -> split -> train
(the progress bar advances, the loss plot renders) -> screenshot. Never runs `playwright install`: it uses the
system Chromium at /usr/bin/chromium and skips when that or Playwright is missing."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.browser]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SMALL_SAMPLE = {"frames": 48, "videos": 1, "width": 160, "height": 90, "export_every": 3, "seed": 0}


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pytest.importorskip("gradio")
    from pipeline import service
    from studio_app.launch import serve

    previous, options = os.environ.get("STUDIO_HOME"), dict(service.SAMPLE_OPTIONS)
    os.environ["STUDIO_HOME"] = str(tmp_path_factory.mktemp("browser_home"))
    service.SAMPLE_OPTIONS.update(SMALL_SAMPLE)
    demo, url = serve()
    try:
        yield url
    finally:
        demo.close()
        service.backend().stop()
        service.SAMPLE_OPTIONS.clear()
        service.SAMPLE_OPTIONS.update(options)
        if previous is None:
            os.environ.pop("STUDIO_HOME", None)
        else:
            os.environ["STUDIO_HOME"] = previous


@pytest.fixture(scope="module")
def page(app_url: str) -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not shutil.which(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(180_000)  # shared, slow CPUs
        page.goto(app_url)
        yield page
        browser.close()


def run_steps(page: Any, name: str = "ui-demo", max_steps: int = 4, reload: bool = False) -> tuple[list[int], bool]:
    """The Data, Quality & Split and Train tabs in order; (progress-bar steps seen while training, reloaded).

    With `reload`, the page is reloaded once training has begun: it must re-attach to the running job by itself.
    """
    page.click("#load-sample")
    page.wait_for_selector("#data-preview img")
    page.fill("#dataset-name textarea, #dataset-name input", name)
    page.click("#convert")
    page.wait_for_selector(f"#convert-summary :text('{name}')")
    page.get_by_role("tab", name="Quality & Split").click()
    page.click("#validate")
    page.wait_for_selector("#quality-report :text('Data quality report')")
    page.click("#split")
    page.wait_for_selector("#split-plot .js-plotly-plot")
    page.get_by_role("tab", name="Train").click()
    page.click("#train-preset input")
    page.fill("#train-preset input", "quick_test")
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector('#field-training-max-steps input').value === '10'")
    page.fill("#field-training-max-steps input", str(max_steps))
    page.keyboard.press("Tab")
    page.wait_for_function(f"document.querySelector('#train-dataset input').value === '{name}'")
    page.click("#start-training")
    try:  # the job id arrives when the job is queued; an error toast instead says why it was refused
        page.wait_for_function("!['', '0'].includes(document.querySelector('#job-id input').value)",
                               timeout=60_000)
    except Exception as exc:
        toasts = page.locator(".toast-body").all_inner_texts()
        raise AssertionError(f"no job was started; messages shown: {toasts}") from exc
    steps, reloaded, deadline = [], False, time.monotonic() + 300
    while time.monotonic() < deadline:
        bar = page.locator("#train-progress")
        if bar.count():
            steps.append(int(bar.get_attribute("data-step") or 0))
            if bar.get_attribute("data-status") in ("succeeded", "failed", "cancelled", "interrupted"):
                break
            if reload and not reloaded and steps[-1] >= 1:
                page.reload()
                page.get_by_role("tab", name="Train").click()
                reloaded = True
        time.sleep(0.2)
    return steps, reloaded


def test_sample_to_trained_model_in_the_browser(page: Any, tmp_path: Path) -> None:
    steps, reloaded = run_steps(page, reload=True)
    bar = page.locator("#train-progress")
    assert bar.get_attribute("data-status") == "succeeded", page.inner_text("#train-progress-box")
    assert bar.get_attribute("data-total") == "4" and steps[-1] == 4
    assert len(set(steps)) >= 2 and steps[-1] == max(steps)  # the bar advanced (and came back after the reload)
    assert reloaded and page.input_value("#job-id input") == "1"  # the reloaded page re-attached by itself
    page.wait_for_selector("#loss-plot .js-plotly-plot")
    assert page.locator("#loss-plot .scatterlayer .trace").count() >= 1  # the loss curve was drawn
    assert "loss" in page.inner_text("#train-stats")
    shot = tmp_path / "studio.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
