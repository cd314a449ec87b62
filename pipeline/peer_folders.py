"""Model folders trained by other tools: the prompt framing they trained with, so `evaluate --model` scores them as
they were trained.

LLaMA-Factory writes its template's default system prompt before the first user turn while it trains, but the
chat template it saves with the model (the processor's own) leaves that prompt out. A folder it wrote is known by
the `llama-factory` tag of its model card (README.md). For the families whose LLaMA-Factory template has such a
default system prompt (the Vicuna-style `llava` and `llava_next` templates) the evaluation writes the same text in
front of every prompt; `--system TEXT` overrides it (`--system ''` leaves it out).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from .errors import UserError

log = logging.getLogger(__name__)

LLAMAFACTORY_TAG = "llama-factory"
VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the user's questions.")
# config.json model_type -> (LLaMA-Factory template, its default system prompt), for the templates that write a
# default system prompt the saved chat template lacks (llamafactory/data/template.py: "llava", "llava_next")
LLAMAFACTORY_SYSTEMS: dict[str, tuple[str, str]] = {
    "llava": ("llava", VICUNA_SYSTEM),
    "llava_next": ("llava_next", VICUNA_SYSTEM),
}


def card_tags(folder: str | Path) -> list[str]:
    """The tags of a folder's model card (README.md front matter); [] without a readable card."""
    from huggingface_hub import ModelCard

    readme = Path(folder) / "README.md"
    if not readme.is_file():
        return []
    try:
        return [str(tag) for tag in (ModelCard.load(readme).data.tags or [])]
    except Exception as exc:  # noqa: BLE001 - a card we cannot parse says nothing about who trained the model
        log.debug("cannot read the model card %s: %s", readme, exc)
        return []


def trained_by_llamafactory(folder: str | Path) -> bool:
    """True when the folder's model card carries LLaMA-Factory's tag."""
    return LLAMAFACTORY_TAG in card_tags(folder)


def folder_system_prompt(folder: str | Path, config: dict[str, Any]) -> tuple[str | None, str | None]:
    """(system prompt the folder trained with, note for the user), (None, None) when nothing is to be added."""
    known = LLAMAFACTORY_SYSTEMS.get(str(config.get("model_type", "")))
    if known is None or not Path(folder).is_dir() or not trained_by_llamafactory(folder):
        return None, None
    template, system = known
    note = (f"trained by LLaMA-Factory (model card tag {LLAMAFACTORY_TAG!r}): its {template!r} template's default "
            "system prompt is written before each prompt, as in its training (--system TEXT overrides, --system '' "
            "leaves it out)")
    return system, note


def add_system_prompt(processor: Any, system: str) -> None:
    """Make the processor's chat template write `system` first, with nothing between it and the first turn (as
    LLaMA-Factory's string templates do)."""
    template = getattr(processor, "chat_template", None)
    if not template:
        raise UserError("a system prompt needs a model with a chat template (this processor frames prompts itself)")
    # a JSON string is a valid Jinja string literal: quotes and backslashes in the text stay literal
    processor.chat_template = "{{ " + json.dumps(system) + " }}" + template
