"""The Gradio app: build_ui constructs with every named endpoint; launch settings; the Space gate; and a live server
driven by gradio_client through sample -> convert -> validate -> split -> train -> watch -> evaluate -> export."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

gr = pytest.importorskip("gradio")

ENDPOINTS = {"/detect_format", "/convert", "/validate", "/split", "/estimate_memory", "/start_training", "/watch_job",
             "/cancel_job", "/list_jobs", "/evaluate", "/export", "/push_to_hub", "/list_experiments",
             "/compare_experiments"}
CLIENT = {"verbose": False, "download_files": False, "httpx_kwargs": {"timeout": 120}}  # slow shared CPUs
SMALL_SAMPLE = {"frames": 48, "videos": 1, "width": 160, "height": 90, "export_every": 3, "seed": 0}


def public_api_names(demo: Any) -> set[str]:
    """api names of the public events of a Blocks."""
    return {f"/{fn.api_name}" for fn in demo.fns.values() if fn.api_name and fn.api_visibility == "public"}


def test_build_ui_has_every_named_endpoint() -> None:
    from studio_app import build_ui

    demo = build_ui()
    assert isinstance(demo, gr.Blocks)
    names = public_api_names(demo)
    assert ENDPOINTS <= names, ENDPOINTS - names
    watch = next(fn for fn in demo.fns.values() if fn.api_name == "watch_job")
    assert watch.concurrency_limit is None  # a stream per open page must never wait for another
    groups = {fn.api_name: (fn.concurrency_id, fn.concurrency_limit) for fn in demo.fns.values()
              if fn.api_visibility == "public"}
    for name in ("convert", "validate", "evaluate", "export"):  # they only wait on a job: no limit, own group
        assert groups[name] == ("step-jobs", None), name
    for name in ("list_jobs", "list_experiments", "estimate_memory"):  # never behind heavy work
        assert groups[name][0] == "cheap", name
    assert groups["detect_format"][0] == "detect"
    clicked = {fn.name for fn in demo.fns.values()
               if fn.api_visibility == "private" and fn.concurrency_id == "step-jobs"}
    assert {"convert_stream", "validate_stream", "evaluate_stream", "export_stream", "reattach"} <= clicked, clicked


def test_launch_settings_defaults_env_and_auth(monkeypatch: pytest.MonkeyPatch, studio_home: Path) -> None:
    from pipeline.errors import UserError
    from studio_app.launch import launch_kwargs, parse_auth

    for name in ("GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT", "STUDIO_AUTH"):
        monkeypatch.delenv(name, raising=False)
    settings = launch_kwargs()
    assert (settings["server_name"], settings["server_port"], settings["auth"]) == ("127.0.0.1", 7860, None)
    assert settings["show_error"] is False and settings["enable_monitoring"] is False
    assert settings["run_history"] is False and settings["ssr_mode"] is False and settings["max_file_size"]
    assert settings["allowed_paths"] == [str(studio_home / "exports"), str(studio_home / "reports")]
    assert {str(studio_home / "studio.db"), str(studio_home / "runs")} <= set(settings["blocked_paths"])
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "8123")
    monkeypatch.setenv("STUDIO_AUTH", "ann:s3cret")
    settings = launch_kwargs()
    assert (settings["server_name"], settings["server_port"]) == ("0.0.0.0", 8123)
    assert settings["auth"] == [("ann", "s3cret")]
    assert parse_auth("a:b, c:d") == [("a", "b"), ("c", "d")]
    with pytest.raises(UserError, match="user:password"):
        parse_auth("nopassword")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "http")
    with pytest.raises(UserError, match="GRADIO_SERVER_PORT"):
        launch_kwargs()


def test_handlers_turn_user_errors_into_gradio_errors() -> None:
    from studio_app import quality_tab

    with pytest.raises(gr.Error, match="no converted dataset named 'missing'"):
        quality_tab.validate("missing")
    with pytest.raises(gr.Error, match=r"dataset '\.\./etc'"):
        quality_tab.split("../etc", "random", "0.8,0.1,0.1", 1)


def test_error_messages_show_uploads_by_name_not_by_server_path(monkeypatch: pytest.MonkeyPatch,
                                                                 studio_home: Path, tmp_path: Path) -> None:
    from pipeline.errors import UserError
    from studio_app.common import guarded

    upload = tmp_path / "gradio"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(upload))

    @guarded
    def refuse(path: str) -> None:
        raise UserError("not a ZIP archive", path)

    for path in (upload / "4f1c" / "export.zip", studio_home / "cache" / "upload-x1" / "annotations" / "export.zip"):
        with pytest.raises(gr.Error) as refused:
            refuse(str(path))
        assert refused.value.message == "export.zip: not a ZIP archive"
    with pytest.raises(gr.Error) as refused:
        refuse("/srv/shared/export.zip")  # a path the user typed stays as it was
    assert refused.value.message == "/srv/shared/export.zip: not a ZIP archive"


def test_space_refuses_jobs_and_pushes_without_sign_in(monkeypatch: pytest.MonkeyPatch) -> None:
    from studio_app import export_tab, train_tab

    monkeypatch.setenv("SPACE_ID", "someone/studio")
    with pytest.raises(gr.Error, match="sign in with Hugging Face"):
        train_tab.start_training("sample", "tiny-smolvlm", "quick_test", "", 2, "", None)
    with pytest.raises(gr.Error, match="sign in with Hugging Face"):
        train_tab.resume_job(1, None)
    with pytest.raises(gr.Error, match="sign in with Hugging Face"):
        export_tab.push_to_hub("x", "user/x", True, "hf_" + "a" * 30, None, None)


# -- the live server ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The app on a free port in this process, with its own data home and scheduler thread."""
    from pipeline import service
    from studio_app.launch import serve

    home = tmp_path_factory.mktemp("app_home")
    previous, options = os.environ.get("STUDIO_HOME"), dict(service.SAMPLE_OPTIONS)
    os.environ["STUDIO_HOME"] = str(home)
    service.SAMPLE_OPTIONS.update(SMALL_SAMPLE)
    demo, url = serve()
    try:
        yield {"url": url, "home": home, "demo": demo}
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
def client(server: dict[str, Any]) -> Any:
    from gradio_client import Client

    return Client(server["url"], **CLIENT)


