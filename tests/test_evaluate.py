"""Evaluation: parse -> metric cases with known values, parse failures in every convention, the mean-box baseline,
and a tiny run trained with the real trainer, evaluated end to end (files, TensorBoard, CLI, comparisons, callback)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.coords import CONVENTIONS
from pipeline.errors import UserError
from pipeline.eval_score import METRIC_KEYS, mean_box_baseline, score_answers, summarize
from pipeline.evaluate import load_split, resolve_checkpoint
from pipeline.masks import encode_rle, mask_bbox
from pipeline.records import FrameRecord, ObjectAnn, write_records
from pipeline.tasks import Example, build_examples, pick_subset

TASKS = ["grounding", "polygon", "referring", "counting", "negative"]
REQUIRED = {"miou", "ap50", "map", "mask_iou", "dice", "pixel_accuracy", "label_accuracy", "count_accuracy",
            "count_mae", "parse_failure_rate", "n", "per_label"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models on a shared 2-core machine: one torch thread is many times faster than two."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def square(object_id: int, label: str, x: int, y: int, size: int, width: int = 64, height: int = 64) -> ObjectAnn:
    mask = np.zeros((height, width), np.uint8)
    mask[y : y + size, x : x + size] = 1
    return ObjectAnn(object_id, label, mask_bbox(mask), int(mask.sum()), encode_rle(mask))


def make_dataset(root: Path, frames: int = 13, splits: bool = True) -> Path:
    """64x64 frames with a red 'circle' and (most frames) a green 'square'; splits 8 train / 2 val / rest test."""
    from PIL import Image

    rng = np.random.default_rng(7)
    (root / "images" / "v").mkdir(parents=True)
    records = []
    for i in range(frames):
        pixels = np.full((64, 64, 3), 50, np.uint8)
        objects = []
        for k, (label, colour) in enumerate([("circle", (230, 30, 30)), ("square", (30, 220, 30))]):
            if k == 1 and i % 4 == 3:
                continue
            x, y = (int(v) for v in rng.integers(2, 40, 2))
            size = int(rng.integers(10, 22))
            pixels[y : y + size, x : x + size] = colour
            objects.append(square(k, label, x, y, size))
        Image.fromarray(pixels).save(root / "images" / "v" / f"{i:06d}.jpg", quality=95)
        records.append(FrameRecord(f"v-{i:06d}", "test", "v", i, f"images/v/{i:06d}.jpg", 64, 64, objects))
    write_records(records, root / "records.jsonl")
    labels = {"circle": frames, "square": sum(len(r.objects) == 2 for r in records)}
    (root / "dataset.json").write_text(json.dumps({"labels": labels, "tasks": TASKS, "seed": 0}), encoding="utf-8")
    if splits:
        (root / "splits").mkdir()
        for name, chosen in (("train", records[:8]), ("val", records[8:10]), ("test", records[10:])):
            write_records(chosen, root / "splits" / f"{name}.jsonl")
    return root


# -- parse -> metric ------------------------------------------------------------------------------------------------
def ex(id_: str, task: str, truth: dict, answer: str = "", size: int = 100) -> Example:
    return Example(id_, "r-" + id_, task, "img.jpg", "q", answer, size, size, truth)


def test_parse_to_metric_known_values():
    half = np.zeros((100, 100), np.uint8)
    half[:50, :50] = 1
    g_truth = {"label": "circle", "boxes": [[0, 0, 50, 50], [50, 50, 100, 100]]}
    cases = [  # json convention, scale 100 on 100 px images: one unit is one pixel
        (ex("g1", "grounding", g_truth),
         '[{"label":"circle","box":[0,0,50,50]},{"label":"circle","box":[50,50,100,80]}]'),
        (ex("g2", "grounding", {"label": "circle", "boxes": [[10, 10, 30, 30]]}), '[{"label":"circle","box":[0,0'),
        (ex("n1", "negative", {"label": "square", "boxes": []}), "[]"),
        (ex("n2", "negative", {"label": "square", "boxes": []}), '[{"label":"square","box":[1,1,9,9]}]'),
        (ex("p1", "polygon", {"label": "circle", "rle": encode_rle(half), "polygon": [0, 0, 50, 0, 50, 50, 0, 50]}),
         '[{"label":"circle","polygon":[0,0,50,0,50,25,0,25]}]'),
        (ex("r1", "referring", {"label": "circle"}), "circle"),
        (ex("r2", "referring", {"label": "circle"}), "Square."),
        (ex("r3", "referring", {"label": "square"}), "catcatcat"),
        (ex("c1", "counting", {"label": "circle", "count": 2}), "2"),
        (ex("c2", "counting", {"label": "square", "count": 1}), "three"),
        (ex("c3", "counting", {"label": "circle", "count": 4}), "lots"),
        (ex("l1", "listing", {"labels": ["circle", "square"]}), "circle"),
    ]
    rows = score_answers([c[0] for c in cases], [c[1] for c in cases], "json")
    by_id = {r["id"]: r for r in rows}
    assert by_id["g1"]["iou"] == pytest.approx(0.8)  # (1.0 + 0.6) / 2
    assert not by_id["g2"]["parse_ok"] and by_id["g2"]["iou"] == 0.0 and "JSON" in by_id["g2"]["error"]
    assert not by_id["c3"]["parse_ok"] and by_id["c2"]["count"] == 3
    m = summarize(rows)
    assert REQUIRED <= set(m)
    assert m["n"] == 12 and m["parse_failure_rate"] == pytest.approx(2 / 12)
    assert m["miou"] == pytest.approx(0.4)
    # 3 circle boxes, 2 found (IoU 1.0 and 0.6): AP50 = 67/101 (101-point recall grid); above IoU 0.6 one is left
    assert m["ap50"] == pytest.approx(67 / 101, abs=1e-6)
    assert m["map"] == pytest.approx((3 * 67 + 7 * 34) / 1010, abs=1e-6)
    assert m["mask_iou"] == pytest.approx(0.5, abs=0.02) and m["dice"] == pytest.approx(2 / 3, abs=0.02)
    assert m["pixel_accuracy"] == pytest.approx(0.875, abs=0.01)
    assert m["label_accuracy"] == pytest.approx(1 / 3) and m["negative_accuracy"] == 0.5
    assert m["count_accuracy"] == pytest.approx(1 / 3) and m["count_mae"] == pytest.approx(2.0)
    assert m["listing_f1"] == pytest.approx(2 / 3)
    # answers are matched case-blind; labels nobody asked about are pooled as <other>
    assert m["confusion"] == {"labels": ["<other>", "circle", "square"], "matrix": [[0, 0, 0], [0, 1, 1], [1, 0, 0]]}
    assert m["per_label"]["circle"]["miou"] == pytest.approx(0.4) and m["per_label"]["square"]["miou"] is None
    assert m["per_label"]["square"]["negative_accuracy"] == 0.5
    assert m["per_label"]["square"]["count_mae"] == pytest.approx(2.0)


def test_metrics_of_absent_tasks_are_null():
    rows = score_answers([ex("c", "counting", {"label": "a", "count": 1})], ["1"], "json")
    m = summarize(rows)
    assert all(m[k] is None for k in ("miou", "ap50", "map", "mask_iou", "dice", "label_accuracy", "listing_f1"))
    assert m["count_accuracy"] == 1.0 and m["parse_failure_rate"] == 0.0 and m["confusion"] is None


def _examples_for(name: str) -> list[Example]:
    record = FrameRecord("f", "t", "v", 0, "img.jpg", 64, 64,
                         [square(0, "circle", 5, 8, 20), square(1, "square", 30, 30, 16)])
    extra = FrameRecord("g", "t", "v", 1, "img.jpg", 64, 64, [square(0, "star", 1, 1, 9)])
    return [e for e in build_examples([record, extra], TASKS, name, seed=1) if e.record_id == "f"]


def _malformed(example: Example) -> str:
    if example.task == "referring":
        return "   "
    if example.task == "negative":
        return "a circle, maybe"
    return "".join("x" if c.isdigit() else c for c in example.answer)  # every number broken, the markup kept


@pytest.mark.parametrize("name", list(CONVENTIONS))
def test_every_convention_truth_scores_and_malformed_fail(name: str):
    examples = _examples_for(name)
    assert {e.task for e in examples} == set(TASKS)
    truth = summarize(score_answers(examples, [e.answer for e in examples], name))
    assert truth["parse_failure_rate"] == 0.0
    assert truth["miou"] > 0.9 and truth["ap50"] == pytest.approx(1.0) and truth["mask_iou"] > 0.8
    assert truth["label_accuracy"] == truth["count_accuracy"] == truth["negative_accuracy"] == 1.0
    bad_rows = score_answers(examples, [_malformed(e) for e in examples], name)
    assert all(not r["parse_ok"] and r["error"] for r in bad_rows)
    bad = summarize(bad_rows)
    assert bad["parse_failure_rate"] == 1.0 and bad["miou"] == 0.0 and bad["mask_iou"] == 0.0
    assert bad["label_accuracy"] == 0.0 and bad["count_accuracy"] == 0.0 and bad["ap50"] == 0.0
    half = [_malformed(e) if k % 2 else e.answer for k, e in enumerate(examples)]
    mixed = summarize(score_answers(examples, half, name))
    assert mixed["parse_failure_rate"] == pytest.approx(sum(k % 2 for k in range(len(examples))) / len(examples))


# -- mean-box baseline ---------------------------------------------------------------------------------------------
def test_mean_box_baseline_on_a_hand_made_split():
    def rec(i: int, w: int, h: int, objects: list[tuple[str, list[int]]]) -> FrameRecord:
        objs = [ObjectAnn(k, label, box, 1, {"size": [h, w], "counts": ""}) for k, (label, box) in enumerate(objects)]
        return FrameRecord(f"r{i}", "t", "v", i, "img.jpg", w, h, objs)

    train = [rec(0, 100, 50, [("circle", [10, 5, 30, 25])]),
             rec(1, 200, 100, [("circle", [40, 20, 100, 60]), ("square", [0, 0, 100, 100])])]
    base = mean_box_baseline(train)
    assert base.boxes["circle"] == pytest.approx([0.15, 0.15, 0.4, 0.55])
    assert base.boxes["square"] == pytest.approx([0.0, 0.0, 0.5, 1.0])
    assert base.overall == pytest.approx([0.1, 0.1, 1.3 / 3, 0.7])
    assert base.majority_label == "circle" and base.counts == {"circle": 1, "square": 1}
    assert base.box("circle", 200, 200) == pytest.approx([30, 30, 80, 110])
    assert base.box("star", 300, 30) == pytest.approx([30, 3, 130, 21])  # unseen label: the overall mean
    test = ex("t", "grounding", {"label": "circle", "boxes": [[30, 30, 80, 110]]}, size=200)
    answer = base.answer(test, "json")
    assert answer == '[{"label":"circle","box":[15,15,40,55]}]'
    assert score_answers([test], [answer], "json")[0]["iou"] == pytest.approx(1.0)
    assert base.answer(ex("r", "referring", {"label": "square"}), "json") == "circle"
    assert base.answer(ex("c", "counting", {"label": "square", "count": 3}), "json") == "1"
    assert mean_box_baseline([]).overall == [0.0, 0.0, 1.0, 1.0]


# -- data ------------------------------------------------------------------------------------------------------------
def test_load_split_with_and_without_splits(tmp_path: Path):
    ds = make_dataset(tmp_path / "ds")
    test, train, meta, note = load_split(ds, "test")
    assert [r.id for r in test] == ["v-000010", "v-000011", "v-000012"] and len(train) == 8 and note is None
    assert meta["tasks"] == TASKS
    with pytest.raises(UserError, match="no nope split.*test, train, val"):
        load_split(ds, "nope")
    with pytest.raises(UserError, match="plain name"):
        load_split(ds, "../x")
    flat = make_dataset(tmp_path / "flat", frames=3, splits=False)
    every, train, _, note = load_split(flat, "test")
    assert len(every) == len(train) == 3 and "no splits" in note
    with pytest.raises(UserError, match="not a converted dataset"):
        load_split(tmp_path, "test")
    examples = build_examples(every, TASKS, "json")
    tasks = {e.task for e in examples}
    picked = pick_subset(examples, len(tasks))
    assert picked == pick_subset(examples, len(tasks)) and {e.task for e in picked} == tasks
    assert [examples.index(e) for e in picked] == sorted(examples.index(e) for e in picked)


# -- a tiny run, trained for real ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(dataset, run): LoRA on tiny-smolvlm, 3 steps, checkpoints and evaluations (best.json) at steps 2 and 3."""
    from pipeline.presets import get_preset
    from pipeline.train import run_training

    root = tmp_path_factory.mktemp("evaluate")
    ds = make_dataset(root / "ds")
    cfg = get_preset("quick_test", model="tiny-smolvlm")
    cfg.data.path, cfg.training.output_dir = str(ds), str(root / "run")
    cfg.data.max_train_samples, cfg.data.max_eval_samples = 16, 4
    cfg.training.max_steps, cfg.training.save_steps, cfg.training.keep_checkpoints = 3, 2, 3
    result = run_training(cfg)
    assert result.status == "succeeded"
    return ds, root / "run"


