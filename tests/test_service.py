"""pipeline/service.py, the app's gradio-free facade: names confined to STUDIO_HOME, upload sorting, detection with
previews, conversion, quality report, split, training configs and their validation, jobs (queued, cancelled,
resumed, watched), the watch view, the Space gate and the served paths."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline import job_view, service
from pipeline.errors import UserError


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A data home of this module, whose jobs backend never launches anything (jobs stay queued)."""
    from pipeline.jobs import LocalBackend

    previous = os.environ.get("STUDIO_HOME")
    folder = tmp_path_factory.mktemp("service_home").resolve()
    os.environ["STUDIO_HOME"] = str(folder)
    service._BACKENDS[(folder, "local")] = LocalBackend(folder, scheduler="none")
    try:
        yield folder
    finally:
        service._BACKENDS.pop((folder, "local"), None)
        if previous is None:
            os.environ.pop("STUDIO_HOME", None)
        else:
            os.environ["STUDIO_HOME"] = previous


@pytest.fixture(scope="module")
def demo_files(sample_dir: Path) -> list[str]:
    """The sample's demo export, its video and labels.json, as an upload would give them."""
    return [str(p) for p in (*sample_dir.glob("sam2_export_*.zip"), *sample_dir.glob("session_*.mp4"),
                             sample_dir / "labels.json")]


@pytest.fixture(scope="module")
def dataset(home: Path, demo_files: list[str]) -> str:
    summary = service.convert_inputs(demo_files, "shapes", labels={1: "box"}, tasks=["grounding", "counting"])
    assert summary["dataset"] == "shapes" and summary["frames"] > 5
    assert set(summary["labels"]) == {"circle", "box", "triangle"}  # labels.json, then the editor's name wins
    return "shapes"


@pytest.mark.parametrize("name", ["", "..", "../etc", "a/b", "/abs", ".hidden", "x" * 65, "a b"])
def test_names_stay_inside_the_data_home(home: Path, name: str) -> None:
    with pytest.raises(UserError, match="use letters, digits"):
        service.check_name(name, "dataset")


def test_unknown_dataset_is_a_clear_error(home: Path) -> None:
    with pytest.raises(UserError, match="no converted dataset named 'nothing'"):
        service.dataset_dir("nothing")


def test_uploads_are_sorted_by_role(home: Path, sample_dir: Path, tmp_path: Path) -> None:
    frames = sorted((sample_dir / "coco_frames").glob("*.jpg"))[:3]
    files = [sample_dir / "coco_instances.json", *frames, sample_dir / "sam2_stream.mp4", sample_dir / "labels.json"]
    with service.staged_inputs([str(f) for f in files]) as inputs:
        assert [p.name for p in inputs.annotations] == ["coco_instances.json"]
        assert [p.name for p in inputs.videos] == ["sam2_stream.mp4"]
        assert inputs.image_count == 3 and sorted(p.name for p in inputs.images.iterdir()) == [f.name for f in frames]
        assert inputs.labels == {0: "circle", 1: "square", 2: "triangle", 3: "star"}
        staging = inputs.images.parent
    assert not staging.exists()  # the gathered frames are removed afterwards
    odd = tmp_path / "notes.exe"
    odd.write_bytes(b"MZ")
    with pytest.raises(UserError, match="unsupported file type"), service.staged_inputs([str(odd)]):
        pass
    with pytest.raises(UserError, match="no annotation file"), service.staged_inputs([str(frames[0])]):
        pass
    with pytest.raises(UserError, match="upload an export"), service.staged_inputs([]):
        pass


def test_detect_recognises_the_export_and_previews_masks(home: Path, demo_files: list[str]) -> None:
    info, shots, thumbs = service.detect_inputs(demo_files, preview=4)
    assert [i["format"] for i in info["inputs"]] == ["sam2_demo_zip"] and info["labels_file"] == "labels.json"
    assert info["videos"] and info["videos"][0].endswith(".mp4") and info["problems"] == []
    objects = {o["object_id"]: o for o in info["objects"]}
    assert objects[0]["label"] == "object_0" and objects[0]["name"] == "circle"  # the export has no names
    assert 1 <= len(shots) <= 4 and all(image.width >= 320 for image, _ in shots)
    assert all("frame" in caption for _, caption in shots)
    assert [caption for _, caption in thumbs] == [f"{k}: object_{k}" for k in sorted(objects) if objects[k]["frames"]]
    assert {k for k in objects if not objects[k]["frames"]} <= {3}  # named in labels.json, not in the preview
    image = shots[0][0].convert("RGB")
    colours = {image.getpixel((x, y)) for x in range(0, image.width, 4) for y in range(0, image.height, 4)}
    assert any(c in colours for c in service.PALETTE)  # boxes are drawn in the object colours


def test_label_editor_rows(home: Path) -> None:
    rows = [[0, "object_0", "ball"], [1, "object_1", ""], [2.0, "object_2", " cone "], [None, "", "x"]]
    assert service.labels_from_rows(rows) == {0: "ball", 2: "cone"}
    assert service.labels_from_rows({"headers": [], "data": [[3, "o", "star"]]}) == {3: "star"}
    assert service.labels_from_rows({"4": "ring"}) == {4: "ring"}
    with pytest.raises(UserError, match="object id 'abc'"):
        service.labels_from_rows([["abc", "", "name"]])


