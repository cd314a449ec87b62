"""Serving parity: the served export and offline evaluation of the same export, on the same examples, agree.

    python -m pipeline export RUN --out exports/shapes-lora --serve-parity 20     # measured and put in the card

    from pipeline.serve_parity import check_serving_parity
    report = check_serving_parity("exports/shapes-lora", "DATASET", split="test", limit=20)
    report["miou_offline"], report["miou_served"], report["agree"]

Offline: `evaluate --model EXPORT` (the export loaded in-process, batched greedy generation). Served: the export
behind `python -m pipeline serve` (transformers serve; an adapter export merged first), scored by `evaluate
--endpoint` (one greedy request per example). Both use the same examples, token budget, parsing and metrics; they
agree when their mIoU differ by at most `TOLERANCE` with the same n. The verdict goes to EXPORT/serving_parity.json,
studio.json (`serving_parity`) and the card's Evaluation section; the zip beside the export is rewritten to match.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from .dataset import split_path
from .errors import UserError
from .rundir import studio_path

TOLERANCE = 0.02
PARITY_FILE = "serving_parity.json"
CARD_MARK = "<!-- serving-parity -->"
CARD_END = "<!-- /serving-parity -->"


def default_split(dataset: str | Path) -> str:
    """test, else val, else train: the first split the dataset has (`test` when it has no splits/)."""
    root = Path(dataset).expanduser()
    return next((name for name in ("test", "val", "train") if split_path(root, name).is_file()), "test")


def check_serving_parity(export_dir: str | Path, dataset: str | Path, split: str | None = None, limit: int = 20, *,
                         engine: str = "transformers", record: bool = True, progress: bool = False) -> dict[str, Any]:
    """Evaluate the export offline and served on the same `limit` examples; returns (and records) the verdict."""
    from transformers import __version__ as transformers_version

    from .endpoint_eval import evaluate_endpoint
    from .evaluate import evaluate_model
    from .serve import check_export, start_server

    export, studio = check_export(export_dir)
    split = split or default_split(dataset)
    with tempfile.TemporaryDirectory(prefix="studio-parity-") as tmp:
        began = time.monotonic()
        offline = evaluate_model(str(export), dataset=dataset, split=split, limit=limit, out=Path(tmp) / "offline",
                                 with_base=False, with_baseline=False, overwrite=True)
        offline_s = time.monotonic() - began
        began = time.monotonic()
        with start_server(export, engine=engine, device="cpu" if engine == "transformers" else "auto") as server:
            start_s = time.monotonic() - began
            served = evaluate_endpoint(server.url, dataset, split=split, limit=limit, out=Path(tmp) / "served",
                                       with_baseline=False, overwrite=True, progress=progress,
                                       max_new_tokens=_budget(Path(tmp) / "offline"))
        served_s = time.monotonic() - began
        answers = [_answers(Path(tmp) / name) for name in ("offline", "served")]
    a, b = offline.metrics, served.metrics
    diff = abs(float(a["miou"]) - float(b["miou"]))
    report = {
        "checked": True, "engine": engine, "engine_version": f"transformers {transformers_version}"
        if engine == "transformers" else "vllm", "split": split, "limit": limit, "n_offline": a["n"],
        "n_served": b["n"], "miou_offline": round(float(a["miou"]), 4), "miou_served": round(float(b["miou"]), 4),
        "miou_abs_diff": round(diff, 4), "tolerance": TOLERANCE,
        "identical_answers": sum(x == y for x, y in zip(*answers, strict=True)), "decoding": "greedy",
        "agree": bool(a["n"] == b["n"] and diff <= TOLERANCE),
        "dataset_fingerprint": studio.get("dataset_fingerprint"), "merged_for_serving": studio.get("mode") == "adapter",
        "seconds": {"offline": round(offline_s, 1), "server_start": round(start_s, 1), "served": round(served_s, 1)},
    }
    if record:
        record_parity(export, report)
    return report


def _budget(folder: Path) -> int | None:
    return json.loads((folder / "metrics.json").read_text(encoding="utf-8"))["meta"].get("max_new_tokens")


def _answers(folder: Path) -> list[str]:
    return [json.loads(line)["answer"] for line in (folder / "predictions.jsonl").read_text(encoding="utf-8")
            .splitlines() if line.strip()]


def card_section(report: dict[str, Any]) -> str:
    """The card's serving-parity paragraph, between its markers."""
    verdict = "agree" if report["agree"] else "DO NOT agree"
    text = (f"Serving check: served with {report['engine_version']} (`python -m pipeline serve`"
            f"{', the adapter merged first' if report.get('merged_for_serving') else ''}) and scored over the OpenAI "
            f"API, this export and offline evaluation of it {verdict} on {report['n_served']} `{report['split']}` "
            f"examples with greedy decoding: mIoU {report['miou_served']:.4f} served vs {report['miou_offline']:.4f} "
            f"offline (difference {report['miou_abs_diff']:.4f}, tolerance {report['tolerance']}); "
            f"{report['identical_answers']} of {report['n_served']} answers identical; see `{PARITY_FILE}`.")
    return f"{CARD_MARK}\n{text}\n{CARD_END}"


def record_parity(export: Path, report: dict[str, Any]) -> None:
    """serving_parity.json, studio.json's `serving_parity`, the card's paragraph, and the zip beside the export."""
    from .atomic import atomic_write_text
    from .export import zip_export

    atomic_write_text(export / PARITY_FILE, json.dumps(report, indent=2) + "\n")
    studio = json.loads(studio_path(export).read_text(encoding="utf-8"))
    studio["serving_parity"] = {k: report[k] for k in ("agree", "engine_version", "split", "n_served",
                                                       "miou_offline", "miou_served", "miou_abs_diff", "tolerance")}
    atomic_write_text(studio_path(export), json.dumps(studio, indent=2) + "\n")
    card = export / "README.md"
    if card.is_file():
        text = card.read_text(encoding="utf-8")
        block = re.compile(re.escape(CARD_MARK) + r".*?" + re.escape(CARD_END), re.S)
        if block.search(text):
            text = block.sub(lambda _: card_section(report), text)
        elif CARD_MARK in text:
            text = text.replace(CARD_MARK, card_section(report), 1)
        else:
            raise UserError("the model card has no serving-parity marker (export it again)", card)
        atomic_write_text(card, text)
    zip_path = export.with_name(export.name + ".zip")
    if zip_path.is_file():
        zip_export(export, zip_path, export.name)
