"""Text tokenization once, before the training loop: chat-template prompts, answer ids and label masks per row.

`tokenize_rows` turns training rows ({"id", "image", "prompt", "answer"}) into token rows ({"prompt_ids",
"answer_ids", per-token extras}) equal to what `VisionLanguageCollator` builds inside the loop, and caches them in the
dataset folder (`DATASET/.cache/tokens/<key>.json`) under a key of the tokenizer, the processor settings and chat
template, the convention, max_length, the image cap and every row's text and image size, the way `datasets` caches a
map. `TokenizedCollator` then only loads and processes the images and pads.

How the prompt ids are made without processing every image: an image placeholder becomes a run of image tokens
that depends only on the image's size, so for each distinct size the processor runs once on a blank image of that
size; each prompt is tokenized as text (all rows in one fast-tokenizer call) and its placeholder token replaced by
that run. The first row of every size is checked against the processor itself; a processor whose expansion does not
work this way falls back to running the processor per row (on blank images), which is still once per cache build.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .collate import IGNORE, VisionLanguageCollator, _text_inputs, load_image, render_prompt
from .dataset import cache_path
from .errors import UserError

log = logging.getLogger(__name__)
CACHE_VERSION = 1


# -- image sizes ------------------------------------------------------------------------------------------------
def _image_size(image: Any, name: str) -> tuple[int, int]:
    """(width, height) of a PIL image or an image file (header only)."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.size
    if not isinstance(image, str | Path):
        raise UserError(f"'image' must be a PIL image or a path, got {type(image).__name__}", name)
    try:
        with Image.open(image) as img:
            return img.size
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read image {image}: {exc}", name) from exc


def capped_size(size: tuple[int, int], cap: int | None, _memo: dict[Any, tuple[int, int]] = {}) -> tuple[int, int]:  # noqa: B006
    """The size PIL's `thumbnail((cap, cap))` gives (what RowDataset feeds the collator)."""
    if not cap or max(size) <= cap:
        return size
    key = (size, cap)
    if key not in _memo:
        from PIL import Image

        blank = Image.new("L", size)
        blank.thumbnail((cap, cap))
        _memo[key] = blank.size
    return _memo[key]


def _row_images(row: dict[str, Any]) -> list[Any]:
    """The images of a row: `images` (multi-image / video rows) or the single `image`."""
    images = row.get("images")
    if isinstance(images, list | tuple):
        return list(images)
    return [] if row.get("image") is None else [row["image"]]


# -- fingerprint ------------------------------------------------------------------------------------------------
def processor_fingerprint(processor: Any) -> str:
    """Short hash of what decides the token ids: tokenizer (vocabulary, specials), chat template, processor config."""
    tok = getattr(processor, "tokenizer", processor)
    digest = hashlib.sha256()
    backend = getattr(tok, "backend_tokenizer", None)
    digest.update(backend.to_str().encode() if backend is not None else json.dumps(tok.get_vocab(),
                                                                                    sort_keys=True).encode())
    digest.update(json.dumps([str(tok.bos_token), str(tok.eos_token), str(tok.pad_token),
                              sorted(map(str, tok.all_special_tokens))]).encode())
    for owner in (processor, tok):
        digest.update(str(getattr(owner, "chat_template", None)).encode())
    image_processor = getattr(processor, "image_processor", None)
    if image_processor is not None:
        digest.update(image_processor.to_json_string().encode())
    for name in ("image_seq_len", "image_seq_length", "num_additional_image_tokens", "patch_size",
                 "vision_feature_select_strategy", "image_token"):
        digest.update(f"{name}={getattr(processor, name, None)}".encode())
    digest.update(type(processor).__name__.encode())
    return digest.hexdigest()[:16]


