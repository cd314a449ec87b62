"""The convention contract: `Convention` (format and parse boxes, polygons, labels, counts, none) and the
helpers every family's module uses. Boxes are [x1, y1, x2, y2] image pixels, x2/y2 exclusive."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..masks import Box, BoxLike

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

