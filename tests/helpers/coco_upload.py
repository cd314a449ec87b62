"""A small COCO export whose file names sit in a sub-folder (`imgs/im0.jpg`), written as a browser upload would
leave it: the JSON and the frames side by side, without the sub-folder."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image


def _rle(mask: np.ndarray) -> dict[str, object]:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}


def write_coco_upload(folder: Path, frames: int = 4, zipped: bool = False) -> list[Path]:
    """The files to upload: coco.json and its frames (or one ZIP of `imgs/`); file names say `imgs/imN.jpg`."""
    folder.mkdir(parents=True, exist_ok=True)
    images, annotations, files = [], [], []
    for n in range(frames):
        frame = np.full((64, 96, 3), 30, np.uint8)
        x = 10 + 8 * n
        frame[20:40, x:x + 20] = (220, 60, 60)
        path = folder / f"im{n}.jpg"
        Image.fromarray(frame).save(path, quality=95)
        files.append(path)
        mask = np.zeros((64, 96), bool)
        mask[20:40, x:x + 20] = True
        images.append({"id": n + 1, "file_name": f"imgs/im{n}.jpg", "width": 96, "height": 64})
        annotations.append({"id": n + 1, "image_id": n + 1, "category_id": 1, "segmentation": _rle(mask),
                            "bbox": [x, 20, 20, 20], "area": 400, "iscrowd": 0})
    coco = folder / "coco.json"
    coco.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 1, "name": "box"}]}), encoding="utf-8")
    if zipped:
        archive = folder / "frames.zip"
        with zipfile.ZipFile(archive, "w") as out:
            for path in files:
                out.write(path, f"imgs/{path.name}")
        return [coco, archive]
    return [coco, *files]