def cache_key(processor: Any, rows: list[dict[str, Any]], sizes: list[list[tuple[int, int]]], *,
              convention: str = "", max_length: int | None = None, cap: int | None = None) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({"v": CACHE_VERSION, "processor": processor_fingerprint(processor),
                              "convention": convention, "max_length": max_length, "cap": cap}).encode())
    for row, size in zip(rows, sizes, strict=True):
        digest.update(json.dumps([str(row.get("id")), row.get("prompt"), row.get("answer"), size]).encode())
    return digest.hexdigest()[:24]


# -- encoding ---------------------------------------------------------------------------------------------------
class _Encoder:
    """Prompt ids per (prompt, image sizes) built from one processor run per distinct size."""

    def __init__(self, collator: VisionLanguageCollator) -> None:
        self.collator, self.processor, self.tok = collator, collator.processor, collator.tokenizer
        self.placeholder = self._placeholder_id()
        self.expansions: dict[tuple[int, int], list[int] | None] = {}
        self.extra_keys: list[str] | None = None
        self.fast = self.placeholder is not None

    def _placeholder_id(self) -> int | None:
        token = getattr(self.processor, "image_token", None)
        if isinstance(token, str):
            ids = self.tok(token, add_special_tokens=False)["input_ids"]
            return ids[0] if len(ids) == 1 else None
        value = getattr(self.processor, "image_token_id", None)
        return value if isinstance(value, int) else None

    def processor_ids(self, text: str, sizes: list[tuple[int, int]]) -> tuple[list[int], dict[str, list[int]]]:
        """Prompt ids and per-token extras from the processor itself (blank images of the right sizes)."""
        from PIL import Image

        images = [Image.new("RGB", size) for size in sizes]
        encoded = self.processor(images=images or None, padding=True, padding_side="right", return_tensors="pt",
                                 **_text_inputs(self.tok, [text]))
        ids, extras = self.collator._unpad(encoded)
        return ids[0], {key: rows[0] for key, rows in extras.items()}

    def _expansion(self, size: tuple[int, int]) -> list[int] | None:
        """The ids one placeholder becomes for an image of `size` (None: the processor does not splice)."""
        if size not in self.expansions:
            text = render_prompt(self.collator._template_owner, "q", image=True)
            plain = self.tok(**_text_inputs(self.tok, [text]))["input_ids"][0]
            full, extras = self.processor_ids(text, [size])
            if self.extra_keys is None:
                self.extra_keys = sorted(extras)
            where = [n for n, token in enumerate(plain) if token == self.placeholder]
            tail = len(plain) - where[0] - 1 if len(where) == 1 else -1
            ok = tail >= 0 and full[: where[0]] == plain[: where[0]] and (tail == 0 or full[-tail:] == plain[-tail:])
            self.expansions[size] = full[where[0]: len(full) - tail] if ok else None
        return self.expansions[size]

    def splice(self, plain: list[int], sizes: list[tuple[int, int]]) -> tuple[list[int], dict[str, list[int]]] | None:
        """Text-only ids with each placeholder replaced by its image's expansion; None when that cannot be done."""
        expansions = [self._expansion(size) for size in sizes]
        if any(e is None for e in expansions) or plain.count(self.placeholder) != len(sizes):  # type: ignore[arg-type]
            return None
        ids: list[int] = []
        types: list[int] = []
        pending = iter(expansions)
        for token in plain:
            if token == self.placeholder:
                block = next(pending) or []
                ids += block
                types += [1] * len(block)
            else:
                ids.append(token)
                types.append(0)
        extras = {key: types if key == "mm_token_type_ids" else [0] * len(ids) for key in self.extra_keys or []}
        return ids, extras

    def encode(self, rows: list[dict[str, Any]], sizes: list[list[tuple[int, int]]],
               names: list[str]) -> list[tuple[list[int], dict[str, list[int]]]]:
        collator = self.collator
        rendered: dict[Any, str] = {}  # prompts repeat (one phrasing per task and label): render each once
        texts = []
        for row, name in zip(rows, names, strict=True):
            prompt = row.get("prompt")
            if not isinstance(prompt, str) or prompt not in rendered:
                rendered[prompt] = collator._prompt_text(row, name)
            texts.append(rendered[prompt])
        if self.processor is None:
            plain = self.tok(**_text_inputs(self.tok, texts))["input_ids"] if texts else []
            return [(list(ids), {}) for ids in plain]
        for row_sizes, name in zip(sizes, names, strict=True):
            if not row_sizes:
                raise UserError("record has no 'image'", name)
        plain = self.tok(**_text_inputs(self.tok, texts))["input_ids"] if self.fast and texts else []
        out: list[tuple[list[int], dict[str, list[int]]]] = []
        checked: set[tuple[tuple[int, int], ...]] = set()
        for n, (text, row_sizes) in enumerate(zip(texts, sizes, strict=True)):
            spliced = self.splice(list(plain[n]), row_sizes) if self.fast else None
            key = tuple(row_sizes)
            if spliced is not None and key not in checked:  # the first row of each size: same as the processor?
                checked.add(key)
                if spliced != self.processor_ids(text, row_sizes):
                    log.info("%s: token splicing differs from the processor; tokenizing row by row",
                             type(self.processor).__name__)
                    self.fast, spliced = False, None
            out.append(spliced if spliced is not None else self.processor_ids(text, row_sizes))
        return out


