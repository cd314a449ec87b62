"""InternVL: <ref>label</ref><box>[[x1, y1, x2, y2]]</box> on a 0-1000 grid."""

from __future__ import annotations

import json
import re

from .base import Axis, Convention, ParseError, _group, _label, _leftover, _load_json, _plain


class InternVL(Convention):
    """InternVL `<ref>label</ref><box>[[x1, y1, x2, y2], ...]</box>`, ints 0..1000."""

    name = "internvl"
    _box = re.compile(r"(?:<ref>([^<]*)</ref>\s*)?<box>([^<]*)</box>")
    _poly = re.compile(r"(?:<ref>([^<]*)</ref>\s*)?<polygon>([^<]*)</polygon>")
    _markers = ("<box>", "</box>", "<ref>", "</ref>", "<polygon>", "</polygon>")

    def axes(self, width: int, height: int) -> tuple[Axis, Axis]:
        return Axis(width, 1000, 1000), Axis(height, 1000, 1000)

    def _lists(self, lists: list[list[float]]) -> str:
        return json.dumps([[int(v) for v in values] for values in lists])

    def format_region(self, values: list[float]) -> str:
        return f"<box>{self._lists([values])}</box>"

    def format_boxes(self, items: list[tuple[str, list[float]]]) -> str:
        return "".join(f"<ref>{label}</ref><box>{self._lists(b)}</box>" for label, b in _group(items).items())

    def format_polygons(self, items: list[tuple[str, list[float]]]) -> str:
        # InternVL has no polygon form; the same nested list inside <polygon> keeps it one family.
        return "".join(f"<ref>{label}</ref><polygon>{self._lists(p)}</polygon>" for label, p in _group(items).items())

    def _scan(self, text: str, pattern: re.Pattern[str]) -> list[tuple[str | None, list[float]]]:
        _leftover(text, pattern, self._markers)
        out = []
        for match in pattern.finditer(text):
            value = _load_json(match.group(2))
            lists = value if isinstance(value, list) and value and isinstance(value[0], list) else [value]
            for values in lists:
                if not isinstance(values, list):
                    raise ParseError(f"expected a list of numbers, got {values!r:.60}")
                out.append((_label(match.group(1)), [_plain(v) for v in values]))
        return out

    def scan_boxes(self, text: str) -> list[tuple[str | None, list[float]]]:
        return self._scan(text, self._box)

    def scan_polygons(self, text: str) -> list[tuple[str | None, list[float]]]:
        return self._scan(text, self._poly)