@pytest.fixture(scope="module")
def dataset(client: Any) -> str:
    """sample -> detect -> convert -> validate -> split through the API; the dataset name."""
    info, _, _, labels, name = client.predict([], True, api_name="/detect_format")
    assert info["inputs"][0]["format"] == "sam2_demo_zip" and name == "sample"
    assert [row[2] for row in labels["data"]] == ["circle", "square", "triangle", "star"][: len(labels["data"])]
    labels["data"][0][2] = "ball"
    summary = client.predict([], True, "api-demo", labels, ["grounding"], "tiny-smolvlm", 1, False,
                             api_name="/convert")
    assert summary["dataset"] == "api-demo" and summary["frames"] > 5 and "ball" in summary["labels"]
    report, markdown, plots, files = client.predict("api-demo", api_name="/validate")
    assert report["dataset"] == "api-demo" and isinstance(report["passed"], bool)
    assert markdown.startswith("# Data quality report") and len(plots) == 4 and len(files) == 2
    result, figure = client.predict("api-demo", "random", "0.6,0.2,0.2", 7, api_name="/split")
    assert result["counts"]["train"] > 0 and result["counts"]["test"] > 0 and figure["type"] == "plotly"
    return "api-demo"


@pytest.fixture(scope="module")
def job(client: Any, dataset: str) -> int:
    memory, verdict, check = client.predict("tiny-smolvlm", "quick_test", "", dataset, api_name="/estimate_memory")
    assert memory["verdict"] == "fits" and memory["device"] == "cpu" and "fits" in verdict
    started, job_id, seq = client.predict(dataset, "tiny-smolvlm", "quick_test", "", 4, "", api_name="/start_training")
    assert started["status"] == "queued" and started["max_steps"] == 4 and job_id == started["job_id"] and seq == 0
    return int(job_id)


