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


class Running(str):
    """What a generator handler yields, instead of its outputs, to show progress in its status line (a background
    job's stage, counts and ETA); `fraction` (0..1, None: unknown) draws a bar under the text."""

    fraction: float | None = None

    def __new__(cls, text: str, fraction: float | None = None) -> Running:
        made = super().__new__(cls, text)
        made.fraction = fraction
        return made


def running(text: str, fraction: float | None = None) -> str:
    """A progress status line (Markdown): the text, and a bar when the fraction done is known. It carries no
    `data-status` (that attribute marks an outcome: ok, error or note), only `data-running`."""
    bar = (f'<progress value="{min(max(fraction, 0.0), 1.0):.3f}" max="1"></progress>'
           if fraction is not None else "")
    return f'<div class="status-note status-running" data-running="true">{html.escape(text)}{bar}</div>'


def line(elem_id: str, value: str = "") -> gr.HTML:
    """The status line component of one action."""
    return gr.HTML(value, elem_id=elem_id, elem_classes=["status-line"], label="status", padding=False)


def _message(exc: BaseException) -> str:
    return str(getattr(exc, "message", None) or exc)


def with_status(fn: Callable[..., Any], what: str, summary: Summary, count: int) -> Callable[..., Any]:
    """`fn` (a guarded handler with `count` outputs) returning its outputs plus a status line; never raising.

    A generator handler may yield `Running(text, fraction)` between its outputs: it updates the status line only
    (how a background job's progress shows beside its button)."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def stream(*args: Any, **kwargs: Any) -> Any:
            out: tuple[Any, ...] = ()
            try:
                for item in fn(*args, **kwargs):
                    if isinstance(item, Running):
                        yield (*[gr.skip()] * count, running(item, item.fraction))
                        continue
                    out = item if isinstance(item, tuple) else (item,)
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
           api_name: str | None, what: str, summary: Summary, ui_fn: Callable[..., Any] | None = None,
           **kwargs: Any) -> Any:
    """Wire `trigger` (e.g. `button.click`) to `fn` with a status line; the public endpoint `api_name` (None: no
    public endpoint) raises as before. `ui_fn` (default `fn`) is what the visible trigger runs, e.g. a generator
    streaming a background job's progress into the status line (`Running`) where the endpoint shows a progress bar.
    Other keyword arguments (concurrency settings...) go to both events. Returns the UI event (chain `.then` /
    `.success` on it)."""
    if api_name:
        hidden_button().click(fn, inputs, outputs, api_name=api_name, **kwargs)
    ui_kwargs = {k: v for k, v in kwargs.items() if k not in ("api_visibility", "api_description")}
    return trigger(with_status(ui_fn or fn, what, summary, len(outputs)), inputs, [*outputs, status],
                   api_visibility="private", **ui_kwargs)
