"""Folders trained by other tools: a LLaMA-Factory folder (model card tag) is prompted exactly as LLaMA-Factory's
`llava` template trained it, its default system prompt included; `--system` overrides; other folders are unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.errors import UserError

# the front matter LLaMA-Factory 0.9.5 writes into README.md of its output folder (Trainer's model card + its tags)
LF_CARD = """---
library_name: transformers
license: other
base_model: tiny-llava
tags:
- llama-factory
- full
- generated_from_trainer
model-index:
- name: lf-out
  results: []
---

# lf-out

This model is a fine-tuned version of tiny-llava on the studio_rows dataset.
"""


@pytest.fixture(scope="module")
def llava_folder(studio_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny-llava saved as plain transformers files (config.json + processor), as LLaMA-Factory leaves it."""
    from pipeline.models import load_processor, resolve_model_path

    out = tmp_path_factory.mktemp("lf") / "lf-out"
    load_processor("tiny-llava").save_pretrained(out)
    config = json.loads((Path(resolve_model_path("tiny-llava")) / "config.json").read_text())
    (out / "config.json").write_text(json.dumps(config))
    (out / "README.md").write_text(LF_CARD)
    return out


def test_a_llamafactory_llava_folder_gets_its_templates_system_prompt(llava_folder: Path) -> None:
    from pipeline.collate import render_prompt
    from pipeline.evaluate import model_target
    from pipeline.models import load_processor
    from pipeline.peer_folders import VICUNA_SYSTEM, add_system_prompt, trained_by_llamafactory

    assert trained_by_llamafactory(llava_folder)
    target = model_target(str(llava_folder))
    assert target.system == VICUNA_SYSTEM and target.convention == "llava"
    assert any("LLaMA-Factory" in note and "'llava' template" in note for note in target.notes)
    processor = load_processor(str(llava_folder))
    plain = render_prompt(processor, "Find the cat.")
    assert plain == "USER: <image>\nFind the cat. ASSISTANT:"  # the saved chat template: no system prompt
    add_system_prompt(processor, target.system)
    # llamafactory/data/template.py "llava": default_system, then "USER: {{content}} ASSISTANT:" with the row's
    # content "<image>\n<prompt>", nothing in between
    assert render_prompt(processor, "Find the cat.") == VICUNA_SYSTEM + "USER: <image>\nFind the cat. ASSISTANT:"


def test_system_override_and_folders_without_the_tag(llava_folder: Path, tmp_path: Path) -> None:
    import shutil

    from pipeline.evaluate import model_target
    from pipeline.peer_folders import add_system_prompt

    assert model_target(str(llava_folder), system="").system is None
    custom = model_target(str(llava_folder), system='Say "boxes" only.')
    assert custom.system == 'Say "boxes" only.' and not any("LLaMA-Factory" in n for n in custom.notes)
    other = tmp_path / "plain"
    shutil.copytree(llava_folder, other)
    (other / "README.md").write_text(LF_CARD.replace("- llama-factory\n", ""))
    assert model_target(str(other)).system is None
    (other / "README.md").write_text("---\ntags: [llama-factory\n---\nbroken front matter")
    assert model_target(str(other)).system is None  # an unreadable card says nothing
    config = json.loads((other / "config.json").read_text())
    (other / "README.md").write_text(LF_CARD)
    (other / "config.json").write_text(json.dumps({**config, "model_type": "qwen2_vl"}))
    assert model_target(str(other), convention="qwen2_vl").system is None  # its saved template has the system

    class NoTemplate:
        chat_template = None

    with pytest.raises(UserError, match="needs a model with a chat template"):
        add_system_prompt(NoTemplate(), "x")


def test_cli_system_goes_with_model_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import main

    assert main(["evaluate", str(tmp_path), "--system", "x"]) == 2  # a usage error
    assert "--system goes with --model" in capsys.readouterr().err
