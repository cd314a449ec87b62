"""The data home: one folder for everything the app writes (STUDIO_HOME, default ./studio_data)."""

from __future__ import annotations

import os
from pathlib import Path


def studio_home() -> Path:
    """Return the data home, creating it on demand."""
    home = Path(os.environ.get("STUDIO_HOME", "studio_data")).expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    return home


def home_dir(name: str) -> Path:
    """A named sub-folder of the data home (models, runs, datasets, presets, cache), created on demand."""
    path = studio_home() / name
    path.mkdir(parents=True, exist_ok=True)
    return path
