"""Export tab: adapter or merged export with its model card, download, and push to the Hugging Face Hub.

A token typed here is used for that one push and then cleared from the form; it is never kept in state, history or
logs. On a Space, the Hugging Face sign-in can provide the token instead, and only signed-in users may push.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from pipeline import service

from . import step_ui
from .common import choices_update, guarded, require_user

INTRO = ("Export a run as a LoRA adapter (small; loads on its base model) or a merged model, preview its model card, "
         "download the zip or push it to the Hub. CLI: `python -m pipeline export RUN --mode adapter --out DIR` and "
         "`python -m pipeline push DIR --repo USER/NAME --token-env STUDIO_HF_TOKEN`.")


def _outputs(result: dict[str, Any]) -> tuple[Any, ...]:
    return result, result["card"], result["zip"], choices_update(service.list_exports(), result["export"])


@guarded
def export(run_id: str, mode: str, checkpoint: str, progress: gr.Progress = gr.Progress(),  # noqa: B008
           ) -> tuple[Any, ...]:
    """Queue an export job and follow it; the summary, the model card and the zip to download."""
    job = service.submit_export(run_id, mode or "adapter", checkpoint or "best")
    return _outputs(step_ui.follow(job["job_id"], "export", progress))


@guarded
def reattach(progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008 - gradio's way
    """On page load: the newest export (followed to its end when still running) and its status."""
    result, line = step_ui.reattach("export", progress)
    return (*(_outputs(result) if result else (gr.skip(),) * 4), line)


@guarded
def push_to_hub(export_name: str, repo_id: str, private: bool, token: str,
                oauth_token: gr.OAuthToken | None = None, profile: gr.OAuthProfile | None = None) -> tuple[Any, ...]:
    """Push an export with the typed token (or the Space sign-in's); the token field is cleared afterwards."""
    require_user(profile, "push to the Hub")
    secret = (token or "").strip() or (oauth_token.token if oauth_token is not None else "")
    return service.push(export_name, repo_id, secret, bool(private)), ""


@guarded
def refresh(run_id: str | None, export_name: str | None) -> tuple[Any, ...]:
    """The runs and exports to choose from."""
    return choices_update(service.run_choices(), run_id), choices_update(service.list_exports(), export_name)


def build() -> dict[str, Any]:
    """The Export tab."""
    with gr.Tab("Export", id="export") as tab:
        gr.Markdown(INTRO)
        with gr.Row():
            run = gr.Dropdown(service.run_choices(), label="Run", elem_id="export-run", scale=3,
                              allow_custom_value=True)
            mode = gr.Radio(["adapter", "merged"], value="adapter", label="Export as")
            checkpoint = gr.Dropdown(["best", "last"], value="best", label="Checkpoint", allow_custom_value=True)
            export_btn = gr.Button("Export", variant="primary", elem_id="export")
        job_line = gr.Markdown(elem_id="export-job", label="export job")
        with gr.Accordion("Export (JSON)", open=False):
            result = gr.JSON(label="Export")
        download = gr.File(label="Download (zip)", interactive=False, elem_id="export-zip")
        with gr.Accordion("Model card (README.md)", open=True):
            card = gr.Markdown(elem_id="model-card", label="model card")
        gr.Markdown("### Push to the Hugging Face Hub")
        with gr.Row():
            exported = gr.Dropdown(service.list_exports(), label="Export folder", allow_custom_value=True)
            repo = gr.Textbox(label="Repository", placeholder="USER/NAME")
            private = gr.Checkbox(True, label="Private")
            token = gr.Textbox(label="Write token (used once, never stored)", type="password",
                               placeholder="hf_…" + (" (or sign in above)" if service.on_space() else ""))
            push_btn = gr.Button("Push", variant="primary")
        pushed = gr.JSON(label="Pushed", open=False)

    tab.select(refresh, [run, exported], [run, exported], api_visibility="private")
    export_out = [result, card, download, exported]
    export_btn.click(export, [run, mode, checkpoint], export_out, api_name="export", **step_ui.STEP_EVENT).then(
        lambda: step_ui.status_line("export"), None, job_line, api_visibility="private", **step_ui.CHEAP_EVENT)
    push_btn.click(push_to_hub, [exported, repo, private, token], [pushed, token], api_name="push_to_hub")
    return {"run": run, "reattach": {"fn": reattach, "inputs": None, "outputs": [*export_out, job_line],
                                     "api_visibility": "private", **step_ui.STEP_EVENT}}
