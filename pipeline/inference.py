"""Run an export: load it (adapter on its base, or merged), answer image + prompt, parse and draw the boxes.

    from pipeline.inference import load_export, predict
    loaded = load_export("exports/shapes-lora")
    result = predict(loaded, "frame.jpg", "Find every circle in the image.")
    result["answer"], result["boxes"]   # boxes: [{"label": "circle", "box": [x1, y1, x2, y2]}] in image pixels

Also what deploy/ needs: `inference_requirements` (memory from the estimator) and `deploy_config`; serving
over the OpenAI API is pipeline/serve.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError
from .rundir import STUDIO_FILE, studio_path

DEPLOY_ENV = {
    "EXPORT_DIR": ("/model", "the export folder to serve (mounted or copied into the image)"),
    "PORT": ("8000", "HTTP port of the OpenAI-compatible server"),
    "HOST": ("0.0.0.0", "interface to listen on"),
    "DEVICE": ("auto", "auto | cpu | cuda (transformers engine)"),
    "DTYPE": ("auto", "auto (as saved) | float32 | bfloat16 | float16"),
    "HF_HOME": ("/cache/huggingface", "where the base model of an adapter export is cached"),
    "STUDIO_HOME": ("/data", "data home (offline tiny base models; the merged copy of a read-only adapter export)"),
}


@dataclass
class LoadedExport:
    """A loaded export: model (eval mode), processor and the export's studio.json."""

    model: Any
    processor: Any
    studio: dict[str, Any]


def read_studio(export_dir: str | Path) -> dict[str, Any]:
    """The export's studio.json; UserError when the folder is not an export."""
    folder = Path(export_dir).expanduser()
    try:
        studio = json.loads(studio_path(folder).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"not an export folder (no {STUDIO_FILE}); run `python -m pipeline export`", folder) from None
    except ValueError:
        raise UserError(f"{STUDIO_FILE} is not valid JSON", folder) from None
    if not isinstance(studio, dict) or "convention" not in studio:
        raise UserError(f"{STUDIO_FILE} has no coordinate convention", folder)
    return studio


def load_export(export_dir: str | Path, *, device: str | None = None, dtype: str = "auto") -> LoadedExport:
    """Load an adapter export onto its base model (resolved from the registry) or a merged export by itself."""
    from .models import load_model, load_processor

    folder = Path(export_dir).expanduser().resolve()
    studio = read_studio(folder)
    if (folder / "adapter_config.json").is_file():
        config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
        base = studio.get("model") or config.get("base_model_name_or_path")
        model = load_model(base, dtype=dtype, device=device, adapter=str(folder))
        processor = type(load_processor(base)).from_pretrained(str(folder))  # the base's class, the export's files
    else:
        model = load_model(str(folder), dtype=dtype, device=device)
        processor = load_processor(str(folder))
    return LoadedExport(model.eval(), processor, studio)


def generate(model: Any, processor: Any, rows: list[dict[str, Any]], max_new_tokens: int = 64) -> tuple[list[str], Any]:
    """Greedy answers for rows {"image", "prompt"} and the logits at the last prompt position (float32, CPU)."""
    import torch

    from .collate import answer_start, build_generation_inputs, decode_answers

    param = next(model.parameters())
    inputs = build_generation_inputs(processor, [r["image"] for r in rows], [r["prompt"] for r in rows])
    inputs = {k: v.to(param.device, dtype=param.dtype) if v.is_floating_point() else v.to(param.device)
              for k, v in inputs.items()}
    with torch.no_grad():
        logits = model(**inputs).logits[:, -1, :].float().cpu()
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return decode_answers(processor, output, answer_start(model, inputs)), logits


def default_prompt(studio: dict[str, Any]) -> str:
    """The first grounding (else first) training prompt template, filled with the first label."""
    templates = studio.get("prompt_templates") or {}
    phrases = templates.get("grounding") or next(iter(templates.values()), None) or ["Find every {label} in the image."]
    labels = sorted(studio.get("label_map") or {}) or ["object"]
    return phrases[0].format(label=labels[0], region="[0, 0, 10, 10]", where="", k=4)


