"""Per-family coordinate conventions: boxes, polygons and labels as answer text, and the parsers that read them back.

Every convention works in original image pixels on the outside (Box = [x1, y1, x2, y2], x2/y2 exclusive, i.e.
pixel-corner coordinates) and quantises to its family's own units on the inside. Parsing is tolerant of whitespace
and text around the answer, but a malformed answer raises `ParseError` (never another exception type). Values
outside a convention's range are refused (ParseError), never silently clipped; in-range values are clipped to the
image after conversion. See docs/FORMATS_OUT.md for one example string per convention.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import UserError
from .imagegrid import QWEN_MAX_PIXELS, QWEN_MIN_PIXELS, smart_resize
from .masks import Box, BoxLike

Labeled = tuple[str | None, Box]
LabeledPolygon = tuple[str | None, list[float]]

NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_NONE_WORDS = {"none", "[]", "no", "nothing", "no objects", "not found", "there is none", "there are none"}
_NUMBER_WORDS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten".split())}


class ParseError(ValueError):
    """A model answer that does not follow the convention (garbage, truncated, out of range, NaN)."""


@dataclass(frozen=True)
class Axis:
    """One image side in a convention's units: `units` span the whole side, valid values are 0..`top`."""

    size: float
    units: float
    top: float
    decimals: int | None = None  # None: integers
    bin_centre: bool = False  # Florence-2: floor on encode, the bin centre on decode
    limit: float | None = None  # largest value a parser accepts (default `top`)

    def encode(self, value: float) -> float:
        scaled = value / self.size * self.units
        if self.decimals is not None:
            return min(max(round(scaled, self.decimals), 0.0), self.top)
        quantised = math.floor(scaled) if self.bin_centre else round(scaled)
        return min(max(int(quantised), 0), int(self.top))

    def decode(self, value: float) -> float:
        if not math.isfinite(value):
            raise ParseError(f"coordinate {value} is not a number")
        limit = self.top if self.limit is None else self.limit
        if value < 0 or value > limit:
            raise ParseError(f"coordinate {value:g} outside the range 0..{limit:g}")
        pixels = (value + 0.5 if self.bin_centre else value) * self.size / self.units
        return min(max(pixels, 0.0), self.size)


def _numbers(text: str, what: str) -> list[float]:
    """Comma-separated numbers, nothing else (NaN, words and empty items are refused)."""
    items = [item.strip() for item in text.split(",")]
    if not all(re.fullmatch(NUM, item) for item in items):
        raise ParseError(f"{what} is not a list of numbers: {text.strip()[:60]!r}")
    return [float(item) for item in items]


def _reject_constant(name: str) -> float:
    raise ParseError(f"{name} is not a coordinate")


def _load_json(text: str) -> Any:
    """The first JSON value in `text` (after any code fence); NaN/Infinity are refused."""
    starts = [i for i in (text.find("["), text.find("{")) if i >= 0]
    if not starts:
        raise ParseError("no JSON list or object in the answer")
    try:
        value, _ = json.JSONDecoder(parse_constant=_reject_constant).raw_decode(text, min(starts))
    except json.JSONDecodeError as exc:
        raise ParseError(f"malformed JSON answer ({exc.msg})") from None
    return value


