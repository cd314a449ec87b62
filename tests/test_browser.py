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


def no_bare_error_badge(page: Any) -> None:
    """No component shows gradio's bare "Error" badge (a status tracker without a message)."""
    badges = [b for b in page.get_by_text("Error", exact=True).all() if b.is_visible()]
    assert not badges, f"{len(badges)} bare 'Error' badge(s) on the page"


def test_a_bad_upload_keeps_its_message(page: Any, tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    page.set_input_files("#data-files input[type=file]", str(broken))
    page.wait_for_selector("#detect-status [data-status=error]")
    message = page.inner_text("#detect-status")
    assert "broken.json" in message and "failed" in message
    time.sleep(20)  # the toast is gone by now; the status line is not
    assert page.inner_text("#detect-status") == message
    assert "/tmp" not in message
    no_bare_error_badge(page)


def test_a_coco_export_with_sub_folder_names_converts_from_uploads(page: Any, tmp_path: Path) -> None:
    from tests.helpers.coco_upload import write_coco_upload

    files = write_coco_upload(tmp_path / "upload")  # file names say imgs/imN.jpg; frames uploaded beside the JSON
    page.reload()  # a fresh form: the broken upload of the test before is gone
    page.set_input_files("#data-files input[type=file]", [str(f) for f in files])
    page.wait_for_selector("#detect-status [data-status=ok], #detect-status [data-status=error]")
    assert "coco" in page.inner_text("#detect-status")
    page.fill("#dataset-name textarea, #dataset-name input", "coco-up")
    page.click("#convert")
    page.wait_for_selector("#convert-status [data-status]")
    assert "Converted dataset coco-up: 4 frames" in page.inner_text("#convert-status"), page.inner_text(
        "#convert-status")
    no_bare_error_badge(page)


def run_steps(page: Any, name: str = "ui-demo", max_steps: int = 4, reload: bool = False) -> tuple[list[int], bool]:
    """The Data, Quality & Split and Train tabs in order; (progress-bar steps seen while training, reloaded).

    With `reload`, the page is reloaded once training has begun: it must re-attach to the running job by itself.
    """
    page.get_by_role("tab", name="Data", exact=True).click()
    page.click("#load-sample")
    page.wait_for_selector("#data-preview img")
    page.fill("#dataset-name textarea, #dataset-name input", name)
    page.click("#convert")
    page.wait_for_selector(f"#convert-status :text('{name}')")
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
    page.fill("#run-name textarea, #run-name input", "first-run")
    page.click("#train-dataset input")
    page.fill("#train-dataset input", name)
    page.keyboard.press("Enter")
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
                # the form shows the running job's settings, not the default preset's
                page.wait_for_function(
                    f"document.querySelector('#field-training-max-steps input').value === '{max_steps}'")
                assert page.input_value("#run-name textarea, #run-name input") == "first-run"
                assert page.input_value("#train-preset input").startswith("quick_test")
                assert page.input_value("#train-dataset input") == name
        time.sleep(0.2)
    return steps, reloaded


def test_sample_to_trained_model_in_the_browser(page: Any, tmp_path: Path) -> None:
    steps, reloaded = run_steps(page, reload=True)
    bar = page.locator("#train-progress")
    assert bar.get_attribute("data-status") == "succeeded", page.inner_text("#train-progress-box")
    assert bar.get_attribute("data-total") == "4" and steps[-1] == 4
    assert len(set(steps)) >= 2 and steps[-1] == max(steps)  # the bar advanced (and came back after the reload)
    from pipeline import service

    training = max(j["job_id"] for j in service.list_jobs() if j["kind"] == "train")  # conversions are jobs too
    assert reloaded and page.input_value("#job-id input") == str(training)  # the reloaded page re-attached by itself
    page.wait_for_function("document.querySelector('#jobs-table').innerText.includes('succeeded')")
    assert page.locator("#cancel-job").is_disabled()  # nothing left to cancel
    page.wait_for_selector("#loss-plot .js-plotly-plot")
    assert page.locator("#loss-plot .scatterlayer .trace").count() >= 1  # the loss curve was drawn
    assert "loss" in page.inner_text("#train-stats")
    shot = tmp_path / "studio.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def test_try_draws_the_trained_runs_answer(page: Any, tmp_path: Path) -> None:
    page.get_by_role("tab", name="Try").click()
    page.click("#try-run input")
    page.locator("ul[role=listbox] li").first.click()
    page.click("#try-frame input")
    page.wait_for_selector("ul[role=listbox] li")
    page.locator("ul[role=listbox] li").first.click()
    page.wait_for_selector("#try-image img")
    page.click("#try")
    page.wait_for_selector("#try-status [data-status]", timeout=240_000)
    assert "Fine-tuned" in page.inner_text("#try-status"), page.inner_text("#try-status")
    page.wait_for_selector("#try-fine img")
    page.wait_for_selector("#try-base img")
    no_bare_error_badge(page)
    page.screenshot(path=str(tmp_path / "try.png"), full_page=True)


def test_the_dataset_viewer_shows_examples(page: Any) -> None:
    page.get_by_role("tab", name="Dataset viewer").click()
    page.click("#viewer-dataset input")
    page.fill("#viewer-dataset input", "ui-demo")
    page.keyboard.press("Enter")
    page.click("#viewer-show")
    page.wait_for_selector("#viewer-status [data-status=ok]")
    assert "of" in page.inner_text("#viewer-status")
    page.wait_for_selector("#viewer-gallery img")
    assert "grounding" in page.inner_text("#viewer-table")
