"""Building blocks of the offline tiny VLMs, shared by tiny.py (SmolVLM, LLaVA, Qwen2-VL) and tiny_families.py
(the other families): sizes, special tokens, chat templates, the locally trained BPE tokenizer, text configs."""

from __future__ import annotations

import functools
import inspect
import json
import random
from typing import Any

from . import chat_templates

SEED = 0
IMAGE_SIZE = 64
TEXT = {"hidden_size": 96, "intermediate_size": 192, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 4, "max_position_embeddings": 1024}
VISION = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}
SMOLVLM_PATCH = 16
SMOLVLM_TEXT = {"hidden_size": 64, "intermediate_size": 128}  # tiny-smolvlm only (see _build_smolvlm)
BPE_VOCAB = 512  # byte alphabet (256) + ~250 merges: common instruction words become single tokens
SMOLVLM_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
LLAVA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% for item in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for item in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% if message['role'] == 'assistant' %}{{ item['text'] + '</s>' }}{% else %}{{ item['text'] + ' ' }}{% endif %}"
    "{% endfor %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
QWEN2_VL_TEMPLATE = chat_templates.QWEN2_VL  # the real one: default system prompt, then ChatML turns
QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
SMOLVLM_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<end_of_utterance>", "<fake_token_around_image>",
                   "<image>", "<global-img>"] + [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
LLAVA_SPECIAL = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
LABELS = ["circle", "square", "triangle", "star", "car", "person", "dog", "cat", "ball", "box", "bird", "tree",
          "object", "red", "green", "blue", "yellow", "white", "black"] + [f"object_{i}" for i in range(10)]
WORDS = (
    "find every each all the a an in on of at to and or with as is are there how many what where which that this "
    "image frame video picture photo scene time second seconds first last start end track object objects shape "
    "shapes label labels box boxes bounding bbox bbox_2d json list answer reply give return output only coordinates "
    "point points polygon polygons mask masks outline segment segmentation region regions locate detect count "
    "describe mark show visible appear appears appeared moving moves none no yes one two three four five please "
    "x1 y1 x2 y2 top left right bottom center width height pixels normalized relative format using for from"
).split()
INSTRUCTIONS = [  # the phrasings of pipeline/tasks.py and the README examples
    "Find every {l} in the image and answer with boxes as JSON.",
    "Find every {l} in the image.",
    "Locate all instances of {l}.",
    "Detect {l}.",
    "Give the bounding box of each {l}.",
    "Where is the {l}? Answer with boxes.",
    "What is the object at [10, 20, 30, 40]?",
    "Name the object in the region [1, 2, 3, 4].",
    "Which label fits the object at [5, 6, 7, 8]?",
    "How many {l} objects are in the image?",
    "Count the {l} objects.",
    "How many times does {l} appear in this frame?",
    "Which objects are in the image?",
    "List the objects you can see.",
    "What objects appear in this frame?",
    "Outline the {l}.",
    "Give the polygon of the {l}.",
    "Segment the {l} as a polygon.",
    "In which seconds of the video is the {l} visible?",
]
def _corpus(rng: random.Random, lines: int = 1500) -> list[str]:
    """Generated text covering the prompts, labels, numbers and JSON answers the project produces."""
    out: list[str] = [" ".join(WORDS), " ".join(WORDS).capitalize()]
    # Chat-template role words, at line starts as the templates write them, so they become single tokens.
    out += ["User:", "Assistant:", "user", "assistant", "USER: ASSISTANT: " + " ".join(LABELS)] * 300
    for _ in range(lines):
        label = rng.choice(LABELS)
        n = rng.randint(0, 999)
        boxes = [[rng.randint(0, 999) for _ in range(4)] for _ in range(rng.randint(1, 3))]
        out.append(rng.choice(INSTRUCTIONS).format(l=label))
        out.append(json.dumps([{"bbox_2d": b, "label": rng.choice(LABELS)} for b in boxes]))
        out.append(json.dumps([{"label": label, "box": [v % 101 for v in b]} for b in boxes], separators=(",", ":")))
        out.append(json.dumps([{"label": label, "polygon": [rng.randint(0, 100) for _ in range(8)]}],
                              separators=(",", ":")))
        out.append(str([round(rng.random(), 2) for _ in range(4)]))
        out.append(f"There are {n % 10} {label} objects. Answer: {n}")
        out.append(" ".join(rng.sample(WORDS, 8)) + rng.choice([".", "?", ":", ","]))
    return out


def build_tokenizer(special: list[str], *, bos: str | None, eos: str, pad: str, unk: str | None = None,
                    add_bos: bool = False, chat_template: str | None = None,
                    extra_special: dict[str, str] | None = None) -> Any:
    """Train a byte-level BPE tokenizer: one token per digit, JSON punctuation split, `special` kept whole."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.Punctuation(behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=BPE_VOCAB + len(special), special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(random.Random(SEED)), trainer=trainer)
    if add_bos and bos:
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A $B",
                                                           special_tokens=[(bos, tok.token_to_id(bos))])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    named = {"extra_special_tokens": extra_special} if extra_special else {}  # e.g. image_token for Florence-2
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad,
                                      unk_token=unk, clean_up_tokenization_spaces=False, **named)
    if chat_template:
        wrapped.chat_template = chat_template
    return wrapped


def _text_config(tokenizer: Any, **extra: Any) -> dict[str, Any]:
    # Callers pass a small rope_theta: sequences are ~100 tokens, so every rotary frequency should turn usefully.
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    return {**TEXT, "vocab_size": len(tokenizer), "tie_word_embeddings": False, **ids, **extra}


@functools.cache
def image_only_processor_class(base: type[Any]) -> type[Any]:
    """`base` (a Qwen- or LLaVA-OneVision-style processor) without its video processor: those need torchvision.

    The constructor keeps the base's other parameters by name (num_image_tokens, ...): transformers saves and passes
    on exactly the parameters the constructor's code declares.
    """
    names = [name for name in inspect.signature(base.__init__).parameters
             if name not in ("self", "image_processor", "tokenizer", "video_processor", "kwargs")]
    defaults = {name: inspect.signature(base.__init__).parameters[name].default for name in names}
    own = "".join(f", {name}=_defaults[{name!r}]" for name in names)
    passed = "".join(f", {name}={name}" for name in names)
    source = (f"def __init__(self, image_processor=None, tokenizer=None{own}, **kwargs):\n"
              f"    _base.__init__(self, image_processor, tokenizer, None{passed}, **kwargs)\n")
    scope: dict[str, Any] = {"_base": base, "_defaults": defaults}
    exec(source, scope)  # noqa: S102 - a constructor with the base's parameter names, built from its signature
    return type(f"ImageOnly{base.__name__}", (base,), {"__init__": scope["__init__"], "__module__": __name__})


