"""Try a trained run on one image: the fine-tuned model and its base model answer the same prompt; the answers are
parsed with the run's coordinate convention and drawn (truth green when a held-out frame was picked, prediction
magenta), as the evaluation gallery draws them.

    from pipeline.try_model import try_run, held_out_frames
    result = try_run("STUDIO_HOME/runs/RUN", "frame.jpg", "Find every circle in the image.")
    result["answer"], result["boxes"], result["parse_ok"], result["base"]["answer"]
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from .errors import UserError

_CACHE: dict[str, Any] = {}  # the last loaded (run, checkpoint): trying several images does not reload it
_LOCK = threading.Lock()
HELD_OUT = ("test", "val")


def _loaded(run_dir: Path, checkpoint: str) -> tuple[Any, Any, Any]:
    from .evaluate import _load, run_target

    target = run_target(run_dir, checkpoint)
    key = f"{run_dir}:{target.checkpoint}"
    if _CACHE.get("key") != key:
        _CACHE.clear()
        processor, model = _load(target)
        _CACHE.update(key=key, target=target, processor=processor, model=model)
    return _CACHE["target"], _CACHE["processor"], _CACHE["model"]


def _parse(answer: str, target: Any, width: int, height: int) -> dict[str, Any]:
    from .coords import ParseError, get_convention

    options = {"max_pixels": target.max_pixels} if target.max_pixels and target.convention in (
        "qwen2_5_vl", "qwen3_vl") else {}
    try:
        conv = get_convention(target.convention or "json", **options)
        parsed = conv.parse_boxes(answer, width, height)
        error = None
    except ParseError as exc:
        parsed, error = [], str(exc)
    except Exception as exc:  # noqa: BLE001 - a convention may refuse an answer in its own way
        parsed, error = [], f"{type(exc).__name__}: {exc}"
    boxes = [{"label": label, "box": [round(float(v), 1) for v in box]} for label, box in parsed]
    return {"answer": answer, "boxes": boxes, "parse_ok": error is None, "parse_error": error}


def try_run(run_dir: str | Path, image: str | Path, prompt: str, checkpoint: str = "best", with_base: bool = True,
            max_new_tokens: int = 64) -> dict[str, Any]:
    """{"answer", "boxes" [{"label", "box" in image pixels}], "parse_ok", "parse_error", "checkpoint", "convention",
    "width", "height", "base": the same for the base model (None without with_base)}."""
    from .collate import load_image
    from .generation import generate_answers
    from .tasks import Example

    prompt = (prompt or "").strip()
    if not prompt:
        raise UserError("type a prompt, e.g. 'Find every circle in the image.'")
    picture = load_image(str(image), "image")
    example = Example("try", "try", "grounding", str(image), prompt, "", picture.width, picture.height)
    with _LOCK:  # one model in memory, one generation at a time
        target, processor, model = _loaded(Path(run_dir), checkpoint or "best")
        kwargs: dict[str, Any] = {"batch_size": 1, "max_new_tokens": max_new_tokens, "image_cap": target.image_cap,
                                  "progress": False}
        answer = generate_answers(model, processor, [example], desc="try", **kwargs)[0]
        base_answer = None
        if with_base and target.adapter:
            with model.disable_adapter():
                base_answer = generate_answers(model, processor, [example], desc="try base", **kwargs)[0]
    result = _parse(answer, target, picture.width, picture.height)
    result.update(checkpoint=target.checkpoint, step=target.step, convention=target.convention,
                  width=picture.width, height=picture.height, model=target.base, notes=list(target.notes))
    result["base"] = _parse(base_answer, target, picture.width, picture.height) if base_answer is not None else None
    if with_base and base_answer is None:
        result["notes"].append("a full fine-tune has no adapter to switch off: the base model was not compared")
    return result


def held_out_frames(dataset_root: str | Path, limit: int = 200) -> list[dict[str, Any]]:
    """Frames of the dataset's test split (else val) with their truth: [{"id", "split", "image" (absolute),
    "objects": [{"label", "box"}]}]; UserError when the dataset has no held-out split."""
    from .dataset import open_dataset

    opened = open_dataset(dataset_root)
    names = opened.split_names()
    split = next((name for name in HELD_OUT if name in names), None)
    if split is None:
        raise UserError("the run's dataset has no test or val split (split it in the Quality & Split tab): "
                        "upload an image instead")
    return [{"id": r.id, "split": split, "image": str(opened.root / r.image),
             "objects": [{"label": o.label, "box": list(o.bbox)} for o in r.objects]}
            for r in opened.split(split)[:limit]]


def truth_for(objects: list[dict[str, Any]], prompt: str) -> list[dict[str, Any]]:
    """The truth boxes the prompt asks about: the objects whose label it names, else every object."""
    text = (prompt or "").lower()
    named = [o for o in objects if str(o.get("label", "")).lower() in text]
    return named or list(objects)


def draw(image: str | Path, result: dict[str, Any] | None, truth: list[dict[str, Any]] | None, title: str,
         side: int = 384) -> Any:
    """The image with the truth (green) and the parsed answer (magenta) drawn, captioned with the answer."""
    from .collate import load_image
    from .gallery import render_overlay

    frame = load_image(str(image), "image")
    result = result or {"answer": "", "boxes": [], "parse_ok": True}
    row = {"task": "grounding", "truth": {"boxes": [t["box"] for t in truth or []]},
           "parsed": {"boxes": [b["box"] for b in result["boxes"]]}, "parse_ok": result["parse_ok"],
           "answer": result["answer"], "label": None}
    lines = [f"{title} · {len(result['boxes'])} box(es)" + ("" if result["parse_ok"] else " · did not parse"),
             f"answer: {result['answer'] or '(empty)'}",
             "truth: green" if truth else "no truth (uploaded image)"]
    return render_overlay(frame, row, side=side, lines=lines)
