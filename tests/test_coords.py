"""Coordinate conventions: encode -> parse round trips, polygons, malformed answers, Qwen's smart_resize."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.coords import CONVENTIONS, ParseError, get_convention, smart_resize
from pipeline.errors import UserError
from pipeline.masks import box_iou, mask_iou, mask_to_polygon, polygon_to_mask

SIZES = [(1280, 720), (480, 848), (320, 180)]
FAMILIES = [name for name in CONVENTIONS if name != "json"]  # json (0..100) is for tiny frames, tested apart


def realistic_boxes(width: int, height: int) -> list[tuple[str, list[int]]]:
    """Objects of 20-60 % of the frame side, three of them touching the frame edges."""
    w, h = width, height
    return [
        ("circle", [0, 0, int(w * 0.3), int(h * 0.35)]),  # top-left corner
        ("circle", [int(w * 0.62), int(h * 0.55), w, h]),  # bottom-right corner
        ("red square", [int(w * 0.3), int(h * 0.2), int(w * 0.55), int(h * 0.6)]),
        ("person", [w - int(w * 0.25) - 1, 3, w - 1, int(h * 0.4)]),  # one pixel off the right edge
    ]


def step(conv_name: str, width: int, height: int) -> tuple[float, float]:
    """Pixel size of one unit of the convention on each axis."""
    ax, ay = get_convention(conv_name).axes(width, height)
    return width / ax.units, height / ay.units


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_box_round_trip_keeps_iou(name: str, size: tuple[int, int]) -> None:
    width, height = size
    conv = get_convention(name)
    objects = realistic_boxes(width, height)
    parsed = conv.parse_boxes(conv.encode_boxes(objects, width, height), width, height)
    assert len(parsed) == len(objects)
    sx, sy = step(name, width, height)
    for (label, box), (parsed_label, parsed_box) in zip(objects, parsed, strict=True):
        assert box_iou(box, parsed_box) >= 0.98, (name, box, parsed_box)
        assert parsed_label in (label, None) and (name == "llava" or parsed_label == label)
        # at most one unit off per coordinate (half a unit when nothing is clipped at the edge)
        assert all(abs(a - b) <= s + 1e-6 for a, b, s in zip(box, parsed_box, (sx, sy, sx, sy), strict=True))
        assert 0 <= parsed_box[0] <= parsed_box[2] <= width and 0 <= parsed_box[1] <= parsed_box[3] <= height


@pytest.mark.parametrize("size", [(100, 100), (50, 50), (100, 60)])
def test_tiny_json_round_trip_on_tiny_frames(size: tuple[int, int]) -> None:
    width, height = size
    conv = get_convention("json")
    objects = realistic_boxes(width, height)
    text = conv.encode_boxes(objects, width, height)
    assert text.startswith('[{"label":"circle","box":[0,0,')  # compact: no spaces
    for (label, box), (parsed_label, parsed_box) in zip(objects, conv.parse_boxes(text, width, height), strict=True):
        assert parsed_label == label and box_iou(box, parsed_box) >= 0.98


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_tiny_json_error_is_within_half_a_percent_step(size: tuple[int, int]) -> None:
    width, height = size
    conv = get_convention("json")
    objects = realistic_boxes(width, height)
    for (_, box), (_, parsed) in zip(objects, conv.parse_boxes(conv.encode_boxes(objects, width, height),
                                                               width, height), strict=True):
        bound = (width / 200, height / 200, width / 200, height / 200)
        assert all(abs(a - b) <= s + 1e-6 for a, b, s in zip(box, parsed, bound, strict=True))


def disk(height: int, width: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    return (((xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2) <= r * r).astype(np.uint8)


def ellipse(height: int, width: int, cx: float, cy: float, a: float, b: float, angle: float) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    u = (xx + 0.5 - cx) * math.cos(angle) + (yy + 0.5 - cy) * math.sin(angle)
    v = (yy + 0.5 - cy) * math.cos(angle) - (xx + 0.5 - cx) * math.sin(angle)
    return ((u / a) ** 2 + (v / b) ** 2 <= 1).astype(np.uint8)


def shapes(width: int, height: int) -> dict[str, np.ndarray]:
    side = min(width, height)
    rect = np.zeros((height, width), np.uint8)
    rect[height // 5 : height // 2, width // 3 : width // 2] = 1
    return {
        "disk": disk(height, width, width * 0.4, height * 0.5, side * 0.2),
        "corner disk": disk(height, width, 0, 0, side * 0.35),
        "ellipse": ellipse(height, width, width * 0.6, height * 0.4, side * 0.3, side * 0.12, 0.5),
        "rectangle": rect,
    }


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_mask_polygon_round_trip_without_budget_pressure(size: tuple[int, int]) -> None:
    width, height = size
    blob = shapes(width, height)
    lshape = np.zeros((height, width), np.uint8)
    lshape[10:-10, 10:40] = 1
    lshape[-40:-10, 10:-10] = 1
    for name, mask in {**blob, "L": lshape}.items():
        polygon = mask_to_polygon(mask, max_points=2000)
        assert mask_iou(mask, polygon_to_mask(polygon, height, width)) >= 0.98, name
    rect = blob["rectangle"]
    assert mask_iou(rect, polygon_to_mask(mask_to_polygon(rect), height, width)) == 1.0  # corners are exact


def test_mask_to_polygon_traces_pixel_corners() -> None:
    mask = np.zeros((10, 12), np.uint8)
    mask[2:5, 3:7] = 1
    points = mask_to_polygon(mask)
    xs, ys = points[::2], points[1::2]
    assert (min(xs), min(ys), max(xs), max(ys)) == (3.0, 2.0, 7.0, 5.0)
    assert mask_to_polygon(np.zeros((5, 5), np.uint8)) == []
    with pytest.raises(ValueError):
        mask_to_polygon(mask, max_points=2)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_polygon_budget_16_keeps_convex_shapes(size: tuple[int, int]) -> None:
    width, height = size
    for name, mask in shapes(width, height).items():
        polygon = mask_to_polygon(mask, max_points=16)
        assert 3 <= len(polygon) // 2 <= 16
        assert mask_iou(mask, polygon_to_mask(polygon, height, width)) >= 0.93, name


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_polygon_answer_round_trip(name: str, size: tuple[int, int]) -> None:
    width, height = size
    conv = get_convention(name)
    for shape, mask in shapes(width, height).items():
        polygon = mask_to_polygon(mask, max_points=16)
        parsed = conv.parse_polygon(conv.encode_polygon("blob", polygon, width, height), width, height)
        assert len(parsed) == 1 and parsed[0][0] in ("blob", None) and len(parsed[0][1]) == len(polygon)
        assert mask_iou(mask, polygon_to_mask(parsed[0][1], height, width)) >= 0.9, (name, shape)


def test_tiny_json_polygon_on_tiny_frame() -> None:
    conv = get_convention("json")
    mask = disk(96, 96, 40, 50, 25)
    polygon = mask_to_polygon(mask, max_points=16)
    text = conv.encode_polygon("circle", polygon, 96, 96)
    assert text.startswith('[{"label":"circle","polygon":[')
    [(label, parsed)] = conv.parse_polygon(text, 96, 96)
    assert label == "circle" and mask_iou(mask, polygon_to_mask(parsed, 96, 96)) >= 0.9


def test_several_polygons_and_grouped_boxes() -> None:
    items = [("cat", [10.0, 10.0, 50.0, 10.0, 30.0, 40.0]), ("dog", [60.0, 60.0, 90.0, 60.0, 90.0, 90.0])]
    boxes = [("cat", [10, 10, 50, 40]), ("cat", [60, 60, 90, 90]), ("dog", [5, 5, 20, 20])]
    for name, conv in CONVENTIONS.items():
        parsed = conv.parse_polygon(conv.encode_polygons(items, 100, 100), 100, 100)
        assert len(parsed) == 2, name
        parsed_boxes = conv.parse_boxes(conv.encode_boxes(boxes, 100, 100), 100, 100)
        assert len(parsed_boxes) == 3, name
        if name != "llava":
            assert [label for label, _ in parsed_boxes] == ["cat", "cat", "dog"], name


def test_known_strings() -> None:
    box = [("cat", [128, 72, 640, 360])]
    assert get_convention("qwen2_vl").encode_boxes(box, 1280, 720) == (
        "<|object_ref_start|>cat<|object_ref_end|><|box_start|>(100,100),(500,500)<|box_end|>")
    qwen3 = get_convention("qwen3_vl").encode_boxes(box, 1280, 720)
    assert qwen3 == '[{"bbox_2d": [100, 100, 500, 500], "label": "cat"}]'
    qwen25 = get_convention("qwen2_5_vl").encode_boxes(box, 1280, 720)  # resized to 1288x728
    assert qwen25 == '[{"bbox_2d": [129, 73, 644, 364], "label": "cat"}]'
    assert get_convention("paligemma").encode_boxes(box, 1280, 720) == "<loc0102><loc0102><loc0512><loc0512> cat"
    assert get_convention("florence2").encode_boxes(box, 1280, 720) == "cat<loc_100><loc_100><loc_500><loc_500>"
    assert get_convention("internvl").encode_boxes(box, 1280, 720) == "<ref>cat</ref><box>[[100, 100, 500, 500]]</box>"
    assert get_convention("llava").encode_boxes(box, 1280, 720) == "cat: [0.100, 0.100, 0.500, 0.500]"
    assert get_convention("json").encode_boxes(box, 1280, 720) == '[{"label":"cat","box":[10,10,50,50]}]'


@pytest.mark.parametrize("name", list(CONVENTIONS))
def test_none_answer_and_tolerant_parsing(name: str) -> None:
    conv = get_convention(name)
    assert conv.encode_boxes([], 640, 480) == conv.none_answer
    assert conv.parse_boxes(conv.none_answer, 640, 480) == []
    assert conv.parse_boxes(f"  {conv.none_answer}.\n", 640, 480) == []
    assert conv.parse_polygon(conv.none_answer, 640, 480) == []
    objects = [("car", [10, 20, 300, 400]), ("bus", [320, 0, 640, 200])]
    text = conv.encode_boxes(objects, 640, 480)
    plain = conv.parse_boxes(text, 640, 480)
    assert conv.parse_boxes(f"Sure!\n  {text}  \n", 640, 480) == plain
    if conv.none_answer == "[]":  # JSON families: code fences and trailing prose
        assert conv.parse_boxes(f"```json\n{text}\n```\nDone.", 640, 480) == plain


def garbage_answers(text: str) -> list[str]:
    """Generic malformed answers, plus `text` truncated inside its last coordinate."""
    last_digit = max(i for i, ch in enumerate(text) if ch.isdigit())
    return ["", "   ", "garbage without any box", "{[}]", "[", "<", "12 34 56 78", text[:last_digit]]


BAD_BY_FAMILY = {
    "json": ['[{"label":"a","box":[1,2,NaN,4]}]', '[{"label":"a","box":[1,2,101,4]}]',
             '[{"label":"a","box":[-1,2,3,4]}]', '[{"label":"a","box":[1,2,3]}]', '[{"label":"a","box":"1,2,3,4"}]',
             '[{"label":"a","box":[1,2,true,4]}]', '{"label":"a"}', '[{"label":"a","box":[50,2,3,4]}]'],
    "llava": ["a: [0.1, 0.2, nan, 0.4]", "a: [0.1, 0.2, 1.2, 0.4]", "a: [0.1, 0.2, 0.3]", "a: (0.1, 0.2, 0.3, 0.4]",
              "a: [0.1, -0.2, 0.3, 0.4]", "a: [0.1, 0.2, 0.3, 0.4]]", "a: [0.5, 0.2, 0.3, 0.4]"],
    "qwen2_vl": ["<|box_start|>(1,2),(3,nan)<|box_end|>", "<|box_start|>(1,2),(3,1001)<|box_end|>",
                 "<|box_start|>(1,2)<|box_end|>", "<|box_start|>[1,2],[3,4]<|box_end|>",
                 "<|object_ref_start|>a<|object_ref_end|>", "<|box_start|>(1,2),(3,4)"],
    "qwen2_5_vl": ['[{"bbox_2d": [1, 2, NaN, 4]}]', '[{"bbox_2d": [1, 2, 99999, 4]}]', '[{"bbox_2d": [1, 2, 3]}]',
                   '[{"label": "a"}]', '[{"bbox_2d": [1, 2, 3, 4]}', '[[1, 2, 3, 4]]'],
    "qwen3_vl": ['[{"bbox_2d": [1, 2, Infinity, 4]}]', '[{"bbox_2d": [1, 2, 1001, 4]}]',
                 '[{"bbox_2d": [1, 2, 3, 4]}, 7]'],
    "paligemma": ["<loc0001><loc0002><loc0003> a", "<loc0001><loc0002><loc1024><loc0003> a",
                  "<loc0001><loc0002><loc0003><locNaN0> a", "<loc0005><loc0002><loc0001><loc0003> a",
                  "<loc1><loc2><loc3><loc4> a"],
    "florence2": ["a<loc_1><loc_2><loc_3>", "a<loc_1><loc_2><loc_1000><loc_4>", "a<loc_1><loc_2><loc_3><loc_nan>",
                  "a<loc_1><loc_2><loc_3><loc_4><loc_5>"],
    "internvl": ["<ref>a</ref><box>[[1, 2, NaN, 4]]</box>", "<ref>a</ref><box>[[1, 2, 1001, 4]]</box>",
                 "<ref>a</ref><box>[[1, 2, 3]]</box>", "<ref>a</ref><box>[[1, 2, 3, 4]]",
                 "<ref>a</ref><box>((1,2,3,4))</box>",
                 "<box>[[1, 2, 3, 4]]</box><ref>a"],
}


@pytest.mark.parametrize("name", list(CONVENTIONS))
def test_malformed_answers_raise_parse_error(name: str) -> None:
    conv = get_convention(name)
    valid = conv.encode_boxes([("a", [10, 20, 300, 400]), ("b", [20, 30, 200, 300])], 640, 480)
    for bad in garbage_answers(valid) + BAD_BY_FAMILY[name]:
        with pytest.raises(ParseError):
            conv.parse_boxes(bad, 640, 480)
    for bad in (None, 12, b"bytes"):
        with pytest.raises(ParseError):
            conv.parse_boxes(bad, 640, 480)  # type: ignore[arg-type]
    polygon = conv.encode_polygon("a", [10, 10, 100, 10, 100, 100, 10, 100], 640, 480)
    for bad in garbage_answers(polygon) + [conv.encode_region([10, 10, 20, 20], 640, 480)]:
        with pytest.raises(ParseError):
            conv.parse_polygon(bad, 640, 480)


@pytest.mark.parametrize("name", list(CONVENTIONS))
def test_every_prefix_parses_or_raises_parse_error(name: str) -> None:
    conv = get_convention(name)
    texts = [conv.encode_boxes([("a b", [10, 20, 300, 400]), ("c", [20, 30, 200, 300])], 640, 480),
             conv.encode_polygon("a", [10, 10, 100, 10, 100, 100, 10, 100], 640, 480)]
    for text in texts:
        for end in range(len(text) + 1):
            for parse in (conv.parse_boxes, conv.parse_polygon):
                try:
                    result = parse(text[:end], 640, 480)
                except ParseError:
                    continue
                assert isinstance(result, list)


@pytest.mark.parametrize("name", list(CONVENTIONS))
def test_random_fragments_never_raise_another_error(name: str) -> None:
    conv = get_convention(name)
    valid = conv.encode_boxes([("a", [10, 20, 300, 400]), ("b", [20, 30, 200, 300])], 640, 480)
    valid += conv.encode_polygon("a", [10, 10, 100, 10, 100, 100, 10, 100], 640, 480)
    pieces = [valid[i : i + 5] for i in range(0, len(valid), 5)] + ["[", "]", "{", "}", ",", "NaN", "1e999", "-3",
                                                                     "[" * 2000, "\n", '"', ":", "<", ">", "99999"]
    rng = np.random.default_rng(7)
    for _ in range(300):
        text = "".join(rng.choice(pieces, size=int(rng.integers(1, 12))))
        for parse in (conv.parse_boxes, conv.parse_polygon):
            try:
                result = parse(text, 640, 480)
            except ParseError:
                continue
            assert all(0 <= v <= 640 for _, values in result for v in values)
    with pytest.raises(ParseError):
        conv.parse_boxes(valid, 0, 0)


def test_labels_counts_and_referring() -> None:
    conv = get_convention("qwen2_vl")
    assert conv.parse_label("<|object_ref_start|>red car<|object_ref_end|>") == "red car"
    assert conv.parse_label(' "dog". ') == "dog"
    assert conv.parse_count(conv.encode_count(3)) == 3
    assert conv.parse_count("There are three.") == 3 and conv.parse_count("none") == 0
    assert conv.parse_labels(conv.encode_labels(["cat", "dog"])) == ["cat", "dog"]
    assert conv.parse_labels("cat, dog and bird; cat.") == ["cat", "dog", "bird"]
    assert conv.parse_labels(conv.encode_labels([])) == []
    for parse in (conv.parse_label, conv.parse_count):
        with pytest.raises(ParseError):
            parse("   ")
    with pytest.raises(ParseError):
        conv.parse_count("many")


def test_region_prompts_are_the_box_alone() -> None:
    assert get_convention("paligemma").encode_region([0, 0, 640, 480], 640, 480) == (
        "<loc0000><loc0000><loc1023><loc1023>")
    assert get_convention("internvl").encode_region([0, 0, 640, 480], 640, 480) == "<box>[[0, 0, 1000, 1000]]</box>"
    assert get_convention("json").encode_region([0, 0, 320, 240], 640, 480) == "[0,0,50,50]"


# (height, width) -> transformers' qwen2_vl smart_resize at max_pixels 28*28*1280 and 256*28*28 (values taken from
# transformers 5.24; importing it here would cost ~10 s of torch import).
SMART_RESIZE = {
    (720, 1280): ((728, 1288), (336, 588)), (848, 480): ((840, 476), (588, 336)),
    (180, 320): ((168, 308), (168, 308)), (2160, 3840): ((728, 1316), (336, 588)),
    (20, 20): ((56, 56), (56, 56)), (64, 64): ((56, 56), (56, 56)), (10, 700): ((28, 476), (28, 476)),
}


@pytest.mark.parametrize("size", list(SMART_RESIZE))
def test_smart_resize_matches_transformers(size: tuple[int, int]) -> None:
    default, small = SMART_RESIZE[size]
    assert smart_resize(*size) == default
    assert smart_resize(*size, max_pixels=256 * 28 * 28) == small


def test_qwen25_follows_resized_pixels_and_options() -> None:
    default = get_convention("qwen2_5_vl")
    small = get_convention("qwen2_5_vl", max_pixels=256 * 28 * 28)
    assert default.axes(3840, 2160)[0].units == smart_resize(2160, 3840)[1]
    assert small.axes(3840, 2160)[0].units == smart_resize(2160, 3840, max_pixels=256 * 28 * 28)[1] < 1000
    box = [("a", [1000, 500, 3000, 2000])]
    parsed = small.parse_boxes(small.encode_boxes(box, 3840, 2160), 3840, 2160)
    assert box_iou(box[0][1], parsed[0][1]) >= 0.98
    assert get_convention("qwen2_5_vl") is default  # the registered instance is untouched


def test_get_convention_names() -> None:
    with pytest.raises(UserError, match="qwen2_5_vl"):
        get_convention("yolo")
    with pytest.raises(UserError, match="max_pixels"):
        get_convention("qwen3_vl", max_pixels=100)
    assert get_convention("json", scale=1000).encode_region([0, 0, 320, 240], 640, 480) == "[0,0,500,500]"
    registry = pytest.importorskip("pipeline.registry")
    assert set(CONVENTIONS) == set(registry.CONVENTIONS)
