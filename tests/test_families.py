"""Every enabled family's offline twin takes the real path: processor, template, collator, training, generation and
its family's coordinate convention, LoRA and both exports. Each twin is built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import export_runs
from PIL import Image

from pipeline.collate import (
    IGNORE,
    VisionLanguageCollator,
    answer_start,
    build_generation_inputs,
    decode_answers,
    is_seq2seq,
)
from pipeline.coords import get_convention
from pipeline.models import load_model, load_processor
from pipeline.registry import get_spec, list_specs

TWINS = [spec.key for spec in list_specs(include_disabled=False) if spec.tiny]
PROMPT = "Find every circle in the image."
BOXES = [("circle", [8.0, 12.0, 40.0, 52.0])]


def _frame(size: tuple[int, int] = (64, 64)) -> Image.Image:
    image = Image.new("RGB", size, (30, 30, 30))
    image.paste((230, 40, 40), (8, 12, 40, 52))
    return image


def _answer(key: str, size: tuple[int, int] = (64, 64)) -> str:
    return get_convention(get_spec(key).convention).encode_boxes(BOXES, *size)


@pytest.fixture(scope="module", params=TWINS)
def twin(request):
    """(key, processor, model) of one twin, loaded from its built folder like a Hub model."""
    torch.manual_seed(0)
    return request.param, load_processor(request.param), load_model(request.param, device="cpu")


def test_every_family_the_registry_enables_has_a_twin_with_its_real_convention():
    real = [s for s in list_specs(include_disabled=False) if not s.tiny]
    assert {s.family for s in real} <= {get_spec(k).family for k in TWINS}
    for spec in real:
        twins = [get_spec(k) for k in TWINS if get_spec(k).family == spec.family]
        assert any(t.convention == spec.convention for t in twins), spec.key
    for family in ("qwen2_vl", "qwen2_5_vl", "paligemma", "florence2"):
        assert {get_spec(k).convention for k in TWINS if get_spec(k).family == family} == {family}


def test_the_model_folder_is_the_family_s_own_classes(twin):
    key, processor, model = twin
    family = get_spec(key).family
    names = {"smolvlm": "Idefics3", "llava": "Llava", "qwen2_vl": "Qwen2VL", "qwen2_5_vl": "Qwen2_5_VL",
             "qwen3_vl": "Qwen3VL", "paligemma": "PaliGemma", "florence2": "Florence2",
             "llava_onevision": "LlavaOnevision"}
    assert type(model).__name__ == f"{names[family]}ForConditionalGeneration"
    assert f"{names[family]}Processor" in {cls.__name__ for cls in type(processor).__mro__}
    assert type(processor.image_processor).__name__.endswith("Pil")  # no torchvision needed


def test_image_tokens_the_processor_emits_equal_the_registry_count(twin):
    key, processor, _ = twin
    collator = VisionLanguageCollator(processor)
    for size in [(128, 72), (50, 90), (64, 64)]:
        batch = collator([{"image": Image.new("RGB", size), "prompt": "Find the car.", "answer": "none"}])
        assert int((batch["input_ids"] == processor.image_token_id).sum()) == get_spec(key).vision_tokens(*size), size


def test_labels_hold_the_answer_and_its_end_of_turn_only(twin):
    key, processor, _ = twin
    tok = processor.tokenizer
    answer = _answer(key)
    batch = VisionLanguageCollator(processor)([{"image": _frame(), "prompt": PROMPT, "answer": answer},
                                               {"image": _frame((90, 50)), "prompt": "Count the star objects.",
                                                "answer": "2"}])
    labels = batch["labels"][0]
    kept = labels[labels != IGNORE].tolist()
    text = tok.decode(kept, skip_special_tokens=False)
    ends = {"tiny-paligemma": "<eos>", "tiny-florence2": "</s>", "tiny-smolvlm": "<end_of_utterance>",
            "tiny-llava": "</s>"}.get(key, "<|im_end|>")
    start = "<s>" if key == "tiny-florence2" else ""
    assert text.lstrip(" ") == f"{start}{answer}{ends}", text  # SmolVLM / LLaVA templates put a space before it
    if is_seq2seq(processor):  # the encoder sees the prompt only; labels are the decoder's sequence
        assert (batch["input_ids"][0] == kept[1]).sum() == 0 or answer[:1] in PROMPT
        return
    row = batch["input_ids"][0][batch["attention_mask"][0].bool()]
    n = len(row) - len(kept)
    assert row[n:].tolist() == kept and (labels[:n] == IGNORE).all()  # prompt, image and template masked
    assert PROMPT in tok.decode(row[:n].tolist(), skip_special_tokens=False)


def test_lora_targets_and_saved_modules_resolve_to_real_modules(twin):
    from peft import LoraConfig, get_peft_model

    key, _, _ = twin
    spec = get_spec(key)
    model = load_model(key, device="cpu")
    names = [name for name, _ in model.named_modules()]
    for target in spec.lora_targets:
        assert any(name.endswith(f".{target}") for name in names), target
    for saved in spec.modules_to_save:
        assert any(name.endswith(f".{saved}") for name in names), saved
    peft = get_peft_model(model, LoraConfig(r=4, target_modules=spec.lora_targets,
                                            modules_to_save=spec.modules_to_save))
    lora = [name for name, _ in peft.named_modules() if name.endswith("lora_A")]
    assert any(part in name for name in lora for part in ("language_model", "text_model", "decoder")), lora[:5]


def test_train_generate_and_parse_round_trip(twin):
    """A few steps on one frame until its answer is learnt, then greedy generation parses back to its boxes."""
    key, processor, model = twin
    conv = get_convention(get_spec(key).convention)
    example = {"image": _frame(), "prompt": PROMPT, "answer": _answer(key)}
    batch = VisionLanguageCollator(processor)([example])
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    for _ in range(150):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if loss.item() < 0.01:
            break
    assert loss.item() < 0.05
    model.eval()
    inputs = build_generation_inputs(processor, [example["image"]], [PROMPT])
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=64, do_sample=False)
    answer = decode_answers(processor, output, answer_start(model, inputs))[0]
    assert answer == example["answer"]
    parsed = conv.parse_boxes(answer, 64, 64)
    assert [label for label, _ in parsed] == ["circle"]
    assert all(abs(a - b) <= 64 / 50 for a, b in zip(parsed[0][1], BOXES[0][1], strict=True)), parsed


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_runs.base_dir(tmp_path_factory)


def test_adapter_and_merged_exports_reload_and_answer_alike(twin, base: Path):
    """A 2-step LoRA run through the real trainer, exported both ways, reloaded, gives the same greedy answers."""
    from pipeline.export import export_run
    from pipeline.generation import generate_answers
    from pipeline.tasks import Example

    key, processor, _ = twin
    run = export_runs.trained_run(base, "lora", model=key)
    adapter = export_run(run, base / "exports" / f"{key}-adapter", mode="adapter", parity_samples=0)
    merged = export_run(run, base / "exports" / f"{key}-merged", mode="merged", parity_samples=0)
    dataset = export_runs.dataset(base)
    examples = [Example(f"e{i}", f"r{i}", "grounding", f"images/vid/{i:06d}.jpg", PROMPT, _answer(key), 64, 64)
                for i in range(3)]
    answers = []
    for model in (load_model(key, device="cpu", adapter=str(adapter.out_dir)), load_model(str(merged.out_dir),
                                                                                           device="cpu")):
        answers.append(generate_answers(model, load_processor(str(merged.out_dir)), examples, image_root=dataset,
                                        max_new_tokens=12, progress=False))
    assert answers[0] == answers[1] and all(answers[0])


def test_gpu_check_builds_a_real_size_config_of_every_family():
    """bench/gpu_families.py's configs, built on the meta device, have the registry's published sizes."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "bench" / "gpu_families.py"
    spec = importlib.util.spec_from_file_location("gpu_families", path)
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    families = {get_spec(key).family for key in bench.REAL}
    assert families == {get_spec(key).family for key in TWINS}
    for key in bench.REAL:
        assert abs(bench.count_params(key) / get_spec(key).params - 1) < 0.03, key


def test_qwen2_5_vl_answers_are_pixels_of_the_grid_its_processor_makes():
    """The twin's processor resizes to the same smart_resize grid the convention writes pixel answers on."""
    processor = load_processor("tiny-qwen2.5-vl")
    conv = get_convention("qwen2_5_vl")
    patch = processor.image_processor.patch_size
    for width, height in [(64, 64), (112, 112), (128, 72), (50, 90), (640, 480)]:
        grid = processor.image_processor(images=[Image.new("RGB", (width, height))])["image_grid_thw"][0].tolist()
        x_axis, y_axis = conv.axes(width, height)
        assert (grid[1] * patch, grid[2] * patch) == (y_axis.units, x_axis.units), (width, height)
