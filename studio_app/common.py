"""What every tab shares: error handling (UserError -> gr.Error), the Space sign-in gate, small UI helpers."""

from __future__ import annotations

import functools
import inspect
import logging
import os
import re
import types
from collections.abc import Callable
from typing import Any

import gradio as gr

from pipeline import service
from pipeline.errors import UserError

log = logging.getLogger("studio_app")
TRACK_TQDM = gr.Progress(track_tqdm=True)  # gradio injects it per event: tqdm bars become the UI progress bar


def _private_roots() -> list[str]:
    """Server folders whose paths a visitor must not see: gradio's upload folder and the studio's staging cache."""
    from gradio.utils import get_upload_folder

    from pipeline.home import studio_home

    roots = {get_upload_folder(), str(studio_home() / "cache")}
    return sorted({os.path.realpath(r) for r in roots} | roots, key=len, reverse=True)


CLI_WORDS = [(re.compile(r"pass (?:it|the session video) with --video(?: VIDEO)?"),
              "upload the video together with the export"),
             (re.compile(r"\(?run `python -m pipeline split`\)?"), "(split it in the Quality & Split tab)")]


def public_message(text: str) -> str:
    """The message with every path under a private server folder cut down to its file name, and command-line
    advice put in the app's words."""
    for pattern, words in CLI_WORDS:
        text = pattern.sub(words, text)
    for root in _private_roots():
        text = re.sub(re.escape(root.rstrip("/")) + r"/[^\s:'\"]*", lambda m: os.path.basename(m.group(0)), text)
    return text


def _error(exc: BaseException) -> gr.Error:
    if isinstance(exc, gr.Error):
        return exc
    if isinstance(exc, UserError):
        return gr.Error(public_message(str(exc)), print_exception=False)
    log.exception("unexpected error in a handler")
    return gr.Error(f"internal error ({type(exc).__name__}); the server log has the details", print_exception=False)


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a handler (function or generator) so bad input shows as one clear message, never a traceback."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def stream(*args: Any, **kwargs: Any) -> Any:
            try:
                yield from fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - every failure becomes one message
                raise _error(exc) from None
        return stream

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - every failure becomes one message
            raise _error(exc) from None
    return call


def username(profile: gr.OAuthProfile | None) -> str | None:
    """The signed-in Hugging Face user name (None when not signed in or not on a Space)."""
    return getattr(profile, "username", None) if profile is not None else None


def require_user(profile: gr.OAuthProfile | None, action: str) -> None:
    """On a Space, refuse `action` unless the caller signed in with Hugging Face."""
    service.require_user(username(profile), action)


def choices_update(choices: list[Any], value: Any = None) -> dict[str, Any]:
    """A dropdown update keeping `value` when it is still a choice, else the first one."""
    keys = [c[1] if isinstance(c, tuple) else c for c in choices]
    return gr.update(choices=choices, value=value if value in keys else (keys[0] if keys else None))


def records(rows: list[dict[str, Any]], columns: list[str]) -> list[list[Any]]:
    """Dict rows as table rows in `columns` order."""
    return [[row.get(c) for c in columns] for row in rows]



def _any_string(self: gr.Dropdown) -> dict[str, Any]:
    if self.multiselect:
        return {"type": "array", "items": {"type": "string"}}
    return {"type": "string"}


def Choice(*args: Any, **kwargs: Any) -> gr.Dropdown:  # noqa: N802 - used like a component class
    """A dropdown whose choices load at run time (datasets, runs, exports): over the API it takes any string, which
    `pipeline.service` validates, instead of an enum fixed when the page was built (often empty). (An instance
    attribute, not a subclass: gradio writes a .pyi file beside every Component subclass.)"""
    kwargs.setdefault("allow_custom_value", True)
    dropdown = gr.Dropdown(*args, **kwargs)
    dropdown.api_info = types.MethodType(_any_string, dropdown)  # type: ignore[method-assign]
    return dropdown
