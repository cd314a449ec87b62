"""The export's README.md: a Hub model card from pipeline/templates/model_card.md.j2 via huggingface_hub.ModelCard.

Front matter (ModelCardData): base_model, library_name, pipeline_tag, licence, tags, datasets, model-index results
from RUN/eval/<split>/metrics.json. Body: the data (dataset.json, split.yaml), hyperparameters, hardware and time,
the training curve (training_curve.png from progress.jsonl), metrics, prompt/answer format and usage code that runs
against the export. Only names, counts and fingerprints are used, never a path.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import UserError
from .rundir import eval_metric_files, run_events

TEMPLATE = "model_card.md.j2"
CURVE_FILE = "training_curve.png"
HF_LICENSES = {"apache-2.0", "mit", "llama2", "llama3", "llama3.1", "gemma", "cc-by-4.0", "cc-by-nc-4.0",
               "openrail", "bsd-3-clause", "other"}
METRICS = {"miou": "mean box IoU", "ap50": "AP@0.5", "map": "mAP@[.5:.95]", "mask_iou": "mask IoU", "dice": "Dice",
           "label_accuracy": "label accuracy", "count_accuracy": "count accuracy",
           "track_miou": "track mIoU (later frames)", "track_lost_rate": "track lost rate",
           "visibility_f1": "visibility F1", "unique_accuracy": "count_unique accuracy",
           "unique_mae": "count_unique MAE", "parse_failure_rate": "unparseable answers"}
METHODS = {"lora": "LoRA", "qlora": "QLoRA (4-bit base)", "full": "full fine-tuning", "grpo": "GRPO refinement"}
CONVENTION_TEXT = {
    "json": "compact JSON `[{\"label\": ..., \"box\": [x1, y1, x2, y2]}]`, integers 0-100 relative to the image.",
    "llava": "plain text [x1, y1, x2, y2] normalised to 0-1.",
    "qwen2_vl": "`<|object_ref_start|>label<|object_ref_end|><|box_start|>(x1,y1),(x2,y2)<|box_end|>`, 0-1000.",
    "qwen2_5_vl": "JSON `[{\"bbox_2d\": [x1, y1, x2, y2], \"label\": ...}]` in pixels of the processor-resized image.",
    "qwen3_vl": "a JSON list with `bbox_2d` relative 0-1000.",
    "paligemma": "`<locYYYY><locXXXX><locYYYY><locXXXX> label` (y/x over 1024 bins).",
    "florence2": "`label<loc_x1><loc_y1><loc_x2><loc_y2>` (1000 bins per axis).",
    "internvl": "`<ref>label</ref><box>[[x1, y1, x2, y2]]</box>`, 0-1000.",
}


def template_text() -> str:
    """The card template shipped inside the package."""
    return resources.files("pipeline").joinpath("templates", TEMPLATE).read_text(encoding="utf-8")


def hub_license(text: str) -> tuple[str, str | None]:
    """(Hub licence id, licence_name for 'other') from a registry licence text like 'gemma (gated)'."""
    head = (text or "").split(" ")[0].strip().lower()
    if head in HF_LICENSES:
        return head, None
    return "other", head or "unknown"


def render_training_curve(events: list[dict[str, Any]], out_png: str | Path) -> bool:
    """Training (and evaluation) loss against step as a PNG; False when the run logged no loss."""
    train = [(e["step"], e["loss"]) for e in events if e.get("event") == "log" and _num(e.get("loss"))]
    evals = [(e["step"], e["eval_loss"]) for e in events if e.get("event") == "eval" and _num(e.get("eval_loss"))]
    if not train and not evals:
        return False
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    for points, name, style in ((train, "train loss", "-"), (evals, "eval loss", "o--")):
        if points:
            ax.plot(*zip(*sorted(dict(points).items()), strict=True), style, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, metadata={"Software": None})
    plt.close(fig)
    return True


def _num(value: Any) -> bool:
    return isinstance(value, int | float) and value == value


def dataset_summary(dataset: Path | None) -> dict[str, Any] | None:
    """Frames, objects per label, sources (format + fingerprint only) and the split from a dataset folder."""
    from .dataset import meta_path, split_config_path

    if dataset is None or not meta_path(dataset).is_file():
        return None
    meta = json.loads(meta_path(dataset).read_text(encoding="utf-8"))
    sources = [{"format": s.get("format", "?"), "fingerprint": s.get("fingerprint") or "-",
                "fps": s.get("fps_video") or s.get("fps_claimed") or "-", "overlay_frames": s.get("overlay_frames", 0)}
               for s in meta.get("sources", []) if isinstance(s, dict)]
    labels = meta.get("labels") or {}
    summary = {"frames": meta.get("frames", "?"), "objects": meta.get("objects", "?"), "sources": sources,
               "labels": sorted(labels.items()) if isinstance(labels, dict) else [(lab, "?") for lab in labels]}
    summary["split"] = _split_summary(split_config_path(dataset))
    return summary


def _split_summary(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    import yaml

    split = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    counts = split.get("counts") or {}
    return {"strategy": split.get("strategy", "?"), "ratios": split.get("ratios", []), "seed": split.get("seed"),
            "counts": [(k, v) for k, v in counts.items() if k in ("train", "val", "test")]}


def evaluations(run: Path) -> list[dict[str, Any]]:
    """Per evaluation folder RUN/eval/<name>/: metric rows for base model, mean-box baseline and fine-tuned."""
    from .leaks import local_path_needles

    found = []
    for path in eval_metric_files(run):
        after = _read_json(path)
        if after is None:
            continue
        video = any(_num(after.get(k)) for k in ("track_miou", "visibility_f1", "unique_accuracy"))
        baseline = "baseline (mean box; track: copy the given box, visibility: always visible, count_unique: " \
                   "training mode)" if video else "mean-box baseline"
        candidates = [(title, _read_json(path.parent / folder / "metrics.json") or after.get(folder))
                      for title, folder in (("base model", "base"), (baseline, "baseline"),
                                            ("parent run (before GRPO)", "parent"))]
        columns: list[tuple[str, dict[str, Any]]] = [(t, m) for t, m in candidates if isinstance(m, dict)]
        refined = any(title.startswith("parent") for title, _ in columns)
        columns.append(("GRPO-refined" if refined else "fine-tuned", after))
        rows = [{"key": key, "name": name, "value": after[key], "cells": [_fmt(m.get(key)) for _, m in columns]}
                for key, name in METRICS.items() if _num(after.get(key))]
        comparison = path.with_name("comparison.md")
        text = comparison.read_text(encoding="utf-8").strip() if comparison.is_file() else ""
        if any(needle in text for needle in local_path_needles([run])):
            text = ""  # never publish a local path
        found.append({"split": path.parent.name, "n": after.get("n", "?"), "rows": rows,
                      "columns": [title for title, _ in columns], "comparison": text})
    return found


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if _num(value) else "-"


def card_data(info: Any, studio: dict[str, Any], *, model_name: str, datasets: list[str] | None,
              evals: list[dict[str, Any]]) -> Any:
    """ModelCardData for the front matter (base_model only when it is a Hub id)."""
    from huggingface_hub import EvalResult, ModelCardData

    spec = info.spec
    license_id, license_name = hub_license(spec.license)
    tags = ["sam2-vlm-studio", "vision-language", "grounding", "sam2", spec.family, info.method,
            *studio.get("tasks", [])]
    if studio["mode"] == "adapter":
        tags += ["peft", "lora"]
    dataset_type = datasets[0] if datasets else "sam2-annotations"
    fingerprint = studio.get("dataset_fingerprint") or "local"
    results = [EvalResult(task_type="image-text-to-text", task_name="box grounding", dataset_type=dataset_type,
                          dataset_name=f"SAM 2 annotations {fingerprint}", dataset_split=ev["split"],
                          metric_type=row["key"], metric_name=row["name"], metric_value=round(row["value"], 4))
               for ev in evals for row in ev["rows"]]
    return ModelCardData(
        base_model=spec.hub_id if "/" in spec.hub_id else None, datasets=datasets or None,
        library_name="peft" if studio["mode"] == "adapter" else "transformers", pipeline_tag="image-text-to-text",
        license=license_id, license_name=license_name, tags=list(dict.fromkeys(tags)), model_name=model_name,
        eval_results=results or None)


def hyperparameters(info: Any) -> list[tuple[str, Any]]:
    """(name, value) rows for the card from RUN/config.yaml."""
    c = info.config
    t, lora = c.training, c.lora
    rows = [("method", METHODS.get(t.method, t.method)), ("learning rate", t.learning_rate),
            ("scheduler", f"{t.scheduler}, warmup {t.warmup_ratio}"), ("batch size", t.batch_size),
            ("gradient accumulation", t.grad_accum),
            ("steps" if t.max_steps > 0 else "epochs", t.max_steps if t.max_steps > 0 else t.epochs),
            ("weight decay", t.weight_decay), ("max grad norm", t.max_grad_norm), ("precision", t.precision),
            ("max length", c.data.max_length), ("max image size", c.data.max_image_size or "model default"),
            ("gradient checkpointing", t.gradient_checkpointing), ("seed", t.seed)]
    if info.spec.token_rule == "smart_resize":  # Qwen families: the grid the images (and pixel answers) are on
        from .registry import QWEN_MAX_PIXELS

        rows.append(("Qwen image cap (processor max_pixels)", c.data.max_pixels or QWEN_MAX_PIXELS))
    if t.method == "grpo":
        g = c.grpo
        rows[1:1] = [("refined from", f"`{Path(g.parent).name}` ({METHODS.get(info.method, info.method)})"),
                     ("GRPO completions per prompt", g.num_generations), ("GRPO KL beta", g.beta),
                     ("GRPO temperature / loss", f"{g.temperature:g} / {g.loss_type}"),
                     ("GRPO reward weights", f"box {g.reward_box:g}, mask {g.reward_mask:g}, count "
                      f"{g.reward_count_exact:g} (near {g.reward_count_near:g}), label {g.reward_label:g}, none "
                      f"{g.reward_negative:g}, parse failure {g.reward_parse_failure:g}")]
    if info.method != "full":
        targets = lora.target_modules or info.spec.lora_targets
        rows[1:1] = [("LoRA r / alpha / dropout", f"{lora.r} / {lora.alpha:g} / {lora.dropout:g}"),
                     ("LoRA targets", ", ".join(targets) if isinstance(targets, list) else targets)]
    return rows


SMOKE_TEST_STEPS = 50  # fewer optimizer steps than this: a smoke test (quick_test trains 10)


def smoke_test_note(events: list[dict[str, Any]]) -> str | None:
    """The card's warning for a run that trained too few steps for its metrics to mean anything; None otherwise."""
    step = next((e.get("step") for e in reversed(events) if e.get("event") == "end" and e.get("step") is not None),
                None)
    if step is None or int(step) >= SMOKE_TEST_STEPS:
        return None
    return (f"**Smoke test.** This model trained only {step} steps (e.g. the quick_test preset): it checks that the "
            "pipeline works end to end. Its metrics are expected to be near zero and say nothing about the data.")


