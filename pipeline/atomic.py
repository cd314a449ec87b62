"""Write an output folder atomically: build it in a temporary sibling, rename at the end, clean up on error."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError


@contextmanager
def atomic_output_dir(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder next to `out`; it becomes `out` only when the block succeeds."""
    out = Path(out).expanduser().resolve()
    if out.exists() and not overwrite:
        if not out.is_dir() or any(out.iterdir()):
            raise UserError("output folder already exists and is not empty (choose another --out)", out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file through a temporary file and rename, so readers never see half of it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
