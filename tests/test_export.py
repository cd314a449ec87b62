"""Export: adapter / merged folders from real 2-step runs (LoRA, full, QLoRA), parity, model card, zip, leak scan."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from helpers import export_runs

from pipeline.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "Find every circle in the image."


@pytest.fixture(scope="session")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_runs.base_dir(tmp_path_factory)


@pytest.fixture(scope="session")
def lora_run(base: Path) -> Path:
    return export_runs.trained_run(base, "lora")


@pytest.fixture(scope="session")
def adapter_export(base: Path, lora_run: Path):
    return export_runs.exported(base, "lora", "adapter")


@pytest.fixture(scope="session")
def merged_export(base: Path, lora_run: Path):
    return export_runs.exported(base, "lora", "merged")


def _logits(model, processor, dataset: Path):
    import torch
    from PIL import Image

    from pipeline.collate import build_generation_inputs

    image = Image.open(dataset / "images" / "vid" / "000003.jpg")
    inputs = build_generation_inputs(processor, [image], [PROMPT])
    with torch.no_grad():
        return model(**inputs).logits


def _adapter_model(run: Path, source: str):
    from pipeline.models import load_model

    return load_model("tiny-smolvlm", device="cpu", adapter=str(run / source)).eval()


# -- fast: bad input and the leak scanner ---------------------------------------------------------------------------
def test_read_run_rejects_a_folder_without_config(tmp_path: Path) -> None:
    from pipeline.export import export_run

    with pytest.raises(UserError, match=r"not a run folder \(no config.yaml\)"):
        export_run(tmp_path, tmp_path / "out")
    with pytest.raises(UserError, match="run folder not found"):
        export_run(tmp_path / "missing", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_find_leaks_reports_paths_and_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.numpy import save_file

    from pipeline.leaks import find_leaks

    monkeypatch.setenv("MY_SERVICE_TOKEN", "s3cr3t-value-0123456789")
    (tmp_path / "clean.json").write_text('{"a": 1}')
    (tmp_path / "config.json").write_text(json.dumps({"_name_or_path": str(tmp_path / "model")}))
    (tmp_path / "notes.md").write_text("token: s3cr3t-value-0123456789")
    (tmp_path / "card.md").write_text("push with hf_" + "a" * 34)
    (tmp_path / "tokenizer.json").write_text('{"vocab": {"/home/": 1}}')  # path-like vocabulary is fine
    import numpy as np

    save_file({"w": np.zeros(2, np.float32)}, str(tmp_path / "w.safetensors"), metadata={"src": "/home/me/x"})
    problems = find_leaks(tmp_path, extra_paths=[tmp_path])
    assert any(p.startswith("config.json contains the local path") for p in problems)
    assert "notes.md contains a secret token" in problems
    assert "card.md contains a secret token" in problems
    assert any(p.startswith("w.safetensors contains the local path") for p in problems)
    assert not any(p.startswith(("clean.json", "tokenizer.json")) for p in problems)


def test_hub_license_mapping() -> None:
    from pipeline.modelcard import hub_license

    assert hub_license("apache-2.0 (project-built)") == ("apache-2.0", None)
    assert hub_license("gemma (gated)") == ("gemma", None)
    assert hub_license("qwen-research") == ("other", "qwen-research")


# -- slow: real runs -------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_adapter_export_files_config_and_zip(adapter_export, lora_run: Path) -> None:
    out = adapter_export.out_dir
    names = set(adapter_export.files)
    assert {"adapter_model.safetensors", "adapter_config.json", "processor_config.json", "tokenizer.json",
            "tokenizer_config.json", "chat_template.jinja", "studio.json", "README.md", "training_curve.png",
            "deploy_config.yaml"} <= names
    assert not names & {"optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin", "manifest.json"}
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "tiny-smolvlm" and config["revision"] is None
    best = json.loads((lora_run / "best.json").read_text())
    assert adapter_export.source == best["checkpoint"] and adapter_export.step == best["step"]
    studio = json.loads((out / "studio.json").read_text())
    assert studio["convention"] == "json" and studio["mode"] == "adapter" and studio["model"] == "tiny-smolvlm"
    assert studio["label_map"] == {"circle": 12, "square": 12}
    assert studio["prompt_templates"]["grounding"][0] == "Find every {label} in the image."
    assert "dataset" not in studio  # the run's studio.json names the local dataset folder; the export must not
    assert adapter_export.zip_path == out.with_name(out.name + ".zip") and not (out / f"{out.name}.zip").exists()
    with zipfile.ZipFile(adapter_export.zip_path) as archive:
        assert sorted(archive.namelist()) == sorted(f"{out.name}/{n}" for n in names)
        assert archive.read(f"{out.name}/adapter_config.json") == (out / "adapter_config.json").read_bytes()


@pytest.mark.slow
def test_adapter_export_reloads_with_peft_and_same_logits(adapter_export, lora_run: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from pipeline.models import resolve_model_path

    out, dataset = adapter_export.out_dir, export_runs.dataset(lora_run.parent)
    config = json.loads((out / "adapter_config.json").read_text())
    processor = AutoProcessor.from_pretrained(str(out))
    base = AutoModelForImageTextToText.from_pretrained(resolve_model_path(config["base_model_name_or_path"])).eval()
    base_logits = _logits(base, processor, dataset)
    reloaded = PeftModel.from_pretrained(base, str(out)).eval()
    in_memory = _adapter_model(lora_run, adapter_export.source)
    logits = _logits(reloaded, processor, dataset)
    assert torch.equal(logits, _logits(in_memory, processor, dataset))
    assert not torch.equal(logits, base_logits)  # the trained adapter changes the answer distribution


@pytest.mark.slow
def test_merged_export_loads_and_matches_the_adapter_model(merged_export, lora_run: Path) -> None:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    out, dataset = merged_export.out_dir, export_runs.dataset(lora_run.parent)
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config.get("dtype") == "float32"
    assert not (out / "adapter_config.json").exists() and (out / "model.safetensors").is_file()
    processor = AutoProcessor.from_pretrained(str(out))
    merged = AutoModelForImageTextToText.from_pretrained(str(out)).eval()
    adapter_logits = _logits(_adapter_model(lora_run, merged_export.source), processor, dataset)
    assert torch.allclose(_logits(merged, processor, dataset), adapter_logits, atol=1e-4)
    parity = json.loads((out / "parity.json").read_text())
    assert parity["checked"] and parity["all_match"] and parity["samples_checked"] == 3
    assert parity["max_abs_logit_diff"] < 1e-4 and parity["dtype"] == "float32"
    assert all(s["adapter_answer"] == s["merged_answer"] for s in parity["samples"])
    assert merged_export.parity == parity


@pytest.mark.slow
def test_full_run_exports_merged_and_refuses_adapter(base: Path, tmp_path: Path, capsys) -> None:
    import torch
    from safetensors.torch import load_file

    from pipeline.cli import main

    run = export_runs.trained_run(base, "full")
    capsys.readouterr()  # training's own output
    code = main(["export", str(run), "--mode", "adapter", "--out", str(tmp_path / "a")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert err.startswith("error: ") and "full fine-tune has no adapter to export; use --mode merged" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "a.zip").exists()
    result = export_runs.exported(base, "full", "merged", checkpoint="last")
    assert result.source == "model" and result.parity is None
    exported, trained = load_file(str(result.out_dir / "model.safetensors")), load_file(str(run / "model" /
                                                                                             "model.safetensors"))
    assert exported.keys() == trained.keys()
    assert all(torch.equal(exported[k], trained[k]) for k in trained)


@pytest.mark.slow
def test_qlora_run_merges_in_16_bit(base: Path) -> None:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText

    result = export_runs.exported(base, "qlora", "merged")
    config = json.loads((result.out_dir / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "bfloat16"
    weights = load_file(str(result.out_dir / "model.safetensors"))
    assert {t.dtype for t in weights.values() if t.is_floating_point()} == {torch.bfloat16}
    assert not any("absmax" in k or "quant" in k for k in weights)  # no 4-bit leftovers
    assert result.parity["checked"] and result.parity["dtype"] == "bfloat16"
    model = AutoModelForImageTextToText.from_pretrained(str(result.out_dir))
    assert model.dtype == torch.bfloat16


@pytest.mark.slow
def test_checkpoint_selection_and_refusals(lora_run: Path, tmp_path: Path) -> None:
    from pipeline.export import export_run, read_run, select_checkpoint

    info = read_run(lora_run)
    assert select_checkpoint(info, "last")[:3] == (lora_run / "adapter", "adapter", 2)
    assert select_checkpoint(info, 1)[1:3] == ("checkpoint-1", 1)
    with pytest.raises(UserError, match="checkpoint-7 not found"):
        select_checkpoint(info, "7")
    with pytest.raises(UserError, match="--checkpoint must be best, last or a step number"):
        select_checkpoint(info, "newest")
    copy = tmp_path / "run"
    shutil.copytree(lora_run, copy)
    (copy / "checkpoint-1" / "manifest.json").unlink()
    (copy / "best.json").unlink()
    info = read_run(copy)
    with pytest.raises(UserError, match="checkpoint-1 is not usable: no manifest.json"):
        select_checkpoint(info, "1")
    folder, label, _, notes = select_checkpoint(info, "best")
    assert label == "adapter" and "no usable best checkpoint" in notes[0]
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("keep")
    with pytest.raises(UserError, match="already exists and is not empty"):
        export_run(copy, tmp_path / "taken")
    assert (tmp_path / "taken" / "x").read_text() == "keep"
    with pytest.raises(UserError, match="--out must be outside the run folder"):
        export_run(copy, copy / "export")
    with pytest.raises(UserError, match="--mode must be one of adapter, merged"):
        export_run(copy, tmp_path / "m", mode="gguf")


@pytest.mark.slow
def test_smoke_test_note_only_for_short_runs() -> None:
    from pipeline.modelcard import SMOKE_TEST_STEPS, smoke_test_note

    assert smoke_test_note([{"event": "end", "step": 10}]).startswith("**Smoke test.** This model trained only 10")
    assert smoke_test_note([{"event": "end", "step": SMOKE_TEST_STEPS}]) is None
    assert smoke_test_note([{"event": "start"}]) is None  # not recorded: no claim either way


def test_card_front_matter_and_body(adapter_export) -> None:
    from huggingface_hub import ModelCard

    text = (adapter_export.out_dir / "README.md").read_text()
    front = yaml.safe_load(text.split("---")[1])
    card = ModelCard.load(adapter_export.out_dir / "README.md")
    assert card.data.library_name == "peft" == front["library_name"]
    assert card.data.pipeline_tag == "image-text-to-text" and card.data.license == "apache-2.0"
    assert {"sam2-vlm-studio", "lora", "peft", "smolvlm", "grounding"} <= set(card.data.tags)
    assert card.data.base_model is None  # tiny-smolvlm is not a Hub id; the body names it
    for fragment in ("`tiny-smolvlm` (an offline tiny model", "12 annotated frames with 24 objects",
                     "| sam2_demo_zip | `abc123def4567890` | 24.0 | 0 |", "| circle | 12 |",
                     "Split: **random**, ratios 0.7 / 0.3 / 0.0", "seed 1", "| learning rate | 0.001 |",
                     "| LoRA r / alpha / dropout | 8 / 16 / 0 |", "Trained 2 steps in", "cpu: ",
                     "![Training curve](training_curve.png)", "Not evaluated yet", "`json` coordinate convention",
                     '[{"label":"circle","box":[10,10,50,50]}]', "Find every {label} in the image.",
                     "**Smoke test.** This model trained only 2 steps"):
        assert fragment in text, fragment
    from PIL import Image

    with Image.open(adapter_export.out_dir / "training_curve.png") as image:
        assert image.format == "PNG" and image.size == (600, 320)


@pytest.mark.slow
def test_card_model_index_from_metrics_and_real_base(lora_run: Path, tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    from pipeline.export import export_run, read_run
    from pipeline.modelcard import card_data
    from pipeline.registry import get_spec

    run = tmp_path / "run"
    shutil.copytree(lora_run, run)
    evaluation = run / "eval" / "val"
    for folder, metrics in {"": {"miou": 0.71, "ap50": 0.8, "map": 0.45, "label_accuracy": 0.9,
                                 "parse_failure_rate": 0.05, "n": 4, "per_label": {}, "meta": {"run_dir": str(run)}},
                            "base": {"miou": 0.1, "ap50": 0.0, "parse_failure_rate": 0.9, "n": 4},
                            "baseline": {"miou": 0.2, "ap50": 0.1, "n": 4}}.items():
        (evaluation / folder).mkdir(parents=True, exist_ok=True)
        (evaluation / folder / "metrics.json").write_text(json.dumps(metrics))
    (evaluation / "comparison.md").write_text("| metric | fine-tuned |\n|---|---|\n| miou | 0.71 |\n")
    result = export_run(run, tmp_path / "out", checkpoint="last", repo_id="alice/shapes",
                        datasets=["alice/shapes-data"])
    card = ModelCard.load(result.out_dir / "README.md")
    values = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert values == {"miou": 0.71, "ap50": 0.8, "map": 0.45, "label_accuracy": 0.9, "parse_failure_rate": 0.05}
    assert card.data.datasets == ["alice/shapes-data"] and card.data.model_name == "alice/shapes"
    assert "| Metric | base model | mean-box baseline | fine-tuned |" in card.text
    assert "| mean box IoU | 0.100 | 0.200 | 0.710 |" in card.text and "| label accuracy | - | - | 0.900 |" in card.text
    assert "<summary>Full comparison</summary>\n\n| metric | fine-tuned |" in card.text
    assert 'MODEL = "alice/shapes"' in card.text
    info = read_run(run)
    real = card_data(replace(info, spec=get_spec("smolvlm-256m")), {"mode": "merged", "tasks": ["grounding"]},
                     model_name="alice/x", datasets=None, evals=[])
    assert real.base_model == "HuggingFaceTB/SmolVLM-256M-Instruct" and real.library_name == "transformers"


def _usage_code(export_dir: Path, image: Path) -> str:
    text = (export_dir / "README.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    assert 'IMAGE = "frame.jpg"' in code
    return code.replace('IMAGE = "frame.jpg"', f"IMAGE = {json.dumps(str(image))}")


@pytest.mark.slow
def test_card_usage_code_runs_against_the_exports(adapter_export, merged_export, lora_run: Path,
                                                  studio_home: Path) -> None:
    image = export_runs.dataset(lora_run.parent) / "images" / "vid" / "000003.jpg"
    assert adapter_export.out_dir.parent == merged_export.out_dir.parent  # MODEL is the folder name: run beside it
    snippets = [_usage_code(result.out_dir, image) for result in (adapter_export, merged_export)]
    driver = "".join(f"exec({json.dumps(code)}, {{'__name__': '__main__'}})\nprint('-----')\n" for code in snippets)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "STUDIO_HOME": str(studio_home), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", driver], cwd=adapter_export.out_dir.parent, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    outputs = proc.stdout.split("-----\n")
    assert len(outputs) == 3 and outputs[2] == ""
    for out in outputs[:2]:
        # An untrained model's answer may itself hold line breaks: the boxes line is the last one.
        lines = out.splitlines()
        assert lines[0].startswith("answer: ") and len(out.split("\nboxes: ")[0]) > len("answer: ")
        assert lines[-1].startswith("boxes: ")


@pytest.mark.slow
def test_no_export_file_holds_a_local_path_or_token(base: Path, adapter_export, merged_export,
                                                    studio_home: Path) -> None:
    results = [adapter_export, merged_export, export_runs.exported(base, "full", "merged", checkpoint="last"),
               export_runs.exported(base, "qlora", "merged")]
    needles = ["/tmp", str(Path.home()), str(studio_home), str(base), os.getcwd()]
    for result in results:
        files = export_runs.folder_bytes(result.out_dir)
        assert export_runs.scan_for_leaks(files, needles) == []
        with zipfile.ZipFile(result.zip_path) as archive:
            zipped = {name: archive.read(name) for name in archive.namelist()}
        assert export_runs.scan_for_leaks(zipped, needles) == []
        assert {n.split("/", 1)[1] for n in zipped} == set(files)
