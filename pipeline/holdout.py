"""Hold whole videos of the train split back for a later stage: `train` keeps the rest, the held-back frames become
a split of their own (e.g. `rl`, the prompts of a GRPO stage that supervised training never saw).

A GRPO stage on the very frames the SFT run learned by heart has little to learn from: its sampled answers to them
are already close to the truth, so the rewards mostly measure sampling noise (docs/DEMO.md, "GRPO stage").
Videos move as a whole, so no video straddles the two splits.
"""

from __future__ import annotations

import random
from pathlib import Path

from .atomic import atomic_write_text
from .dataset import open_dataset, split_path
from .errors import UserError
from .records import records_text


def hold_out_videos(dataset_dir: str | Path, share: float, name: str = "rl", seed: int = 0) -> dict[str, int]:
    """Move about `share` of the train split's videos (seeded) into the split `name`; {split: frames} after."""
    if not 0.0 < share < 1.0:
        raise UserError(f"the held-back share must be between 0 and 1 (got {share})")
    if name in ("train", "val", "test"):
        raise UserError(f"the held-back split needs a name of its own, not {name!r}")
    root = Path(dataset_dir)
    train = open_dataset(root).split("train")
    videos = sorted({r.video_id for r in train})
    if len(videos) < 2:
        raise UserError("the train split has fewer than 2 videos: nothing can be held back", split_path(root, "train"))
    count = min(len(videos) - 1, max(1, round(share * len(videos))))
    held = set(random.Random(seed).sample(videos, count))
    kept = [r for r in train if r.video_id not in held]
    back = [r for r in train if r.video_id in held]
    atomic_write_text(split_path(root, name), records_text(back))
    atomic_write_text(split_path(root, "train"), records_text(kept))  # last: an interrupted run leaves train whole
    return {"train": len(kept), name: len(back)}
