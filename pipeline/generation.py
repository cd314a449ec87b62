"""Batched greedy generation of answers for evaluation (after training and during it, see eval_callback.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from .errors import UserError
from .tasks import Example

TOKEN_MARGIN = 8  # extra generated tokens beyond the longest truth answer (a quarter more for long answers)


def token_budget(processor: Any, answers: list[str]) -> int:
    """max_new_tokens: the longest truth answer in tokens plus a margin (a model rambling past it is cut off)."""
    tok = getattr(processor, "tokenizer", processor)
    longest = max((len(tok(a, add_special_tokens=False)["input_ids"]) for a in answers), default=16)
    return longest + max(TOKEN_MARGIN, longest // 4)


def _frame(example: Example, root: Path | None, cap: int | None) -> Any:
    """The example's image, or its list of images (a clip's frames), capped as in training."""
    from .collate import load_image

    def capped(path: str) -> Any:
        image = load_image(path, example.id, root)
        if cap and max(image.size) > cap:
            image.thumbnail((cap, cap))  # as training's RowDataset: the model saw frames at this size
        return image

    return [capped(path) for path in example.images] if example.images else capped(example.image)


def _to_device(inputs: Any, model: Any) -> dict[str, Any]:
    import torch

    param = next(model.parameters())
    dtype = getattr(model, "dtype", param.dtype)
    out = {}
    for key, value in inputs.items():
        if isinstance(value, torch.Tensor):
            value = value.to(param.device)
            if value.is_floating_point() and isinstance(dtype, torch.dtype) and dtype.is_floating_point:
                value = value.to(dtype)
        out[key] = value
    return out


def generate_answers(model: Any, processor: Any, examples: list[Example], *, image_root: str | Path | None = None,
                     batch_size: int = 8, max_new_tokens: int | None = None, image_cap: int | None = None,
                     progress: bool = True, desc: str = "evaluate") -> list[str]:
    """Greedy answers to each example's prompt about its frame, in batches (left padding), model left as found."""
    import torch
    from tqdm import tqdm

    from .collate import answer_start, build_generation_inputs, decode_answers

    if batch_size < 1:
        raise UserError(f"batch size must be at least 1 (got {batch_size})")
    root = Path(image_root) if image_root else None
    limit = max_new_tokens or token_budget(processor, [ex.answer for ex in examples])
    tok = getattr(processor, "tokenizer", processor)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    was_training = model.training
    model.eval()
    answers: list[str] = []
    try:
        with torch.no_grad(), tqdm(total=len(examples), desc=desc, unit="ex", file=sys.stderr,
                                   disable=not progress, leave=False) as bar:
            for start in range(0, len(examples), batch_size):
                batch = examples[start : start + batch_size]
                inputs = build_generation_inputs(processor, [_frame(ex, root, image_cap) for ex in batch],
                                                 [ex.prompt for ex in batch])
                inputs = _to_device(inputs, model)
                output = model.generate(**inputs, max_new_tokens=limit, do_sample=False, num_beams=1,
                                        pad_token_id=pad, use_cache=True)
                answers += decode_answers(processor, output, answer_start(model, inputs))
                bar.update(len(batch))
    finally:
        model.train(was_training)
    return answers