def predict(loaded: LoadedExport, image: Any, prompt: str, max_new_tokens: int = 256) -> dict[str, Any]:
    """Answer `prompt` about `image` (path or PIL); boxes parsed with the export's convention, in image pixels."""
    from .collate import load_image
    from .coords import ParseError, get_convention

    picture = load_image(image, "image")
    shown, cap = picture, loaded.studio.get("max_image_size")
    if cap and max(picture.size) > cap:  # as in training: the model saw capped images
        shown = picture.copy()
        shown.thumbnail((cap, cap))
    answer = generate(loaded.model, loaded.processor, [{"image": shown, "prompt": prompt}], max_new_tokens)[0][0]
    sx, sy = picture.width / shown.width, picture.height / shown.height
    try:
        options = {"max_pixels": loaded.studio["max_pixels"]} if loaded.studio.get("max_pixels") and \
            loaded.studio["convention"] == "qwen2_5_vl" else {}
        parsed = get_convention(loaded.studio["convention"], **options).parse_boxes(answer, shown.width, shown.height)
        error = None
    except ParseError as exc:
        parsed, error = [], str(exc)
    boxes = [{"label": label, "box": [round(b[0] * sx, 1), round(b[1] * sy, 1), round(b[2] * sx, 1),
                                      round(b[3] * sy, 1)]} for label, b in parsed]
    return {"answer": answer, "boxes": boxes, "parse_error": error, "width": picture.width, "height": picture.height}


def draw_boxes(image: Any, boxes: list[dict[str, Any]], out_path: str | Path) -> Path:
    """Draw labelled boxes on a copy of `image` (path or PIL) and save it to `out_path`."""
    from PIL import ImageDraw

    from .collate import load_image

    picture = load_image(image, "image")
    draw = ImageDraw.Draw(picture)
    for item in boxes:
        x1, y1, x2, y2 = item["box"]
        draw.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=(255, 40, 40), width=2)
        if item.get("label"):
            draw.text((x1 + 2, y1 + 1), str(item["label"]), fill=(255, 255, 0))
    out = Path(out_path)
    picture.save(out)
    return out


def inference_requirements(model_key: str, dtype: str = "bfloat16", seq_len: int = 1024) -> dict[str, Any]:
    """Memory to serve one request, from the training estimator without gradients/optimizer (GiB, rounded up)."""
    import math

    from .memory import estimate_memory
    from .registry import get_spec

    spec = get_spec(model_key)
    device = "cpu" if spec.tiny else "cuda"
    precision = "fp32" if dtype == "float32" else "bf16"
    parts = estimate_memory(spec, method="lora", batch_size=1, seq_len=seq_len, gradient_checkpointing=True,
                            precision=precision, weight_dtype=dtype, lora_r=1, device=device).parts
    need = sum(v for k, v in parts.items() if k != "trainable")
    gib = math.ceil(need / 2**30 * 10) / 10
    weights = math.ceil(spec.params * {"float32": 4}.get(dtype, 2) / 2**30 * 10) / 10
    return {"model": spec.key, "base_model": spec.hub_id, "device": device, "dtype": dtype,
            "gpu_memory_gib": gib if device == "cuda" else 0, "cpu_ram_gib": max(2.0, round(gib + 1.5, 1)),
            "disk_gib": round(2 * weights + 1.0, 1), "recommended_gpu": spec.gpu_memory_class or None,
            "seq_len": seq_len}


def deploy_config(studio: dict[str, Any], seq_len: int = 1024) -> dict[str, Any]:
    """The deploy_config.yaml of an export (or of a registry model when `studio` only names `model`)."""
    dtype = studio.get("dtype") or ("float32" if studio.get("tiny") else "bfloat16")
    return {
        "service": {"dockerfile": "deploy/Dockerfile", "gpu_dockerfile": "deploy/Dockerfile.vllm",
                    "command": "python -m pipeline serve $EXPORT_DIR --host $HOST --port $PORT --device $DEVICE "
                               "--dtype $DTYPE", "health": "GET /v1/models",
                    "api": "POST /v1/chat/completions (OpenAI; image as a base64 data URL in an image_url part)"},
        "model": {"mode": studio.get("mode", "adapter"), "base_model": studio.get("base_model"),
                  "base_revision": studio.get("base_revision"), "convention": studio.get("convention")},
        "hardware": inference_requirements(studio["model"], dtype, seq_len),
        "environment": {name: value for name, (value, _) in DEPLOY_ENV.items()},
        "secrets": {"HF_TOKEN": "only to download a gated base model at start; pass at run time, never bake it in"},
    }


def deploy_config_yaml(studio: dict[str, Any]) -> str:
    """deploy_config.yaml text: a header naming the service files, then `deploy_config(studio)`."""
    import yaml

    header = ("# Inference service for a SAM2 VLM Studio export: deploy/Dockerfile runs `python -m pipeline serve`\n"
              "# (transformers serve, OpenAI API), deploy/Dockerfile.vllm the vLLM variant for GPUs. hardware: from\n"
              "# the project's memory estimator (one request, no gradients); environment: the variables the images\n"
              "# read, with their defaults. Regenerate: pipeline.inference.deploy_config_yaml.\n")
    return header + yaml.safe_dump(deploy_config(studio), sort_keys=False, width=100)
