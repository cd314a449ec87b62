"""`--labels FILE`: object id (or COCO category id) -> name, from JSON {"0": "circle"} or CSV `id,name` lines."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..errors import UserError


def load_labels(path: str | Path) -> dict[int, str]:
    """Read a label mapping; UserError naming the file on anything unusable."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read the labels file ({exc.__class__.__name__})", path) from None
    if path.suffix.lower() == ".json" or text.lstrip().startswith(("{", "[")):
        return _from_json(text, path)
    return _from_csv(text, path)


def _from_json(text: str, path: Path) -> dict[int, str]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"labels file is not valid JSON (line {exc.lineno}: {exc.msg})", path) from None
    if isinstance(data, list):  # ["circle", "square"]: position = id
        data = dict(enumerate(data))
    if not isinstance(data, dict):
        raise UserError('labels JSON must map ids to names, e.g. {"0": "circle"}', path)
    return {_id(key, path): _name(value, key, path) for key, value in data.items()}


def _from_csv(text: str, path: Path) -> dict[int, str]:
    labels = {}
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        cells = [c.strip() for c in row]
        if not cells or not any(cells) or cells[0].startswith("#"):
            continue
        if len(cells) < 2:
            raise UserError(f"labels CSV line {number} needs 'id,name'", path)
        if number == 1 and not cells[0].lstrip("-").isdigit():
            continue  # a header row such as "id,name"
        labels[_id(cells[0], path)] = _name(cells[1], cells[0], path)
    if not labels:
        raise UserError("labels file holds no 'id,name' line", path)
    return labels


def _id(key: object, path: Path) -> int:
    try:
        return int(str(key).strip())
    except ValueError:
        raise UserError(f"label id {key!r} is not an integer", path) from None


def _name(value: object, key: object, path: Path) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"label for id {key!r} must be a non-empty string", path)
    return value.strip()
