"""Training memory estimator: a per-part breakdown (weights, adapters, gradients, optimizer, activations, logits,
vision tower, CUDA context, fragmentation) from a registry ModelSpec and the run's shape, and a fits / tight / won't
fit verdict. Pure arithmetic: `pipeline.plan` turns a config on this machine into these arguments.

The figures are rules of thumb for one rank with AdamW; bench/gpu_check.sh measures them against a real GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

GIB = 2**30
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
NF4_BYTES = 0.52  # 4-bit weights + double-quantised absmax constants per parameter
CUDA_CONTEXT = GIB // 2
FRAGMENTATION = 0.10  # caching-allocator slack on top of live tensors
TIGHT = 0.90  # above this share of the GPU a run may still fail on a longer batch
ACT_ELEMENTS_PER_LAYER = 24  # saved elements per token per decoder layer, in units of hidden_size
TRAINABLE_BYTES = 16  # fp32 weight + fp32 grad + two AdamW moments
ATTN_NAMES = {"q_proj", "k_proj", "v_proj", "o_proj", "qkv", "qkv_proj", "out_proj", "dense", "query_key_value",
              "language_expert_query_key_value", "language_expert_dense"}
# Linear layers of each vision tower: LoRA targets named like these also adapt (and keep activations of) the tower.
VISION_LINEAR = {"qwen2_vl": {"qkv", "proj", "fc1", "fc2"},
                 "qwen2_5_vl": {"qkv", "proj", "gate_proj", "up_proj", "down_proj"},
                 "qwen3_vl": {"qkv", "proj", "linear_fc1", "linear_fc2"}}
SIGLIP_LINEAR = {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"}  # SigLIP / CLIP / DaViT
PATCHES_PER_TOKEN = {"qwen2_vl": 4, "qwen2_5_vl": 4, "qwen3_vl": 4, "minicpm": 16}  # vision patches per LLM token


@dataclass
class MemoryEstimate:
    """Bytes per part; `total` is their sum."""

    parts: dict[str, int]
    device: str = "cuda"
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def gib(self) -> dict[str, float]:
        """Parts in GiB, rounded to 3 decimals."""
        return {name: round(value / GIB, 3) for name, value in self.parts.items()}

    def largest(self) -> str:
        """The biggest part, as 'name X.X GiB'."""
        name = max(self.parts, key=lambda k: self.parts[k])
        return f"{name} {self.parts[name] / GIB:.1f} GiB"

    def table(self) -> str:
        """A Markdown table of the breakdown."""
        rows = [f"| {name} | {value / GIB:.3f} |" for name, value in self.parts.items()]
        return "\n".join(["| part | GiB |", "|---|---:|", *rows, f"| **total** | **{self.total / GIB:.3f}** |"])


def fits(estimate: MemoryEstimate | int, gpu_bytes: int) -> str:
    """'fits', 'tight' (over 90% of the GPU) or "won't fit"."""
    need = estimate.total if isinstance(estimate, MemoryEstimate) else int(estimate)
    if need > gpu_bytes:
        return "won't fit"
    return "tight" if need > TIGHT * gpu_bytes else "fits"


def image_tokens(spec: Any, max_side: int | None = None) -> int:
    """Image tokens for one square image whose longest side is capped at `max_side` (the processor capped too).

    Uncapped, the largest image the processor makes: Idefics3's full tile grid, a Qwen image at its pixel budget
    (`registry.with_image_cap` sets that budget to the Qwen image cap), else the model's native size.
    """
    from dataclasses import replace

    tiled = spec.token_rule == "tiles" and spec.token_args.get("split")
    if max_side:
        side = max_side
    elif tiled:
        side = spec.token_args["longest_edge"]
    elif spec.token_rule == "smart_resize":
        side = math.isqrt(spec.token_args["max_pixels"])
    else:
        side = spec.image_size
    if tiled:
        tile = spec.token_args["tile"]
        longest = min(spec.token_args["longest_edge"], -(-side // tile) * tile)
        spec = replace(spec, token_args={**spec.token_args, "longest_edge": longest})
    return spec.vision_tokens(side, side)


def patches_per_token(spec: Any) -> float:
    """Vision-tower patches behind one LLM image token (pixel shuffle / patch merging)."""
    if spec.token_rule == "tiles":
        tile = spec.token_args["tile"]
        patch = 16 if tile % 16 == 0 else 14
        return (tile // patch) ** 2 / spec.token_args["per_tile"]
    return PATCHES_PER_TOKEN.get(spec.family, 1)


def _vision_shape(vision_params: int) -> tuple[int, int]:
    """(width, depth) of a ViT with this many parameters: 12*depth*width^2 params, depth ~ width/48."""
    width = max(32, round((4 * vision_params) ** (1 / 3)))
    depth = max(1, round(vision_params / (12 * width * width)))
    return width, depth


def lora_param_count(spec: Any, r: int, targets: list[str] | str | None) -> int:
    """Adapter parameters on the language model: r*(in+out) per targeted linear layer."""
    h = spec.hidden_size
    names = targets if isinstance(targets, list) else list(spec.lora_targets)
    if isinstance(targets, str):  # a regex or 'all-linear': assume every projection
        names = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    per_layer = sum(2 * h if name in ATTN_NAMES else 5 * h for name in names)  # MLP: in + out ~ h + 4h
    return spec.num_layers * r * per_layer


def saved_module_params(spec: Any, modules: list[str]) -> int:
    """Parameters of `modules_to_save` (embeddings/head: vocab x hidden; a connector: ~8 x vision x hidden)."""
    vision_width, _ = _vision_shape(spec.vision_params)
    total = 0
    for name in modules:
        if "embed" in name or "head" in name or name in ("wte", "output"):
            total += spec.vocab_size * spec.hidden_size
        else:
            total += min(spec.vision_params, 8 * vision_width * spec.hidden_size)
    return total


def _weights(spec: Any, method: str, weight_bytes: int, tied: bool) -> int:
    embed = spec.vocab_size * spec.hidden_size * (1 if tied else 2)
    if method == "qlora":  # embeddings and head stay in 16 bit, every other linear layer is NF4
        return int(max(0, spec.params - embed) * NF4_BYTES) + embed * min(weight_bytes, 2)
    return spec.params * weight_bytes


def _activations(spec: Any, tokens: int, act_bytes: int, ckpt: bool, lora_inputs: int) -> int:
    per_layer = tokens * spec.hidden_size * (ACT_ELEMENTS_PER_LAYER + lora_inputs) * act_bytes
    if ckpt:  # only layer inputs are kept; one layer is recomputed at a time
        return spec.num_layers * tokens * spec.hidden_size * act_bytes + per_layer
    return spec.num_layers * per_layer


def adapts_vision(spec: Any, method: str, targets: list[str] | str | None) -> bool:
    """Whether training needs gradients through the vision tower (full fine-tuning, or LoRA targets inside it)."""
    if method == "full" or isinstance(targets, str):
        return True
    names = set(targets if targets is not None else spec.lora_targets)
    return bool(names & VISION_LINEAR.get(spec.family, SIGLIP_LINEAR))


def _vision(spec: Any, images: int, image_size: int | None, act_bytes: int, ckpt: bool, trained: bool) -> int:
    if not spec.vision_params:
        return 0
    width, depth = _vision_shape(spec.vision_params)
    patches = int(image_tokens(spec, image_size) * patches_per_token(spec) * images)
    per_layer = patches * width * ACT_ELEMENTS_PER_LAYER * act_bytes
    if not trained:  # a frozen tower keeps nothing for backward: one layer's forward at a time
        return per_layer
    return depth * patches * width * act_bytes + per_layer if ckpt else depth * per_layer


def estimate_memory(spec: Any, *, method: str = "lora", batch_size: int = 1,
                    seq_len: int = 512, image_size: int | None = None, gradient_checkpointing: bool = False,
                    precision: str = "bf16", weight_dtype: str | None = None, lora_r: int = 16,
                    lora_targets: list[str] | str | None = None, modules_to_save: list[str] | None = None,
                    lora_dropout: float = 0.05, device: str = "cuda", tied_embeddings: bool = False,
                    images_per_example: int = 1) -> MemoryEstimate:
    """Peak training memory of one rank from a ModelSpec plus the run's shape (`image_size`: the longest image
    side, None: the largest image the processor makes, see `image_tokens`; video tasks: `images_per_example` frames
    per example go through the vision tower)."""
    act_bytes = 4 if precision == "fp32" else 2
    weight_dtype = weight_dtype or ("float32" if method == "full" or precision == "fp32" else "bfloat16")
    weight_bytes = DTYPE_BYTES[weight_dtype]
    tokens = batch_size * seq_len
    parts: dict[str, int] = {"weights": _weights(spec, method, weight_bytes, tied_embeddings)}
    if method == "full":
        parts["gradients"] = spec.params * weight_bytes
        parts["optimizer"] = 2 * spec.params * weight_bytes  # torch AdamW keeps moments in the parameter dtype
        lora_inputs = 0
    else:
        trainable = lora_param_count(spec, lora_r, lora_targets) + saved_module_params(spec, modules_to_save or [])
        parts["trainable"] = trainable * TRAINABLE_BYTES
        names = lora_targets if isinstance(lora_targets, list) else list(spec.lora_targets)
        lora_inputs = len(names) if lora_dropout > 0 else 0  # dropout copies each adapter's input
    parts["activations"] = _activations(spec, tokens, act_bytes, gradient_checkpointing, lora_inputs)
    parts["logits"] = tokens * spec.vocab_size * (act_bytes + 8)  # logits + fp32 upcast + fp32 softmax for backward
    trained = adapts_vision(spec, method, lora_targets)
    parts["vision"] = _vision(spec, batch_size * max(1, images_per_example), image_size, act_bytes,
                              gradient_checkpointing, trained)
    if device == "cuda":
        parts["fragmentation"] = int(FRAGMENTATION * sum(parts.values()))
        parts["cuda_context"] = CUDA_CONTEXT
    return MemoryEstimate(parts, device)


def add_grpo_memory(estimate: MemoryEstimate, spec: Any, *, method: str, completions: int, seq_len: int,
                    beta: float, precision: str = "bf16", weight_dtype: str | None = None, lora_r: int = 16,
                    lora_targets: list[str] | str | None = None) -> MemoryEstimate:
    """Add what GRPO needs beyond a supervised step of `completions` sequences (the batch is counted in completions,
    `num_generations` per prompt): the generation KV cache of every sampled sequence, the old/reference log-prob
    passes' logits, and with `beta` > 0 the reference policy: a frozen copy of the adapter for LoRA/QLoRA (TRL's
    `ref` adapter, the parent's weights) or a whole second model for full fine-tuning."""
    act_bytes = 4 if precision == "fp32" else 2
    tokens = completions * seq_len
    kv = 2 * spec.num_layers * tokens * spec.hidden_size * act_bytes  # keys and values while sampling
    parts = estimate.parts
    parts["generation_kv_cache"] = kv
    parts["logprob_logits"] = tokens * spec.vocab_size * act_bytes  # no-grad passes, one batch at a time
    if beta > 0:
        if method == "full":
            parts["reference_model"] = spec.params * DTYPE_BYTES[weight_dtype or "float32"]
        else:
            parts["reference_adapter"] = lora_param_count(spec, lora_r, lora_targets) * 4  # frozen fp32 copy
    if estimate.device == "cuda" and "fragmentation" in parts:
        parts["fragmentation"] = int(FRAGMENTATION * sum(v for k, v in parts.items()
                                                         if k not in ("fragmentation", "cuda_context")))
    estimate.notes.append(f"GRPO: {completions} completions per step of up to {seq_len} tokens"
                          + (", reference policy kept" if beta > 0 else ", no reference (beta 0)"))
    return estimate
