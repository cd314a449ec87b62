"""Florence-2: <loc_N> tokens (0-999), x-first, after the label."""

from __future__ import annotations

import re

from .base import Axis, Convention, ParseError, _group, _label, _leftover, _preceded


class Florence2(Convention):
    """Florence-2 `label<loc_x1><loc_y1><loc_x2><loc_y2>` (1000 bins; polygons `label<loc_x><loc_y>...`)."""

    name = "florence2"
    _item = re.compile(r"(?:<loc_\d+>)+")
    _loc = re.compile(r"<loc_(\d+)>")
    _special = re.compile(r"</?s>|<pad>|</?poly>|<sep>")

    def axes(self, width: int, height: int) -> tuple[Axis, Axis]:
        # As transformers' Florence2 post-processor: floor(x / (W / 1000)) clamped to 0..999, back as (q + 0.5) bins.
        return Axis(width, 1000, 999, bin_centre=True), Axis(height, 1000, 999, bin_centre=True)

    def _locs(self, values: list[float]) -> str:
        return "".join(f"<loc_{int(v)}>" for v in values)

    def format_region(self, values: list[float]) -> str:
        return self._locs(values)

    def format_boxes(self, items: list[tuple[str, list[float]]]) -> str:
        return "".join(label + "".join(map(self._locs, boxes)) for label, boxes in _group(items).items())

    def format_polygons(self, items: list[tuple[str, list[float]]]) -> str:
        return "".join(label + self._locs(values) for label, values in items)

    def _scan(self, text: str) -> list[tuple[str | None, list[float]]]:
        text = self._special.sub("", text)
        _leftover(text, self._item, ("<loc",))
        return [(_label(before.split("\n")[-1]), [float(v) for v in self._loc.findall(match.group(0))])
                for before, match in _preceded(text, self._item)]

    def scan_boxes(self, text: str) -> list[tuple[str | None, list[float]]]:
        out = []
        for label, values in self._scan(text):
            if len(values) % 4:
                raise ParseError(f"{len(values)} loc tokens do not make whole boxes")
            out += [(label, values[i : i + 4]) for i in range(0, len(values), 4)]
        return out

    def scan_polygons(self, text: str) -> list[tuple[str | None, list[float]]]:
        return self._scan(text)

