"""Qwen2-VL (0-1000 in <|box_start|>...<|box_end|>), Qwen2.5-VL (absolute pixels on the resized grid, JSON bbox_2d),
Qwen3-VL (0-1000 JSON) and the generic JSON convention of the first tiny models."""

from __future__ import annotations

import json
import re
from typing import Any

from ..imagegrid import QWEN_MAX_PIXELS, QWEN_MIN_PIXELS, smart_resize
from .base import NUM, Axis, Convention, ParseError, _label, _leftover, _load_json, _plain


class Qwen2VL(Convention):
    """Qwen2-VL `<|object_ref_start|>label<|object_ref_end|><|box_start|>(x1,y1),(x2,y2)<|box_end|>`, 0..999."""

    name = "qwen2_vl"
    _ref = r"(?:<\|object_ref_start\|>([^<]*)<\|object_ref_end\|>\s*)?"  # [^<]: linear time on broken answers
    _box = re.compile(_ref + r"<\|box_start\|>([^<]*)<\|box_end\|>")
    _quad = re.compile(_ref + r"<\|quad_start\|>([^<]*)<\|quad_end\|>")
    _pair = re.compile(rf"\(\s*({NUM})\s*,\s*({NUM})\s*\)")
    _markers = ("<|box_", "<|quad_", "<|object_ref")

    def axes(self, width: int, height: int) -> tuple[Axis, Axis]:
        # Qwen2-VL normalises to [0, 1000); a parser also takes 1000, which fine-tuned models do write.
        return Axis(width, 1000, 999, limit=1000), Axis(height, 1000, 999, limit=1000)

    def _pairs(self, values: list[float]) -> str:
        return ",".join(f"({self.num(x)},{self.num(y)})" for x, y in zip(values[::2], values[1::2], strict=True))

    def format_region(self, values: list[float]) -> str:
        return f"<|box_start|>{self._pairs(values)}<|box_end|>"

    def format_boxes(self, items: list[tuple[str, list[float]]]) -> str:
        return "".join(f"<|object_ref_start|>{label}<|object_ref_end|>{self.format_region(v)}" for label, v in items)

    def format_polygons(self, items: list[tuple[str, list[float]]]) -> str:
        # Qwen2-VL has no polygon form; its (unused for grounding) quad tokens carry the points.
        return "".join(
            f"<|object_ref_start|>{label}<|object_ref_end|><|quad_start|>{self._pairs(v)}<|quad_end|>"
            for label, v in items
        )

    def _scan(self, text: str, pattern: re.Pattern[str]) -> list[tuple[str | None, list[float]]]:
        _leftover(text, pattern, self._markers)
        out = []
        for match in pattern.finditer(text):
            body = match.group(2)
            pairs = self._pair.findall(body)
            if not pairs or self._pair.sub("", body).replace(",", "").strip():
                raise ParseError(f"malformed points {body.strip()[:60]!r}")
            out.append((_label(match.group(1)), [float(v) for pair in pairs for v in pair]))
        return out

    def scan_boxes(self, text: str) -> list[tuple[str | None, list[float]]]:
        return self._scan(text, self._box)

    def scan_polygons(self, text: str) -> list[tuple[str | None, list[float]]]:
        return self._scan(text, self._quad)


class Qwen25VL(Convention):
    """Qwen2.5-VL JSON `[{"bbox_2d": [x1, y1, x2, y2], "label": ...}]` in pixels of the smart_resize'd image."""

    name = "qwen2_5_vl"
    none_answer = "[]"
    empty_ok = True
    box_key, poly_key, label_first, separators = "bbox_2d", "polygon", False, (", ", ": ")
    nested_polygon = True  # [[x, y], ...] rather than [x, y, ...]

    def __init__(self, min_pixels: int = QWEN_MIN_PIXELS, max_pixels: int = QWEN_MAX_PIXELS, factor: int = 28) -> None:
        self.min_pixels, self.max_pixels, self.factor = min_pixels, max_pixels, factor

    def axes(self, width: int, height: int) -> tuple[Axis, Axis]:
        rh, rw = smart_resize(height, width, self.factor, self.min_pixels, self.max_pixels)
        return Axis(width, rw, rw), Axis(height, rh, rh)

    def _dump(self, value: Any) -> str:
        return json.dumps(value, separators=self.separators, ensure_ascii=False)

    def _item(self, label: str, key: str, value: Any) -> dict[str, Any]:
        return {"label": label, key: value} if self.label_first else {key: value, "label": label}

    def format_region(self, values: list[float]) -> str:
        return self._dump([int(v) for v in values])

    def format_boxes(self, items: list[tuple[str, list[float]]]) -> str:
        return self._dump([self._item(label, self.box_key, [int(v) for v in values]) for label, values in items])

    def format_polygons(self, items: list[tuple[str, list[float]]]) -> str:
        def points(values: list[float]) -> list[Any]:
            ints = [int(v) for v in values]
            return [ints[i : i + 2] for i in range(0, len(ints), 2)] if self.nested_polygon else ints

        return self._dump([self._item(label, self.poly_key, points(values)) for label, values in items])

    def _scan(self, text: str, keys: tuple[str, ...]) -> list[tuple[str | None, list[float]]]:
        value = _load_json(text)
        items = value if isinstance(value, list) else [value]
        if items and not any(isinstance(item, dict | list) for item in items):
            items = [{keys[0]: items}]  # a bare [x1, y1, x2, y2]
        out = []
        for item in items:
            if not isinstance(item, dict):
                raise ParseError(f"expected an object per item, got {item!r:.60}")
            key = next((k for k in keys if k in item), None)
            if key is None or not isinstance(item[key], list):
                raise ParseError(f"item without {keys[0]!r}: {item!r:.60}")
            flat = [v for p in item[key] for v in (p if isinstance(p, list) else [p])]
            label = item.get("label")
            out.append((None if label is None else _label(str(label)), [_plain(v) for v in flat]))
        return out

    def scan_boxes(self, text: str) -> list[tuple[str | None, list[float]]]:
        return self._scan(text, (self.box_key, "bbox_2d", "bbox", "box"))

    def scan_polygons(self, text: str) -> list[tuple[str | None, list[float]]]:
        return self._scan(text, (self.poly_key, "polygon", "points", "poly"))


class Qwen3VL(Qwen25VL):
    """Qwen3-VL JSON `[{"bbox_2d": [x1, y1, x2, y2], "label": ...}]`, ints 0..1000 relative to the image."""

    name = "qwen3_vl"

    def __init__(self) -> None:
        pass

    def axes(self, width: int, height: int) -> tuple[Axis, Axis]:
        return Axis(width, 1000, 1000), Axis(height, 1000, 1000)


class TinyJson(Qwen25VL):
    """Compact JSON for the tiny offline models: `[{"label":"circle","box":[x1,y1,x2,y2]}]`, ints 0..scale."""

    name = "json"
    box_key, poly_key, label_first, separators = "box", "polygon", True, (",", ":")
    nested_polygon = False

    def __init__(self, scale: int = 100) -> None:
        self.scale = scale

    def axes(self, width: int, height: int) -> tuple[Axis, Axis]:
        return Axis(width, self.scale, self.scale), Axis(height, self.scale, self.scale)