@pytest.mark.slow
def test_resolve_checkpoint(trained: tuple[Path, Path]):
    from pipeline.rundir import read_best

    _, run = trained
    best = read_best(run)
    assert resolve_checkpoint(run, "best")[:2] == (run / best["checkpoint"], best["step"])
    assert resolve_checkpoint(run, "last")[:2] == (run / "adapter", 3)
    assert resolve_checkpoint(run, "3")[0] == resolve_checkpoint(run, "checkpoint-3")[0] == run / "checkpoint-3"
    with pytest.raises(UserError, match="no checkpoint-9 .*checkpoint-2, checkpoint-3"):
        resolve_checkpoint(run, 9)
    with pytest.raises(UserError, match="best, last or a step"):
        resolve_checkpoint(run, "newest")


def _scalars(log_dir: Path) -> dict[str, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"tensors": 0, "images": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    assert "evaluate_test/gallery_worst" in tags["images"]
    assert any(t.startswith("evaluate_test/samples") for t in tags["tensors"])
    return {t: acc.Scalars(t)[-1].value for t in tags["scalars"] if t.startswith("evaluate_")}


@pytest.mark.slow
def test_evaluate_run_end_to_end(trained: tuple[Path, Path]):
    from pipeline.evaluate import evaluate_run

    ds, run = trained
    result = evaluate_run(run, limit=6, batch_size=3)
    out = run / "eval" / "test"
    assert Path(result.out) == out and list(result.comparison) == ["model", "base", "baseline"]
    assert result.names == {"model": "fine-tuned", "base": "base (tiny-smolvlm)", "baseline": "mean-box baseline"}
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and {r["task"] for r in rows} <= set(TASKS)
    assert {"id", "prompt", "answer", "parsed", "truth", "iou", "parse_ok"} <= set(rows[0])
    metrics = json.loads((out / "metrics.json").read_text())
    assert REQUIRED <= set(metrics) and metrics["n"] == 6
    best = json.loads((run / "best.json").read_text())
    assert metrics["meta"]["checkpoint"] == best["checkpoint"] and metrics["meta"]["step"] == best["step"]
    assert metrics["parse_failure_rate"] == pytest.approx(sum(not r["parse_ok"] for r in rows) / 6)
    for key in METRIC_KEYS:  # a metric is null exactly when no evaluated task covers it
        assert (metrics[key] is None) == (result.metrics[key] is None)
    baseline = json.loads((out / "baseline" / "metrics.json").read_text())
    assert baseline["parse_failure_rate"] == 0.0 and baseline["n"] == 6
    assert (out / "base" / "predictions.jsonl").is_file()
    comparison = json.loads((out / "comparison.json").read_text())
    assert comparison["names"] == result.names
    assert comparison["metrics"]["baseline"]["miou"] == baseline["miou"]
    assert "| metric | fine-tuned | base (tiny-smolvlm) | mean-box baseline |" in (out / "comparison.md").read_text()
    for rel in ("gallery/worst.png", "gallery/best.png", "plots/confusion.png", "plots/comparison.png",
                "plots/loss.png", "plots/eval_metrics.png", "plots/confusion.html"):
        assert (out / rel).stat().st_size > 0, rel
    assert len(list((out / "gallery" / "worst").glob("*.png"))) >= 1
    scalars = _scalars(run / "tb")
    assert scalars["evaluate_test/parse_failure_rate"] == pytest.approx(metrics["parse_failure_rate"])
    assert scalars["evaluate_test_baseline/parse_failure_rate"] == 0.0
    # the default OUT of a run is replaced by the next evaluation; an explicit --out is never overwritten
    again = evaluate_run(run, limit=2, batch_size=2, with_base=False, with_baseline=False)
    assert json.loads((out / "metrics.json").read_text())["n"] == 2 and list(again.comparison) == ["model"]
    assert not (out / "base").exists()
    with pytest.raises(UserError, match="already exists"):
        evaluate_run(run, limit=2, out=run / "eval", with_base=False)


@pytest.mark.slow
def test_cli_checkpoint_compare_and_errors(trained: tuple[Path, Path], tmp_path: Path, capsys):
    from pipeline.cli import main

    ds, run = trained
    assert main(["evaluate", str(run), "--checkpoint", "3", "--limit", "3", "--batch-size", "3", "--no-base"]) == 0
    printed = capsys.readouterr().out
    assert "| metric | fine-tuned | mean-box baseline |" in printed and "eval/test-checkpoint-3" in printed
    assert main(["evaluate", str(run), "--checkpoint", "2", "--limit", "3", "--no-base", "--no-baseline"]) == 0
    assert "| metric | fine-tuned |\n" in capsys.readouterr().out
    cmp = tmp_path / "cmp"
    assert main(["evaluate", "--compare", str(run / "eval" / "test-checkpoint-2"),
                 str(run / "eval" / "test-checkpoint-3"), "--out", str(cmp)]) == 0
    text = (cmp / "comparison.md").read_text()
    assert "run/checkpoint-2" in text and "run/checkpoint-3" in text
    assert (cmp / "gallery" / "compare.png").is_file() and (cmp / "plots" / "metric_grid.png").is_file()
    capsys.readouterr()
    for argv, message in [([], "give a RUN folder, --model M or --endpoint URL"),
                          ([str(run), "--split", "nope"], "no nope split"),
                          (["--model", "tiny-smolvlm"], "--model needs --data"),
                          ([str(tmp_path)], "not a run folder"), (["--compare", str(cmp)], "--compare needs --out"),
                          (["--compare", str(cmp), str(tmp_path), "--out", str(tmp_path / "c2")], "not an evaluation")]:
        assert main(["evaluate", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error:") and message in err and "Traceback" not in err
    assert not (tmp_path / "c2").exists()


@pytest.mark.slow
def test_evaluate_model_without_adapter(trained: tuple[Path, Path], tmp_path: Path):
    from pipeline.evaluate import evaluate_model

    ds, run = trained
    result = evaluate_model("tiny-smolvlm", dataset=ds, split="val", limit=3, batch_size=3, out=tmp_path / "o")
    assert list(result.comparison) == ["model", "baseline"] and result.names["model"] == "tiny-smolvlm"
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["meta"]["split"] == "val"
    adapter = evaluate_model("tiny-smolvlm", adapter=run / "adapter", dataset=ds, limit=2, out=tmp_path / "a",
                             with_baseline=False)
    assert list(adapter.comparison) == ["model", "base"] and adapter.names["model"] == "fine-tuned"
    with pytest.raises(UserError, match="not a LoRA adapter"):
        evaluate_model("tiny-smolvlm", adapter=tmp_path, dataset=ds)


def _plain_folder(key: str, out: Path) -> Path:
    """A model folder as LLaMA-Factory / plain transformers write it: save_pretrained only, no studio files."""
    from pipeline.models import load_model, load_processor

    load_model(key).save_pretrained(out)
    load_processor(key).save_pretrained(out)
    assert not (out / "studio.json").exists() and not (out / "studio_model.json").exists()
    return out


@pytest.mark.slow
def test_a_folder_trained_elsewhere_is_scored_with_geometry(trained: tuple[Path, Path], tmp_path: Path, capsys):
    from pipeline.cli import main
    from pipeline.evaluate import model_target

    ds, _ = trained
    folder = _plain_folder("tiny-llava", tmp_path / "lf-output")
    inferred = model_target(str(folder))
    assert inferred.convention == "llava" and "model_type 'llava'" in inferred.notes[0]  # LLaVA-1.5's convention
    assert main(["evaluate", "--model", str(folder), "--data", str(ds), "--convention", "json", "--limit", "3",
                 "--batch-size", "3", "--out", str(tmp_path / "e")]) == 0
    assert "| metric | " in capsys.readouterr().out
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert metrics["meta"]["convention"] == "json" and metrics["n"] == 3 and "miou" in metrics
    rows = [json.loads(line) for line in (tmp_path / "e" / "predictions.jsonl").read_text().splitlines()]
    assert all("iou" in row and "truth" in row for row in rows)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "mystery", "architectures": ["X"]}))
    with pytest.raises(UserError, match="pass --convention"):
        model_target(str(folder))
    with pytest.raises(UserError, match="unknown convention"):
        model_target(str(folder), convention="nope")