def hardware_and_time(events: list[dict[str, Any]]) -> tuple[str, str]:
    """('cpu: 2 CPU cores, ...', 'Trained 2 steps in 15 s (...)') from the progress events."""
    starts = [e for e in events if e.get("event") in ("start", "resume")]
    ends = [e for e in events if e.get("event") == "end"]
    hardware = str(starts[-1].get("hardware", "not recorded")) if starts else "not recorded"
    if starts and starts[-1].get("world_size", 1) > 1:
        hardware += f", {starts[-1]['world_size']} processes"
    seconds = sum(float(e.get("train_runtime") or 0) for e in ends)
    step = next((e.get("step") for e in reversed(ends) if e.get("step") is not None), None)
    timing = f"Trained {step} steps in {seconds:.0f} s" if step is not None else "Training time not recorded"
    if starts and starts[0].get("memory_estimate_gib") is not None:
        timing += f"; estimated peak memory {starts[0]['memory_estimate_gib']} GiB"
    if len(starts) > 1:
        timing += f"; resumed {len(starts) - 1} time(s)"
    return hardware, timing + "."


def example_answer(convention: str, labels: list[str]) -> str:
    """An answer string in the convention for one made-up box on a 640x480 image."""
    from .coords import get_convention

    label = labels[0] if labels else "object"
    return get_convention(convention).encode_boxes([(label, [64, 48, 320, 240])], 640, 480)


