"""Try tab: ask a trained run about an image; its answer and its base model's, parsed and drawn side by side."""

from __future__ import annotations

from typing import Any

import gradio as gr

from pipeline import service

from . import status
from .common import Choice, choices_update, guarded

INTRO = ("Ask a trained run about an image: upload one, or pick a held-out frame of the run's dataset (then the "
         "truth is drawn in green). The fine-tuned model and its base model answer the same prompt; each answer is "
         "parsed with the run's coordinate format and drawn in magenta.")


@guarded
def try_model(run_id: str, image: str | None, prompt: str, truth: list[dict[str, Any]] | None = None,
              ) -> tuple[Any, ...]:
    """The answer, its boxes and whether it parsed; the fine-tuned and the base model's answers drawn."""
    result, fine, base = service.try_model(run_id, image, prompt, truth)
    return result, fine, base


def try_summary(result: dict[str, Any], *_: Any) -> str:
    parsed = f"{len(result['boxes'])} box(es)" if result["parse_ok"] else "the answer did not parse as boxes"
    base = result.get("base")
    text = f"Fine-tuned ({result.get('checkpoint')}): {parsed}."
    if base:
        text += f" Base model: {len(base['boxes'])} box(es)." if base["parse_ok"] else " Base model: did not parse."
    return text


@guarded
def frames(run_id: str | None) -> tuple[Any, ...]:
    """The held-out frames of the run's dataset to pick from, and a default prompt."""
    if not run_id:
        return gr.update(choices=[], value=None), [], gr.skip()
    found = service.held_out_frames(run_id)
    labels = sorted({o["label"] for f in found for o in f["objects"]})
    prompt = f"Find every {labels[0]} in the image." if labels else gr.skip()
    return gr.update(choices=[f"{f['split']} · {f['id']}" for f in found], value=None), found, prompt


@guarded
def pick(choice: str | None, found: list[dict[str, Any]]) -> tuple[Any, ...]:
    """Put the picked held-out frame in the image box; its objects become the truth."""
    frame = next((f for f in found or [] if f"{f['split']} · {f['id']}" == choice), None)
    if frame is None:
        return gr.skip(), None
    from PIL import Image

    with Image.open(frame["image"]) as image:
        return image.convert("RGB"), frame["objects"]


@guarded
def refresh_runs(current: str | None) -> Any:
    return choices_update(service.run_choices(), current)


def build() -> dict[str, Any]:
    """The Try tab."""
    with gr.Tab("Try", id="try") as tab:
        gr.Markdown(INTRO)
        with gr.Row():
            run = Choice(service.run_choices(), label="Run", elem_id="try-run", scale=2)
            frame = Choice([], label="Held-out frame (test, else val split)", elem_id="try-frame", scale=2)
        with gr.Row():
            image = gr.Image(type="filepath", label="Image", elem_id="try-image", height=260, scale=1)
            with gr.Column(scale=1):
                prompt = gr.Textbox("Find every circle in the image.", label="Prompt", elem_id="try-prompt", lines=2)
                try_btn = gr.Button("Try", variant="primary", elem_id="try")
                try_status = status.line("try-status")
        with gr.Row():
            fine = gr.Image(label="Fine-tuned answer", elem_id="try-fine", interactive=False, height=320)
            base = gr.Image(label="Base model answer", elem_id="try-base", interactive=False, height=320)
        with gr.Accordion("Answer and parsed boxes (JSON)", open=False):
            result = gr.JSON(label="Answer")
        found = gr.State([])
        truth = gr.State(None)

    shown = {"fn": frames, "inputs": run, "outputs": [frame, found, prompt], "api_visibility": "private"}
    tab.select(refresh_runs, run, run, api_visibility="private").then(**shown)
    run.input(**shown)
    frame.input(pick, [frame, found], [image, truth], api_visibility="private")
    image.upload(lambda: None, None, truth, api_visibility="private", queue=False)
    status.action(try_btn.click, try_model, [run, image, prompt, truth], [result, fine, base], try_status,
                  api_name="try_model", what="Try", summary=try_summary)
    return {"run": run}