@pytest.mark.slow
def test_app_service_scores_an_uploaded_model_folder(studio_home: Path, tmp_path: Path):
    import shutil

    from pipeline import service

    make_dataset(studio_home / "datasets" / "elsewhere-ds")
    folder = _plain_folder("tiny-llava", tmp_path / "lf-llava")
    archive = shutil.make_archive(str(tmp_path / "lf-llava"), "zip", tmp_path, "lf-llava")
    assert service.import_model_zip(archive) == "lf-llava" and "lf-llava" in service.model_folder_choices()
    assert (studio_home / "models" / "lf-llava" / "config.json").is_file() and folder.is_dir()
    with pytest.raises(UserError, match="already exists"):
        service.import_model_zip(archive)
    info, gallery = service.evaluate_folder("lf-llava", "elsewhere-ds", "test", 2, convention="json")
    assert info["columns"][0] == "metric" and any(row[0] == "miou" for row in info["rows"])
    assert info["model"] == "lf-llava" and isinstance(gallery, list)
    with pytest.raises(UserError, match="no model folder"):
        service.evaluate_folder("missing", "elsewhere-ds")


def test_family_of_config_reads_model_type_then_architectures():
    from pipeline.registry import family_of_config, spec_for_config

    assert family_of_config({"model_type": "idefics3"}) == "smolvlm"
    qwen = {"model_type": "x", "architectures": ["Qwen2_5_VLForConditionalGeneration"]}
    assert family_of_config(qwen) == "qwen2_5_vl"
    assert family_of_config({"architectures": ["LlavaOnevisionForConditionalGeneration"]}) == "llava_onevision"
    assert family_of_config({"model_type": "bert"}) is None and spec_for_config({"model_type": "bert"}) is None
    assert spec_for_config({"model_type": "qwen2_vl"}).convention == "qwen2_vl"
    assert spec_for_config({"model_type": "llava"}).key == "llava-1.5-7b"


