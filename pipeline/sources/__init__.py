"""Source readers: one per SAM 2 export format, each turning an input into canonical frames (see docs/INGEST.md)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import UserError
from .common import RULES, IssueLog, ReadOptions, Source, SourceFrame
from .detect import FORMATS, DetectResult, detect_format

__all__ = ["FORMATS", "RULES", "DetectResult", "IssueLog", "ReadOptions", "Source", "SourceFrame", "detect_format",
           "open_source"]


@contextmanager
def open_source(path: str | Path | DetectResult, options: ReadOptions, log: IssueLog) -> Iterator[Source]:
    """Detect (unless given a DetectResult), open and check an input; temporary extraction lives until exit."""
    found = path if isinstance(path, DetectResult) else detect_format(path)
    path = found.path
    if found.format == "sam2_demo_zip":
        with _demo_root(path) as root:
            from .sam2_demo_zip import DemoExportSource

            yield DemoExportSource(path, options, log, root)
    elif found.format == "sav":
        from .sav import SavFolderSource, SavJsonSource

        yield SavFolderSource(path, options, log) if path.is_dir() else SavJsonSource(path, options, log, found.data)
    elif found.format == "sam2_stream":
        from .sam2_stream import StreamSource

        data = found.data if isinstance(found.data, list) else [found.data] if isinstance(found.data, dict) else None
        yield StreamSource(path, options, log, data)
    elif found.format == "coco":
        from .coco import CocoSource

        yield CocoSource(path, options, log, found.data)
    elif found.format == "ytvis":
        from .ytvis import YtvisSource

        yield YtvisSource(path, options, log, found.data)
    else:  # pragma: no cover - detect_format only returns known formats
        raise UserError(f"unsupported format {found.format!r}", path)


@contextmanager
def _demo_root(path: Path) -> Iterator[Path]:
    """The folder holding annotations.json: extracted from a ZIP (removed on exit), a job folder, or the file's."""
    from .sam2_demo_zip import find_export_root

    if path.is_dir():
        yield find_export_root(path, path) or path
    elif path.name == "annotations.json" or path.suffix.lower() == ".json":
        yield path.parent
    else:
        from ..safezip import extracted_zip

        with extracted_zip(path) as folder:
            root = find_export_root(folder, path)
            if root is None:
                names = sorted(p.name for p in folder.iterdir())[:10]
                raise UserError(f"ZIP holds {names or 'nothing'} but no annotations.json (at its root or one folder "
                                "down): not a SAM 2 demo export", path)
            yield root
