"""`get_backend()`: the one place that knows both jobs backends (STUDIO_JOBS=local, the default, or celery)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import UserError
from .local import LocalBackend
from .spec import JobBackend

BACKENDS = ("local", "celery")


def backend_name() -> str:
    """The backend STUDIO_JOBS names (`local` when unset); UserError for an unknown one."""
    name = os.environ.get("STUDIO_JOBS", "local").strip().lower() or "local"
    if name not in BACKENDS:
        raise UserError(f"STUDIO_JOBS={name!r} is not available in this version (use 'local' or 'celery')")
    return name


def get_backend(home: str | Path | None = None, **kwargs: Any) -> JobBackend:
    """The backend named by STUDIO_JOBS: `local` (default) or `celery` (Redis + Celery workers).

    `kwargs` are the local backend's options (scheduler, resources); the Celery backend ignores them.
    """
    if backend_name() == "local":
        return LocalBackend(home, **kwargs)
    from .celery_backend import CeleryBackend  # Celery and Redis are imported only when asked for

    return CeleryBackend(home, **kwargs)
