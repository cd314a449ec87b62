"""The app facade: names and homes, the jobs backend, and the view helpers the other parts share."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UserError
from ..home import home_dir, studio_home

if TYPE_CHECKING:
    from ..jobs import JobBackend

DEFAULT_MODEL = "tiny-smolvlm"
DEFAULT_PRESET = "cpu_demo"
DEFAULT_TASKS = ("grounding",)
FORM_FIELDS = ("training.method", "training.max_steps", "training.epochs", "training.batch_size",
               "training.grad_accum", "training.learning_rate", "training.scheduler", "lora.r", "lora.alpha",
               "data.max_length", "training.save_steps", "training.logging_steps")
MAX_YAML_BYTES = 64 * 1024  # what plan.yaml_mapping accepts (plan.MAX_YAML_BYTES; a test keeps them equal)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_LOCK = threading.Lock()  # the backends table
_HARDWARE_LOCK = threading.Lock()
_BACKENDS: dict[tuple[Path, str], JobBackend] = {}  # by (data home, STUDIO_JOBS)
_MODE = {"scheduler": "process"}
_HARDWARE: dict[str, Any] = {}


# -- names, homes, the jobs backend ----------------------------------------------------------------------------
def check_name(name: str, what: str = "name") -> str:
    """A folder name of letters, digits, '_', '.', '-' (at most 64, no '..'); UserError otherwise."""
    name = (name or "").strip()
    if not _NAME.fullmatch(name) or ".." in name:
        raise UserError(f"{what} {name!r}: use letters, digits, '_', '.', '-' (at most 64 characters)")
    return name


def dataset_dir(name: str) -> Path:
    """The folder of a converted dataset in STUDIO_HOME/datasets; UserError when there is none."""
    from ..dataset import is_dataset

    path = home_dir("datasets") / check_name(name, "dataset")
    if not is_dataset(path):
        raise UserError(f"no converted dataset named {name!r} (convert an export first)")
    return path


def list_datasets() -> list[str]:
    """Names of the converted datasets, newest first."""
    from ..dataset import is_dataset

    folders = [p for p in home_dir("datasets").iterdir() if is_dataset(p)]
    return [p.name for p in sorted(folders, key=lambda p: p.stat().st_mtime, reverse=True)]


def on_space() -> bool:
    """True when running as a Hugging Face Space (SPACE_ID is set)."""
    return bool(os.environ.get("SPACE_ID"))


def require_user(username: str | None, action: str) -> None:
    """On a Space only signed-in users may start jobs or push; UserError otherwise."""
    if on_space() and not username:
        raise UserError(f"sign in with Hugging Face (button at the top) to {action}")


def backend() -> JobBackend:
    """The jobs backend of the current STUDIO_HOME and STUDIO_JOBS (one per data home, backend and process).

    `local`: this machine's scheduler; `celery`: the fleet of workers (Start, Watch, Cancel, Resume and the jobs
    table then all go through Redis). Jobs whose process or worker is gone are settled when it is first made.
    """
    from ..jobs import backend_name, get_backend

    key = (studio_home(), backend_name())
    with _LOCK:
        found = _BACKENDS.get(key)
        if found is None:
            found = _BACKENDS[key] = get_backend(key[0], scheduler=_MODE["scheduler"])
            found.recover()
        return found


def start_scheduler() -> JobBackend:
    """The app's job side: settles jobs whose process is gone, then runs the local scheduler in a daemon thread
    (with STUDIO_JOBS=celery there is nothing to run here: the workers run the jobs)."""
    _MODE["scheduler"] = "thread"
    found = backend()
    found.start()
    return found


def hardware() -> Any:
    """The detected training hardware (probed once per process; importing torch takes a few seconds)."""
    with _HARDWARE_LOCK:
        if "hw" not in _HARDWARE:
            from ..hardware import detect_hardware

            _HARDWARE["hw"] = detect_hardware()
        return _HARDWARE["hw"]




def _plain(value: Any) -> bool:
    return isinstance(value, int | float | str) or value is None


def _round(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


def _gallery(folder: Path, limit: int = 12) -> list[tuple[Any, str]]:
    """Images of a gallery folder (NN_<id>.png) loaded into memory, in file order (worst first)."""
    from PIL import Image

    shots = []
    for path in sorted(folder.glob("*.png"))[:limit]:
        with Image.open(path) as image:
            shots.append((image.convert("RGB"), path.stem.split("_", 1)[-1]))
    return shots


def _preset_of(exp: Any) -> str | None:
    """The preset a run was started from (the app tags its runs `preset:NAME`); None when unknown."""
    return next((t.split(":", 1)[1] for t in exp.tags or [] if t.startswith("preset:")), None)


__all__ = [
    'DEFAULT_MODEL', 'DEFAULT_PRESET', 'DEFAULT_TASKS', 'FORM_FIELDS', 'MAX_YAML_BYTES', 'backend', 'check_name',
    'dataset_dir', 'hardware', 'list_datasets', 'on_space', 'require_user', 'start_scheduler',
]
