"""Third-party noise goes to a debug log, so our own words are the first thing a user reads.

bitsandbytes logs "Failed to load CPU gemm_4bit_forward from kernels-community ..." on import (a best-effort
optional kernel), transformers and torch emit FutureWarnings on import and load: none of it is the user's problem,
and printed ahead of a real error it reads as the error. `install()` sends those loggers and every Python warning
to `STUDIO_HOME/logs/debug.log` (created only when something is written) instead of the terminal.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

NOISY_LOGGERS = ("bitsandbytes", "py.warnings", "torch", "accelerate", "peft", "datasets", "httpx", "urllib3")
DEBUG_LOG = "debug.log"
_installed: list[logging.Handler] = []


def debug_log_path() -> Path:
    """Where silenced third-party output is kept: STUDIO_HOME/logs/debug.log (not created here)."""
    home = Path(os.environ.get("STUDIO_HOME", "studio_data")).expanduser().resolve()
    return home / "logs" / DEBUG_LOG


class _LazyFileHandler(logging.FileHandler):
    """A file handler that makes its folder (and file) only when a record arrives."""

    def emit(self, record: logging.LogRecord) -> None:
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        super().emit(record)


def install() -> None:
    """Route third-party loggers and warnings to the debug log; idempotent. Called by the CLI and the app."""
    if _installed:
        return
    handler = _LazyFileHandler(debug_log_path(), delay=True, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    handler.setLevel(logging.DEBUG)
    for name in NOISY_LOGGERS:
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.propagate = False
    logging.captureWarnings(True)  # warnings.warn(...) -> the "py.warnings" logger above
    warnings.simplefilter("default")  # each distinct warning once, into the log
    _quiet_transformers()
    _installed.append(handler)


def _quiet_transformers() -> None:
    """transformers keeps its own stderr handler; errors still reach the user through our exceptions."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
