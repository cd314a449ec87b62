"""LLaVA: normalised [x1, y1, x2, y2] floats in 0-1."""

from __future__ import annotations

import re

from .base import Axis, Convention, _label, _leftover, _numbers, _preceded


class Llava(Convention):
    """LLaVA-1.5 style plain text `label: [x1, y1, x2, y2]` normalised to 0..1 (3 decimals; LLaVA-1.5 used 2)."""

    name = "llava"
    _item = re.compile(r"\[([^\[\]]*)\]")

    def __init__(self, decimals: int = 3) -> None:
        self.decimals = decimals

    def axes(self, width: int, height: int) -> tuple[Axis, Axis]:
        return Axis(width, 1.0, 1.0, self.decimals), Axis(height, 1.0, 1.0, self.decimals)

    def num(self, value: float) -> str:
        return f"{value:.{self.decimals}f}"

    def format_region(self, values: list[float]) -> str:
        return "[" + ", ".join(self.num(v) for v in values) + "]"

    def format_boxes(self, items: list[tuple[str, list[float]]]) -> str:
        return "; ".join(f"{label}: {self.format_region(values)}" for label, values in items)

    format_polygons = format_boxes

    def scan_boxes(self, text: str) -> list[tuple[str | None, list[float]]]:
        _leftover(text, self._item, ("[", "]"))
        out = []
        for before, match in _preceded(text, self._item):
            head = re.split(r"[;\n]", before)[-1].strip()
            out.append((_label(head[:-1]) if head.endswith(":") else None, _numbers(match.group(1), "item")))
        return out

    scan_polygons = scan_boxes