def tokenize_rows(processor: Any, rows: list[dict[str, Any]], *, max_length: int | None = None,
                  cap: int | None = None, collator: VisionLanguageCollator | None = None) -> list[dict[str, Any]]:
    """Token rows for `rows`: {"prompt_ids", "answer_ids", "extra": {key: ids}} as the collator would build them.

    UserError (naming the row) for a prompt over max_length, as the collator raises; answers over it are cut.
    """
    collator = collator or VisionLanguageCollator(processor, max_length=max_length)
    names = [str(row.get("id", f"example {i}")) for i, row in enumerate(rows)]
    sizes = [[capped_size(_image_size(img, name), cap) for img in _row_images(row)] if processor is not None else []
             for row, name in zip(rows, names, strict=True)]
    return _tokenize(collator, rows, sizes, names)


def _tokenize(collator: VisionLanguageCollator, rows: list[dict[str, Any]], sizes: list[list[tuple[int, int]]],
              names: list[str]) -> list[dict[str, Any]]:
    prompts = _Encoder(collator).encode(rows, sizes, names)
    answers = [row.get("answer") for row in rows]
    texts = [collator._gap + str(a) for a in answers if a is not None]
    answer_ids = iter(collator.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else [])
    out = []
    for row, name, (prompt, extras) in zip(rows, names, prompts, strict=True):
        ids = [] if row.get("answer") is None else collator.answer_prefix + list(next(answer_ids)) + collator.end_ids
        out.append({"prompt_ids": prompt, "answer_ids": collator._fit_answer(name, prompt, ids, row.get("answer")),
                    "extra": extras})
    return out


def cached_tokenize(processor: Any, rows: list[dict[str, Any]], dataset: str | Path | None, *,
                    convention: str = "", max_length: int | None = None, cap: int | None = None,
                    echo: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """`tokenize_rows`, read from / written to DATASET/.cache/tokens/<key>.json (memory only without a dataset)."""
    names = [str(row.get("id", f"example {i}")) for i, row in enumerate(rows)]
    sizes = [[capped_size(_image_size(img, name), cap) for img in _row_images(row)]
             for row, name in zip(rows, names, strict=True)]
    collator = VisionLanguageCollator(processor, max_length=max_length)
    path = None
    if dataset is not None:
        key = cache_key(processor, rows, sizes, convention=convention, max_length=max_length, cap=cap)
        path = cache_path(dataset, "tokens", f"{key}.json")
        cached = _read(path, len(rows))
        if cached is not None:
            log.info("tokens of %d rows read from %s", len(rows), path)
            return cached
    out = _tokenize(collator, rows, sizes, names)
    if path is not None:
        _write(path, out)
        log.info("tokens of %d rows cached in %s", len(rows), path)
        if echo:
            echo(f"tokenized {len(rows)} rows (cached in {path.parent})")
    return out


def _read(path: Path, count: int) -> list[dict[str, Any]] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    rows = data.get("rows") if isinstance(data, dict) else None
    return rows if isinstance(rows, list) and len(rows) == count else None


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write atomically; a read-only dataset folder only costs the cache (a warning, never an error)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"version": CACHE_VERSION, "rows": rows}, separators=(",", ":")),
                       encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot cache tokens in %s (%s); they are kept in memory", path.parent, exc)