def test_convert_refuses_to_overwrite_by_accident(dataset: str, demo_files: list[str]) -> None:
    assert service.list_datasets()[0] == dataset
    with pytest.raises(UserError, match="already exists"):
        service.convert_inputs(demo_files, dataset)


def test_quality_report(dataset: str, home: Path) -> None:
    report = service.validate_dataset(dataset)
    assert report["dataset"] == dataset and report["summary"]["errors"] == 0 and report["passed"] is True
    assert report["markdown"].startswith("# Data quality report") and "## Plots" not in report["markdown"]
    assert {Path(p).name for p in report["plots"]} >= {"class_distribution.png", "objects_per_frame.png"}
    assert all(Path(p).parent == home / "reports" / dataset for p in report["plots"] + report["files"])
    assert json.loads((home / "reports" / dataset / "report.json").read_text())["summary"]["errors"] == 0


def test_split_and_its_chart(dataset: str, home: Path) -> None:
    result = service.split(dataset, "random", "0.6,0.2,0.2", 3)
    frames = sum(result["counts"][s] for s in ("train", "val", "test", "excluded"))
    assert frames == len((home / "datasets" / dataset / "records.jsonl").read_text().splitlines())
    assert result["counts"]["train"] > result["counts"]["test"] > 0
    assert (home / "datasets" / dataset / "split.yaml").is_file()
    fig = service.split_figure(result)
    assert [t.name.split(" ")[0] for t in fig.data] == ["train", "val", "test"]
    assert sorted(fig.data[0].x) == sorted(result["label_shares"]["overall"])
    with pytest.raises(UserError, match="sum to 1"):
        service.split(dataset, "random", "0.5,0.1,0.1", 3)


def test_training_config_keeps_paths_in_the_studio(dataset: str, home: Path) -> None:
    cfg = service.training_config(dataset, "tiny-smolvlm", "quick_test", max_steps=3)
    assert cfg.training.max_steps == 3 and cfg.data.path == str(home / "datasets" / dataset)
    text = service.config_yaml(cfg)
    assert "quick" not in text and str(home) not in text  # the editor never shows machine paths
    hostile = text.replace("output_dir: ''", "output_dir: /etc/evil").replace("path: ''", "path: /root")
    moved = service.training_config(dataset, "tiny-smolvlm", "quick_test", hostile)
    assert moved.training.output_dir == "" and moved.data.path == str(home / "datasets" / dataset)
    edited = service.apply_form(text, {"training.learning_rate": 0.01, "lora.r": 4, "training.epochs": None})
    values = service.form_values(service.training_config(None, None, "quick_test", edited))
    assert values["training.learning_rate"] == 0.01 and values["lora.r"] == 4 and values["training.epochs"] == 3.0
    with pytest.raises(UserError, match="not valid YAML"):
        service.training_config(None, None, "quick_test", "model: [unclosed")
    with pytest.raises(UserError, match="lora.r"):
        service.apply_form(text, {"lora.r": "many"})
    with pytest.raises(UserError, match="KiB"):
        service.training_config(None, None, "quick_test", "#" * (service.MAX_YAML_BYTES + 1))


def test_check_training_names_the_field_and_estimates_memory(dataset: str) -> None:
    good = service.check_training(dataset, "tiny-smolvlm", "quick_test", "")
    assert good["errors"] == [] and good["memory"]["verdict"] == "fits" and good["memory"]["total_gib"] > 0
    text = service.config_yaml(service.training_config(None, "tiny-smolvlm", "quick_test"))
    bad = service.check_training(None, "tiny-smolvlm", "quick_test", text.replace("learning_rate: 0.001",
                                                                                   "learning_rate: -1.0"))
    assert bad["errors"][0].startswith("data:") and any(e.startswith("training.learning_rate") for e in bad["errors"])
    memory = service.estimate_memory("qwen2.5-vl-7b", "balanced")
    assert memory["model"] == "qwen2.5-vl-7b" and memory["total_gib"] > 10
    assert memory["verdict"] in ("fits", "tight", "won't fit") and memory["parts_gib"]["weights"] > 10