# -- during training -------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_geometry_callback_in_a_real_trainer(trained: tuple[Path, Path], tmp_path: Path):
    from transformers import Trainer, TrainingArguments

    from pipeline.callbacks import EarlyStopping
    from pipeline.collate import VisionLanguageCollator
    from pipeline.eval_callback import GeometryEvalCallback
    from pipeline.models import load_model, load_processor
    from pipeline.records import read_records
    from pipeline.train import RowDataset

    ds, _ = trained
    processor = load_processor("tiny-smolvlm")
    model = load_model("tiny-smolvlm", device="cpu")
    train = build_examples(read_records(ds / "splits" / "train.jsonl"), ["grounding"], "json")[:4]
    rows = [{"id": e.id, "image": str(ds / e.image), "prompt": e.prompt, "answer": e.answer} for e in train]
    geo = GeometryEvalCallback.for_dataset(processor, ds, read_records(ds / "splits" / "val.jsonl"),
                                           ["grounding", "counting"], "json", samples=3, every_n_steps=1,
                                           batch_size=3)
    early = EarlyStopping("eval_miou", "max", patience=10)
    args = TrainingArguments(output_dir=str(tmp_path / "t"), max_steps=2, per_device_train_batch_size=2,
                             per_device_eval_batch_size=2, eval_strategy="no", save_strategy="no", logging_steps=1,
                             report_to="none", use_cpu=True, remove_unused_columns=False, label_names=["labels"],
                             prediction_loss_only=True, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=RowDataset(rows), eval_dataset=RowDataset(rows[:2]),
                      data_collator=VisionLanguageCollator(processor), callbacks=[geo, early])
    trainer.train()
    evals = [e for e in trainer.state.log_history if "eval_loss" in e]
    assert [e["step"] for e in evals] == [1, 2]  # forced by every_n_steps=1 (the Trainer itself never evaluates)
    assert all(0.0 <= e["eval_miou"] <= 1.0 and e["eval_geometry_n"] == 3.0 for e in evals)
    assert all("eval_count_accuracy" in e and "eval_parse_failure_rate" in e for e in evals)
    assert early.best is not None and [h["step"] for h in geo.history] == [1, 2]
    model.train()
    assert geo.compute(model, 99)["eval_geometry_n"] == 3.0 and model.training  # left in training mode
