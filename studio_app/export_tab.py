"""Export tab: adapter or merged export with its model card, download, and push to the Hugging Face Hub.

A token typed here is used for that one push and then cleared from the form; it is never kept in state, history or
logs. On a Space, the Hugging Face sign-in can provide the token instead, and only signed-in users may push.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gradio as gr

from pipeline import service

from . import status, step_ui
from .common import Choice, choices_update, guarded, require_user

INTRO = ("Export a run as a LoRA adapter (small; loads on its base model) or a merged model, preview its model card, "
         "download the zip or push it to the Hub. CLI: `python -m pipeline export RUN --mode adapter --out DIR` and "
         "`python -m pipeline push DIR --repo USER/NAME --token-env STUDIO_HF_TOKEN`.")


def _outputs(result: dict[str, Any]) -> tuple[Any, ...]:
    """An export's result (from disk) as the tab shows it: the summary (no server path), the card, the zip."""
    shown = {k: v for k, v in result.items() if k != "zip_path"}
    return (shown, card_preview(result["card"]), result["zip_path"],
            choices_update(service.list_exports(), result["export"]))


def card_preview(card: str) -> str:
    """The model card as Markdown with its YAML front matter shown as a table (not one run-on line), and its long
    tables (the fingerprint rows) cut to their first lines."""
    import yaml

    text, head = card or "", ""
    if text.startswith("---\n") and "\n---" in text[4:]:
        front, text = text[4:].split("\n---", 1)
        try:
            meta = yaml.safe_load(front) or {}
        except yaml.YAMLError:
            meta = {}
        if isinstance(meta, dict) and meta:
            rows = [f"| `{k}` | {', '.join(map(str, v)) if isinstance(v, list) else v} |" for k, v in meta.items()
                    if not isinstance(v, dict)]
            head = "| front matter | value |\n|---|---|\n" + "\n".join(rows) + "\n\n"
    out, run = [], 0
    for row in text.lstrip("-\n").splitlines():
        run = run + 1 if row.startswith("|") else 0
        if run == 13:
            out.append("| … | (more rows in the README.md of the download) |")
        if run <= 12:
            out.append(row)
    return head + "\n".join(out)


def export_summary(result: dict[str, Any], *_: Any) -> str:
    return (f"Exported <b>{result['export']}</b> ({result['mode']}, step {result.get('step')}): "
            f"{len(result.get('files') or [])} files; the zip is ready below. Push it to the Hub with the form "
            "beside it.")


@guarded
def saved(run_id: str | None) -> tuple[Any, ...]:
    """The run's export already on disk (re-shown after a reload or a run change)."""
    if not run_id:
        return None, "", None, gr.skip(), status.note("Pick a run.")
    found = service.saved_export(run_id)
    if found is None:
        return None, "", None, gr.skip(), status.note("Not exported yet.")
    archive = found.pop("zip_path")
    return (found, card_preview(found["card"]), archive, choices_update(service.list_exports(), found["export"]),
            status.ok(f"(saved) Export <b>{found['export']}</b> is on disk."))


@guarded
def export(run_id: str, mode: str, checkpoint: str, progress: gr.Progress = gr.Progress(),  # noqa: B008
           ) -> tuple[Any, ...]:
    """Queue an export job and follow it; the summary, the model card and the zip to download."""
    job = service.submit_export(run_id, mode or "adapter", checkpoint or "best")
    return _outputs(step_ui.follow(job["job_id"], "export", progress))


@guarded
def export_stream(run_id: str, mode: str, checkpoint: str) -> Iterator[Any]:
    """The button: queue the export job, its progress in the status line, then the card and zip from disk."""
    job = service.submit_export(run_id, mode or "adapter", checkpoint or "best")
    yield from step_ui.stream(job["job_id"], "export")
    yield _outputs(step_ui.outcome(job["job_id"], "export"))


def _select(params: dict[str, Any]) -> tuple[Any, ...]:
    run_id, mode = params.get("run_id"), params.get("mode")
    known = {key for _, key in service.run_choices()}
    return (gr.update(value=run_id) if run_id in known else gr.skip(),
            gr.update(value=mode) if run_id in known and mode in ("adapter", "merged") else gr.skip())


@guarded
def reattach() -> Iterator[tuple[Any, ...]]:
    """On page load: the run of the newest export, its progress while it runs, then its card and zip from disk and
    the status lines."""
    yield from step_ui.reattach("export", _outputs, 4, export_summary, _select, 2)


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
            with gr.Column(scale=1):
                gr.Markdown("### Export")
                with gr.Row():
                    run = Choice(service.run_choices(), label="Run", elem_id="export-run", scale=3)
                    checkpoint = Choice(["best", "last"], value="best", label="Checkpoint")
                mode = gr.Radio(["adapter", "merged"], value="adapter", label="Export as")
                export_btn = gr.Button("Export", variant="primary", elem_id="export")
                export_status = status.line("export-status")
                job_line = gr.Markdown(elem_id="export-job", label="export job")
                download = gr.File(label="Download (zip)", interactive=False, elem_id="export-zip")
            with gr.Column(scale=1):
                gr.Markdown("### Push to the Hugging Face Hub")
                exported = Choice(service.list_exports(), label="Export folder", elem_id="push-export")
                repo = gr.Textbox(label="Repository", placeholder="USER/NAME")
                private = gr.Checkbox(True, label="Private")
                token = gr.Textbox(label="Write token (used once, never stored)", type="password",
                                   placeholder="hf_…" + (" (or sign in above)" if service.on_space() else ""))
                push_btn = gr.Button("Push", variant="primary", elem_id="push")
                push_status = status.line("push-status")
        with gr.Accordion("Model card preview (README.md)", open=False):
            card = gr.Markdown(elem_id="model-card", label="model card")
        with gr.Accordion("Export and push results (JSON)", open=False):
            result = gr.JSON(label="Export")
            pushed = gr.JSON(label="Pushed")

    shown = {"fn": saved, "inputs": run, "outputs": [result, card, download, exported, export_status],
             "api_visibility": "private"}
    tab.select(refresh, [run, exported], [run, exported], api_visibility="private").then(**shown)
    run.input(**shown)
    export_out = [result, card, download, exported]
    status.action(export_btn.click, export, [run, mode, checkpoint], export_out, export_status, api_name="export",
                  what="Export", summary=export_summary, ui_fn=export_stream, **step_ui.STEP_EVENT).then(
        lambda: step_ui.status_line("export"), None, job_line, api_visibility="private", **step_ui.CHEAP_EVENT)
    status.action(push_btn.click, push_to_hub, [exported, repo, private, token], [pushed, token], push_status,
                  api_name="push_to_hub", what="Push",
                  summary=lambda info, _t: f"Pushed <b>{info['export']}</b> to <a href='{info['url']}'>"
                                           f"{info['repo']}</a> ({'private' if info['private'] else 'public'}).")
    return {"run": run, "reattach": {"fn": reattach, "inputs": None,
                                     "outputs": [run, mode, *export_out, export_status, job_line],
                                     "api_visibility": "private", **step_ui.STEP_EVENT}}
