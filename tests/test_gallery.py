"""Gallery overlays (PIL) and evaluation plots: files exist, sizes are right, truth and prediction are drawn."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.gallery import (
    CAPTION_LINES,
    LINE_HEIGHT,
    PRED,
    TRUTH,
    comparison_grid,
    rank_rows,
    render_overlay,
    write_gallery,
)

GREY = (120, 120, 120)
STRIP = CAPTION_LINES * LINE_HEIGHT + 6


def row(id_: str, score: float, task: str = "grounding", pred: list | None = None, parse_ok: bool = True,
        image: str = "f.png") -> dict:
    truth = {"label": "circle", "boxes": [[8, 8, 32, 32]]} if task != "polygon" else {
        "label": "circle", "box": [8, 8, 32, 32], "polygon": [8, 8, 32, 8, 32, 32, 8, 32]}
    if task == "negative":
        truth = {"label": "square", "boxes": []}
    parsed = None if not parse_ok else (
        {"polygons": pred or [], "labels": ["circle"]} if task == "polygon" else {"boxes": pred or [], "labels": []})
    return {"id": id_, "task": task, "label": truth["label"], "image": image, "width": 64, "height": 64,
            "truth": truth, "parsed": parsed, "parse_ok": parse_ok, "score": score, "iou": score,
            "answer": "garbage" if not parse_ok else "[...]", "truth_answer": "[...]", "error": None}


@pytest.fixture()
def frames(tmp_path: Path) -> Path:
    Image.new("RGB", (64, 64), GREY).save(tmp_path / "f.png")
    return tmp_path


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def test_overlay_draws_truth_and_prediction():
    frame = Image.new("RGB", (64, 64), GREY)
    out = render_overlay(frame, row("a", 0.3, pred=[[16, 16, 48, 48]]), side=256)
    assert out.size == (256, 256 + STRIP)
    px = _pixels(out)
    assert tuple(px[32, 60]) == TRUTH  # top edge of the truth box (y = 8 * 4), inside its span
    assert tuple(px[64, 120]) == PRED  # top edge of the predicted box (y = 16 * 4)
    assert tuple(px[200, 10]) == GREY  # far from both: the frame itself
    drawn = (px[:256] != np.array(GREY)).any(axis=2)
    assert 500 < drawn.sum() < 256 * 256 // 4
    # a parse failure: no prediction, a border around the whole frame
    failed = _pixels(render_overlay(frame, row("b", 0.0, parse_ok=False), side=128))
    assert tuple(failed[0, 0]) == PRED and tuple(failed[64, 127]) == PRED


def test_overlay_polygon_and_downscaled_large_frame():
    frame = Image.new("RGB", (640, 320), GREY)
    polygon_row = row("p", 0.5, task="polygon", pred=[[100, 100, 300, 100, 300, 200]])
    out = render_overlay(frame, polygon_row, side=320)
    assert out.size == (320, 160 + STRIP)
    px = _pixels(out)[:160]
    assert (px == np.array(PRED)).all(axis=2).sum() > 50 and (px == np.array(TRUTH)).all(axis=2).sum() > 20


def test_gallery_worst_and_best_first(frames: Path, tmp_path: Path):
    rows = [row(f"g{k}", s, pred=[[8 + k, 8, 32, 32]]) for k, s in enumerate([0.9, 0.1, 0.5, 0.7])]
    rows += [row("c", 0.0, task="counting"), row("neg-ok", 1.0, task="negative"),
             row("neg-fp", 0.0, task="negative", pred=[[0, 0, 10, 10]]), row("bad", 0.0, parse_ok=False),
             row("missing", 0.2, image="gone.png")]
    assert [r["id"] for r in rank_rows(rows)] == ["bad", "neg-fp", "g1", "missing", "g2", "g3", "g0"]
    paths = write_gallery(rows, frames, tmp_path / "gallery", count=3, columns=2)
    worst = Image.open(paths["worst"])
    assert worst.size == (2 * (256 + 4) + 4, 2 * (256 + STRIP + 4) + 4)
    assert sorted(p.name for p in (tmp_path / "gallery" / "worst").iterdir()) == [
        "01_bad.png", "02_neg-fp.png", "03_g1.png"]
    assert sorted(p.name for p in (tmp_path / "gallery" / "best").iterdir()) == [
        "01_g0.png", "02_g3.png", "03_g2.png"]
    single = Image.open(tmp_path / "gallery" / "best" / "01_g0.png")
    assert single.size == (256, 256 + STRIP)
    frame = np.asarray(Image.new("RGB", (256, 256), GREY))
    assert (_pixels(single)[:256] != frame).any(axis=2).sum() > 500  # overlays drawn on the frame
    empty = write_gallery([row("c", 0.0, task="counting")], frames, tmp_path / "empty")
    assert Image.open(empty["worst"]).size == (256, 64)


def test_comparison_grid_columns(frames: Path, tmp_path: Path):
    first = [row("a", 0.2, pred=[[8, 8, 30, 30]]), row("b", 0.8, pred=[[8, 8, 32, 32]]), row("only", 0.0)]
    second = [row("a", 0.6, pred=[[9, 9, 31, 31]]), row("b", 0.9, pred=[[8, 8, 32, 32]])]
    path = comparison_grid({"checkpoint-2": first, "checkpoint-4": second}, frames, tmp_path / "c.png", side=128)
    image = Image.open(path)
    assert image.size == (2 * (128 + 4) + 4, (24 + 8) + 2 * (128 + STRIP + 4))


def test_evaluation_plots(tmp_path: Path):
    from pipeline.eval_plots import comparison_bars, confusion_matrix, metric_grid, training_curves

    table = {"labels": ["circle", "square"], "matrix": [[3, 1], [0, 2]]}
    files = confusion_matrix(table, tmp_path / "confusion")
    assert Image.open(files["png"]).size == (620, 520) and "circle" in files["html"].read_text()
    assert confusion_matrix(None, tmp_path / "none")["png"].is_file()
    summaries = {"fine-tuned": {"miou": 0.7, "ap50": 0.8, "count_mae": 1.0, "label_accuracy": None},
                 "base": {"miou": 0.0, "ap50": 0.0, "count_mae": 3.0, "label_accuracy": None}}
    bars = comparison_bars(summaries, tmp_path / "bars")
    assert Image.open(bars["png"]).size == (900, 450)
    html = bars["html"].read_text()
    assert '"miou","ap50"' in html.replace(" ", "") and "count_mae" not in html and "label_accuracy" not in html
    assert metric_grid(summaries, tmp_path / "grid")["png"].is_file()
    progress = tmp_path / "progress.jsonl"
    events = [{"event": "log", "step": s, "loss": 2.0 / s} for s in (1, 2, 3, 4)]
    events += [{"event": "eval", "step": s, "eval_loss": 1.5 / s, "eval_miou": 0.2 * s, "eval_runtime": 0.1}
               for s in (2, 4)]
    progress.write_text("".join(json.dumps(e) + "\n" for e in events))
    curves = training_curves(progress, tmp_path / "curves")
    assert curves["loss"].is_file() and curves["eval_metrics"].is_file()
    metric_html = (tmp_path / "curves" / "eval_metrics.html").read_text()
    assert '"name":"miou"' in metric_html.replace(" ", "") and "eval_runtime" not in metric_html
