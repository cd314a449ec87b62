"""The one place that loads a base model + processor (+ adapter, quantization) for training, evaluation and export.

A model is named by a registry key (`tiny-smolvlm`, `qwen2-vl-2b`), a Hub id or a local model folder; tiny keys
are built on demand and then loaded with the same `from_pretrained` calls as any Hub model.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import re
from pathlib import Path
from typing import Any

from .errors import UserError
from .registry import ModelSpec, check_allowed, get_spec, pinned_revision
from .tiny import TINY_MODELS, ensure_tiny_model, image_only_processor_class, tiny_marker

DTYPES = ("auto", "float32", "bfloat16", "float16")
QUANTIZATIONS = (None, "4bit", "8bit")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_VIDEO_FIRST = ["self", "image_processor", "tokenizer", "video_processor"]  # processors with a video processor


def find_spec(model: str) -> ModelSpec | None:
    """The registry entry behind a key, Hub id or tiny model folder; None for anything else."""
    marker = tiny_marker(model) if Path(model).is_dir() else None
    name = marker["key"] if marker else model
    try:
        return get_spec(name)
    except UserError:
        return None


def resolve_model_path(model: str) -> str:
    """Tiny keys -> their built folder; registry keys -> Hub ids; local folders and other Hub ids unchanged."""
    model = str(model).strip()
    if model in TINY_MODELS:
        return str(ensure_tiny_model(model))
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError("not a model folder (no config.json)", path)
        return str(path.resolve())
    spec = find_spec(model)
    if spec is not None:
        return spec.hub_id
    if _HUB_ID.fullmatch(model) and not model.startswith("."):
        return model
    raise UserError(f"unknown model {model!r}: not a registry key, a Hub id (owner/name) or a model folder")


def _prepare(model: str) -> tuple[str, ModelSpec | None, dict[str, Any]]:
    """Path, registry entry and the shared from_pretrained kwargs (revision, remote code), after the allow-list."""
    path = resolve_model_path(model)
    spec = find_spec(model)
    kwargs: dict[str, Any] = {}
    if spec is not None and not spec.tiny:
        check_allowed(spec)
        revision = pinned_revision(spec)
        if revision:
            kwargs["revision"] = revision
        if spec.remote_code:
            kwargs["trust_remote_code"] = True
    return path, spec, kwargs


def _model_type(path: str, spec: ModelSpec | None) -> str | None:
    config = Path(path) / "config.json"
    if config.is_file():
        return json.loads(config.read_text(encoding="utf-8")).get("model_type")
    return spec.family if spec else None


def _processor_class(model_type: str | None) -> type[Any] | None:
    """The architecture's processor class, made image-only when torchvision (needed for video) is missing."""
    import transformers
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    name = PROCESSOR_MAPPING_NAMES.get(model_type or "")
    cls = getattr(transformers, name, None) if isinstance(name, str) else None
    if cls is None or importlib.util.find_spec("torchvision") is not None:
        return None
    if list(inspect.signature(cls.__init__).parameters)[:4] == _VIDEO_FIRST:
        return image_only_processor_class(cls)
    return None


def load_processor(model: str) -> Any:
    """The processor (image processor + tokenizer + chat template) of a model key, Hub id or folder."""
    from transformers import AutoProcessor

    path, spec, kwargs = _prepare(model)
    cls = _processor_class(_model_type(path, spec))
    try:
        return (cls or AutoProcessor).from_pretrained(path, **kwargs)
    except OSError as exc:
        raise UserError(f"cannot load the processor (offline or not downloaded?): {exc}", path) from exc


def _has_edge(size: Any) -> bool:
    """A size mapping (a dict, or transformers 5's SizeDict) that holds a longest_edge."""
    try:
        return size is not None and "longest_edge" in size and size["longest_edge"] is not None
    except TypeError:
        return False