def follow(client: Any, job_id: int, from_seq: int, stop_after: int | None = None) -> list[dict[str, Any]]:
    """The /watch_job views, ending with the job's end or after `stop_after` progress events (then disconnect)."""
    views, progress = [], 0
    stream = client.submit(job_id, from_seq, api_name="/watch_job")
    for out in stream:
        views.append(out[0])
        progress += sum(isinstance(e.get("seq"), int) for e in out[0]["events"])
        if stop_after is not None and progress >= stop_after:
            stream.cancel()
            break
    return views


@pytest.mark.slow
def test_watch_disconnect_and_reconnect_keeps_training(server: dict[str, Any], job: int) -> None:
    from gradio_client import Client

    leaving = Client(server["url"], **CLIENT)
    first = follow(leaving, job, 0, stop_after=2)
    seen = [e["seq"] for v in first for e in v["events"] if isinstance(e.get("seq"), int)]
    assert len(seen) >= 2 and seen == sorted(seen) and first[-1]["status"] in ("queued", "running")
    leaving.close()  # the browser goes away mid-stream; the job must not notice
    again = Client(server["url"], **CLIENT)
    rest = follow(again, job, seen[-1])
    more = [e["seq"] for v in rest for e in v["events"] if isinstance(e.get("seq"), int)]
    assert more and more[0] == seen[-1] + 1 and more == list(range(more[0], more[0] + len(more)))
    last = rest[-1]
    assert last["status"] == "succeeded" and last["step"] == last["total_steps"] == 4 and last["fraction"] == 1.0
    assert [e["event"] for v in rest for e in v["events"]][-2:] == ["end", "status"]


@pytest.mark.slow
def test_pipeline_through_the_api(server: dict[str, Any], job: int) -> None:
    from gradio_client import Client

    client = Client(server["url"], **CLIENT)
    views = follow(client, job, 0)
    kinds = [e.get("event") for v in views for e in v["events"]]
    assert {"start", "log", "end"} <= set(kinds) and views[-1]["status"] == "succeeded"
    assert views[-1]["loss"] is not None and views[-1]["seq"] >= 6
    table = client.predict(api_name="/list_jobs")
    assert table["data"][0][:2] == [job, "succeeded"]
    experiments = client.predict("succeeded", "", "", "final_loss", False, api_name="/list_experiments")[0]
    run_id = experiments["data"][0][0]
    assert experiments["data"][0][2:4] == ["succeeded", "tiny-smolvlm"]
    pytest.importorskip("pipeline.evaluate")
    info, metrics, gallery = client.predict(run_id, "best", "test", 2, api_name="/evaluate")
    assert metrics["headers"][:2] == ["metric", "fine-tuned"] and any(r[0] == "miou" for r in metrics["data"])
    assert gallery and info["run_id"] == run_id
    pytest.importorskip("pipeline.export")
    result, card, download, _ = client.predict(run_id, "adapter", "best", api_name="/export")
    assert result["mode"] == "adapter" and "adapter_model.safetensors" in result["files"]
    assert card.strip() and download["path"].endswith(".zip")
    with pytest.raises(Exception, match="token"):
        client.predict(result["export"], "user/repo", True, "", api_name="/push_to_hub")


@pytest.mark.slow
@pytest.mark.parametrize("path", ["/etc/passwd", "/etc/../etc/passwd", "..%2F..%2F..%2Fetc%2Fpasswd",
                                  "%2Fetc%2Fpasswd", "//etc/passwd", "~/.bashrc"])
def test_file_routes_refuse_system_files(server: dict[str, Any], path: str) -> None:
    import httpx

    response = httpx.get(f"{server['url']}gradio_api/file={path}", timeout=60)
    assert response.status_code in (403, 404) and "root:" not in response.text


