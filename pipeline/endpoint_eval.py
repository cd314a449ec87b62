"""Score any OpenAI-compatible endpoint (our served export, vLLM, TGI, a hosted API) like offline evaluation.

    python -m pipeline evaluate --endpoint http://127.0.0.1:8000/v1 --data DATASET --split test --limit 200
    python -m pipeline evaluate --endpoint https://api.example.com/v1 --api-model NAME --api-key-env MY_KEY \\
        --convention json --data DATASET

    from pipeline.endpoint_eval import evaluate_endpoint
    result = evaluate_endpoint("http://127.0.0.1:8000/v1", "DATASET", split="test", limit=50)

The examples, the answer parsing, the metrics and the files (metrics.json, predictions.jsonl, comparison.md, ...)
are those of `evaluate` (evaluate.py, eval_score.py, eval_report.py); only where the answers come from differs: one
chat completion per example (the frame as a base64 data URL in an `image_url` part, then the prompt; greedy:
temperature 0), a bounded number in flight, retried with backoff on connection errors, timeouts, 429 and 5xx.
When the served model is an export folder on this machine (what `python -m pipeline serve` serves), its studio.json
gives the convention, tasks, labels, image cap and token budget, exactly as `evaluate --model EXPORT` uses them.
The API key is read from the named environment variable and sent to the endpoint only, never written anywhere.
"""

from __future__ import annotations

import base64
import io
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .errors import UserError
from .rundir import studio_path
from .tasks import Example

DEFAULT_CONCURRENCY = 4
DEFAULT_RETRIES = 4
DEFAULT_MAX_TOKENS = 256
REQUEST_TIMEOUT_S = 300.0
NO_KEY = "EMPTY"  # local servers ignore the key, the client needs a non-empty one


def image_data_url(image: Any, cap: int | None = None, name: str = "image") -> str:
    """A `data:` URL of the frame as the model saw it in training: the file's own bytes when it is sent as it is,
    a lossless PNG when it had to be shrunk to the training cap (or came as a PIL image)."""
    from .collate import load_image

    path = Path(image) if isinstance(image, str | Path) else None
    picture = load_image(image, name)
    if path is not None and not (cap and max(picture.size) > cap):
        kind = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png", ".webp": "webp"}.get(path.suffix.lower())
        if kind:
            return f"data:image/{kind};base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    if cap and max(picture.size) > cap:
        picture.thumbnail((cap, cap))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def chat_messages(prompt: str, url: str) -> list[dict[str, Any]]:
    """One user turn: the image part first, then the prompt (the order training used)."""
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": prompt}]}]


def redact_url(url: str) -> str:
    """The URL without user:password@ (what is recorded in metrics.json)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def read_api_key(env_var: str | None) -> str:
    """The key held in `env_var` (UserError when it is unset or empty); a placeholder when no variable is named."""
    if not env_var:
        return NO_KEY
    key = os.environ.get(env_var, "").strip()
    if not key:
        raise UserError(f"no API key: the environment variable {env_var} is unset or empty")
    return key


class Endpoint:
    """An OpenAI-compatible endpoint: retries with exponential backoff, one-line errors without the key."""

    def __init__(self, url: str, api_key: str = NO_KEY, *, retries: int = DEFAULT_RETRIES,
                 timeout: float = REQUEST_TIMEOUT_S, backoff: float = 0.5) -> None:
        from openai import OpenAI

        if not urlsplit(url).scheme.startswith("http"):
            raise UserError(f"--endpoint must be an http(s) URL like http://127.0.0.1:8000/v1, got {url!r}")
        self.url, self.retries, self.backoff = url.rstrip("/"), max(0, retries), backoff
        self._key = api_key
        self.client = OpenAI(base_url=self.url, api_key=api_key, max_retries=0, timeout=timeout)

    def _clean(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key and self._key != NO_KEY else text

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        import openai

        retryable = (openai.APIConnectionError, openai.APITimeoutError, openai.RateLimitError,
                     openai.InternalServerError)
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except retryable as exc:
                if attempt == self.retries:
                    raise self._error(what, exc) from None
                time.sleep(self.backoff * 2**attempt)
            except openai.APIError as exc:
                raise self._error(what, exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _error(self, what: str, exc: Exception) -> UserError:
        import openai

        where = redact_url(self.url)
        if isinstance(exc, openai.APIConnectionError | openai.APITimeoutError):
            reason = (f"cannot reach {where} after {self.retries + 1} attempt(s) ({type(exc).__name__}); "
                      "is the server running?")
        elif isinstance(exc, openai.APIStatusError):
            reason = f"{where} answered {exc.status_code}: {str(exc.message or exc).splitlines()[0][:300]}"
        else:
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        return UserError(self._clean(f"endpoint {what} failed: {reason}"))

    def models(self) -> list[str]:
        """The model ids the endpoint lists (`GET /models`)."""
        page = self._call("GET /models", lambda: self.client.models.list())
        return [m.id for m in page.data]

    def ask(self, model: str, image_url: str, prompt: str, max_tokens: int) -> str:
        """The greedy answer to one image + prompt, stripped of surrounding whitespace."""
        reply = self._call("POST /chat/completions", lambda: self.client.chat.completions.create(
            model=model, messages=chat_messages(prompt, image_url), temperature=0, max_tokens=max_tokens))  # type: ignore[arg-type]
        return str(reply.choices[0].message.content or "").strip()


def served_settings(model: str) -> dict[str, Any]:
    """studio.json of the served model when it names an export folder on this machine, else {}."""
    from .evaluate import _read_json

    folder = Path(model).expanduser()
    return _read_json(studio_path(folder)) if folder.is_dir() else {}


def endpoint_target(model: str, url: str, convention: str | None = None) -> Any:
    """The evaluation Target of a served model: settings from its export's studio.json or the registry."""
    from .evaluate import Target
    from .models import find_spec

    info = served_settings(model)
    spec = None if info else find_spec(model)
    convention = convention or info.get("convention") or (spec.convention if spec else None)
    if convention is None:
        raise UserError(f"cannot tell the coordinate convention of the served model {model!r}: pass --convention "
                        "(json, qwen2_vl, ...)")
    labels = info.get("label_map")
    name = Path(model).name if info else model
    return Target(model=model, name=f"{name} @ {redact_url(url)}", convention=convention, tasks=info.get("tasks"),
                  seed=info.get("seed"), labels=sorted(labels) if isinstance(labels, dict | list) and labels else None,
                  image_cap=info.get("max_image_size"))