def apply_image_cap(processor: Any, cap: int | None = None, max_pixels: int | None = None) -> None:
    """Make the processor respect the run's image limits: a Qwen-family processor resizes to at most `max_pixels`
    (the Qwen image cap, None: registry.QWEN_MAX_PIXELS; only ever lowered), and `cap` (data.max_image_size, the
    longest side) limits Idefics3/SmolVLM's tile grid (the frames themselves are downscaled when read)."""
    from .registry import QWEN_MAX_PIXELS

    image_processor: Any = getattr(processor, "image_processor", None)
    size: Any = getattr(image_processor, "size", None)
    if hasattr(image_processor, "merge_size"):  # Qwen2/2.5/3-VL: size["longest_edge"] is a pixel budget
        budget = max_pixels or QWEN_MAX_PIXELS
        if _has_edge(size):
            size["longest_edge"] = min(size["longest_edge"], budget)
        if getattr(image_processor, "max_pixels", None):
            image_processor.max_pixels = min(image_processor.max_pixels, budget)
        return
    tiles: Any = getattr(image_processor, "max_image_size", None)
    if cap and _has_edge(size) and _has_edge(tiles):  # Idefics3 / SmolVLM tiles
        tile = tiles["longest_edge"]
        size["longest_edge"] = min(size["longest_edge"], -(-cap // tile) * tile)


def _quantization_config(quantization: str | None, compute_dtype: Any) -> Any:
    if quantization is None:
        return None
    from transformers import BitsAndBytesConfig

    if quantization == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=compute_dtype)
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    raise UserError(f"unknown quantization {quantization!r}; choose 4bit, 8bit or none")


def _torch_dtype(dtype: str, device: str) -> Any:
    import torch

    if dtype not in DTYPES:
        raise UserError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


def load_model(model: str, *, quantization: str | None = None, dtype: str = "auto", adapter: str | None = None,
               device: str | None = None) -> Any:
    """Load a base VLM (optionally 4/8-bit, optionally with a LoRA adapter) on `device` (default: cuda if any)."""
    import torch
    from transformers import AutoModelForImageTextToText

    path, spec, kwargs = _prepare(model)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch_dtype = _torch_dtype(dtype, device)
    quant = _quantization_config(quantization, torch_dtype)
    if quant is not None:
        kwargs.update(quantization_config=quant, device_map={"": device})
    try:
        try:
            net = AutoModelForImageTextToText.from_pretrained(path, dtype=torch_dtype, **kwargs)
        except ValueError as exc:
            if "Unrecognized configuration class" not in str(exc):
                raise
            net = _architecture_class(path, kwargs).from_pretrained(path, dtype=torch_dtype, **kwargs)
    except OSError as exc:
        raise UserError(f"cannot load the model (offline or not downloaded?): {exc}", path) from exc
    if quant is None:
        net = net.to(device)  # type: ignore[arg-type]  # transformers' @wraps(Module.to) confuses the self binding
    if adapter:
        net = _attach_adapter(net, adapter)
    return net


def _architecture_class(path: str, kwargs: dict[str, Any]) -> Any:
    """The class named in the config's `architectures` (for models the Auto class does not map)."""
    import transformers
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path, **{k: v for k, v in kwargs.items() if k != "quantization_config"})
    for name in config.architectures or []:
        if hasattr(transformers, name):
            return getattr(transformers, name)
    if kwargs.get("trust_remote_code"):  # allow-listed remote-code models (MiniCPM-V, CogVLM2) load as causal LMs
        return transformers.AutoModelForCausalLM
    raise UserError(f"no transformers class for architectures {config.architectures}", path)


def _attach_adapter(net: Any, adapter: str) -> Any:
    from peft import PeftModel

    folder = Path(adapter).expanduser()
    if not (folder / "adapter_config.json").is_file():
        raise UserError("not a LoRA adapter folder (no adapter_config.json)", folder)
    return PeftModel.from_pretrained(net, str(folder))


def model_info(model: Any) -> dict[str, Any]:
    """Parameter counts of a loaded model: total, trainable, vision tower, plus dtype and quantization."""
    total = trainable = vision = 0
    for name, param in model.named_parameters():
        count = param.numel() * (2 if hasattr(param, "quant_state") else 1)  # 4-bit weights pack two per byte
        total += count
        trainable += count if param.requires_grad else 0
        vision += count if any(part in name for part in ("vision", "visual")) else 0
    config = getattr(model, "config", None)
    return {"class": type(model).__name__, "params": total, "trainable": trainable, "vision_params": vision,
            "trainable_fraction": trainable / total if total else 0.0, "dtype": str(getattr(model, "dtype", "")),
            "quantization": _quant_name(getattr(config, "quantization_config", None)),
            "model_type": getattr(config, "model_type", None)}


def _quant_name(quant: Any) -> str | None:
    """'4bit' / '8bit' for a bitsandbytes config (object or dict), None when not quantized."""
    if quant is None:
        return None
    get = quant.get if isinstance(quant, dict) else lambda key, default=None: getattr(quant, key, default)
    return "4bit" if get("load_in_4bit", False) else "8bit" if get("load_in_8bit", False) else str(get("quant_method"))