def test_jobs_queue_cancel_resume_and_watch(dataset: str) -> None:
    with pytest.raises(UserError, match="pick a converted dataset"):
        service.start_training("", "tiny-smolvlm", "quick_test")
    first = service.start_training(dataset, "tiny-smolvlm", "quick_test", max_steps=2, name="first")
    second = service.start_training(dataset, "tiny-smolvlm", "quick_test", max_steps=2)
    assert (first["status"], first["position"], second["position"]) == ("queued", 1, 2)
    listed = service.list_jobs()
    assert [j["job_id"] for j in listed] == [second["job_id"], first["job_id"]]
    assert service.job_to_follow() == second["job_id"]
    assert service.cancel_job(first["job_id"])["status"] == "cancelled"
    assert service.list_jobs("queued")[0]["position"] == 1
    views = [v.to_dict() for v in service.watch_job(first["job_id"], poll=0.05)]
    assert views[-1]["status"] == "cancelled" and all(v["events"][0]["event"] == "status" for v in views)
    # A job that ended before the watch attached: its progress is folded in before the terminal view is shown.
    run_dir = Path(service.backend().get(first["job_id"]).run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "progress.jsonl").write_text("".join(
        json.dumps({"seq": s, "event": "log", "step": s, "total_steps": 2, "loss": 1.0 / s}) + "\n" for s in (1, 2)))
    ended = [(v.status, v.step, v.total_steps) for v in service.watch_job(first["job_id"], poll=0.05)]
    assert ended == [("cancelled", 2, 2)]
    (run_dir / "progress.jsonl").unlink()
    resumed = service.resume_job(first["job_id"])
    assert (resumed["status"], resumed["attempt"]) == ("queued", 2)
    with pytest.raises(UserError, match="nothing to resume"):
        service.resume_job(second["job_id"])
    for job_id in (first["job_id"], second["job_id"]):
        service.cancel_job(job_id)
    assert service.backend().list(status=("running", "queued")) == []
    assert service.job_to_follow() == second["job_id"]  # nothing active: a reloaded page shows the newest job
    runs = dict((run_id, label) for label, run_id in service.run_choices())
    assert runs[first["run_id"]].startswith("first ·")
    rows = service.list_experiments(status="cancelled", where="training.max_steps=2")
    assert {r["run_id"] for r in rows} == {first["run_id"], second["run_id"]}
    info, figures = service.compare_experiments([first["run_id"], second["run_id"]])
    assert info["runs"] == [first["run_id"], second["run_id"]] and "| status |" in info["table"]
    with pytest.raises(UserError, match="at least two"):
        service.compare_experiments([first["run_id"]])
    assert service.delete_experiment(second["run_id"])["deleted"] == second["run_id"]
    assert second["run_id"] not in {r["run_id"] for r in service.list_experiments()}


def test_watch_view_folds_progress_events() -> None:
    view = job_view.WatchView(job_id=7)
    events: list[dict[str, Any]] = [
        {"event": "status", "status": "running", "attempt": 1},
        {"event": "start", "seq": 1, "step": 0, "total_steps": 4},
        {"event": "log", "seq": 2, "step": 1, "total_steps": 4, "loss": 2.0, "lr": 1e-3, "eta_s": 75.0,
         "samples_per_s": 2.5, "tokens_per_s": 150.0, "memory": {"rss": 600 * 2**20}},
        {"event": "log", "seq": 3, "step": 2, "total_steps": 4, "loss": 1.5, "lr": 5e-4, "eta_s": 30.0},
        {"event": "eval", "seq": 4, "step": 2, "eval_loss": 1.7},
    ]
    for event in events:
        view.add(event)
    data = view.to_dict()
    assert (data["status"], data["seq"], data["step"], data["total_steps"], data["fraction"]) == ("running", 4, 2, 4,
                                                                                                   0.5)
    assert view.curves == {"loss": {1: 2.0, 2: 1.5}, "lr": {1: 1e-3, 2: 5e-4}, "eval_loss": {2: 1.7}}
    html = job_view.progress_html(view)
    assert "<progress value='2' max='4'" in html and "step 2/4 (50%)" in html and "ETA 0:30" in html
    stats = job_view.stats_markdown(view)
    assert "loss **1.5000**" in stats and "2.50 samples/s" in stats and "rss 600 MiB" in stats
    fig = job_view.curve_figure(view, ["loss", "eval_loss"], "Loss")
    assert [t.name for t in fig.data] == ["loss", "eval_loss"] and list(fig.data[0].y) == [2.0, 1.5]
    view.add({"event": "end", "seq": 5, "status": "failed", "error": "CUDA out of memory"})
    view.add({"event": "status", "status": "failed", "attempt": 1, "error": "CUDA out of memory"})
    assert "CUDA out of memory" in job_view.progress_html(view) and "failed" in job_view.progress_html(view)
    assert "no job followed yet" in job_view.progress_html(None)


def test_space_requires_a_signed_in_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPACE_ID", raising=False)
    service.require_user(None, "start training jobs")  # locally nobody signs in
    monkeypatch.setenv("SPACE_ID", "someone/studio")
    with pytest.raises(UserError, match="sign in with Hugging Face .* to start training jobs"):
        service.require_user(None, "start training jobs")
    service.require_user("someone", "start training jobs")


def test_served_and_blocked_paths(home: Path) -> None:
    assert service.download_paths() == [str(home / "exports"), str(home / "reports")]
    blocked = set(service.blocked_paths())
    assert {str(home / "studio.db"), str(home / "runs"), str(home / "models")} <= blocked
    assert not any(p.startswith(d) for p in blocked for d in service.download_paths())


def test_push_needs_a_real_export_and_a_token(home: Path) -> None:
    with pytest.raises(UserError, match="export '../x'"):
        service.push("../x", "user/repo", "hf_x")
    with pytest.raises(UserError, match="export folder not found"):
        service.push("missing", "user/repo", "hf_x")