def _plain(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ParseError(f"{value!r} is not a number")
    return float(value)


class Convention:
    """Base: quantisation, range checks, 'none' handling and the error guard; subclasses format the text."""

    name = "base"
    none_answer = "none"
    empty_ok = False  # JSON families: an empty list is an explicit 'none'
    _wrappers = re.compile(r"<\|?/?[a-z_]*\|?>|</?s>|<pad>|<eos>")  # markup a parser strips from plain labels

    # -- units ---------------------------------------------------------------------------------------------
    def axes(self, width: int, height: int) -> tuple[Axis, Axis]:
        raise NotImplementedError

    def _encode_points(self, points: list[float], width: int, height: int) -> list[float]:
        ax, ay = self.axes(width, height)
        return [(ax if i % 2 == 0 else ay).encode(v) for i, v in enumerate(points)]

    def _decode_points(self, values: list[float], width: int, height: int) -> list[float]:
        ax, ay = self.axes(width, height)
        return [(ax if i % 2 == 0 else ay).decode(v) for i, v in enumerate(values)]

    def num(self, value: float) -> str:
        return str(int(value))

    # -- text forms (subclasses) ---------------------------------------------------------------------------
    def format_boxes(self, items: list[tuple[str, list[float]]]) -> str:
        raise NotImplementedError

    def format_region(self, values: list[float]) -> str:
        raise NotImplementedError

    def format_polygons(self, items: list[tuple[str, list[float]]]) -> str:
        raise NotImplementedError

    def scan_boxes(self, text: str) -> list[tuple[str | None, list[float]]]:
        raise NotImplementedError

    def scan_polygons(self, text: str) -> list[tuple[str | None, list[float]]]:
        raise NotImplementedError

    # -- public API ----------------------------------------------------------------------------------------
    def encode_boxes(self, objects: Sequence[tuple[str, BoxLike]], width: int, height: int) -> str:
        """Labelled pixel boxes -> answer text; no objects -> `none_answer`."""
        if not objects:
            return self.none_answer
        return self.format_boxes([(label, self._encode_points(list(box), width, height)) for label, box in objects])

    def encode_region(self, box: BoxLike, width: int, height: int) -> str:
        """One unlabelled box as this family writes a region inside a prompt (referring questions)."""
        return self.format_region(self._encode_points(list(box), width, height))

    def encode_polygon(self, label: str, polygon: Sequence[float], width: int, height: int) -> str:
        """One flat pixel polygon [x1, y1, x2, y2, ...] -> answer text."""
        return self.encode_polygons([(label, polygon)], width, height)

    def encode_polygons(self, items: Sequence[tuple[str, Sequence[float]]], width: int, height: int) -> str:
        """Several labelled polygons -> one answer; none -> `none_answer`."""
        if not items:
            return self.none_answer
        return self.format_polygons([(label, self._encode_points(list(p), width, height)) for label, p in items])

    def parse_boxes(self, text: str, width: int, height: int) -> list[Labeled]:
        """Answer text -> [(label or None, [x1, y1, x2, y2] pixels)]; the none answer -> []."""
        return self._guard(self._parse_boxes, text, width, height)

    def parse_polygon(self, text: str, width: int, height: int) -> list[LabeledPolygon]:
        """Answer text -> [(label or None, flat pixel polygon)]; the none answer -> []."""
        return self._guard(self._parse_polygons, text, width, height)

    def encode_label(self, label: str) -> str:
        """The referring answer: the label as plain text."""
        return label

    def parse_label(self, text: str) -> str:
        """Referring answer -> label (markup, quotes and a final full stop removed)."""
        if not isinstance(text, str):
            raise ParseError("the answer is not text")
        label = " ".join(self._wrappers.sub(" ", text).split()).strip(" \"'`.")
        if not label:
            raise ParseError("empty answer")
        return label

    def encode_count(self, count: int) -> str:
        return str(int(count))

    def parse_count(self, text: str) -> int:
        """Counting answer -> int: the first integer (or number word zero..ten); 'none' -> 0."""
        if not isinstance(text, str):
            raise ParseError("the answer is not text")
        if self.is_none(text):
            return 0
        match = re.search(r"\b(\d+|" + "|".join(_NUMBER_WORDS) + r")\b", text.lower())
        if not match:
            raise ParseError(f"no count in the answer: {text.strip()[:60]!r}")
        word = match.group(1)
        return int(word) if word.isdigit() else _NUMBER_WORDS[word]

    def encode_labels(self, labels: list[str]) -> str:
        """Listing answer: the labels joined by ', ' (none -> 'none')."""
        return ", ".join(labels) if labels else "none"

    def parse_labels(self, text: str) -> list[str]:
        """Listing answer -> labels in order, duplicates dropped; 'none' -> []."""
        if not isinstance(text, str):
            raise ParseError("the answer is not text")
        if self.is_none(text):
            return []
        parts = re.split(r",|;|\n|\band\b", self._wrappers.sub(" ", text))
        labels = [p.strip(" \"'`[].") for p in parts]
        return list(dict.fromkeys(label for label in labels if label))

    def is_none(self, text: str) -> bool:
        """True for the explicit 'nothing there' answer (this convention's or a plain 'none')."""
        core = re.sub(r"```(?:json)?", "", self._wrappers.sub(" ", text)).strip().strip(".!").strip().lower()
        return core in _NONE_WORDS or core == self.none_answer.lower()

    # -- internals -----------------------------------------------------------------------------------------
    def _guard(self, parse: Any, text: str, width: int, height: int) -> list[Any]:
        if not isinstance(text, str):
            raise ParseError("the answer is not text")
        if not (isinstance(width, int | float) and isinstance(height, int | float) and width > 0 and height > 0):
            raise ParseError(f"image size {width}x{height} is not positive")
        try:
            return parse(text, width, height)
        except ParseError:
            raise
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, ArithmeticError, RecursionError) as exc:
            raise ParseError(f"malformed answer ({type(exc).__name__}: {exc})") from None

    def _parse_boxes(self, text: str, width: int, height: int) -> list[Labeled]:
        if self.is_none(text):
            return []
        out: list[Labeled] = []
        for label, values in self.scan_boxes(text):
            if len(values) != 4:
                raise ParseError(f"a box needs 4 numbers, got {len(values)}")
            x1, y1, x2, y2 = self._decode_points(values, width, height)
            if x2 < x1 or y2 < y1:
                raise ParseError(f"inverted box {values}")
            out.append((label or None, [x1, y1, x2, y2]))
        if not out and not self.empty_ok:
            raise ParseError(f"no box in the answer: {text.strip()[:60]!r}")
        return out

    def _parse_polygons(self, text: str, width: int, height: int) -> list[LabeledPolygon]:
        if self.is_none(text):
            return []
        out: list[LabeledPolygon] = []
        for label, values in self.scan_polygons(text):
            if len(values) % 2 or len(values) < 6:
                raise ParseError(f"a polygon needs an even count of at least 6 numbers, got {len(values)}")
            out.append((label or None, self._decode_points(values, width, height)))
        if not out and not self.empty_ok:
            raise ParseError(f"no polygon in the answer: {text.strip()[:60]!r}")
        return out


