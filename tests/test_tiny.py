"""Tiny offline VLMs: built once per session, reloaded through pipeline.models like any Hub model, and usable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from pipeline.collate import VisionLanguageCollator, build_generation_inputs, decode_answers
from pipeline.errors import UserError
from pipeline.models import load_model, load_processor, model_info, resolve_model_path
from pipeline.registry import get_spec
from pipeline.tiny import MARKER, TINY_MODELS, build_tiny_model, ensure_tiny_model, sincos_2d

ANSWER = '[{"bbox_2d": [12, 5, 40, 33], "label": "circle"}]'


def _examples() -> list[dict]:
    red = Image.new("RGB", (128, 72), (200, 30, 30))
    blue = Image.new("RGB", (50, 90), (20, 30, 220))
    return [{"id": "a", "image": red, "prompt": "Find every circle in the image and answer with boxes as JSON.",
             "answer": ANSWER},
            {"id": "b", "image": blue, "prompt": "How many star objects are there?", "answer": "2"}]


@pytest.fixture(scope="module", params=TINY_MODELS[:3])
def loaded(request):
    """(key, processor, model) for the first three tiny models (tests/test_families.py covers every family's twin)."""
    torch.manual_seed(0)
    return request.param, load_processor(request.param), load_model(request.param, device="cpu")


def test_built_folder_is_a_complete_model_folder(loaded):
    key, _, _ = loaded
    folder = ensure_tiny_model(key)
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja", MARKER} <= names
    assert resolve_model_path(key) == str(folder)
    marker = json.loads((folder / MARKER).read_text())
    assert marker["key"] == key and marker["params"] == get_spec(key).params


def test_sizes_match_registry_and_stay_tiny(loaded):
    key, processor, model = loaded
    spec, info = get_spec(key), model_info(model)
    assert info["params"] == spec.params and info["vision_params"] == spec.vision_params
    assert 200_000 <= info["params"] <= 1_000_000 and info["trainable"] == info["params"]
    assert len(processor.tokenizer) == spec.vocab_size == model.config.get_text_config().vocab_size
    assert model.config.get_text_config().hidden_size == spec.hidden_size


def test_weights_are_initialised_for_a_narrow_model(loaded):
    """Matrices start at std 1/sqrt(fan_in), not transformers' 0.02; a square vision grid gets a 2-D sin-cos code."""
    key, _, model = loaded
    for name, param in model.named_parameters():
        if param.dim() >= 2 and param.numel() >= 4096 and "position_embedding" not in name:
            expected = param[0].numel() ** -0.5
            assert abs(param.std().item() / expected - 1) < 0.1, (name, param.std().item(), expected)
    if key == "tiny-smolvlm":  # 64 px / 16 px patches: a 4x4 grid, row-major
        table = model.model.vision_model.embeddings.position_embedding.weight
        assert torch.allclose(table, sincos_2d(4, table.shape[1]))
        assert torch.allclose(table[1, :16], torch.sin(torch.ones(16) / 100.0 ** (torch.arange(16) / 16)))
        assert torch.equal(table[4, :32], table[0, :32]) and not torch.equal(table[4], table[0])  # same x, next y
    if key == "tiny-llava":  # CLIP: a CLS entry, then 64 px / 8 px patches = an 8x8 grid
        table = model.model.vision_tower.embeddings.position_embedding.weight
        assert table.shape[0] == 1 + 8 * 8
        assert torch.allclose(table[1:], sincos_2d(8, table.shape[1])) and not table[0].any()


def test_position_code_handles_a_cls_entry_and_non_square_grids():
    from types import SimpleNamespace

    from pipeline.tiny import position_grid

    assert position_grid(SimpleNamespace(image_size=64, patch_size=8), 65) == (8, 8, 1)
    assert position_grid(SimpleNamespace(image_size=(48, 80), patch_size=16), 15) == (3, 5, 0)
    assert position_grid(SimpleNamespace(image_size=(48, 80), patch_size=(16, 16)), 16) == (3, 5, 1)
    assert position_grid(None, 17) == (4, 4, 1) and position_grid(None, 16) == (4, 4, 0)
    assert position_grid(None, 15) is None
    code = sincos_2d(3, 8, cols=5)
    assert code.shape == (15, 8)
    assert torch.equal(code[5, :4], code[0, :4]) and not torch.equal(code[5, 4:], code[0, 4:])  # same x, next y
    assert torch.equal(code[1, 4:], code[0, 4:]) and not torch.equal(code[1, :4], code[0, :4])  # next x, same y


def test_tokenizer_splits_digits_and_json_punctuation(loaded):
    _, processor, _ = loaded
    tok = processor.tokenizer
    pieces = [tok.decode([i]) for i in tok('[{"bbox_2d": [12, 305]}]', add_special_tokens=False)["input_ids"]]
    assert pieces[:4] == ["[", "{", '"', "bbox"]
    assert "1" in pieces and "2" in pieces and "3" in pieces and "0" in pieces and "5" in pieces
    assert all(not any(c.isdigit() for c in p) or len(p.strip()) == 1 for p in pieces)
    assert tok.eos_token_id is not None and tok.pad_token_id is not None and tok.chat_template


def test_image_tokens_match_the_registry_rule(loaded):
    key, processor, _ = loaded
    collator = VisionLanguageCollator(processor)
    image_id = processor.image_token_id
    for size in [(128, 72), (50, 90), (64, 64)]:
        batch = collator([{"image": Image.new("RGB", size), "prompt": "Find the car.", "answer": "none"}])
        assert int((batch["input_ids"] == image_id).sum()) == get_spec(key).vision_tokens(*size)


def test_forward_backward_and_greedy_generate(loaded):
    key, processor, model = loaded
    batch = VisionLanguageCollator(processor)(_examples())
    model.train()
    out = model(**batch)
    assert torch.isfinite(out.loss) and 4.0 < out.loss.item() < 9.0  # about ln(vocab) at random init
    out.loss.backward()
    patch_grads = [p.grad for n, p in model.named_parameters() if "patch_embed" in n]
    assert patch_grads and all(g is not None and float(g.abs().sum()) > 0 for g in patch_grads)  # image -> loss
    model.zero_grad()
    model.eval()
    examples = _examples()
    inputs = build_generation_inputs(processor, [e["image"] for e in examples], [e["prompt"] for e in examples])
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    length = inputs["input_ids"].shape[1]
    assert output.shape[0] == 2 and length < output.shape[1] <= length + 6
    answers = decode_answers(processor, output, length)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)