# -- collation --------------------------------------------------------------------------------------------------
def image_kwargs(processor: Any) -> dict[str, Any]:
    """The image-processor kwargs the processor's own __call__ would pass (its defaults merged)."""
    try:
        merged = processor._merge_kwargs(tokenizer_init_kwargs=processor.tokenizer.init_kwargs, return_tensors="pt")
        return {**merged["images_kwargs"], "return_tensors": "pt"}
    except (AttributeError, KeyError, TypeError):
        return {"return_tensors": "pt"}


class TokenizedCollator:
    """Pad pre-tokenized rows and process their images: the same tensors as `VisionLanguageCollator`.

    `pad_to_multiple_of` (8 on CUDA) rounds the padded width up; the extra positions are padding.
    """

    def __init__(self, processor: Any, *, image_root: str | Path | None = None,
                 pad_to_multiple_of: int | None = None) -> None:
        self.processor = processor
        tok = getattr(processor, "tokenizer", processor)
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self.image_root = Path(image_root) if image_root else None
        self.multiple = pad_to_multiple_of
        self.has_images = hasattr(processor, "image_processor")
        self.kwargs = image_kwargs(processor) if self.has_images else {}
        names = getattr(processor, "model_input_names", None)
        self.image_keys = set(names) if names else None
        self.image_token_ids = {value for name in ("image_token_id", "fake_image_token_id", "global_image_token_id",
                                                   "video_token_id")
                                if isinstance(value := getattr(processor, name, None), int)}

    def images(self, examples: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
        nested = []
        for ex, name in zip(examples, names, strict=True):
            found = _row_images(ex)
            if not found:
                raise UserError("record has no 'image'", name)
            nested.append([load_image(img, name, self.image_root) for img in found])
        out = self.processor.image_processor(nested, **self.kwargs)
        return {k: v for k, v in out.items() if self.image_keys is None or k in self.image_keys}

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        if not examples:
            raise ValueError("cannot collate an empty batch")
        names = [str(ex.get("id", f"example {i}")) for i, ex in enumerate(examples)]
        out = self.images(examples, names) if self.has_images else {}
        width = max(len(ex["prompt_ids"]) + len(ex["answer_ids"]) for ex in examples)
        if self.multiple:
            width = -(-width // self.multiple) * self.multiple
        batch = len(examples)
        input_ids = torch.full((batch, width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((batch, width), dtype=torch.long)
        labels = torch.full((batch, width), IGNORE, dtype=torch.long)
        keys = sorted(examples[0].get("extra") or {})
        extra = {key: torch.zeros((batch, width), dtype=torch.long) for key in keys}
        for i, ex in enumerate(examples):
            prompt, answer = ex["prompt_ids"], ex["answer_ids"]
            n, m = len(prompt), len(answer)
            input_ids[i, : n + m] = torch.tensor(prompt + answer, dtype=torch.long)
            attention[i, : n + m] = 1
            if m:
                labels[i, n: n + m] = torch.tensor(answer, dtype=torch.long)
            for key in keys:
                extra[key][i, :n] = torch.tensor(ex["extra"][key], dtype=torch.long)
                extra[key][i, n: n + m] = 1 if key == "token_type_ids" else 0
        for token in self.image_token_ids:
            labels[labels == token] = IGNORE
        return {**out, **extra, "input_ids": input_ids, "attention_mask": attention, "labels": labels}
