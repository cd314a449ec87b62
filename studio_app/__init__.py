"""The Gradio app of SAM2 VLM Studio: one module per tab, each handler a few lines over `pipeline.service`."""

from .ui import build_ui

__all__ = ["build_ui"]
