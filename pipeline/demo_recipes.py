"""Per-model recipes for the offline demo: the training values that make each tiny twin learn within the demo's time.

Every twin trains with the `cpu_demo` preset (full fine-tuning, batch 32, cosine schedule, best checkpoint by
validation mIoU); a recipe overrides only what its family needs. docs/DEMO.md has the per-family results.
"""

from __future__ import annotations

from typing import Any

from .errors import UserError

# model key -> {"training": {field: value}} (TrainConfig.training fields) and {"sample": {option: value}} (the
# generated sample, pipeline.demo.SAMPLE_OPTIONS); an empty recipe is the preset and the sample as they are.
RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "tiny-smolvlm": {},
    "tiny-llava": {},
    # three digits per coordinate (0-1000): 0.25 held-out mIoU after 1,000 steps, 0.70 after 2,000 (docs/DEMO.md)
    "tiny-qwen2-vl": {"training": {"max_steps": 2000}},
    "tiny-qwen2.5-vl": {},
    "tiny-qwen3-vl": {},
    "tiny-paligemma": {},
    # at 2e-3 the encoder-decoder sat on a plateau (loss ~1.6) for 500 to 1,000 steps, or never left it; at 1e-3 it
    # leaves it by step 750 (docs/DEMO.md)
    "tiny-florence2": {"training": {"learning_rate": 1e-3}},
    "tiny-llava-onevision": {},
}


def check_demo_model(model: str) -> Any:
    """The registry entry of a tiny model the demo can run; UserError naming the choices otherwise."""
    from .registry import get_spec, list_specs

    choices = ", ".join(s.key for s in list_specs(include_disabled=False) if s.tiny)
    try:
        spec = get_spec(model)
    except UserError:
        raise UserError(f"unknown demo model {model!r}; choose one of {choices}") from None
    if not spec.tiny or not spec.enabled:
        raise UserError(f"the demo runs offline tiny models only; choose one of {choices}")
    return spec


def recipe_sample(model: str) -> dict[str, Any]:
    """The recipe's sample options for `model` (frame size, ...), {} for the demo's defaults."""
    return dict(RECIPES.get(model, {}).get("sample", {}))


def apply_recipe(cfg: Any, model: str) -> Any:
    """Set the recipe's training values for `model` on `cfg` (a TrainConfig from the cpu_demo preset)."""
    from .config import set_field

    for section, values in RECIPES.get(model, {}).items():
        if section == "sample":
            continue
        for name, value in values.items():
            set_field(cfg, f"{section}.{name}", value)
    return cfg