def card_context(info: Any, studio: dict[str, Any], *, model_ref: str, parity: dict[str, Any] | None,
                 curve: bool, evals: list[dict[str, Any]]) -> dict[str, Any]:
    """Everything the template's body uses."""
    spec, events = info.spec, run_events(info.run)
    labels = sorted(studio.get("label_map") or {})
    templates = studio.get("prompt_templates") or {}
    first = next(iter(templates.values()), ["Find every {label} in the image."])
    example_prompt = (first[0] if first else "Detect {label}.").format(label=labels[0] if labels else "object",
                                                                      region="[x1, y1, x2, y2]", where="", k=4)
    hardware, timing = hardware_and_time(events)
    license_id, _ = hub_license(spec.license)
    rev = studio.get("base_revision")
    base_line = f"[{spec.hub_id}](https://huggingface.co/{spec.hub_id})" if "/" in spec.hub_id else (
        f"`{spec.key}` (an offline tiny model built by SAM2 VLM Studio)")
    context = {
        "title": model_ref, "model_ref": model_ref, "mode": studio["mode"], "dtype": studio.get("dtype"),
        "mode_phrase": "LoRA adapter (load it on the base model)" if studio["mode"] == "adapter" else
        "complete model (adapter merged into the base)" if info.method != "full" else "fully fine-tuned model",
        "base_phrase": f"`{spec.hub_id}`", "base_line": base_line + (f" @ `{rev}`" if rev else ""),
        "method_name": METHODS.get(info.method, info.method) + (
            " + GRPO refinement (geometry rewards)" if info.config.training.method == "grpo" else ""),
        "parent_run": Path(info.config.grpo.parent).name if info.config.training.method == "grpo" else None,
        "checkpoint": studio.get("checkpoint"),
        "step": studio.get("step"), "convention": studio["convention"],
        "convention_text": CONVENTION_TEXT.get(studio["convention"], ""), "license_text": spec.license or license_id,
        "tasks": studio.get("tasks") or ["grounding"], "fingerprint": studio.get("dataset_fingerprint"),
        "data": dataset_summary(info.dataset), "hyperparameters": hyperparameters(info), "hardware": hardware,
        "timing": timing, "curve": curve, "evaluations": evals, "parity": parity if parity and parity.get("checked")
        else None, "prompt_templates": sorted(templates.items()), "example_prompt": example_prompt,
        "example_answer": example_answer(studio["convention"], labels), "smoke_test": smoke_test_note(events),
    }
    context["usage"] = usage_code(spec, studio, model_ref, example_prompt)

    context["usage_openai"] = openai_usage_code(studio, example_prompt)
    return context


