"""Offline tiny VLMs: random-initialised models of real architectures, saved as ordinary model folders.

Nothing can be downloaded here, so the default models are built locally: a real architecture class from a small
config, a byte-level BPE tokenizer trained on a generated corpus, and the architecture's own image processor at
64 px. The folder is then loaded with the same `from_pretrained` calls as a Hub model, so every code path is real.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .atomic import atomic_output_dir
from .errors import UserError
from .home import home_dir
from .tiny_parts import (  # noqa: F401 - the shared parts, re-exported for callers of tiny
    BPE_VOCAB,
    IMAGE_SIZE,
    INSTRUCTIONS,
    LABELS,
    LLAVA_SPECIAL,
    LLAVA_TEMPLATE,
    QWEN2_VL_TEMPLATE,
    QWEN_SPECIAL,
    SEED,
    SMOLVLM_PATCH,
    SMOLVLM_SPECIAL,
    SMOLVLM_TEMPLATE,
    SMOLVLM_TEXT,
    TEXT,
    VISION,
    WORDS,
    _corpus,
    _text_config,
    build_tokenizer,
    image_only_processor_class,
)

TINY_MODELS: tuple[str, ...] = ("tiny-smolvlm", "tiny-llava", "tiny-qwen2-vl", "tiny-qwen2.5-vl", "tiny-qwen3-vl",
                                 "tiny-paligemma", "tiny-florence2", "tiny-llava-onevision")
MARKER = "studio_model.json"  # written last: its presence means the folder is complete
BUILD_VERSION = 5  # bump to rebuild cached tiny models after a recipe change











def _build_smolvlm() -> Any:
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
    )

    tok = build_tokenizer(SMOLVLM_SPECIAL, bos="<|im_start|>", eos="<end_of_utterance>", pad="<|im_end|>",
                          chat_template=SMOLVLM_TEMPLATE)
    # 16 px patches without pixel shuffle and a 64-wide text model: the same 16 image tokens as 8 px patches
    # merged 2x2, with fewer parameters for the offline demo to train (docs/DEMO.md has what it reaches).
    vision = {**VISION, "image_size": IMAGE_SIZE, "patch_size": SMOLVLM_PATCH}
    scale = 1
    seq_len = (IMAGE_SIZE // SMOLVLM_PATCH) ** 2 // scale**2
    config = Idefics3Config(  # type: ignore[call-arg]  # pad_token_id: taken from **kwargs, not in the stub signature
        vision_config=vision, scale_factor=scale, image_token_id=tok.convert_tokens_to_ids("<image>"),
        text_config={"model_type": "llama", **_text_config(tok, **SMOLVLM_TEXT, rope_parameters={
            "rope_type": "default", "rope_theta": 100.0})},
        pad_token_id=tok.pad_token_id,
    )
    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=False, size={"longest_edge": IMAGE_SIZE}, max_image_size={"longest_edge": IMAGE_SIZE})
    processor = Idefics3Processor(image_processor, tok, image_seq_len=seq_len, chat_template=SMOLVLM_TEMPLATE)
    return Idefics3ForConditionalGeneration(config), processor


def _build_llava() -> Any:
    from transformers import CLIPImageProcessorPil, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tok = build_tokenizer(LLAVA_SPECIAL, bos="<s>", eos="</s>", pad="<pad>", unk="<unk>", add_bos=True,
                          chat_template=LLAVA_TEMPLATE)
    patch = 8
    config = LlavaConfig(
        vision_config={"model_type": "clip_vision_model", **VISION, "image_size": IMAGE_SIZE, "patch_size": patch,
                       "projection_dim": VISION["hidden_size"]},
        text_config={"model_type": "llama", **_text_config(tok, rope_parameters={"rope_type": "default",
                                                                                   "rope_theta": 100.0})},
        image_token_index=tok.convert_tokens_to_ids("<image>"), image_seq_length=(IMAGE_SIZE // patch) ** 2,
        vision_feature_layer=-1, vision_feature_select_strategy="default",
    )
    # Squash to a square without cropping, so a box relative to the frame stays relative to the model's input.
    image_processor = CLIPImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, do_center_crop=False,
                                            crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = LlavaProcessor(image_processor, tok, patch_size=patch, vision_feature_select_strategy="default",
                               num_additional_image_tokens=1, chat_template=LLAVA_TEMPLATE)
    return LlavaForConditionalGeneration(config), processor




def _build_qwen2_vl() -> Any:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessorPil, Qwen2VLProcessor

    tok = build_tokenizer(QWEN_SPECIAL, bos=None, eos="<|im_end|>", pad="<|endoftext|>",
                          chat_template=QWEN2_VL_TEMPLATE)
    patch, merge = 8, 2
    head_dim = TEXT["hidden_size"] // TEXT["num_attention_heads"]
    ids = {name: tok.convert_tokens_to_ids(token) for name, token in [
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>")]}
    # rope_theta ~10: 24-dim heads split into 3 mrope sections of 4 dims each; with the default 1e6 those barely
    # rotate over the ~100 positions of a tiny sequence, so the model could not tell positions apart.
    rope = {"rope_type": "default", "rope_theta": 10.0, "mrope_section": [head_dim // 6] * 3}
    config = Qwen2VLConfig(
        vision_config={"depth": 2, "embed_dim": VISION["hidden_size"], "hidden_size": TEXT["hidden_size"],
                       "mlp_ratio": 2, "num_heads": VISION["num_attention_heads"], "patch_size": patch,
                       "spatial_merge_size": merge, "temporal_patch_size": 2},
        text_config=_text_config(tok, rope_parameters=rope), **ids,
    )
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=patch, merge_size=merge, temporal_patch_size=2,
        size={"shortest_edge": (IMAGE_SIZE // 2) ** 2, "longest_edge": IMAGE_SIZE**2})
    processor = image_only_processor_class(Qwen2VLProcessor)(image_processor, tok, chat_template=QWEN2_VL_TEMPLATE)
    return Qwen2VLForConditionalGeneration(config), processor


def _family_builder(key: str) -> Callable[[], Any]:
    def build() -> Any:
        from .tiny_families import BUILDERS as FAMILY_BUILDERS

        return FAMILY_BUILDERS[key]()

    return build


BUILDERS: dict[str, Callable[[], Any]] = {
    "tiny-smolvlm": _build_smolvlm, "tiny-llava": _build_llava, "tiny-qwen2-vl": _build_qwen2_vl,
    **{key: _family_builder(key) for key in TINY_MODELS[3:]}}


def small_model_init(model: Any) -> None:
    """Re-initialise for a narrow model: LeCun-normal weights, and 2-D sin-cos tables for vision position tables.

    Transformers initialises every matrix with std 0.02, a value tuned for hidden sizes in the thousands. At width
    64 it leaves the image path so weak that the tiny model first learns to answer from the prompt alone and looks
    at the image only hundreds of steps later. std = 1/sqrt(fan_in) keeps activations at unit scale, and a fixed
    2-D position code (as MAE and many ViTs start from) tells each patch token where it sits from step 0. Tables
    with leading non-patch entries (CLIP's CLS) get zeros there and the code on the patch rows; the grid may be
    non-square. docs/DEMO.md has the measurements.
    """
    import torch

    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.normal_(0.0, param[0].numel() ** -0.5)
        modules = dict(model.named_modules())
        for name, module in modules.items():
            if name.endswith("embeddings.position_embedding") and isinstance(module, torch.nn.Embedding):
                layout = position_grid(modules.get(name.rsplit(".", 1)[0]), module.num_embeddings)
                if layout is not None and module.embedding_dim % 4 == 0:
                    rows, cols, extra = layout
                    module.weight[:extra].zero_()
                    module.weight[extra:].copy_(sincos_2d(rows, module.embedding_dim, cols))


def position_grid(embeddings: Any, entries: int) -> tuple[int, int, int] | None:
    """(rows, cols, leading extra entries) of a vision position table of `entries` rows; None when unknown.

    The grid comes from the embeddings module's image_size / patch_size (height, width may differ); without them a
    square grid with 0 or 1 leading entries (CLS) is assumed when the count allows it.
    """
    def pair(value: Any) -> tuple[int, int] | None:
        if isinstance(value, int):
            return value, value
        if isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(v, int) for v in value):
            return value[0], value[1]
        return None

    size, patch = pair(getattr(embeddings, "image_size", None)), pair(getattr(embeddings, "patch_size", None))
    if size and patch and patch[0] > 0 and patch[1] > 0:
        rows, cols = size[0] // patch[0], size[1] // patch[1]
        if 0 <= entries - rows * cols <= 1 and rows * cols > 0:
            return rows, cols, entries - rows * cols
    for extra in (0, 1):
        grid = math.isqrt(entries - extra)
        if grid > 0 and grid * grid == entries - extra:
            return grid, grid, extra
    return None


def sincos_2d(grid: int, dim: int, cols: int | None = None) -> Any:
    """(grid*cols, dim) position code of a grid x cols grid (cols defaults to grid), row-major: sin/cos of x then
    of y, dim/4 frequencies each."""
    import torch

    quarter = dim // 4
    omega = 1.0 / (100.0 ** (torch.arange(quarter, dtype=torch.float32) / quarter))
    ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(cols or grid), indexing="ij")
    parts = []
    for coord in (xs.flatten(), ys.flatten()):
        angles = coord[:, None].float() * omega[None]
        parts += [torch.sin(angles), torch.cos(angles)]
    return torch.cat(parts, dim=1)


def build_tiny_model(key: str, out_dir: str | Path) -> Path:
    """Build the tiny model `key` (random weights, fixed seed) into the new folder `out_dir`."""
    import torch

    if key not in BUILDERS:
        raise UserError(f"unknown tiny model {key!r}; choose one of {', '.join(TINY_MODELS)}")
    torch.manual_seed(SEED)
    with atomic_output_dir(out_dir, overwrite=True) as tmp:
        model, processor = BUILDERS[key]()
        small_model_init(model)
        tok = processor.tokenizer
        model.generation_config.eos_token_id = tok.eos_token_id
        model.generation_config.pad_token_id = tok.pad_token_id
        model.generation_config.bos_token_id = tok.bos_token_id
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        params = sum(p.numel() for p in model.parameters())
        marker = {"key": key, "build_version": BUILD_VERSION, "seed": SEED, "params": params,
                  "processor_class": type(processor).__name__}
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    return Path(out_dir).resolve()


def tiny_marker(path: str | Path) -> dict[str, Any] | None:
    """The studio marker of a tiny model folder, or None for any other folder."""
    marker = Path(path) / MARKER
    if not marker.is_file():
        return None
    return json.loads(marker.read_text(encoding="utf-8"))


def ensure_tiny_model(key: str, force: bool = False) -> Path:
    """Return `STUDIO_HOME/models/<key>`, building it first when it is missing, stale or `force` is set."""
    if key not in BUILDERS:
        raise UserError(f"unknown tiny model {key!r}; choose one of {', '.join(TINY_MODELS)}")
    models = home_dir("models")
    out = models / key
    with _build_lock(models / f".{key}.lock"):  # the app and a training process may ask at the same time
        marker = tiny_marker(out)
        if force or marker is None or marker.get("build_version") != BUILD_VERSION:
            if out.exists() and marker is None:
                shutil.rmtree(out)  # a folder without a marker is a leftover from an interrupted build
            build_tiny_model(key, out)
    return out


@contextmanager
def _build_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory file lock (no-op where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