def _token_budget(model: str, examples: list[Example], given: int | None) -> int:
    """As offline: the longest truth answer in the served model's tokens plus a margin, when its tokenizer is here."""
    if given:
        return given
    if served_settings(model):
        from transformers import AutoTokenizer

        from .generation import token_budget

        return token_budget(AutoTokenizer.from_pretrained(model), [ex.answer for ex in examples])
    return DEFAULT_MAX_TOKENS


def endpoint_answers(endpoint: Endpoint, model: str, examples: list[Example], root: Path, *, image_cap: int | None,
                     max_tokens: int, concurrency: int = DEFAULT_CONCURRENCY, progress: bool = True) -> list[str]:
    """Answers in example order, at most `concurrency` requests in flight."""
    import sys

    from tqdm import tqdm

    if concurrency < 1:
        raise UserError(f"--concurrency must be at least 1 (got {concurrency})")
    lock = threading.Lock()
    with tqdm(total=len(examples), desc="endpoint", unit="ex", file=sys.stderr, disable=not progress,
              leave=False) as bar:
        def one(example: Example) -> str:
            url = image_data_url(root / example.image, image_cap, example.id)
            answer = endpoint.ask(model, url, example.prompt, max_tokens)
            with lock:
                bar.update(1)
            return answer

        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="endpoint") as pool:
            return list(pool.map(one, examples))


def evaluate_endpoint(url: str, dataset: str | Path, *, split: str = "test", limit: int | None = None,
                      api_model: str | None = None, api_key_env: str | None = None, out: str | Path | None = None,
                      convention: str | None = None, concurrency: int = DEFAULT_CONCURRENCY,
                      retries: int = DEFAULT_RETRIES, max_new_tokens: int | None = None, with_baseline: bool = True,
                      overwrite: bool | None = None, progress: bool = True) -> Any:
    """Evaluate the model behind an OpenAI-compatible endpoint on a dataset split; returns evaluate's EvalResult."""
    from .evaluate import evaluate_target

    endpoint = Endpoint(url, read_api_key(api_key_env), retries=retries)
    listed = endpoint.models()  # fails early, in one line, when nothing answers
    model = api_model or (listed[0] if listed else None)
    if not model:
        raise UserError(f"{redact_url(url)} lists no model: pass --api-model NAME")
    target = endpoint_target(model, url, convention)
    if api_model is None and len(listed) > 1:
        target.notes.append(f"the endpoint lists {len(listed)} models; scored the first, {model}")
    used: dict[str, Any] = {}

    def answerer(target: Any, examples: list[Example], root: Path, **_: Any) -> tuple[dict[str, list[str]], int]:
        budget = _token_budget(model, examples, max_new_tokens)
        started = time.monotonic()
        answers = endpoint_answers(endpoint, model, examples, root, image_cap=target.image_cap, max_tokens=budget,
                                   concurrency=concurrency, progress=progress)
        used["seconds"] = round(time.monotonic() - started, 2)
        return {"model": answers}, budget

    return evaluate_target(target, dataset, split=split, limit=limit, batch_size=concurrency, out=out,
                           with_base=False, with_baseline=with_baseline, max_new_tokens=max_new_tokens,
                           overwrite=overwrite, tensorboard=False, answerer=answerer,
                           extra_meta=lambda: {"endpoint": redact_url(url), "api_model": model,
                                               "concurrency": concurrency, "answer_seconds": used.get("seconds")})
