"""Offline tiny VLMs: random-initialised models of real architectures, saved as ordinary model folders.

Nothing can be downloaded here, so the default models are built locally: a real architecture class from a small
config, a byte-level BPE tokenizer trained on a generated corpus, and the architecture's own image processor at
64 px. The folder is then loaded with the same `from_pretrained` calls as a Hub model, so every code path is real.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import random
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import chat_templates
from .atomic import atomic_output_dir
from .errors import UserError
from .home import home_dir

TINY_MODELS: tuple[str, ...] = ("tiny-smolvlm", "tiny-llava", "tiny-qwen2-vl", "tiny-qwen2.5-vl", "tiny-qwen3-vl",
                                 "tiny-paligemma", "tiny-florence2", "tiny-llava-onevision")
MARKER = "studio_model.json"  # written last: its presence means the folder is complete
BUILD_VERSION = 5  # bump to rebuild cached tiny models after a recipe change
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


def _build_smolvlm() -> Any:
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
    )

    tok = build_tokenizer(SMOLVLM_SPECIAL, bos="<|im_start|>", eos="<end_of_utterance>", pad="<|im_end|>",
                          chat_template=SMOLVLM_TEMPLATE)
    # 16 px patches without pixel shuffle and a 64-wide text model: the same 16 image tokens as 8 px patches
    # merged 2x2, with fewer parameters for the offline demo to train (docs/DEMO.md has what it reaches).
    vision = {**VISION, "image_size": IMAGE_SIZE, "patch_size": SMOLVLM_PATCH}
    scale = 1
    seq_len = (IMAGE_SIZE // SMOLVLM_PATCH) ** 2 // scale**2
    config = Idefics3Config(  # type: ignore[call-arg]  # pad_token_id: taken from **kwargs, not in the stub signature
        vision_config=vision, scale_factor=scale, image_token_id=tok.convert_tokens_to_ids("<image>"),
        text_config={"model_type": "llama", **_text_config(tok, **SMOLVLM_TEXT, rope_parameters={
            "rope_type": "default", "rope_theta": 100.0})},
        pad_token_id=tok.pad_token_id,
    )
    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=False, size={"longest_edge": IMAGE_SIZE}, max_image_size={"longest_edge": IMAGE_SIZE})
    processor = Idefics3Processor(image_processor, tok, image_seq_len=seq_len, chat_template=SMOLVLM_TEMPLATE)
    return Idefics3ForConditionalGeneration(config), processor


def _build_llava() -> Any:
    from transformers import CLIPImageProcessorPil, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tok = build_tokenizer(LLAVA_SPECIAL, bos="<s>", eos="</s>", pad="<pad>", unk="<unk>", add_bos=True,
                          chat_template=LLAVA_TEMPLATE)
    patch = 8
    config = LlavaConfig(
        vision_config={"model_type": "clip_vision_model", **VISION, "image_size": IMAGE_SIZE, "patch_size": patch,
                       "projection_dim": VISION["hidden_size"]},
        text_config={"model_type": "llama", **_text_config(tok, rope_parameters={"rope_type": "default",
                                                                                   "rope_theta": 100.0})},
        image_token_index=tok.convert_tokens_to_ids("<image>"), image_seq_length=(IMAGE_SIZE // patch) ** 2,
        vision_feature_layer=-1, vision_feature_select_strategy="default",
    )
    # Squash to a square without cropping, so a box relative to the frame stays relative to the model's input.
    image_processor = CLIPImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, do_center_crop=False,
                                            crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = LlavaProcessor(image_processor, tok, patch_size=patch, vision_feature_select_strategy="default",
                               num_additional_image_tokens=1, chat_template=LLAVA_TEMPLATE)
    return LlavaForConditionalGeneration(config), processor


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


def _build_qwen2_vl() -> Any:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessorPil, Qwen2VLProcessor

    tok = build_tokenizer(QWEN_SPECIAL, bos=None, eos="<|im_end|>", pad="<|endoftext|>",
                          chat_template=QWEN2_VL_TEMPLATE)
    patch, merge = 8, 2
    head_dim = TEXT["hidden_size"] // TEXT["num_attention_heads"]
    ids = {name: tok.convert_tokens_to_ids(token) for name, token in [
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>")]}
    # rope_theta ~10: 24-dim heads split into 3 mrope sections of 4 dims each; with the default 1e6 those barely
    # rotate over the ~100 positions of a tiny sequence, so the model could not tell positions apart.
    rope = {"rope_type": "default", "rope_theta": 10.0, "mrope_section": [head_dim // 6] * 3}
    config = Qwen2VLConfig(
        vision_config={"depth": 2, "embed_dim": VISION["hidden_size"], "hidden_size": TEXT["hidden_size"],
                       "mlp_ratio": 2, "num_heads": VISION["num_attention_heads"], "patch_size": patch,
                       "spatial_merge_size": merge, "temporal_patch_size": 2},
        text_config=_text_config(tok, rope_parameters=rope), **ids,
    )
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=patch, merge_size=merge, temporal_patch_size=2,
        size={"shortest_edge": (IMAGE_SIZE // 2) ** 2, "longest_edge": IMAGE_SIZE**2})
    processor = image_only_processor_class(Qwen2VLProcessor)(image_processor, tok, chat_template=QWEN2_VL_TEMPLATE)
    return Qwen2VLForConditionalGeneration(config), processor


def _family_builder(key: str) -> Callable[[], Any]:
    def build() -> Any:
        from .tiny_families import BUILDERS as FAMILY_BUILDERS  # imports this module: not at the top

        return FAMILY_BUILDERS[key]()

    return build


BUILDERS: dict[str, Callable[[], Any]] = {
    "tiny-smolvlm": _build_smolvlm, "tiny-llava": _build_llava, "tiny-qwen2-vl": _build_qwen2_vl,
    **{key: _family_builder(key) for key in TINY_MODELS[3:]}}


def small_model_init(model: Any) -> None:
    """Re-initialise for a narrow model: LeCun-normal weights, and 2-D sin-cos tables for square vision grids.

    Transformers initialises every matrix with std 0.02, a value tuned for hidden sizes in the thousands. At width
    64 it leaves the image path so weak that the tiny model first learns to answer from the prompt alone and looks
    at the image only hundreds of steps later. std = 1/sqrt(fan_in) keeps activations at unit scale, and a fixed
    2-D position code (as MAE and many ViTs start from) tells each patch token where it sits from step 0.
    docs/DEMO.md has the measurements.
    """
    import torch

    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.normal_(0.0, param[0].numel() ** -0.5)
        for name, module in model.named_modules():
            if name.endswith("embeddings.position_embedding") and isinstance(module, torch.nn.Embedding):
                grid = math.isqrt(module.num_embeddings)
                if grid * grid == module.num_embeddings and module.embedding_dim % 4 == 0:
                    module.weight.copy_(sincos_2d(grid, module.embedding_dim))


def sincos_2d(grid: int, dim: int) -> Any:
    """(grid*grid, dim) position code, row-major: sin/cos of x then of y, dim/4 frequencies each."""
    import torch

    quarter = dim // 4
    omega = 1.0 / (100.0 ** (torch.arange(quarter, dtype=torch.float32) / quarter))
    ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    parts = []
    for coord in (xs.flatten(), ys.flatten()):
        angles = coord[:, None].float() * omega[None]
        parts += [torch.sin(angles), torch.cos(angles)]
    return torch.cat(parts, dim=1)


def build_tiny_model(key: str, out_dir: str | Path) -> Path:
    """Build the tiny model `key` (random weights, fixed seed) into the new folder `out_dir`."""
    import torch

    if key not in BUILDERS:
        raise UserError(f"unknown tiny model {key!r}; choose one of {', '.join(TINY_MODELS)}")
    torch.manual_seed(SEED)
    with atomic_output_dir(out_dir, overwrite=True) as tmp:
        model, processor = BUILDERS[key]()
        small_model_init(model)
        tok = processor.tokenizer
        model.generation_config.eos_token_id = tok.eos_token_id
        model.generation_config.pad_token_id = tok.pad_token_id
        model.generation_config.bos_token_id = tok.bos_token_id
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        params = sum(p.numel() for p in model.parameters())
        marker = {"key": key, "build_version": BUILD_VERSION, "seed": SEED, "params": params,
                  "processor_class": type(processor).__name__}
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    return Path(out_dir).resolve()


def tiny_marker(path: str | Path) -> dict[str, Any] | None:
    """The studio marker of a tiny model folder, or None for any other folder."""
    marker = Path(path) / MARKER
    if not marker.is_file():
        return None
    return json.loads(marker.read_text(encoding="utf-8"))


def ensure_tiny_model(key: str, force: bool = False) -> Path:
    """Return `STUDIO_HOME/models/<key>`, building it first when it is missing, stale or `force` is set."""
    if key not in BUILDERS:
        raise UserError(f"unknown tiny model {key!r}; choose one of {', '.join(TINY_MODELS)}")
    models = home_dir("models")
    out = models / key
    with _build_lock(models / f".{key}.lock"):  # the app and a training process may ask at the same time
        marker = tiny_marker(out)
        if force or marker is None or marker.get("build_version") != BUILD_VERSION:
            if out.exists() and marker is None:
                shutil.rmtree(out)  # a folder without a marker is a leftover from an interrupted build
            build_tiny_model(key, out)
    return out


@contextmanager
def _build_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory file lock (no-op where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
