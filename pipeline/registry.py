"""Model registry: plain data about each supported VLM (sizes for the memory estimator, image token rules,
LoRA targets, coordinate convention, licence) plus the remote-code allow-list check.

Parameter counts and sizes are the published ones, rounded (approximate is enough for memory estimates).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace

from .errors import UserError
from .imagegrid import MAX_ASPECT, QWEN_MAX_PIXELS, QWEN_MIN_PIXELS, smart_resize  # noqa: F401 - re-exported

DEFAULT_MODEL = "tiny-smolvlm"
FAMILIES = ("smolvlm", "llava", "qwen2_vl", "qwen2_5_vl", "qwen3_vl", "paligemma", "florence2", "llava_onevision",
            "minicpm", "cogvlm")
CONVENTIONS = ("json", "llava", "qwen2_vl", "qwen2_5_vl", "qwen3_vl", "paligemma", "florence2", "internvl")
TOKEN_RULES = ("fixed", "tiles", "smart_resize", "anyres", "slices")
ALLOWLIST_ENV = "STUDIO_REMOTE_CODE_ALLOWLIST"
LLAMA_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# The Qwen image cap: the one pixel budget of every Qwen-family image (1280 tokens of 28x28 px). Conversion writes
# Qwen2.5-VL's absolute-pixel answers on the smart_resize grid of this budget and records it in dataset.json; the
# plan copies it to data.max_pixels (RUN/config.yaml, the model card); the processor is set to it for training,
# evaluation, export and inference; the memory estimate counts image tokens with it.


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry; `vision_tokens` gives the image placeholder tokens per image at a resolution."""

    key: str
    hub_id: str
    family: str
    convention: str
    params: int
    vision_params: int
    hidden_size: int
    num_layers: int
    vocab_size: int
    image_size: int
    token_rule: str  # how vision_tokens() counts: one of TOKEN_RULES
    token_args: dict[str, int] = field(default_factory=dict, hash=False)
    revision: str | None = None
    lora_targets: list[str] = field(default_factory=lambda: list(LLAMA_LINEAR), hash=False)
    modules_to_save: list[str] = field(default_factory=list, hash=False)
    qlora_supported: bool = True
    license: str = "apache-2.0"
    remote_code: bool = False
    gpu_memory_class: str = ""
    chat_template_notes: str = ""
    tiny: bool = False
    enabled: bool = True
    disabled_reason: str = ""

    def vision_tokens(self, width: int, height: int) -> int:
        """Image placeholder tokens one image of width x height pixels becomes (wrapper tokens not counted)."""
        if width <= 0 or height <= 0:
            raise UserError(f"image size must be positive, got {width}x{height}")
        a = self.token_args
        if self.token_rule == "fixed":
            return a["tokens"]
        if self.token_rule == "tiles":
            return _idefics3_tokens(width, height, a["longest_edge"], a["tile"], a["per_tile"], a["split"])
        if self.token_rule == "smart_resize":
            h, w = smart_resize(height, width, a["factor"], a["min_pixels"], a["max_pixels"])
            return (h // a["factor"]) * (w // a["factor"])
        if self.token_rule == "anyres":
            return _anyres_tokens(width, height, a["tile"], a["grid"], a["per_side"], a["max_tiles"])
        if self.token_rule == "slices":
            slices = min(a["max_slices"], math.ceil(width * height / a["tile"] ** 2))
            return a["per_slice"] * (1 if slices <= 1 else slices + 1)
        raise ValueError(f"unknown token rule {self.token_rule!r}")


def with_image_cap(spec: ModelSpec, max_pixels: int | None) -> ModelSpec:
    """The spec as the studio runs it: a Qwen-family processor capped at `max_pixels` (None: QWEN_MAX_PIXELS).

    The cap only lowers the processor's own budget (a tiny model's folder may hold a smaller one).
    """
    if spec.token_rule != "smart_resize":
        return spec
    cap = min(spec.token_args["max_pixels"], max_pixels or QWEN_MAX_PIXELS)
    return replace(spec, token_args={**spec.token_args, "max_pixels": cap})


def resolve_convention(family: str) -> str:
    """A convention name, or the convention of a registry model key / Hub id / family ('tiny' -> json)."""
    name = family.strip()
    if name in CONVENTIONS:
        return name
    if name.lower() == "tiny":
        return "json"
    specs = list_specs()
    for spec in specs:
        if name in (spec.key, spec.hub_id):
            return spec.convention
    for spec in specs:
        if name.lower() == spec.family.lower():
            return spec.convention
    raise UserError(f"unknown --family {family!r}: use a convention ({', '.join(CONVENTIONS)}) or a model key")


def family_name(family: str) -> str | None:
    """The model family a convert --family value names (a registry key, Hub id, family, or a convention only one
    family writes); None for a convention several families share (json) or an unknown name."""
    name = family.strip()
    specs = list_specs()
    for spec in specs:
        if name in (spec.key, spec.hub_id) or name.lower() == spec.family.lower():
            return spec.family
    families = {spec.family for spec in specs if spec.convention == name}
    return families.pop() if len(families) == 1 else None


def _idefics3_tokens(width: int, height: int, longest: int, tile: int, per_tile: int, split: int) -> int:
    """Idefics3/SmolVLM: resize longest edge, round sides up to tiles, N tiles + 1 global image."""
    if not split:
        return per_tile
    aspect = width / height
    if width >= height:
        w = math.ceil(longest / tile) * tile
        h = math.ceil(max(1, int(longest / aspect)) / tile) * tile
    else:
        h = math.ceil(longest / tile) * tile
        w = math.ceil(max(1, int(longest * aspect)) / tile) * tile
    rows, cols = h // tile, w // tile
    return per_tile if rows * cols == 1 else per_tile * (rows * cols + 1)


def _anyres_tokens(width: int, height: int, tile: int, grid: int, per_side: int, max_tiles: int) -> int:
    """LLaVA-OneVision anyres_max_N: best tile grid, unpadded features + one newline per row + base image."""
    best, best_eff, best_waste = (tile, tile), 0, float("inf")
    for rows in range(1, grid + 1):
        for cols in range(1, grid + 1):
            th, tw = rows * tile, cols * tile
            scale = min(tw / width, th / height)
            eff = min(int(width * scale) * int(height * scale), width * height)
            waste = th * tw - eff
            if eff > best_eff or (eff == best_eff and waste < best_waste):
                best, best_eff, best_waste = (th, tw), eff, waste
    cur_h, cur_w = per_side * best[0] // tile, per_side * best[1] // tile
    if width / height > cur_w / cur_h:
        cur_h -= 2 * ((cur_h - int(round(height * cur_w / width, 7))) // 2)
    else:
        cur_w -= 2 * ((cur_w - int(round(width * cur_h / height, 7))) // 2)
    features, newlines = cur_h * cur_w, cur_h
    ratio = math.sqrt(cur_h * cur_w / (max_tiles * per_side**2))
    if ratio > 1.1:
        features, newlines = int(cur_h // ratio) * int(cur_w // ratio), int(cur_h // ratio)
    return features + newlines + per_side**2


def _qwen(factor: int, min_pixels: int, max_pixels: int) -> dict[str, int]:
    return {"factor": factor, "min_pixels": min_pixels, "max_pixels": max_pixels}


QWEN_TARGETS = LLAMA_LINEAR  # the vision tower uses qkv/proj, so these hit only the language model
_TINY_NOTE = "offline tiny random model built locally (pipeline/tiny.py); CPU is enough"
SPECS: list[ModelSpec] = [
    # Offline tiny models: sizes are those of the built folders (tests check they match).
    ModelSpec("tiny-smolvlm", "tiny-smolvlm", "smolvlm", "json", 274_688, 117_312, 64, 2, 555, 64, "fixed",
              {"tokens": 16}, modules_to_save=["connector"], tiny=True, gpu_memory_class="CPU",
              chat_template_notes="SmolVLM template: '<|im_start|>User:<image>...<end_of_utterance>\\nAssistant:'",
              license="apache-2.0 (project-built)"),
    ModelSpec("tiny-llava", "tiny-llava", "llava", "llava", 383_328, 83_712, 96, 2, 517, 64, "fixed",
              {"tokens": 64}, modules_to_save=["multi_modal_projector"], tiny=True, gpu_memory_class="CPU",
              chat_template_notes="LLaVA-1.5 template: 'USER: <image>\\n... ASSISTANT: ...</s>'; boxes 'label: "
              "[x1, y1, x2, y2]' normalised 0-1",
              license="apache-2.0 (project-built)"),
    # The family twins (pipeline/tiny_families.py) write and read the convention of their family's real entries.
    ModelSpec("tiny-qwen2-vl", "tiny-qwen2-vl", "qwen2_vl", "qwen2_vl", 468_480, 182_112, 96, 2, 526, 64,
              "smart_resize", _qwen(16, 32 * 32, 64 * 64), modules_to_save=["merger"], tiny=True,
              gpu_memory_class="CPU", license="apache-2.0 (project-built)",
              chat_template_notes="Qwen2-VL's template (default system prompt); image as "
              "<|vision_start|><|image_pad|><|vision_end|>; boxes <|box_start|>(x1,y1),(x2,y2)<|box_end|> 0-1000"),
    ModelSpec("tiny-qwen2.5-vl", "tiny-qwen2.5-vl", "qwen2_5_vl", "qwen2_5_vl", 535_488, 249_120, 96, 2, 526, 64,
              "smart_resize", _qwen(28, 56 * 56, 28 * 28 * 1280), modules_to_save=["merger"], tiny=True,
              gpu_memory_class="CPU", license="apache-2.0 (project-built)",
              chat_template_notes="Qwen2.5-VL's template; the real 28 px grid and pixel budget, so JSON bbox_2d "
              "in pixels of the smart_resize'd image (64x64 -> 56x56)"),
    ModelSpec("tiny-qwen3-vl", "tiny-qwen3-vl", "qwen3_vl", "qwen3_vl", 563_904, 277_248, 96, 2, 530, 64,
              "smart_resize", _qwen(16, 32 * 32, 64 * 64), modules_to_save=["merger"], tiny=True,
              gpu_memory_class="CPU", license="apache-2.0 (project-built)",
              chat_template_notes="Qwen3-VL-Instruct's template (no default system prompt); JSON bbox_2d 0-1000"),
    ModelSpec("tiny-paligemma", "tiny-paligemma", "paligemma", "paligemma", 628_800, 117_312, 96, 2, 1669, 64,
              "fixed", {"tokens": 16}, modules_to_save=["multi_modal_projector"], tiny=True, gpu_memory_class="CPU",
              license="apache-2.0 (project-built)", chat_template_notes="no chat template: the processor writes "
              "'<image>x16<bos>prefix\\n', answer '<locYYYY><locXXXX>... label<eos>'"),
    ModelSpec("tiny-florence2", "tiny-florence2", "florence2", "florence2", 879_360, 152_576, 96, 2, 1542, 64,
              "fixed", {"tokens": 65}, lora_targets=["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
              modules_to_save=["multi_modal_projector"], tiny=True, gpu_memory_class="CPU",
              license="apache-2.0 (project-built)", chat_template_notes="encoder-decoder (DaViT + BART): the "
              "processor writes '<image>x65<s>prompt</s>', the decoder answers '<s>label<loc_x1><loc_y1>...</s>'"),
    ModelSpec("tiny-llava-onevision", "tiny-llava-onevision", "llava_onevision", "json", 380_736, 80_448, 96, 2,
              517, 64, "anyres", {"tile": 32, "grid": 2, "per_side": 4, "max_tiles": 9},
              modules_to_save=["multi_modal_projector"], tiny=True, gpu_memory_class="CPU",
              license="apache-2.0 (project-built)", chat_template_notes="LLaVA-OneVision's ChatML template; "
              "anyres 32 px tiles up to 2x2 plus the base image (88 tokens for 64x64)"),
    # SmolVLM: SigLIP tiles of 512 px (256M/500M: 64 tokens per tile), image split to longest edge 2048.
    ModelSpec("smolvlm-256m", "HuggingFaceTB/SmolVLM-256M-Instruct", "smolvlm", "json", 256_000_000, 93_000_000,
              576, 30, 49_280, 512, "tiles", {"longest_edge": 2048, "tile": 512, "per_tile": 64, "split": 1},
              gpu_memory_class="4 GB (LoRA), runs on CPU slowly", chat_template_notes="User:/Assistant: turns, "
              "<end_of_utterance> ends a turn; images become <fake_token_around_image><row_r_col_c> tiles"),
    ModelSpec("smolvlm-500m", "HuggingFaceTB/SmolVLM-500M-Instruct", "smolvlm", "json", 507_000_000, 93_000_000,
              960, 32, 49_280, 512, "tiles", {"longest_edge": 2048, "tile": 512, "per_tile": 64, "split": 1},
              gpu_memory_class="6 GB (LoRA)", chat_template_notes="as SmolVLM-256M"),
    ModelSpec("smolvlm2-2.2b", "HuggingFaceTB/SmolVLM2-2.2B-Instruct", "smolvlm", "json", 2_250_000_000,
              428_000_000, 2048, 24, 49_280, 384, "tiles",
              {"longest_edge": 1536, "tile": 384, "per_tile": 81, "split": 1},
              gpu_memory_class="12 GB (LoRA), 8 GB (QLoRA)", chat_template_notes="as SmolVLM; 81 tokens per tile"),
    # Qwen2/2.5-VL: 14 px patches merged 2x2 -> one token per 28x28 px after smart_resize.
    ModelSpec("qwen2-vl-2b", "Qwen/Qwen2-VL-2B-Instruct", "qwen2_vl", "qwen2_vl", 2_210_000_000, 675_000_000, 1536,
              28, 151_936, 448, "smart_resize", _qwen(28, QWEN_MIN_PIXELS, QWEN_MAX_PIXELS), lora_targets=QWEN_TARGETS,
              gpu_memory_class="16 GB (LoRA), 10 GB (QLoRA)",
              chat_template_notes="ChatML, default system prompt; boxes <|box_start|>(x1,y1),(x2,y2)<|box_end|>"),
    ModelSpec("qwen2.5-vl-3b", "Qwen/Qwen2.5-VL-3B-Instruct", "qwen2_5_vl", "qwen2_5_vl", 3_750_000_000,
              670_000_000, 2048, 36, 151_936, 448, "smart_resize", _qwen(28, QWEN_MIN_PIXELS, QWEN_MAX_PIXELS),
              lora_targets=QWEN_TARGETS, license="qwen-research", gpu_memory_class="24 GB (LoRA), 12 GB (QLoRA)",
              chat_template_notes="ChatML; JSON bbox_2d in absolute pixels of the resized image"),
    ModelSpec("qwen2.5-vl-7b", "Qwen/Qwen2.5-VL-7B-Instruct", "qwen2_5_vl", "qwen2_5_vl", 8_290_000_000,
              670_000_000, 3584, 28, 152_064, 448, "smart_resize", _qwen(28, QWEN_MIN_PIXELS, QWEN_MAX_PIXELS),
              lora_targets=QWEN_TARGETS, gpu_memory_class="40 GB (LoRA), 24 GB (QLoRA)",
              chat_template_notes="ChatML; JSON bbox_2d in absolute pixels of the resized image"),
    # Qwen3-VL: 16 px patches merged 2x2 -> one token per 32x32 px.
    ModelSpec("qwen3-vl-2b", "Qwen/Qwen3-VL-2B-Instruct", "qwen3_vl", "qwen3_vl", 2_130_000_000, 405_000_000, 2048,
              28, 151_936, 512, "smart_resize", _qwen(32, 65_536, QWEN_MAX_PIXELS), lora_targets=QWEN_TARGETS,
              gpu_memory_class="16 GB (LoRA), 10 GB (QLoRA)",
              chat_template_notes="ChatML; JSON bbox_2d relative 0-1000"),
    ModelSpec("llava-1.5-7b", "llava-hf/llava-1.5-7b-hf", "llava", "llava", 7_060_000_000, 304_000_000, 4096, 32,
              32_064, 336, "fixed", {"tokens": 576}, license="llama2", gpu_memory_class="40 GB (LoRA), 16 GB (QLoRA)",
              modules_to_save=["multi_modal_projector"],
              chat_template_notes="'USER: <image>\\n... ASSISTANT:'; boxes as normalised [x1, y1, x2, y2]"),
    ModelSpec("llava-onevision-0.5b", "llava-hf/llava-onevision-qwen2-0.5b-ov-hf", "llava_onevision", "json",
              894_000_000, 400_000_000, 896, 24, 151_647, 384, "anyres",
              {"tile": 384, "grid": 6, "per_side": 27, "max_tiles": 9}, gpu_memory_class="8 GB (LoRA)",
              chat_template_notes="ChatML; anyres tiling makes up to ~7.3k image tokens per image"),
    ModelSpec("paligemma2-3b", "google/paligemma2-3b-pt-224", "paligemma", "paligemma", 3_030_000_000, 400_000_000,
              2304, 26, 257_216, 224, "fixed", {"tokens": 256}, license="gemma (gated)",
              gpu_memory_class="24 GB (LoRA), 12 GB (QLoRA)",
              chat_template_notes="no chat template: prefix 'detect label' + '\\n', answer '<locYYYY>... label'"),
    # Florence-2 is native in transformers 5 (Florence2ForConditionalGeneration); the native weights live in the
    # converted florence-community repo, the microsoft repo itself needs its own remote code.
    ModelSpec("florence2-base", "florence-community/Florence-2-base", "florence2", "florence2", 232_000_000,
              90_000_000, 768, 12, 51_289, 768, "fixed", {"tokens": 577}, license="mit",
              lora_targets=["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
              gpu_memory_class="4 GB (LoRA or full)",
              chat_template_notes="encoder-decoder: task prompt like '<OD>', answer 'label<loc_x1><loc_y1>...'"),
    ModelSpec("florence2-base-remote", "microsoft/Florence-2-base", "florence2", "florence2", 232_000_000,
              90_000_000, 768, 12, 51_289, 768, "fixed", {"tokens": 577}, license="mit", remote_code=True,
              lora_targets=["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"], gpu_memory_class="4 GB",
              chat_template_notes="original repo with trust_remote_code; prefer florence2-base"),
    ModelSpec("minicpm-v-2.6", "openbmb/MiniCPM-V-2_6", "minicpm", "json", 8_100_000_000, 400_000_000, 3584, 28,
              151_666, 448, "slices", {"tile": 448, "max_slices": 9, "per_slice": 64}, remote_code=True,
              license="minicpm-model-license", gpu_memory_class="40 GB (LoRA), 20 GB (QLoRA)",
              chat_template_notes="remote code; 64 query tokens per 448 px slice, up to 9 slices + overview"),
    ModelSpec("cogvlm2-19b", "THUDM/cogvlm2-llama3-chat-19B", "cogvlm", "json", 19_500_000_000, 4_400_000_000,
              4096, 32, 128_256, 1344, "fixed", {"tokens": 2304}, remote_code=True, license="cogvlm2 (llama3)",
              lora_targets=["language_expert_query_key_value", "language_expert_dense"],
              gpu_memory_class="80 GB (QLoRA 40 GB)", chat_template_notes="remote code; 1344 px, 2304 image tokens"),
]


def _remote_disabled(spec: ModelSpec) -> ModelSpec:
    reason = (f"runs code from the Hub repo; allow-list it with {ALLOWLIST_ENV}='{spec.hub_id}@<commit>'"
              " and set its revision")
    return replace(spec, enabled=False, disabled_reason=reason)


SPECS = [_remote_disabled(s) if s.remote_code else s for s in SPECS]
_BY_NAME: dict[str, ModelSpec] = {**{s.hub_id: s for s in SPECS}, **{s.key: s for s in SPECS}}


def _effective(spec: ModelSpec) -> ModelSpec:
    """A remote-code entry the operator allow-listed comes back enabled, pinned to the allow-listed revision."""
    if spec.enabled or not is_allowed(spec):
        return spec
    return replace(spec, enabled=True, disabled_reason="", revision=pinned_revision(spec))


def get_spec(key_or_hub_id: str) -> ModelSpec:
    """The registry entry for a key or Hub id; UserError listing the keys when unknown."""
    spec = _BY_NAME.get(key_or_hub_id.strip())
    if spec is None:
        keys = ", ".join(s.key for s in SPECS)
        raise UserError(f"unknown model {key_or_hub_id!r}; registry keys: {keys} (or a local model folder)")
    return _effective(spec)


def list_specs(include_disabled: bool = True) -> list[ModelSpec]:
    """All registry entries in display order (tiny ones first); allow-listed remote-code entries count as enabled."""
    specs = [_effective(s) for s in SPECS]
    return [s for s in specs if include_disabled or s.enabled]


def allowlist() -> set[tuple[str, str]]:
    """The operator's (repo, revision) pairs from STUDIO_REMOTE_CODE_ALLOWLIST='repo@revision,...'."""
    pairs = set()
    for item in os.environ.get(ALLOWLIST_ENV, "").split(","):
        repo, _, revision = item.strip().partition("@")
        if repo and revision:
            pairs.add((repo, revision))
    return pairs


def pinned_revision(spec: ModelSpec) -> str | None:
    """The revision to load: the entry's own, else the single allow-listed revision of its repo (remote code)."""
    if spec.revision or not spec.remote_code:
        return spec.revision
    revisions = [rev for repo, rev in allowlist() if repo == spec.hub_id]
    return revisions[0] if len(revisions) == 1 else None


def is_allowed(spec: ModelSpec, revision: str | None = None) -> bool:
    """True when the model needs no remote code or its exact (repo, revision) is allow-listed."""
    if not spec.remote_code:
        return True
    revision = revision or pinned_revision(spec)
    return revision is not None and (spec.hub_id, revision) in allowlist()


def check_allowed(spec: ModelSpec, revision: str | None = None) -> None:
    """Raise UserError unless `spec` may be loaded (remote code needs an allow-listed exact revision)."""
    if is_allowed(spec, revision):
        return
    revision = revision or pinned_revision(spec)
    if revision is None:
        raise UserError(f"{spec.hub_id} runs code from its Hub repo and is disabled: pin a revision (commit) and ask "
                        f"the operator to allow-list it with {ALLOWLIST_ENV}='{spec.hub_id}@<commit>'")
    raise UserError(f"{spec.hub_id}@{revision} runs code from its Hub repo and is not allow-listed: the operator "
                    f"must add '{spec.hub_id}@{revision}' to {ALLOWLIST_ENV}")


# config.json `model_type` (and architecture class prefixes) of each family, for model folders trained elsewhere
MODEL_TYPES: dict[str, str] = {
    "idefics3": "smolvlm", "smolvlm": "smolvlm", "llava": "llava", "qwen2_vl": "qwen2_vl", "qwen2_5_vl": "qwen2_5_vl",
    "qwen3_vl": "qwen3_vl", "paligemma": "paligemma", "florence2": "florence2", "llava_onevision": "llava_onevision",
    "minicpmv": "minicpm", "cogvlm": "cogvlm"}
ARCHITECTURES: dict[str, str] = {
    "Idefics3": "smolvlm", "SmolVLM": "smolvlm", "LlavaOnevision": "llava_onevision", "Llava": "llava",
    "Qwen2VL": "qwen2_vl", "Qwen2_5_VL": "qwen2_5_vl", "Qwen3VL": "qwen3_vl", "PaliGemma": "paligemma",
    "Florence2": "florence2", "MiniCPMV": "minicpm", "CogVLM": "cogvlm"}


def family_of_config(config: dict[str, object]) -> str | None:
    """The registry family of a Hugging Face config.json (model_type first, then the architecture class names)."""
    family = MODEL_TYPES.get(str(config.get("model_type") or "").lower())
    if family:
        return family
    names = config.get("architectures")
    for name in names if isinstance(names, list) else []:
        for prefix, fam in ARCHITECTURES.items():  # longest prefixes first where they overlap (LlavaOnevision)
            if str(name).startswith(prefix):
                return fam
    return None


def spec_for_config(config: dict[str, object]) -> ModelSpec | None:
    """The registry entry that stands for a model folder of this config: the first full-size model of its family."""
    family = family_of_config(config)
    specs = [s for s in SPECS if s.family == family]
    real = [s for s in specs if not s.tiny]
    return (real or specs)[0] if specs else None
