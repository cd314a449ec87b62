"""Truth-vs-prediction overlays drawn with PIL: one image per example, worst-first / best-first grids, and a grid
comparing the same examples across evaluations (checkpoints or runs).

Green is the truth, magenta the prediction (boxes and polygons on the frame, each with a dark halo so it shows on
any background); the caption under each frame says task, label, score and both answers. An answer that did not
parse gets a magenta border around the whole frame.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

TRUTH = (40, 230, 60)
PRED = (255, 0, 220)
HALO = (0, 0, 0)
CAPTION_BG = (24, 24, 24)
CAPTION_FG = (235, 235, 235)
DRAWN_TASKS = ("grounding", "polygon", "negative")  # negatives only when they answered boxes (false positives)
CAPTION_LINES = 3
LINE_HEIGHT = 14
# Object colours of the upload preview (mask tint, box and label), by object id
PALETTE = [(230, 40, 40), (40, 190, 70), (40, 90, 235), (250, 205, 30), (205, 50, 205), (30, 205, 215),
           (255, 128, 0), (128, 64, 255)]


def _font(size: int = 11) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _scaled(points: list[float], scale: float) -> list[float]:
    return [float(v) * scale for v in points]


def _box(draw: Any, box: list[float], scale: float, colour: tuple[int, int, int], width: int) -> None:
    x1, y1, x2, y2 = _scaled(box, scale)
    draw.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=colour, width=width)


def _polygon(draw: Any, polygon: list[float], scale: float, colour: tuple[int, int, int], width: int) -> None:
    pts = _scaled(polygon, scale)
    if len(pts) >= 6:
        xy = list(zip(pts[::2], pts[1::2], strict=True))
        draw.line(xy + [xy[0]], fill=colour, width=width, joint="curve")


def _geometry(row: dict[str, Any]) -> tuple[list[tuple[str, list[float]]], list[tuple[str, list[float]]]]:
    """(truth shapes, predicted shapes) as ("box" | "polygon", points) pairs."""
    truth, parsed = row.get("truth") or {}, row.get("parsed") or {}
    shapes = [("box", b) for b in truth.get("boxes", [])]
    if row["task"] == "polygon" and truth.get("polygon"):
        shapes.append(("polygon", truth["polygon"]))
    elif truth.get("box"):
        shapes.append(("box", truth["box"]))
    pred = [("box", b) for b in parsed.get("boxes", [])] + [("polygon", p) for p in parsed.get("polygons", [])]
    return shapes, pred


def caption(row: dict[str, Any]) -> list[str]:
    """The caption lines of one example: what was asked, how it scored, what came back."""
    if not row.get("parse_ok", True):
        score = "parse failure"
    elif row.get("iou") is not None:
        score = f"IoU {row['iou']:.2f}"
    else:
        score = f"score {row.get('score', 0.0):.2f}"
    head = f"{row['task']} · {row.get('label') or '-'} · {score}"
    return [head, f"answer: {row.get('answer') or '(empty)'}", f"truth: {row.get('truth_answer', '')}"]


def render_overlay(frame: Any, row: dict[str, Any], side: int = 256, lines: list[str] | None = None) -> Any:
    """The frame scaled so its longer side is `side`, truth and prediction drawn on it, and a caption strip below
    (`lines`, else the example's task, score and answers)."""
    from PIL import Image, ImageDraw

    frame = frame.convert("RGB")
    scale = side / max(frame.size)
    size = (max(1, round(frame.width * scale)), max(1, round(frame.height * scale)))
    image = frame.resize(size, Image.Resampling.NEAREST if scale > 1 else Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(image)
    width = max(2, round(side / 160))
    truth, pred = _geometry(row)
    for shapes, colour in ((truth, TRUTH), (pred, PRED)):
        for kind, points in shapes:
            draw_shape = _box if kind == "box" else _polygon
            draw_shape(draw, points, scale, HALO, width + 2)
            draw_shape(draw, points, scale, colour, width)
    if not row.get("parse_ok", True):
        draw.rectangle([0, 0, size[0] - 1, size[1] - 1], outline=PRED, width=width * 2)
    return _with_caption(image, lines if lines is not None else caption(row))


def _with_caption(image: Any, lines: list[str]) -> Any:
    from PIL import Image, ImageDraw

    font = _font()
    strip = CAPTION_LINES * LINE_HEIGHT + 6
    out = Image.new("RGB", (image.width, image.height + strip), CAPTION_BG)
    out.paste(image, (0, 0))
    draw = ImageDraw.Draw(out)
    for k, line in enumerate(lines[:CAPTION_LINES]):
        draw.text((4, image.height + 3 + k * LINE_HEIGHT), _fit(draw, line, font, image.width - 8), fill=CAPTION_FG,
                  font=font)
    return out


def _fit(draw: Any, text: str, font: Any, width: int) -> str:
    text = " ".join(str(text).split())
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[: max(0, len(text) - max(1, len(text) // 8))]
    return text + "…"


def grid(tiles: list[Any], columns: int = 4, pad: int = 4, background: tuple[int, int, int] = (255, 255, 255)) -> Any:
    """Tiles pasted row by row into equal cells (the largest tile's size)."""
    from PIL import Image

    if not tiles:
        return Image.new("RGB", (256, 64), background)
    columns = max(1, min(columns, len(tiles)))
    cell_w, cell_h = max(t.width for t in tiles), max(t.height for t in tiles)
    rows = -(-len(tiles) // columns)
    out = Image.new("RGB", (columns * (cell_w + pad) + pad, rows * (cell_h + pad) + pad), background)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, columns)
        out.paste(tile, (pad + c * (cell_w + pad), pad + r * (cell_h + pad)))
    return out


def _frame(row: dict[str, Any], image_root: Path, cache: dict[str, Any]) -> Any:
    from PIL import Image

    path = str(image_root / row["image"])
    if path not in cache:
        try:
            with Image.open(path) as img:
                cache[path] = img.convert("RGB")
        except OSError:  # a frame gone missing since the evaluation: a grey stand-in keeps the gallery whole
            cache[path] = Image.new("RGB", (int(row.get("width") or 64), int(row.get("height") or 64)), (128,) * 3)
    return cache[path]


def rank_rows(rows: list[dict[str, Any]], worst_first: bool = True) -> list[dict[str, Any]]:
    """Rows with geometry to draw, by score (parse failures the worst among equals), ties broken by id."""
    drawn = [r for r in rows if r["task"] in DRAWN_TASKS and (r["task"] != "negative" or r.get("score", 0.0) < 1)]
    if worst_first:
        return sorted(drawn, key=lambda r: (r.get("score", 0.0), r.get("parse_ok", True), r["id"]))
    return sorted(drawn, key=lambda r: (-r.get("score", 0.0), not r.get("parse_ok", True), r["id"]))


def _safe(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name)[:80]


def write_gallery(rows: list[dict[str, Any]], image_root: str | Path, out_dir: str | Path, *, count: int = 12,
                  columns: int = 4, side: int = 256) -> dict[str, Path]:
    """OUT/{worst,best}.png grids plus OUT/{worst,best}/NN_<id>.png single overlays; returns the grid paths."""
    root, out = Path(image_root), Path(out_dir)
    cache: dict[str, Any] = {}
    paths: dict[str, Path] = {}
    for kind, worst in (("worst", True), ("best", False)):
        folder = out / kind
        folder.mkdir(parents=True, exist_ok=True)
        tiles = []
        for k, row in enumerate(rank_rows(rows, worst)[:count]):
            frame = _frame(row, root, cache)
            render_overlay(frame, row, max(side, min(max(frame.size), 1024))).save(
                folder / f"{k + 1:02d}_{_safe(row['id'])}.png")
            tiles.append(render_overlay(frame, row, side))
        paths[kind] = out / f"{kind}.png"
        grid(tiles, columns).save(paths[kind])
    return paths


def _header(text: str, width: int) -> Any:
    from PIL import Image, ImageDraw

    tile = Image.new("RGB", (width, 24), CAPTION_BG)
    draw = ImageDraw.Draw(tile)
    draw.text((4, 5), _fit(draw, text, _font(12), width - 8), fill=CAPTION_FG, font=_font(12))
    return tile


def comparison_grid(columns: dict[str, list[dict[str, Any]]], image_root: str | Path, path: str | Path, *,
                    count: int = 8, side: int = 192) -> Path:
    """Rows: the examples the first column does worst on (present in every column); columns: the evaluations."""
    from PIL import Image

    by_id = {name: {r["id"]: r for r in rows} for name, rows in columns.items()}
    names = list(columns)
    shared = [r for r in rank_rows(columns[names[0]]) if all(r["id"] in by_id[n] for n in names)][:count]
    cache: dict[str, Any] = {}
    body = [render_overlay(_frame(row, Path(image_root), cache), by_id[name][row["id"]], side)
            for row in shared for name in names]
    cell = max((t.width for t in body), default=side)
    top = grid([_header(name, cell) for name in names], len(names))
    out = top
    if body:
        bottom = grid(body, len(names))
        out = Image.new("RGB", (max(top.width, bottom.width), top.height + bottom.height - 4), (255, 255, 255))
        out.paste(top, (0, 0))
        out.paste(bottom, (0, top.height - 4))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    out.save(path)
    return Path(path)


# -- the upload preview: masks tinted, boxes and labels drawn ----------------------------------------------------
def draw_objects(image: Any, objects: list[Any], boxes: bool = True, min_width: int = 320) -> Any:
    """A copy of a frame with each object's mask tinted and its box and label drawn (upscaled when small)."""
    import numpy as np
    from PIL import Image, ImageDraw

    from .masks import decode_rle

    rgb = np.asarray(image.convert("RGB")).copy()
    for obj in objects:
        mask = decode_rle(obj.rle).astype(bool)
        if mask.shape == rgb.shape[:2]:
            colour = np.array(PALETTE[obj.object_id % len(PALETTE)])
            rgb[mask] = (0.5 * rgb[mask] + 0.5 * colour).astype(np.uint8)
    scale = max(1, min_width // max(1, rgb.shape[1])) if boxes else 1
    out = Image.fromarray(rgb).resize((rgb.shape[1] * scale, rgb.shape[0] * scale), Image.Resampling.NEAREST)
    if boxes:
        draw = ImageDraw.Draw(out)
        for obj in objects:
            colour = PALETTE[obj.object_id % len(PALETTE)]
            x1, y1, x2, y2 = (v * scale for v in obj.bbox)
            draw.rectangle([x1, y1, x2 - 1, y2 - 1], outline=colour, width=2)
            draw.text((x1 + 3, max(0, y1 - 12)), obj.label, fill=colour)
    return out


def upscale(image: Any, side: int) -> Any:
    """Enlarge a small image by a whole factor (nearest neighbour) so its longest side reaches about `side`."""
    from PIL import Image

    scale = max(1, side // max(1, max(image.size)))
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
