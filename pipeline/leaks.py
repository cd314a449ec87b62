"""Scan files about to be published (an export, a Hub push) for secrets and local paths.

A local path names the machine it was made on (and often the user); a token gives away an account. Both are
looked for in every file; vocabulary files (tokenizer.json, vocab.json, merges.txt) are only checked for secrets,
since real vocabularies hold path-like tokens such as "/home", and of safetensors files only the JSON header is read.
"""

from __future__ import annotations

import fnmatch
import os
import re
import tempfile
from pathlib import Path
from typing import Any

VOCAB_PATTERNS = ("tokenizer.json", "vocab.json", "merges.txt", "*.model")
_SECRET_ENV = re.compile(r"TOKEN|SECRET|PASSWORD|API_KEY|ACCESS_KEY", re.I)
_HF_TOKEN = re.compile(rb"hf_[A-Za-z0-9]{30,}")
_GENERIC_PATHS = ("/tmp", "/home/", "/Users/", "C:\\Users\\")


def local_path_needles(extra_paths: list[Any] | tuple[Any, ...] = ()) -> list[str]:
    """Path prefixes that must never appear in a published file: temp, home, STUDIO_HOME, cwd and `extra_paths`."""
    studio_home = Path(os.environ.get("STUDIO_HOME", "studio_data")).expanduser().resolve()
    candidates = [*_GENERIC_PATHS, tempfile.gettempdir(), str(Path.home()), str(studio_home), os.getcwd(),
                  *(str(p) for p in extra_paths if p)]
    return sorted({c for c in candidates if len(c) > 3})


def secret_needles(secrets: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The given secrets plus the value of every *TOKEN*/*SECRET*/*KEY* environment variable that looks like one."""
    found = {s.strip() for s in secrets if s and len(s.strip()) >= 6}
    found |= {v.strip() for k, v in os.environ.items()
              if _SECRET_ENV.search(k) and len(v.strip()) >= 12 and not re.search(r"\s", v.strip())}
    return sorted(found)


def _scan_bytes(path: Path) -> bytes:
    """What to scan of a file: a safetensors header only (the tensor bytes are numbers), else the whole file."""
    if path.suffix != ".safetensors":
        return path.read_bytes()
    with open(path, "rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        return handle.read(min(size, 100_000_000))


def find_leaks(folder: str | Path, secrets: list[str] | tuple[str, ...] = (),
               extra_paths: list[Any] | tuple[Any, ...] = ()) -> list[str]:
    """'<file> contains ...' for every file under `folder` holding a secret or a local path; [] when clean."""
    root = Path(folder)
    paths, tokens = local_path_needles(extra_paths), secret_needles(secrets)
    problems = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        name = path.relative_to(root).as_posix()
        data = _scan_bytes(path)
        if any(token.encode() in data for token in tokens) or _HF_TOKEN.search(data):
            problems.append(f"{name} contains a secret token")
            continue
        if any(fnmatch.fnmatch(path.name, pattern) for pattern in VOCAB_PATTERNS):
            continue
        hit = next((needle for needle in paths if needle.encode() in data), None)
        if hit:
            problems.append(f"{name} contains the local path {hit!r}")
    return problems
