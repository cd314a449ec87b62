"""build_ui(): the tabs in one gr.Blocks, wired together (new datasets appear everywhere; a reload re-attaches and
re-shows what is on disk)."""

from __future__ import annotations

from typing import Any

import gradio as gr

from pipeline import service

from . import data_tab, evaluate_tab, experiments_tab, export_tab, quality_tab, train_tab, try_tab, viewer_tab
from .common import guarded
from .status import render_hidden

CSS = """
#train-progress progress { height: 18px; }
#train-progress .job-error { color: #c0392b; margin-top: 4px; }
.status-line { min-height: 1.6em; }
.status-ok, .status-error, .status-note { padding: 6px 10px; border-radius: 6px; line-height: 1.45; }
.status-ok { background: #e9f7ef; color: #1e6b3a; border: 1px solid #b7e1c6; }
.status-error { background: #fdecea; color: #8e1f16; border: 1px solid #f2b8b2; }
.status-note { background: #f4f6f8; color: #3b4754; border: 1px solid #dde3e8; }
.status-error ul, .status-ok ul { margin: 4px 0 0 18px; }
.status-running progress { display: block; width: 100%; height: 10px; margin-top: 4px; }
"""
HEADER = ("# SAM2 VLM Studio\nSAM 2 video annotations → fine-tuned vision-language models. Work through the tabs "
          "left to right; the built-in sample and the tiny offline model are pre-selected, so pressing the buttons "
          "in order trains and evaluates a model on this machine.")


@guarded
def _datasets(selected: str | None = None, train_current: str | None = None) -> tuple[Any, Any, Any]:
    """New choices everywhere; Quality & Split follows the dataset just made, the Train tab keeps its own choice
    (it never switches behind the user's back; an empty one takes the first)."""
    names = service.list_datasets()
    value = selected if selected in names else (names[0] if names else None)
    train = train_current if train_current in names else value
    return gr.update(choices=names, value=value), gr.update(choices=names, value=train), gr.update(choices=names)


def build_ui() -> gr.Blocks:
    """The whole app; launch it with studio_app.launch.launch(build_ui())."""
    with gr.Blocks(title="SAM2 VLM Studio", analytics_enabled=False, delete_cache=(3600, 86400)) as demo:
        with gr.Row():
            gr.Markdown(HEADER)
            if service.on_space():
                gr.LoginButton(size="sm", scale=0)
        with gr.Tabs():
            data = data_tab.build()
            quality = quality_tab.build()
            viewer = viewer_tab.build()
            train = train_tab.build()
            evaluate = evaluate_tab.build()
            try_tab.build()
            experiments_tab.build()
            export = export_tab.build()
        render_hidden()
        everywhere = [quality["dataset"], train["dataset"], viewer["dataset"]]
        data["converted"].success(_datasets, [data["name"], train["dataset"]], everywhere, api_visibility="private")
        quality["split"].success(_datasets, [quality["dataset"], train["dataset"]], everywhere,
                                 api_visibility="private")
        # step jobs re-attach after a reload: each tab selects what its newest job works on, follows it while it
        # runs and shows its result from disk; Quality & Split then re-shows everything saved for that dataset
        demo.load(_datasets, None, everywhere, api_visibility="private").then(**quality["reattach"]).then(
            quality["show_saved"], quality["dataset"], quality["saved_out"], api_visibility="private")
        for tab in (data, evaluate, export):
            demo.load(**tab["reattach"])
        demo.load(train_tab.reattach, None, [train["jobs"], train["job_id"], train["from_seq"]],
                  api_visibility="private").then(
            train_tab.initial_form, [train["preset"], train["model"]], train["form_out"],
            api_visibility="private").then(**train["follow"])
    return demo
