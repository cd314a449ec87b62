"""A converted dataset folder: the one module that knows its file names and how to open it.

    DATASET/dataset.json     meta (labels, tasks, convention, seed, the Qwen image cap `max_pixels`, issues, ...)
    DATASET/records.jsonl    one FrameRecord per line
    DATASET/images/          the frames the records point to
    DATASET/splits/*.jsonl   train / val / test records (after `split`)
    DATASET/split.yaml       the saved split parameters

Training, evaluation, split, quality, the jobs store and the app open datasets here; writers (convert, split) take
the file names from here.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError
from .records import FrameRecord, parse_record

META_FILE = "dataset.json"
RECORDS_FILE = "records.jsonl"
IMAGES_DIR = "images"
SPLITS_DIR = "splits"
SPLIT_CONFIG = "split.yaml"
CACHE_DIR = ".cache"  # derived data keyed by what made it (e.g. the token cache); safe to delete
SPLIT_SUFFIX = ".jsonl"
NOT_A_DATASET = f"not a converted dataset (needs {META_FILE} and {RECORDS_FILE}; run `python -m pipeline convert`)"
_SPLIT_NAME = re.compile(r"[A-Za-z0-9][\w.-]{0,63}")


def is_dataset(path: str | Path) -> bool:
    """True for a converted dataset folder (dataset.json + records.jsonl)."""
    folder = Path(path).expanduser()
    return (folder / META_FILE).is_file() and (folder / RECORDS_FILE).is_file()


def cache_path(root: str | Path, *parts: str) -> Path:
    """A path inside the dataset's cache folder (DATASET/.cache/...), for data derived from the dataset."""
    return Path(root).joinpath(CACHE_DIR, *parts)


def meta_path(root: str | Path) -> Path:
    """DATASET/dataset.json."""
    return Path(root) / META_FILE


def records_path(root: str | Path) -> Path:
    """DATASET/records.jsonl."""
    return Path(root) / RECORDS_FILE


def splits_dir(root: str | Path) -> Path:
    """DATASET/splits."""
    return Path(root) / SPLITS_DIR


def split_path(root: str | Path, name: str) -> Path:
    """DATASET/splits/<name>.jsonl (UserError for a name that is not a plain word)."""
    if not _SPLIT_NAME.fullmatch(name or ""):
        raise UserError(f"split name {name!r} must be a plain name like test, val or train")
    return splits_dir(root) / f"{name}{SPLIT_SUFFIX}"


def split_config_path(root: str | Path) -> Path:
    """DATASET/split.yaml."""
    return Path(root) / SPLIT_CONFIG


def write_meta(root: str | Path, meta: dict[str, Any]) -> Path:
    """Write dataset.json (indented, one trailing newline)."""
    path = meta_path(root)
    path.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return path


def read_lines(path: Path, strict: bool = True) -> tuple[list[FrameRecord], list[tuple[int, str]]]:
    """Records of a JSON-lines file; strict: UserError at the first bad line, else (records, [(line, problem)])."""
    records: list[FrameRecord] = []
    bad: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8", errors="strict" if strict else "replace") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = parse_record(json.loads(line))
            except ValueError as exc:
                if strict:
                    raise UserError(f"line {number}: {exc} (run validate for a full report)", path) from None
                bad.append((number, str(exc)))
                continue
            if record.id in seen:
                bad.append((number, f"id {record.id!r} repeats line {seen[record.id]}"))
            seen.setdefault(record.id, number)
            records.append(record)
    return records, bad


def fingerprint(root: str | Path) -> str | None:
    """A short sha256 of records.jsonl and splits/*.jsonl (None when the folder has neither); the job store and
    RUN/studio.json record it."""
    folder = Path(root)
    files = [records_path(folder), *sorted(splits_dir(folder).glob(f"*{SPLIT_SUFFIX}"))]
    files = [f for f in files if f.is_file()]
    if not files:
        return None
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        with open(file, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()[:16]


@dataclass
class Dataset:
    """An opened dataset folder: its meta (dataset.json) now, its records and splits when asked."""

    root: Path
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def tasks(self) -> list[str]:
        return list(self.meta.get("tasks") or ["grounding"])

    @property
    def convention(self) -> str:
        return str(self.meta.get("convention") or "json")

    @property
    def seed(self) -> int:
        return int(self.meta.get("seed") or 0)

    @property
    def max_pixels(self) -> int | None:
        """The Qwen image cap the answers were written for (None: a dataset converted before it was recorded)."""
        value = self.meta.get("max_pixels")
        return int(value) if isinstance(value, int) and not isinstance(value, bool) else None

    def records(self) -> list[FrameRecord]:
        """Every record of records.jsonl (UserError naming the first bad line)."""
        return read_lines(records_path(self.root))[0]

    def scan(self) -> tuple[list[FrameRecord], list[tuple[int, str]]]:
        """Every readable record plus [(line number, problem)] for the rest (what the quality report lists)."""
        return read_lines(records_path(self.root), strict=False)

    def split_names(self) -> list[str]:
        """Names of the saved splits (sorted), empty before `split`."""
        return sorted(p.stem for p in splits_dir(self.root).glob(f"*{SPLIT_SUFFIX}"))

    def split(self, name: str) -> list[FrameRecord]:
        """The records of splits/<name>.jsonl; UserError listing the splits there are."""
        path = split_path(self.root, name)
        if not path.is_file():
            have = ", ".join(self.split_names()) or "none (run `python -m pipeline split`)"
            raise UserError(f"no {name} split ({SPLITS_DIR}/{path.name}); the dataset has: {have}", self.root)
        return read_lines(path)[0]

    def train_val(self, train_split: str = "train") -> tuple[list[FrameRecord], list[FrameRecord]]:
        """(train, val) records: the saved splits when there are (`train_split` to train on), else every record to
        train on and no val."""
        if train_split != "train" or split_path(self.root, "train").is_file():
            names = self.split_names()
            return self.split(train_split), self.split("val") if "val" in names else []
        return self.records(), []

    def fingerprint(self) -> str | None:
        return fingerprint(self.root)


def open_dataset(path: str | Path) -> Dataset:
    """Open a converted dataset folder; a one-line UserError when it is not one or its dataset.json is broken."""
    root = Path(path).expanduser().resolve()
    if not is_dataset(root):
        raise UserError(NOT_A_DATASET, root)
    try:
        meta = json.loads(meta_path(root).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{META_FILE} cannot be read as JSON ({exc.__class__.__name__})", root) from None
    if not isinstance(meta, dict):
        raise UserError(f"{META_FILE} must hold a JSON object", root)
    return Dataset(root, meta)
