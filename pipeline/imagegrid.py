"""Qwen2/2.5/3-VL's image grid: the one `smart_resize` and the one image cap (pure arithmetic, no imports of the
project but errors, so the answer parser can be vendored into an inference Space with it)."""

from __future__ import annotations

import math

from .errors import UserError

QWEN_MAX_PIXELS = 28 * 28 * 1280  # 1,003,520: also transformers' own Qwen2VLImageProcessor default
QWEN_MIN_PIXELS = 56 * 56
MAX_ASPECT = 200  # transformers' smart_resize refuses longer / shorter sides above this ratio


def smart_resize(height: int, width: int, factor: int = 28, min_pixels: int = QWEN_MIN_PIXELS,
                 max_pixels: int = QWEN_MAX_PIXELS) -> tuple[int, int]:
    """Qwen2/2.5/3-VL's resize (sides multiples of `factor`, area within [min_pixels, max_pixels], aspect kept).

    The same arithmetic as transformers' `models.qwen2_vl.image_processing_pil_qwen2_vl.smart_resize` (tests compare
    them on many sizes), kept here so conversion and estimates need no transformers import. Like it, an aspect
    ratio over 200 is refused.
    """
    if height <= 0 or width <= 0:
        raise UserError(f"image size must be positive, got {width}x{height}")
    if max(height, width) / min(height, width) > MAX_ASPECT:
        raise UserError(f"image {width}x{height}: Qwen-VL processors refuse an aspect ratio over {MAX_ASPECT} "
                        f"(got {max(height, width) / min(height, width):.1f}); crop or pad the frames")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar
