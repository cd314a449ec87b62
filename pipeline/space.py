"""An inference Space for an export: a minimal Gradio app (image + prompt in, answer and drawn boxes out).

    python -m pipeline export RUN --out exports/shapes-lora --repo-id USER/shapes-lora --space  # + ...-space/
    python -m pipeline push exports/shapes-lora-space --space USER/shapes-lora-demo

    from pipeline.space import write_space
    folder = write_space("exports/shapes-lora", model_ref="USER/shapes-lora")

The Space holds app.py, requirements.txt (this project's pins), README.md (Hub front matter: sdk gradio, the model)
and studio_coords.py (this project's answer parser, copied). app.py loads the model named by STUDIO_SPACE_MODEL
(default: the model repo): an adapter on its base (peft), a merged model by itself. Locally:

    STUDIO_SPACE_MODEL=exports/shapes-lora GRADIO_SERVER_NAME=127.0.0.1 python exports/shapes-lora-space/app.py
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import UserError

SPACE_FILES = ("app.py", "requirements.txt", "README.md", "studio_coords.py")
SPACE_PINS = ("torch", "transformers", "peft", "accelerate", "safetensors", "huggingface_hub", "gradio", "pillow")
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


def _pins() -> list[str]:
    """The project's pins of what the Space needs (requirements.txt at the repository root)."""
    root = Path(__file__).resolve().parents[1] / "requirements.txt"
    pins: dict[str, str] = {}
    if root.is_file():
        for line in root.read_text(encoding="utf-8").splitlines():
            spec = line.split("#")[0].strip()
            if "==" in spec:
                name, version = spec.split("==", 1)
                pins[name.split("[")[0].strip().lower()] = version.strip()  # gradio[oauth] pins gradio
    return [f"{name}=={pins[name]}" if name in pins else name for name in SPACE_PINS]


COORDS_MODULES = ("base", "llava", "qwen", "paligemma", "florence2", "internvl", "__init__")  # dependency order
STANDALONE_HEAD = """from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


class UserError(ValueError):
    \"\"\"A bad convention name.\"\"\"


Box = list[float]
BoxLike = Sequence[float]
"""


def _module_body(name: str) -> str:
    """A module's code after its imports (docstring, `from __future__` and import lines dropped)."""
    import ast

    text = resources.files("pipeline").joinpath(name).read_text(encoding="utf-8")
    tree = ast.parse(text)
    lines = text.splitlines(keepends=True)
    first = next(node.lineno for node in tree.body if not isinstance(node, ast.Import | ast.ImportFrom | ast.Expr))
    return "".join(lines[first - 1:])


def vendored_parser() -> str:
    """pipeline/coords/ (the answer parsers of every convention) as one standalone module, with imagegrid's
    smart_resize and the stand-ins for its two other project imports (UserError, the Box types)."""
    parts = [STANDALONE_HEAD, _module_body("imagegrid.py")]
    parts += [_module_body(f"coords/{module}.py") for module in COORDS_MODULES]
    text = "\n\n".join(part.strip("\n") for part in parts) + "\n"
    head = "# SAM2 VLM Studio's answer parser (pipeline/coords/), copied into this Space.\n# ruff: noqa\n"
    return head + text


def readme(model_ref: str, studio: dict[str, Any], gradio_version: str) -> str:
    """README.md with the Space's front matter (naming the model when it is a Hub repo) and what it does."""
    title = re.sub(r"[^\w .-]+", " ", model_ref.split("/")[-1])[:60].strip() or "model"
    lines = ["---", f"title: {title} demo", "emoji: 🎯", "colorFrom: blue", "colorTo: green", "sdk: gradio",
             f"sdk_version: {gradio_version}", "app_file: app.py", "pinned: false"]
    if _REPO_ID.fullmatch(model_ref):
        lines += ["models:", f"  - {model_ref}"]
    lines += ["tags:", "  - sam2-vlm-studio", "  - object-detection", "---", "",
              f"# {title}", "",
              f"Try **{model_ref}** ({studio.get('mode', 'adapter')} export of `{studio.get('model')}`, "
              f"coordinate convention `{studio.get('convention')}`, made with SAM2 VLM Studio): upload a frame, "
              "ask for a label, and see the answer with its boxes drawn.", "",
              "`app.py` loads the model named by `STUDIO_SPACE_MODEL` (default: the repo above); an adapter is loaded "
              "on its base model. Set the `HF_TOKEN` secret when the model or its base is private or gated.", ""]
    return "\n".join(lines)


def write_space(export_dir: str | Path, out_dir: str | Path | None = None, *, model_ref: str | None = None,
                overwrite: bool = False) -> Path:
    """Write the Space folder for an export (default `<EXPORT>-space` beside it); returns the folder."""
    import gradio

    from .atomic import atomic_output_dir
    from .inference import default_prompt
    from .serve import check_export

    export, studio = check_export(export_dir)
    out = Path(out_dir).expanduser().resolve() if out_dir else export.with_name(export.name + "-space")
    ref = model_ref or export.name
    template = resources.files("pipeline").joinpath("templates", "space_app.py.tmpl").read_text(encoding="utf-8")
    app = (template.replace("{{MODEL}}", json.dumps(ref)).replace("{{PROMPT}}", json.dumps(default_prompt(studio)))
           .replace("{{TITLE}}", json.dumps(f"{ref.split('/')[-1]}: boxes from a prompt")))
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        (tmp / "app.py").write_text(app, encoding="utf-8")
        (tmp / "requirements.txt").write_text("\n".join(_pins()) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(readme(ref, studio, gradio.__version__), encoding="utf-8")
        (tmp / "studio_coords.py").write_text(vendored_parser(), encoding="utf-8")
    return out


def check_space_folder(folder: str | Path) -> Path:
    """A Space folder (app.py + README.md with `sdk:` front matter); UserError otherwise."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise UserError("Space folder not found", path)
    card = path / "README.md"
    if not (path / "app.py").is_file() or not card.is_file() or "\nsdk: " not in card.read_text(encoding="utf-8"):
        raise UserError("not a Space folder (app.py and a README.md with `sdk:` front matter); write one with "
                        "`python -m pipeline export RUN --out DIR --space`", path)
    return path.resolve()


def push_space(folder: str | Path, repo_id: str, token: str, private: bool = True,
               endpoint: str | None = None) -> str:
    """Create the Space `repo_id` (Gradio SDK, private by default) and upload the folder; returns its URL."""
    from huggingface_hub import HfApi, constants

    from .hub import _failure, checked_push

    path = check_space_folder(folder)
    repo_id, token = checked_push(path, repo_id, token, "Space")
    endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
    api = HfApi(endpoint=endpoint, token=token)
    try:
        api.whoami(token=token)
        url = api.create_repo(repo_id, token=token, private=private, repo_type="space", space_sdk="gradio",
                              exist_ok=True)
        api.upload_folder(folder_path=str(path), repo_id=repo_id, repo_type="space", token=token,
                          commit_message=f"Upload the inference Space {path.name} from SAM2 VLM Studio")
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line; the folder stays as it is
        raise _failure(repo_id, exc, token, endpoint) from None
    return str(url)