@pytest.mark.slow
def test_file_routes_refuse_database_and_runs(server: dict[str, Any], job: int) -> None:
    import httpx

    home: Path = server["home"]
    deadline = time.monotonic() + 120
    while not list((home / "runs").glob("*/config.yaml")) and time.monotonic() < deadline:
        time.sleep(0.5)
    targets = [home / "studio.db", next((home / "runs").glob("*/config.yaml")), home / "scheduler.lock"]
    for target in targets:
        assert target.exists()
        response = httpx.get(f"{server['url']}gradio_api/file={target}", timeout=60)
        assert response.status_code in (403, 404), target


@pytest.mark.slow
def test_api_hygiene_and_try_model(server: dict[str, Any], job: int) -> None:
    """No parameter is an empty enum, no output is named value_N, no result carries a server path; /try_model
    answers with answer, boxes and parse_ok."""
    import json
    import re

    from gradio_client import Client, handle_file

    client = Client(server["url"], **CLIENT)
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    for name, endpoint in api.items():
        for param in endpoint["parameters"]:
            kind = param.get("type") or {}
            assert kind.get("enum") != [] and (kind.get("items") or {}).get("enum") != [], (name, param)
        for out in endpoint["returns"]:
            assert not re.fullmatch(r"value_\d+", out.get("label") or ""), (name, out)
    follow(client, job, 0)
    run_id = client.predict("succeeded", "", "", "created", False, api_name="/list_experiments")[0]["data"][0][0]
    frame = next((server["home"] / "datasets" / "api-demo" / "images").rglob("*.*"))
    result, fine, base = client.predict(run_id, handle_file(str(frame)), "Find every ball in the image.",
                                        api_name="/try_model")
    assert {"answer", "boxes", "parse_ok"} <= set(result) and isinstance(result["boxes"], list)
    assert fine and base and result["base"] is not None
    page = client.predict("api-demo", "all", "all", "all", 0, api_name="/browse_dataset")
    assert page[3] > 0 and page[1]["data"]
    home = str(server["home"])

    def plain(value: Any) -> Any:  # FileData dicts are gradio's own cache, served by URL
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items() if not (k == "path" and "url" in value)}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    outputs = [client.predict("api-demo", api_name="/validate"), result, page[1],
               client.predict(run_id, "adapter", "best", api_name="/export")]
    for out in outputs:
        assert home not in json.dumps(plain(out)), out


# -- video tasks and mask clean-up in the Data tab (#20) -------------------------------------------------------------
NO_NAMES = {"headers": ["object id", "label in export", "name"], "data": [], "metadata": None}
VIDEO_OPTIONS = ["--family", "tiny-smolvlm", "--tasks", "track,grounding", "--clip-frames", "3", "--clip-stride", "6",
                 "--drop-fragments", "--keep-share", "0.1"]


def test_convert_with_video_tasks_writes_what_the_cli_writes(server: dict[str, Any], client: Any,
                                                             tmp_path: Path) -> None:
    """/convert with track, clip frames / stride and drop fragments (the last four inputs): multi-frame examples and
    the fragment correction in dataset.json, the same training rows as `convert` with the same options."""
    import json

    from pipeline.cli import main

    summary = client.predict([], True, "api-track", NO_NAMES, ["track", "grounding"], "tiny-smolvlm", 1, False, 0, 0,
                             False, False, 3, 6, True, 0.1, api_name="/convert")
    assert summary["dataset"] == "api-track" and summary["frames"] > 5 and summary["fragments"] == 0
    app = server["home"] / "datasets" / "api-track"
    meta = json.loads((app / "dataset.json").read_text())
    assert meta["tasks"] == ["track", "grounding"] and meta["clips"] == {"frames": 3, "stride": 6}
    assert meta["mask_fragments"]["keep_share"] == 0.1 and "objects_corrected" in meta["mask_fragments"]
    rows = json.loads((app / "llava.json").read_text())
    track = [r for r in rows if "-track-" in r["id"]]
    assert track and all(len(r["image"]) == 3 and r["conversations"][0]["value"].count("<image>") == 3
                         for r in track)
    sample = server["home"] / "sample"
    cli = tmp_path / "cli"
    assert main(["convert", *map(str, sorted(sample.glob("sam2_export_*.zip"))),
                 *[arg for video in sorted(sample.glob("session_*.mp4")) for arg in ("--video", str(video))],
                 "--labels", str(sample / "labels.json"), *VIDEO_OPTIONS, "--out", str(cli)]) == 0
    for name in ("llava.json", "sharegpt.json", "records.jsonl"):
        assert (app / name).read_text() == (cli / name).read_text(), name
    cli_meta = json.loads((cli / "dataset.json").read_text())
    assert {k: cli_meta[k] for k in ("clips", "mask_fragments", "tasks")} == {
        k: meta[k] for k in ("clips", "mask_fragments", "tasks")}


