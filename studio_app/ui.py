"""build_ui(): the six tabs in one gr.Blocks, wired together (new datasets appear everywhere; a reload re-attaches)."""

from __future__ import annotations

from typing import Any

import gradio as gr

from pipeline import service

from . import data_tab, evaluate_tab, experiments_tab, export_tab, quality_tab, train_tab
from .common import guarded

CSS = """
#train-progress progress { height: 18px; }
#train-progress .job-error { color: #c0392b; margin-top: 4px; }
"""
HEADER = ("# SAM2 VLM Studio\nSAM 2 video annotations → fine-tuned vision-language models. Work through the tabs "
          "left to right; the built-in sample and the tiny offline model are pre-selected, so pressing the buttons "
          "in order trains and evaluates a model on this machine.")


@guarded
def _datasets(selected: str | None = None) -> tuple[Any, Any]:
    names = service.list_datasets()
    value = selected if selected in names else (names[0] if names else None)
    return gr.update(choices=names, value=value), gr.update(choices=names, value=value)


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
            train = train_tab.build()
            evaluate = evaluate_tab.build()
            experiments_tab.build()
            export = export_tab.build()
        both = [quality["dataset"], train["dataset"]]
        data["converted"].success(_datasets, data["name"], both, api_visibility="private")
        quality["split"].success(_datasets, quality["dataset"], both, api_visibility="private")
        demo.load(_datasets, None, both, api_visibility="private")
        demo.load(train["load_preset"], [train["preset"], train["model"]], train["config_out"],
                  api_visibility="private")
        demo.load(train_tab.reattach, None, [train["jobs"], train["job_id"], train["from_seq"]],
                  api_visibility="private").then(**train["follow"])
        for tab in (data, quality, evaluate, export):  # step results come back from disk after a reload
            demo.load(**tab["reattach"])
    return demo
