"""Export a training run as a LoRA adapter or a merged model, with processor files, studio.json, card and zip.

    python -m pipeline export RUN --mode adapter --out exports/shapes-lora      # + exports/shapes-lora.zip
    python -m pipeline export RUN --mode merged --checkpoint last --out exports/shapes-merged

    from pipeline.export import export_run
    result = export_run("studio_data/runs/r1", "exports/shapes-lora", mode="adapter")

adapter: adapter weights + adapter_config.json naming the base by Hub id (a registry key for the offline tiny models),
never a local path. merged: the base reloaded in 16/32 bit (never 4 bit), the adapter merged in, saved as
safetensors, with parity.json comparing the adapter model's answers with the reloaded merged model's. A full
fine-tune run is exported as merged. Every file is scanned for local paths and secrets before the folder appears.
"""

from __future__ import annotations

import fnmatch
import json
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import rundir
from .errors import UserError

MODES = ("adapter", "merged")
EXPORT_FORMAT = "sam2-vlm-studio-export/1"
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
MODEL_PATTERNS = ("config.json", "generation_config.json", "model*.safetensors", "model.safetensors.index.json")
PROCESSOR_PATTERNS = ("processor_config.json", "preprocessor_config.json", "video_preprocessor_config.json",
                      "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                      "vocab.json", "merges.txt", "*.model", "chat_template.json", "*.jinja")
STUDIO_KEYS = ("tool_version", "model", "base_model", "family", "convention", "method", "tasks", "prompt_templates",
               "label_map", "seed", "dataset_fingerprint", "max_length", "max_image_size", "max_pixels")


@dataclass
class RunInfo:
    """What export needs from a run folder: its config, studio.json and registry entry."""

    run: Path
    config: Any
    studio: dict[str, Any]
    spec: Any

    @property
    def method(self) -> str:
        from .config import weights_method

        return weights_method(self.config)

    @property
    def dataset(self) -> Path | None:
        path = self.config.data.path or self.studio.get("dataset")
        return Path(path) if path and Path(path).is_dir() else None


@dataclass
class ExportResult:
    """Where the export went, from which checkpoint, its files, the parity verdict and notes for the user."""

    out_dir: Path
    zip_path: Path
    mode: str
    source: str
    step: int | None
    files: list[str] = field(default_factory=list)
    parity: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def read_run(run_dir: str | Path) -> RunInfo:
    """Read RUN/config.yaml and RUN/studio.json; UserError naming the run when they are missing or broken."""
    from .config import load_config
    from .registry import get_spec

    run = Path(run_dir).expanduser().resolve()
    if not run.is_dir():
        raise UserError("run folder not found", run)
    if not rundir.config_path(run).is_file():
        raise UserError(f"not a run folder (no {rundir.CONFIG_FILE})", run)
    config = load_config(rundir.config_path(run))
    try:
        studio = json.loads(rundir.studio_path(run).read_text(encoding="utf-8"))
    except FileNotFoundError:
        studio = {}
    except ValueError:
        raise UserError(f"{rundir.STUDIO_FILE} is not valid JSON", run) from None
    return RunInfo(run, config, studio if isinstance(studio, dict) else {}, get_spec(config.model.name))


def select_checkpoint(info: RunInfo, checkpoint: str | int = "best") -> tuple[Path, str, int | None, list[str]]:
    """(folder, label, step, notes) for best | last | N; the final output counts as 'last'."""
    final = rundir.output_path(info.run, info.method)
    notes: list[str] = []
    text = str(checkpoint).strip().lower()
    if text.isdigit():
        folder = rundir.checkpoint_path(info.run, int(text))
        if not folder.is_dir():
            raise UserError(f"{folder.name} not found (see the {rundir.CHECKPOINT_PREFIX}N folders)", info.run)
        problem = rundir.check_manifest(folder)
        if problem:
            raise UserError(f"{folder.name} is not usable: {problem}", info.run)
        return folder, folder.name, int(text), notes
    if text == "best":
        best, chosen = rundir.read_best(info.run), rundir.best_checkpoint(info.run)
        if best and chosen is not None:
            step = best.get("step")
            return chosen, chosen.name, int(step) if step else rundir.checkpoint_step(chosen), notes
        notes.append("no usable best checkpoint (the run had no evaluation): exported the last weights instead")
    elif text != "last":
        raise UserError(f"--checkpoint must be best, last or a step number, got {checkpoint!r}")
    if final.is_dir():
        return final, final.name, _final_step(info.run), notes
    newest = rundir.newest_checkpoint(info.run)
    if newest is None:
        raise UserError("the run has no finished output and no complete checkpoint to export", info.run)
    notes.append(f"the run did not finish: exported its newest complete checkpoint ({newest.name})")
    return newest, newest.name, rundir.checkpoint_step(newest), notes


def _final_step(run: Path) -> int | None:
    step = None
    for event in rundir.run_events(run):
        if event.get("event") == "end" and event.get("status") == "succeeded":
            step = event.get("step", step)
    return step


def _copy_matching(src: Path, dst: Path, patterns: tuple[str, ...]) -> list[str]:
    copied = []
    for path in sorted(src.iterdir()):
        if path.is_file() and any(fnmatch.fnmatch(path.name, pattern) for pattern in patterns):
            shutil.copyfile(path, dst / path.name)
            copied.append(path.name)
    return copied


def _write_processor(info: RunInfo, source: Path, dst: Path) -> None:
    """The processor files training saved next to the weights, else the base model's processor."""
    if not _copy_matching(source, dst, PROCESSOR_PATTERNS):
        from .models import apply_image_cap, load_processor

        processor = load_processor(info.spec.key)
        apply_image_cap(processor, info.config.data.max_image_size, info.config.data.max_pixels)
        processor.save_pretrained(str(dst))


def _write_adapter(info: RunInfo, source: Path, dst: Path) -> None:
    """Adapter weights + adapter_config.json pointing at the base by Hub id (or registry key) and revision."""
    for name in ADAPTER_FILES:
        if not (source / name).is_file():
            raise UserError(f"{name} is missing from {source.name}", info.run)
    shutil.copyfile(source / "adapter_model.safetensors", dst / "adapter_model.safetensors")
    config = json.loads((source / "adapter_config.json").read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = info.spec.hub_id
    config["revision"] = base_revision(info.spec)
    (dst / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def base_revision(spec: Any) -> str | None:
    """The base model revision training loaded (the registry's pin, or the allow-listed one for remote code)."""
    from .registry import pinned_revision

    return pinned_revision(spec)


def _studio_json(info: RunInfo, mode: str, label: str, step: int | None, dtype: str | None) -> dict[str, Any]:
    studio = {key: info.studio[key] for key in STUDIO_KEYS if key in info.studio}
    studio.update(format=EXPORT_FORMAT, mode=mode, method=info.method, model=info.spec.key,
                  base_model=info.spec.hub_id, base_revision=base_revision(info.spec), family=info.spec.family,
                  convention=studio.get("convention", info.spec.convention), tiny=info.spec.tiny,
                  checkpoint=label, step=step, dtype=dtype)
    studio.setdefault("max_image_size", info.config.data.max_image_size)
    studio.setdefault("max_pixels", info.config.data.max_pixels)
    return studio


def merge_dtype(method: str, dtype: str, device: str) -> str:
    """The dtype the base is reloaded in for merging: never 4 bit; QLoRA and GPUs merge in 16 bit."""
    if dtype != "auto":
        return dtype
    if method == "qlora" or device.startswith("cuda"):
        import torch

        cuda_bf16 = device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return "bfloat16" if cuda_bf16 or not device.startswith("cuda") else "float16"
    return "float32"


def _write_merged(info: RunInfo, source: Path, dst: Path, dtype: str, device: str, samples: int) -> dict[str, Any]:
    """Merge the adapter into a 16/32-bit base, save it, reload it and compare answers (parity.json)."""
    import gc

    from .inference import generate
    from .models import load_model, load_processor

    model = load_model(info.spec.key, dtype=dtype, device=device, adapter=str(source))
    model.eval()
    model.get_base_model().config.save_pretrained(str(dst))  # lets the processor load from dst already
    processor = load_processor(str(dst))
    rows, skipped = parity_samples(info, samples)
    before = generate(model, processor, rows) if rows else None
    merged = model.merge_and_unload()
    merged.save_pretrained(str(dst))
    del model, merged
    gc.collect()
    after = generate(load_model(str(dst), dtype=dtype, device=device).eval(), processor, rows) if rows else None
    report = parity_report(rows, before, after, dtype=dtype, device=device, skipped=skipped)
    (dst / "parity.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def parity_samples(info: RunInfo, count: int) -> tuple[list[dict[str, Any]], str | None]:
    """Up to `count` validation examples (one per frame) as {"id", "image": PIL, "prompt"}; or a skip reason."""
    from .collate import load_image
    from .dataset import open_dataset
    from .tasks import build_examples

    dataset = info.dataset
    if count <= 0:
        return [], "disabled (--parity-samples 0)"
    if dataset is None:
        return [], "the training dataset folder is not available on this machine"
    opened = open_dataset(dataset)
    name = next((name for name in ("val", "test", "train") if name in opened.split_names()), None)
    records = [r for r in (opened.split(name) if name else opened.records()) if r.objects][:count]
    labels = info.studio.get("label_map")
    from .clips import clip_options, video_fps

    meta = opened.meta  # video tasks: the clips training saw
    examples = build_examples(records, list(info.studio.get("tasks") or ["grounding"]), info.spec.convention,
                              seed=int(info.studio.get("seed", 0)), label_set=sorted(labels) if labels else None,
                              max_pixels=info.config.data.max_pixels, clips=clip_options(meta), fps=video_fps(meta))
    rows, seen, cap = [], set(), info.config.data.max_image_size

    def capped(path: str, name: str) -> Any:
        image = load_image(dataset / path, name)
        if cap and max(image.size) > cap:
            image.thumbnail((cap, cap))
        return image

    for example in examples:
        if example.record_id in seen:
            continue
        seen.add(example.record_id)
        frames = [capped(path, example.id) for path in example.frames]
        rows.append({"id": example.id, "image": frames if example.images else frames[0], "prompt": example.prompt})
    return rows, None if rows else "no validation examples with objects"


def parity_report(rows: list[dict[str, Any]], before: Any, after: Any, *, dtype: str, device: str,
                  skipped: str | None) -> dict[str, Any]:
    """parity.json: per sample the adapter model's and the merged model's answers, and whether all match."""
    if before is None or after is None:
        return {"checked": False, "reason": skipped, "dtype": dtype, "device": device}
    samples = [{"id": row["id"], "prompt": row["prompt"], "adapter_answer": a, "merged_answer": m, "match": a == m}
               for row, a, m in zip(rows, before[0], after[0], strict=True)]
    diff = float((before[1] - after[1]).abs().max())
    return {"checked": True, "all_match": all(s["match"] for s in samples), "matched": sum(s["match"] for s in samples),
            "samples_checked": len(samples), "max_abs_logit_diff": diff, "dtype": dtype, "device": device,
            "samples": samples}


def _write_weights(info: RunInfo, mode: str, source: Path, dst: Path, dtype: str, device: str,
                   samples: int) -> tuple[str | None, dict[str, Any] | None]:
    """Adapter files, a full model's files or a merged model; returns (dtype of the weights, parity report)."""
    if mode == "adapter":
        _write_adapter(info, source, dst)
        return None, None
    if info.method == "full":
        if not _copy_matching(source, dst, MODEL_PATTERNS[2:3]):
            raise UserError(f"no model weights in {source.name}", info.run)
        _copy_matching(source, dst, MODEL_PATTERNS[:2] + MODEL_PATTERNS[3:])
        return json.loads((dst / "config.json").read_text(encoding="utf-8")).get("dtype"), None
    used = merge_dtype(info.method, dtype, device)
    return used, _write_merged(info, source, dst, used, device, samples)


def export_run(run_dir: str | Path, out_dir: str | Path, mode: str = "adapter", checkpoint: str | int = "best", *,
               dtype: str = "auto", device: str | None = None, parity_samples: int = 3, repo_id: str | None = None,
               datasets: list[str] | None = None, overwrite: bool = False, progress: bool = False) -> ExportResult:
    """Export a run folder to `out_dir` (+ `<out_dir>.zip` beside it); see the module docstring."""
    from tqdm import tqdm

    from .atomic import atomic_output_dir
    from .inference import deploy_config_yaml
    from .leaks import find_leaks
    from .modelcard import write_card

    if mode not in MODES:
        raise UserError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    if repo_id:
        from .hub import check_repo_id

        repo_id = check_repo_id(repo_id)
    info = read_run(run_dir)
    if info.method == "full" and mode == "adapter":
        raise UserError("a full fine-tune has no adapter to export; use --mode merged", info.run)
    out = Path(out_dir).expanduser().resolve()
    zip_path = out.with_name(out.name + ".zip")
    if out == info.run or info.run in out.parents:
        raise UserError("--out must be outside the run folder", out)
    if zip_path.exists() and not overwrite:
        raise UserError("the zip beside the output folder already exists (choose another --out)", zip_path)
    source, label, step, notes = select_checkpoint(info, checkpoint)
    device = device or _default_device()
    bar = tqdm(total=4, desc="export", unit="step", disable=not progress)
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        _write_processor(info, source, tmp)
        bar.update()
        used_dtype, report = _write_weights(info, mode, source, tmp, dtype, device, parity_samples)
        if report and report.get("all_match") is False:
            notes.append("parity: the merged model's answers differ from the adapter model's (see parity.json)")
        bar.update()
        studio = _studio_json(info, mode, label, step, used_dtype)
        rundir.studio_path(tmp).write_text(json.dumps(studio, indent=2) + "\n", encoding="utf-8")
        (tmp / "deploy_config.yaml").write_text(deploy_config_yaml(studio), encoding="utf-8")
        write_card(info, tmp, studio, repo_id=repo_id or out.name, datasets=datasets, parity=report)
        bar.update()
        leaks = find_leaks(tmp, extra_paths=[info.run, info.dataset, out.parent, tmp])
        if leaks:
            raise UserError(f"refusing to export: {leaks[0]}", info.run)
        files = sorted(p.name for p in tmp.iterdir())
        zip_export(tmp, zip_path, out.name)  # last step inside: a failure before it leaves no zip either
    bar.update()
    bar.close()
    return ExportResult(out, zip_path, mode, label, step, files, report, notes)


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def zip_export(folder: Path, zip_path: Path, name: str | None = None) -> Path:
    """Zip `folder` as `<name>/...` into `zip_path` (written to a temporary name, then renamed)."""
    name = name or folder.name
    tmp = zip_path.with_name(f".{zip_path.name}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w") as archive:
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                stored = path.suffix == ".safetensors"  # weights barely compress: store them, save the time
                archive.write(path, f"{name}/{path.relative_to(folder).as_posix()}",
                              compress_type=zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED)
        tmp.replace(zip_path)
    finally:
        tmp.unlink(missing_ok=True)
    return zip_path
