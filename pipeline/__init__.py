"""SAM2 VLM Studio: turn SAM 2 video annotations into fine-tuned vision-language models."""

import os

__version__ = "0.1.0"

# Offline and private by default; users may override these in their environment.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