def _leftover(text: str, pattern: re.Pattern[str], markers: tuple[str, ...]) -> None:
    """Refuse an answer whose remaining text still holds markup (a truncated or broken item)."""
    rest = pattern.sub(" ", text)
    for marker in markers:
        if marker in rest:
            raise ParseError(f"malformed or truncated item near {marker!r}")


def _preceded(text: str, pattern: re.Pattern[str]) -> list[tuple[str, re.Match[str]]]:
    """Each match with the text since the previous one (where its label sits); linear, unlike a label regex."""
    out, end = [], 0
    for match in pattern.finditer(text):
        out.append((text[end : match.start()], match))
        end = match.end()
    return out


def _label(raw: str | None) -> str | None:
    label = " ".join((raw or "").split()).strip(" ;,.:")
    return label or None


def _group(items: list[tuple[str, list[float]]]) -> dict[str, list[list[float]]]:
    """Items grouped by label, labels in order of first appearance."""
    groups: dict[str, list[list[float]]] = {}
    for label, values in items:
        groups.setdefault(label, []).append(values)
    return groups



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


CONVENTIONS: dict[str, Convention] = {
    conv.name: conv
    for conv in (TinyJson(), Llava(), Qwen2VL(), Qwen25VL(), Qwen3VL(), PaliGemma(), Florence2(), InternVL())
}


def get_convention(name: str, **options: Any) -> Convention:
    """The convention registered as `name`; options (e.g. max_pixels for qwen2_5_vl, scale for json) build a new one."""
    if name not in CONVENTIONS:
        raise UserError(f"unknown coordinate convention '{name}' (choose from {', '.join(CONVENTIONS)})")
    if not options:
        return CONVENTIONS[name]
    try:
        return type(CONVENTIONS[name])(**options)
    except TypeError:
        raise UserError(f"convention '{name}' does not take the option(s) {', '.join(sorted(options))}") from None
