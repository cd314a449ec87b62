"""Vision-language collator: chat-template prompts with images, loss on the answer tokens only.

Each example is `{"image": PIL image or path, "prompt": str, "answer": str, "id": optional}`, or with `"images"`: a
list of them (a clip's frames in time order; one image part each, before the prompt). The prompt goes through
the model's own processor (which expands the image placeholder into the right number of image tokens); the answer
is tokenised on its own and appended with the template's end-of-turn token, exactly as the model sees it when it
generates. Token ids always come from the processor/tokenizer.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .errors import UserError

log = logging.getLogger(__name__)
IGNORE = -100
_SENTINEL = "QQSENTINELQQ"
_SELF_FRAMING = ("PaliGemmaProcessor", "Florence2Processor")
_STOP_TOKENS = ("<|im_end|>", "<|endoftext|>", "<end_of_utterance>", "</s>", "<eos>", "<end_of_turn>", "<|eot_id|>")


def _tokenizer(processor: Any) -> Any:
    return getattr(processor, "tokenizer", processor)


def _messages(prompt: str, answer: str | None, image: bool | int) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = [{"type": "image"} for _ in range(int(image))]
    content.append({"type": "text", "text": prompt})
    turns = [{"role": "user", "content": content}]
    if answer is not None:
        turns.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return turns


def _own_framing(processor: Any) -> str | None:
    """The processor class that frames prompts itself (PaliGemma, Florence-2: no chat template), else None."""
    names = {cls.__name__ for cls in type(processor).__mro__}
    return next((name for name in _SELF_FRAMING if name in names), None)


def is_seq2seq(processor: Any) -> bool:
    """An encoder-decoder family (Florence-2): the prompt goes to the encoder, the answer is the decoder's."""
    return _own_framing(processor) == "Florence2Processor"


def render_prompt(processor: Any, prompt: str, image: bool | int = True) -> str:
    """The chat-template text of one user turn (`image`: how many image parts) plus the generation prompt (plain
    `prompt\\n` without a template).

    PaliGemma and Florence-2 processors frame the prompt themselves (`<image>...<bos>prefix\\n`,
    `<image><s>prompt</s>`), so they get the bare prompt (PaliGemma's with its `<image>` placeholder in front, as
    its processor expects).
    """
    if getattr(processor, "chat_template", None) or getattr(_tokenizer(processor), "chat_template", None):
        return processor.apply_chat_template(_messages(prompt, None, image), add_generation_prompt=True,
                                             tokenize=False)
    own = _own_framing(processor)
    if own == "PaliGemmaProcessor":
        return f"{processor.image_token}{prompt}" if image else prompt
    if own:
        return prompt
    return f"{prompt}\n"


def _answer_framing(processor: Any, image: bool) -> tuple[str, str]:
    """(text between generation prompt and answer, text after the answer) as the chat template writes them."""
    if not (getattr(processor, "chat_template", None) or getattr(_tokenizer(processor), "chat_template", None)):
        return "", _tokenizer(processor).eos_token or ""
    prompt = render_prompt(processor, "q", image)
    full = processor.apply_chat_template(_messages("q", _SENTINEL, image), tokenize=False)
    at = full.index(_SENTINEL)
    gap = full[len(prompt):at] if full.startswith(prompt) else ""
    return gap, full[at + len(_SENTINEL):]


def stop_token_ids(processor: Any) -> set[int]:
    """Ids that end an answer: eos, pad and the chat template's end-of-turn tokens present in this vocabulary."""
    tok = _tokenizer(processor)
    ids = {tok.pad_token_id}
    eos = tok.eos_token_id
    ids.update(eos if isinstance(eos, list) else [eos])
    vocab = tok.get_vocab()
    ids.update(vocab[t] for t in _STOP_TOKENS if t in vocab)
    return {i for i in ids if i is not None}


def _text_inputs(tok: Any, texts: list[str]) -> dict[str, Any]:
    """Tokenizer kwargs: skip automatic BOS when the template text already starts with it."""
    bos = tok.bos_token
    return {"text": texts, "add_special_tokens": not (bos and all(t.startswith(bos) for t in texts))}