def test_build_is_deterministic_and_atomic(tmp_path):
    first = build_tiny_model("tiny-llava", tmp_path / "a")
    second = build_tiny_model("tiny-llava", tmp_path / "b")
    assert (first / "model.safetensors").read_bytes() == (second / "model.safetensors").read_bytes()
    assert (first / "tokenizer.json").read_text() == (second / "tokenizer.json").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no temporary folders left behind
    with pytest.raises(UserError, match="unknown tiny model 'tiny-nope'"):
        build_tiny_model("tiny-nope", tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_ensure_reuses_a_built_model_and_rebuilds_a_half_one(studio_home):
    folder = ensure_tiny_model("tiny-smolvlm")
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert ensure_tiny_model("tiny-smolvlm") == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(UserError, match="choose one of tiny-smolvlm"):
        ensure_tiny_model("tiny-nope")


def test_ensure_rebuilds_a_folder_without_marker(studio_home):
    half = Path(studio_home) / "models" / "tiny-qwen2-vl"
    ensure_tiny_model("tiny-qwen2-vl")
    (half / MARKER).unlink()  # as if a build had been interrupted
    (half / "model.safetensors").write_bytes(b"garbage")
    folder = ensure_tiny_model("tiny-qwen2-vl")
    assert (folder / MARKER).is_file() and load_model("tiny-qwen2-vl", device="cpu") is not None


def test_four_bit_loading_on_cpu():
    from bitsandbytes.nn import Linear4bit

    model = load_model("tiny-smolvlm", quantization="4bit", device="cpu")
    assert model_info(model)["quantization"] == "4bit"
    assert any(isinstance(m, Linear4bit) for m in model.modules())
    processor = load_processor("tiny-smolvlm")
    batch = VisionLanguageCollator(processor)(_examples())
    with torch.no_grad():
        loss = model(**batch).loss
    assert torch.isfinite(loss)


def test_qwen_processor_is_image_only_without_torchvision():
    processor = load_processor("tiny-qwen2-vl")
    assert type(processor).__name__ == "ImageOnlyQwen2VLProcessor"
    assert getattr(processor, "video_processor", None) is None


def test_resolve_model_path_and_refusals(tmp_path, monkeypatch):
    assert resolve_model_path("qwen2-vl-2b") == "Qwen/Qwen2-VL-2B-Instruct"
    assert resolve_model_path("Qwen/Qwen2-VL-2B-Instruct") == "Qwen/Qwen2-VL-2B-Instruct"
    assert resolve_model_path("someone/other-vlm") == "someone/other-vlm"
    local = ensure_tiny_model("tiny-llava")
    assert resolve_model_path(str(local)) == str(local)
    with pytest.raises(UserError, match="no config.json"):
        resolve_model_path(str(tmp_path))
    with pytest.raises(UserError, match="unknown model 'not a model'"):
        resolve_model_path("not a model")
    monkeypatch.delenv("STUDIO_REMOTE_CODE_ALLOWLIST", raising=False)
    with pytest.raises(UserError, match="runs code from its Hub repo"):
        load_model("minicpm-v-2.6")
    with pytest.raises(UserError, match="unknown quantization '3bit'"):
        load_model("tiny-smolvlm", quantization="3bit")
    with pytest.raises(UserError, match="unknown dtype 'int4'"):
        load_model("tiny-smolvlm", dtype="int4")


def test_adapter_loads_onto_the_base_model(tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model

    spec = get_spec("tiny-smolvlm")
    base = load_model("tiny-smolvlm", device="cpu")
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=spec.lora_targets))
    peft_model.save_pretrained(tmp_path / "adapter")
    loaded = load_model("tiny-smolvlm", adapter=str(tmp_path / "adapter"), device="cpu")
    assert isinstance(loaded, PeftModel)
    assert model_info(loaded)["params"] > spec.params
    with pytest.raises(UserError, match="no adapter_config.json"):
        load_model("tiny-smolvlm", adapter=str(tmp_path))
