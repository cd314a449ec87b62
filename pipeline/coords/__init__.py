"""Per-family coordinate conventions: boxes, polygons and labels as answer text, and the parsers that read them back.

Every convention works in original image pixels on the outside (Box = [x1, y1, x2, y2], x2/y2 exclusive, i.e.
pixel-corner coordinates) and quantises to its family's own units on the inside. Parsing is tolerant of whitespace
and text around the answer, but a malformed answer raises `ParseError` (never another exception type). Values
outside a convention's range are refused (ParseError), never silently clipped; in-range values are clipped to the
image after conversion. See docs/FORMATS_OUT.md for one example string per convention.
"""

from __future__ import annotations

from typing import Any

from ..errors import UserError
from ..imagegrid import smart_resize  # noqa: F401 - re-exported (tests compare it with transformers')
from .base import NUM, Axis, Convention, Labeled, LabeledPolygon, ParseError  # noqa: F401
from .florence2 import Florence2
from .internvl import InternVL
from .llava import Llava
from .paligemma import PaliGemma
from .qwen import Qwen2VL, Qwen3VL, Qwen25VL, TinyJson

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