def usage_code(spec: Any, studio: dict[str, Any], model_ref: str, prompt: str) -> str:
    """Python that loads this export with transformers (+ peft), answers one image and parses the boxes."""
    adapter = studio["mode"] == "adapter"
    rev = studio.get("base_revision")
    revision = f", revision={json.dumps(rev)}" if rev else ""
    lines = (["from peft import PeftModel"] if adapter else []) + [
        "from PIL import Image", "from transformers import AutoModelForImageTextToText, AutoProcessor", ""]
    if adapter and spec.tiny:
        lines += ["from pipeline.models import resolve_model_path  # the base is built offline by SAM2 VLM Studio",
                  "", f"BASE = resolve_model_path({json.dumps(spec.key)})"]
    elif adapter:
        lines += [f"BASE = {json.dumps(spec.hub_id)}"]
    lines += [f"MODEL = {json.dumps(model_ref)}  # the Hub repo id, or the path of the downloaded export folder",
              'IMAGE = "frame.jpg"', f"PROMPT = {json.dumps(prompt)}", "",
              "processor = AutoProcessor.from_pretrained(MODEL)"]
    if adapter:
        lines += [f"model = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(BASE{revision}), "
                  "MODEL).eval()"]
    else:
        lines += ["model = AutoModelForImageTextToText.from_pretrained(MODEL).eval()"]
    lines += ['image = Image.open(IMAGE).convert("RGB")']
    if studio.get("max_image_size"):
        lines += [f"image.thumbnail(({studio['max_image_size']}, {studio['max_image_size']}))  # as in training"]
    lines += [
        'messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]',
        "text = processor.apply_chat_template(messages, add_generation_prompt=True)",
        "bos = processor.tokenizer.bos_token",
        "inputs = processor(images=[image], text=text, add_special_tokens=not (bos and text.startswith(bos)),",
        '                   return_tensors="pt").to(model.device, dtype=model.dtype)',
        "output = model.generate(**inputs, max_new_tokens=256, do_sample=False)",
        'answer = processor.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=False)',
        'for end in ("<end_of_utterance>", "<|im_end|>", "</s>", "<|endoftext|>", "<eos>", "<end_of_turn>"):',
        "    answer = answer.split(end)[0]",
        'print("answer:", answer.strip())', "",
        "try:  # with SAM2 VLM Studio installed: the boxes in image pixels",
        "    from pipeline.coords import get_convention",
        "",
        f"    convention = get_convention({json.dumps(studio['convention'])})",
        '    print("boxes:", convention.parse_boxes(answer, image.width, image.height))',
        "except (ImportError, ValueError) as exc:",
        '    print("boxes: not parsed:", exc)',
    ]
    return "\n".join(lines)