def load_image(image: Any, name: str, root: Path | None = None) -> Any:
    """An RGB PIL image from a PIL image or a path (relative to `root`); UserError naming the record otherwise."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if not isinstance(image, str | Path):
        raise UserError(f"'image' must be a PIL image or a path, got {type(image).__name__}", name)
    path = Path(image) if root is None or Path(image).is_absolute() else root / image
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read image {path}: {exc}", name) from exc


class VisionLanguageCollator:
    """Batch examples into model inputs with labels on answer tokens (+ end of turn) only."""

    def __init__(self, processor: Any = None, *, tokenizer: Any = None, max_length: int | None = None,
                 image_root: str | Path | None = None) -> None:
        if processor is None and tokenizer is None:
            raise ValueError("VisionLanguageCollator needs a processor or a tokenizer")
        self.processor = processor
        self.tokenizer = tokenizer if tokenizer is not None else _tokenizer(processor)
        self.max_length = max_length
        self.image_root = Path(image_root) if image_root else None
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id
        self._template_owner = processor if processor is not None else self.tokenizer
        self._gap, suffix = _answer_framing(self._template_owner, image=processor is not None)
        self.end_ids = self._end_ids(suffix)
        self.image_token_ids = self._image_token_ids()
        # Florence-2: the decoder's labels start with <s> (as its tokenizer writes a target), the prompt stays apart
        self.seq2seq = processor is not None and is_seq2seq(processor)
        bos = self.tokenizer.bos_token_id
        self.answer_prefix = [bos] if self.seq2seq and isinstance(bos, int) else []

    def _end_ids(self, suffix: str) -> list[int]:
        """Tokens after the answer up to and including the first special one (the end-of-turn token)."""
        ids = self.tokenizer(suffix, add_special_tokens=False)["input_ids"] if suffix else []
        special = set(self.tokenizer.all_special_ids) | stop_token_ids(self.tokenizer)
        for n, token in enumerate(ids):
            if token in special:
                return ids[: n + 1]
        eos = self.tokenizer.eos_token_id
        return [eos] if isinstance(eos, int) else []

    def _image_token_ids(self) -> set[int]:
        ids = set()
        for name in ("image_token_id", "fake_image_token_id", "global_image_token_id", "video_token_id"):
            value = getattr(self.processor, name, None)
            if isinstance(value, int):
                ids.add(value)
        return ids

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        """Collate a list of examples into padded tensors (input_ids, attention_mask, labels, pixel_values, ...)."""
        if not examples:
            raise ValueError("cannot collate an empty batch")
        names = [str(ex.get("id", f"example {i}")) for i, ex in enumerate(examples)]
        prompts = [self._prompt_text(ex, name) for ex, name in zip(examples, names, strict=True)]
        encoded = self._encode_prompts(examples, prompts, names)
        prompt_ids, per_token = self._unpad(encoded)
        rows = [self._answer_ids(ex, name, ids)
                for ex, name, ids in zip(examples, names, prompt_ids, strict=True)]
        return self._assemble(encoded, prompt_ids, per_token, rows)

    def _prompt_text(self, example: dict[str, Any], name: str) -> str:
        prompt = example.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise UserError("record has no 'prompt' text", name)
        count = len(example_images(example)) if self.processor is not None else 0
        return render_prompt(self._template_owner, prompt, image=count)

    def _encode_prompts(self, examples: list[dict[str, Any]], prompts: list[str], names: list[str]) -> Any:
        kwargs = {**_text_inputs(self.tokenizer, prompts), "padding": True, "return_tensors": "pt"}
        if self.processor is None:
            return self.tokenizer(**kwargs, padding_side="right")
        per_example = []
        for ex, name in zip(examples, names, strict=True):
            frames = example_images(ex)
            if not frames or any(f is None for f in frames):
                raise UserError("record has no 'image'", name)
            per_example.append([load_image(f, name, self.image_root) for f in frames])
        return self.processor(images=processor_images(self.processor, per_example), padding_side="right", **kwargs)

    @staticmethod
    def _unpad(encoded: Any) -> tuple[list[list[int]], dict[str, list[list[int]]]]:
        """Per-row prompt ids without padding, plus other per-token tensors (mm_token_type_ids, ...)."""
        mask = encoded["attention_mask"].bool()
        ids = [row[m].tolist() for row, m in zip(encoded["input_ids"], mask, strict=True)]
        shape = tuple(encoded["input_ids"].shape)
        per_token = {key: [row[m].tolist() for row, m in zip(value, mask, strict=True)]
                     for key, value in encoded.items()
                     if key not in ("input_ids", "attention_mask") and tuple(getattr(value, "shape", ())) == shape}
        return ids, per_token

    def _answer_ids(self, example: dict[str, Any], name: str, prompt: list[int]) -> list[int]:
        answer = example.get("answer")
        if answer is None:
            return self._fit_answer(name, prompt, [], answer)
        text_ids = self.tokenizer(self._gap + str(answer), add_special_tokens=False)["input_ids"]
        ids = self.answer_prefix + text_ids + self.end_ids
        return self._fit_answer(name, prompt, ids, answer)

    def _fit_answer(self, name: str, prompt: list[int], ids: list[int], answer: Any) -> list[int]:
        """`ids` (answer + end of turn) cut to max_length; UserError when the prompt alone does not fit."""
        limit = self.max_length
        if limit and len(prompt) + (answer is not None) > limit:
            images = sum(token == getattr(self.processor, "image_token_id", None) for token in prompt)
            room = "" if answer is None else ", leaving no room for the answer,"
            raise UserError(f"prompt needs {len(prompt)} tokens ({images} image tokens){room} over max_length "
                            f"{limit}; raise max_length (image tokens are never cut)", name)
        if answer is None:
            return []
        if self.seq2seq:  # the decoder's own sequence: the prompt is the encoder's, nothing to share
            return ids[:limit] if limit else ids
        if limit and len(prompt) + len(ids) > limit:
            log.warning("%s: answer truncated from %d to %d tokens (max_length %d)", name, len(ids),
                        limit - len(prompt), limit)
            ids = ids[: limit - len(prompt)]
        return ids

    def _assemble(self, encoded: Any, prompt_ids: list[list[int]], per_token: dict[str, list[list[int]]],
                  answers: list[list[int]]) -> dict[str, Any]:
        import torch

        if self.seq2seq:  # encoder input as the processor made it; labels are the decoder's own sequence
            width = max((len(a) for a in answers), default=0)
            labels = torch.full((len(answers), max(width, 1)), IGNORE, dtype=torch.long)
            for i, answer in enumerate(answers):
                labels[i, : len(answer)] = torch.tensor(answer, dtype=torch.long)
            return {**{k: v for k, v in encoded.items() if k != "labels"}, "labels": labels}

        width = max(len(p) + len(a) for p, a in zip(prompt_ids, answers, strict=True))
        batch = len(prompt_ids)
        input_ids = torch.full((batch, width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((batch, width), dtype=torch.long)
        labels = torch.full((batch, width), IGNORE, dtype=torch.long)
        extra = {key: torch.zeros((batch, width), dtype=encoded[key].dtype) for key in per_token}
        for i, (prompt, answer) in enumerate(zip(prompt_ids, answers, strict=True)):
            n, m = len(prompt), len(answer)
            input_ids[i, : n + m] = torch.tensor(prompt + answer, dtype=torch.long)
            attention[i, : n + m] = 1
            if m:
                labels[i, n : n + m] = torch.tensor(answer, dtype=torch.long)
            for key, rows in per_token.items():
                extra[key][i, :n] = torch.tensor(rows[i], dtype=extra[key].dtype)
                # PaliGemma marks the answer (suffix) with token type 1; mm_token_type_ids are 0 on text.
                extra[key][i, n : n + m] = 1 if key == "token_type_ids" else 0
        for token in self.image_token_ids:
            labels[labels == token] = IGNORE
        out = {k: v for k, v in encoded.items() if k not in per_token and k not in ("input_ids", "attention_mask")}
        return {**out, **extra, "input_ids": input_ids, "attention_mask": attention, "labels": labels}


def example_images(example: dict[str, Any]) -> list[Any]:
    """An example's images in order: `images` (a clip's frames) when given, else `[image]`."""
    frames = example.get("images")
    if isinstance(frames, list | tuple) and frames:
        return list(frames)
    return [example.get("image")]


def processor_images(processor: Any, per_example: list[list[Any]]) -> list[Any]:
    """The `images` argument for a batch: a flat list when every example has one image (as always), else one list
    per example (Idefics3/SmolVLM, LLaVA-OneVision and Qwen2-VL processors all take nested lists; their image
    placeholders are filled in order)."""
    if all(len(frames) == 1 for frames in per_example):
        return [frames[0] for frames in per_example]
    return per_example


def build_generation_inputs(processor: Any, images: list[Any], prompts: list[str]) -> Any:
    """Left-padded model inputs for batched greedy generation of answers to `prompts` about `images` (one image, or
    a list of images, per prompt)."""
    frames = [list(img) if isinstance(img, list | tuple) else [img] for img in images]
    texts = [render_prompt(processor, p, image=len(f)) for p, f in zip(prompts, frames, strict=True)]
    kwargs = _text_inputs(_tokenizer(processor), texts)
    pil = [[load_image(img, f"image {i}") for img in group] for i, group in enumerate(frames)]
    return processor(images=processor_images(processor, pil), padding=True, padding_side="left", return_tensors="pt",
                     **kwargs)


def answer_start(model: Any, inputs: Any) -> int:
    """Where the answer starts in generate()'s output: after the prompt, or after an encoder-decoder's start token."""
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        return 1
    return int(inputs["input_ids"].shape[1])


def decode_answers(processor: Any, output_ids: Any, input_length: int) -> list[str]:
    """The generated answers after `input_length`, cut at the first end-of-turn/eos/pad token.

    Special tokens inside the answer (Qwen2-VL box tokens, PaliGemma locations) are kept for the parser.
    """
    tok = _tokenizer(processor)
    stops = stop_token_ids(processor)
    answers = []
    bos = tok.bos_token_id
    for row in output_ids[:, input_length:].tolist():
        if row and row[0] == bos:  # Florence-2's decoder writes <s> first
            row = row[1:]
        end = next((n for n, token in enumerate(row) if token in stops), len(row))
        answers.append(tok.decode(row[:end], skip_special_tokens=False, clean_up_tokenization_spaces=False).strip())
    return answers