def test_video_tasks_for_a_single_image_family_are_refused_in_one_line(server: dict[str, Any], client: Any) -> None:
    """PaliGemma / Florence-2 with a video task: the API's error and the Convert button's status line say why in
    one line; nothing is queued or written."""
    from gradio_client.exceptions import AppError

    from studio_app import data_tab, status

    with pytest.raises(AppError) as refused:
        client.predict([], True, "api-pali", NO_NAMES, ["track"], "tiny-paligemma", 1, False, api_name="/convert")
    message = str(refused.value)
    assert "track show the model 4 frames per example, but tiny-paligemma (paligemma) takes one image" in message
    assert "\n" not in message.strip() and "Traceback" not in message
    clicked = status.with_status(data_tab.convert_stream, "Convert", data_tab.convert_summary, 1)
    with pytest.warns(UserWarning, match="florence2 takes one image per example"):  # the toast beside the line
        *_, (summary, line) = list(clicked([], True, "ui-florence", NO_NAMES, ["grounding", "visibility"],
                                           "florence2", 1, False, 0, 0, False, False, 2))
    assert 'data-status="error"' in line and "Convert failed:" in line and "Traceback" not in line
    assert "visibility show the model 2 frames per example, but florence2 takes one image per example" in line
    for name in ("api-pali", "ui-florence"):
        assert not (server["home"] / "datasets" / name).exists()
    with pytest.raises(AppError, match="--clip-frames must be an integer from 2 to 16"):
        client.predict([], True, "api-k1", NO_NAMES, ["track"], "tiny-smolvlm", 1, False, 0, 0, False, False, 1,
                       api_name="/convert")


@pytest.mark.slow
def test_evaluate_shows_the_video_task_metrics_and_baselines(client: Any) -> None:
    """A run trained on track / visibility / count_unique: /evaluate's table has later-frame mIoU, lost-track rate,
    visibility F1, count_unique accuracy and MAE, each with the baseline's value; the status line names them."""
    from studio_app.evaluate_tab import evaluate_summary

    client.predict([], True, "api-video", NO_NAMES, ["track", "visibility", "count_unique"], "tiny-smolvlm", 1, False,
                   0, 0, False, False, 2, 3, api_name="/convert")
    client.predict("api-video", "temporal", "0.5,0.25,0.25", 7, api_name="/split")
    started, job_id, _ = client.predict("api-video", "tiny-smolvlm", "quick_test", "", 2, "",
                                        api_name="/start_training")
    assert follow(client, int(job_id), 0)[-1]["status"] == "succeeded"
    info, table, _ = client.predict(started["run_id"], "best", "test", 3, api_name="/evaluate")
    assert table["headers"] == ["metric", "fine-tuned", "base (tiny-smolvlm)", "mean-box baseline"]
    rows = {row[0]: row[1:] for row in table["data"]}
    for key in ("track_miou", "track_lost_rate", "visibility_f1", "unique_accuracy", "unique_mae"):
        assert key in rows and all(isinstance(v, int | float) for v in rows[key]), (key, rows)
    assert rows["visibility_f1"][2] > 0 and "miou" not in rows  # the honest baselines; no frame task was trained
    text = evaluate_summary(info)
    assert "track mIoU (later frames)" in text and "visibility F1" in text and "(baseline " in text