def write_card(info: Any, export_dir: Path, studio: dict[str, Any], *, repo_id: str, datasets: list[str] | None,
               parity: dict[str, Any] | None) -> Path:
    """Render training_curve.png and README.md into the export folder."""
    from huggingface_hub import ModelCard

    curve = render_training_curve(run_events(info.run), export_dir / CURVE_FILE)
    evals = evaluations(info.run)
    data = card_data(info, studio, model_name=repo_id, datasets=datasets, evals=evals)
    context = card_context(info, studio, model_ref=repo_id, parity=parity, curve=curve, evals=evals)
    try:
        card = ModelCard.from_template(data, template_str=template_text(), **context)
    except Exception as exc:  # jinja errors name the template line; surface them as one line
        raise UserError(f"model card template failed: {type(exc).__name__}: {exc}") from None
    path = export_dir / "README.md"
    path.write_text(str(card).rstrip() + "\n", encoding="utf-8")
    return path


def openai_usage_code(studio: dict[str, Any], prompt: str) -> str:
    """The card's OpenAI-client example: serve the export, send one image, parse the boxes."""
    cap = studio.get("max_image_size")
    lines = [
        "# python -m pipeline serve EXPORT --port 8000   (SAM2 VLM Studio: transformers serve, or --engine vllm)",
        "# Any OpenAI-compatible client works:",
        "import base64", "import io", "", "from openai import OpenAI", "from PIL import Image", "",
        'client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")',
        "served = client.models.list().data[0].id",
        'image = Image.open("frame.jpg").convert("RGB")']
    if cap:
        lines += [f"image.thumbnail(({cap}, {cap}))  # as in training"]
    lines += [
        "buffer = io.BytesIO()", 'image.save(buffer, format="PNG")',
        'url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()',
        "reply = client.chat.completions.create(model=served, temperature=0, max_tokens=256, messages=[",
        '    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},',
        f'                                 {{"type": "text", "text": {json.dumps(prompt)}}}]}}])',
        "answer = reply.choices[0].message.content.strip()",
        'print("answer:", answer)',
        "# boxes in image pixels, with SAM2 VLM Studio's parser:",
        "# from pipeline.coords import get_convention",
        f"# get_convention({json.dumps(studio.get('convention', 'json'))}).parse_boxes(answer, image.width, "
        "image.height)",
    ]
    return "\n".join(lines)
