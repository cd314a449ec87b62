"""PaliGemma: y-first <locNNNN> tokens (0-1023) followed by the label."""

from __future__ import annotations

import re

from .base import Axis, Convention, ParseError, _label, _leftover


class PaliGemma(Convention):
    """PaliGemma `<locY1><locX1><locY2><locX2> label ; ...`, round(v * 1023) of the normalised coordinate."""

    name = "paligemma"
    _item = re.compile(r"((?:<loc\d{4}>)+)([^;<\n]*)")
    _loc = re.compile(r"<loc(\d{4})>")

    def axes(self, width: int, height: int) -> tuple[Axis, Axis]:
        # big_vision reads loc tokens back as value / 1023 (evaluators/proj/paligemma/transfers/segmentation.py:
        # `bbox = tokens[:, :4] / 1023`), so round(v * 1023) is its exact inverse. Others floor v * 1024 instead.
        return Axis(width, 1023, 1023), Axis(height, 1023, 1023)

    def _locs(self, values: list[float]) -> str:
        swapped = [v for x, y in zip(values[::2], values[1::2], strict=True) for v in (y, x)]
        return "".join(f"<loc{int(v):04d}>" for v in swapped)

    def format_region(self, values: list[float]) -> str:
        return self._locs(values)

    def format_boxes(self, items: list[tuple[str, list[float]]]) -> str:
        return " ; ".join(f"{self._locs(values)} {label}" for label, values in items)

    format_polygons = format_boxes  # PaliGemma's own masks are <segNNN> VAE codes; we write <loc> y, x pairs

    def scan_boxes(self, text: str) -> list[tuple[str | None, list[float]]]:
        _leftover(text, self._item, ("<loc",))
        out = []
        for match in self._item.finditer(text):
            yx = [float(v) for v in self._loc.findall(match.group(1))]
            if len(yx) % 2:
                raise ParseError(f"{len(yx)} loc tokens do not make (y, x) pairs")
            out.append((_label(match.group(2)), [v for y, x in zip(yx[::2], yx[1::2], strict=True) for v in (x, y)]))
        return out

    scan_polygons = scan_boxes

