"""Status lines: every action shows its outcome beside its button, and keeps showing it.

An action is wired twice by `action()`:

- the public API endpoint (`api_name`) sits on a hidden button and raises `gr.Error` on bad input, as an API client
  expects;
- the button the user clicks runs the same handler privately: its outputs plus a status line holding a success
  summary, or the error in the user's words (a toast is added, never the only place). A failed action leaves the
  other outputs as they were, so no component is ever turned into a bare "Error" badge.
"""

from __future__ import annotations

import functools
import html
import inspect
from collections.abc import Callable
from typing import Any

import gradio as gr

Summary = Callable[..., str]
_HIDDEN: list[gr.Button] = []  # API-only buttons, rendered at the page's root by render_hidden()


def hidden_button() -> gr.Button:
    """A button no one sees, carrying a public API endpoint (rendered outside the tabs by `render_hidden`)."""
    button = gr.Button(visible=False, render=False, elem_classes=["api-only"])
    _HIDDEN.append(button)
    return button


def render_hidden() -> None:
    """Render the API-only buttons made so far (call once, after the tabs, inside the Blocks)."""
    while _HIDDEN:
        _HIDDEN.pop(0).render()


def ok(text: str) -> str:
    """A success status line (Markdown)."""
    return f'<div class="status-ok" data-status="ok">✓ {text}</div>'


def fail(what: str, message: str) -> str:
    """A failure status line: what failed and why (escaped: a message is plain text)."""
    return (f'<div class="status-error" data-status="error">✗ <b>{html.escape(what)} failed:</b> '
            f"{html.escape(message)}</div>")


def note(text: str) -> str:
    """A neutral status line (waiting, nothing to do)."""
    return f'<div class="status-note" data-status="note">{text}</div>'


def line(elem_id: str, value: str = "") -> gr.HTML:
    """The status line component of one action."""
    return gr.HTML(value, elem_id=elem_id, elem_classes=["status-line"], label="status", padding=False)


def _message(exc: BaseException) -> str:
    return str(getattr(exc, "message", None) or exc)


def with_status(fn: Callable[..., Any], what: str, summary: Summary, count: int) -> Callable[..., Any]:
    """`fn` (a guarded handler with `count` outputs) returning its outputs plus a status line; never raising."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def stream(*args: Any, **kwargs: Any) -> Any:
            out: tuple[Any, ...] = ()
            try:
                for out in fn(*args, **kwargs):
                    out = out if isinstance(out, tuple) else (out,)
                    yield (*out, gr.skip())
            except Exception as exc:  # noqa: BLE001 - shown in the status line
                gr.Warning(_message(exc))
                yield (*[gr.skip()] * count, fail(what, _message(exc)))
                return
            yield (*[gr.skip()] * count, ok(summary(*out)) if out else gr.skip())
        return stream

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            out = fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - shown in the status line
            gr.Warning(_message(exc))
            return (*[gr.skip()] * count, fail(what, _message(exc)))
        out = out if isinstance(out, tuple) else (out,)
        return (*out, ok(summary(*out)))
    return call


def action(trigger: Any, fn: Callable[..., Any], inputs: Any, outputs: list[Any], status: gr.HTML, *,
           api_name: str | None, what: str, summary: Summary, **kwargs: Any) -> Any:
    """Wire `trigger` (e.g. `button.click`) to `fn` with a status line; the public endpoint `api_name` (None: no
    public endpoint) raises as before. Returns the UI event (chain `.then` / `.success` on it)."""
    if api_name:
        hidden_button().click(fn, inputs, outputs, api_name=api_name, **kwargs)
    ui_kwargs = {k: v for k, v in kwargs.items() if k not in ("api_visibility", "api_description")}
    return trigger(with_status(fn, what, summary, len(outputs)), inputs, [*outputs, status],
                   api_visibility="private", **ui_kwargs)
