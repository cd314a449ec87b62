"""Push an export folder to the Hugging Face Hub with an explicit token (never the cached login or HF_TOKEN).

    python -m pipeline push EXPORT --repo USER/NAME --token-env STUDIO_HF_TOKEN

    from pipeline.hub import push_to_hub
    url = push_to_hub("exports/shapes-lora", "USER/shapes-lora", token=os.environ["STUDIO_HF_TOKEN"])

The token is passed to every call and nowhere else: it is not written to disk, logs or the card, and the folder is
scanned for it (and for local paths) before anything is sent. Failures become one `push to X failed: ...` line;
the local export is never touched, so a push can simply be retried.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .errors import UserError

DEFAULT_TOKEN_ENV = "STUDIO_HF_TOKEN"
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")
_REASONS = {
    401: "token rejected (401): the token is invalid, expired or revoked",
    403: "permission denied (403): the token cannot create or write repos in '{namespace}' (a write token is needed)",
    404: "not found (404): the namespace '{namespace}' does not exist or the token cannot see it",
}


def read_token(env_var: str = DEFAULT_TOKEN_ENV) -> str:
    """The token held in the environment variable `env_var`; UserError when unset or empty."""
    import os

    token = os.environ.get(env_var, "").strip()
    if not token:
        raise UserError(f"no Hub token: set the environment variable {env_var} to a write token "
                        "(the cached login and HF_TOKEN are never used implicitly)")
    return token


def check_repo_id(repo_id: str) -> str:
    """`USER/NAME` with Hub-legal characters; UserError otherwise."""
    repo_id = (repo_id or "").strip()
    if not _REPO_ID.fullmatch(repo_id) or ".." in repo_id or repo_id.endswith((".", "-")):
        raise UserError(f"--repo must look like USER/NAME (letters, digits, '-', '_', '.'), got {repo_id!r}")
    return repo_id


def check_export_folder(export_dir: str | Path) -> Path:
    """An export folder (README.md plus an adapter or a model); UserError otherwise."""
    folder = Path(export_dir).expanduser()
    if not folder.is_dir():
        raise UserError("export folder not found", folder)
    if not (folder / "README.md").is_file():
        raise UserError("not an export folder (no README.md); run `python -m pipeline export` first", folder)
    if not ((folder / "adapter_config.json").is_file() or (folder / "config.json").is_file()):
        raise UserError("not an export folder (no adapter_config.json or config.json)", folder)
    return folder.resolve()


def _failure(repo_id: str, exc: BaseException, token: str, endpoint: str) -> UserError:
    """One clear line for a failed push; never includes the token (transport errors come from httpx2/httpx)."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    namespace = repo_id.split("/")[0]
    if isinstance(exc, OfflineModeIsEnabled):
        reason = "offline mode is on (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set); unset it to push"
    elif isinstance(exc, HfHubHTTPError) and exc.response is not None:
        status = exc.response.status_code
        reason = _REASONS.get(status, "").format(namespace=namespace) or f"the Hub answered {status}: " + (
            _server_message(exc.response) or "no details")
    elif isinstance(exc, OSError) or any(c.__name__ == "TransportError" for c in type(exc).__mro__):
        reason = f"cannot reach {endpoint} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    else:
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    reason = reason.replace(token, "***") if token else reason
    return UserError(f"push to {repo_id} failed: {reason}; the local export is unchanged, retry when fixed")


def _server_message(response: Any) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text.strip().splitlines()[0][:200] if response.text.strip() else ""
    return str(data.get("error", ""))[:200] if isinstance(data, dict) else ""


def checked_push(folder: Path, repo_id: str, token: Any, what: str) -> tuple[str, str]:
    """(repo_id, token) once both are valid and the folder holds no secret; UserError naming the problem otherwise."""
    from .leaks import find_leaks

    repo_id = check_repo_id(repo_id)
    if not isinstance(token, str) or not token.strip():
        raise UserError(f"push to {repo_id} refused: empty token (pass a write token explicitly)")
    token = token.strip()
    leaks = find_leaks(folder, secrets=[token])
    if leaks:
        raise UserError(f"push to {repo_id} refused: {leaks[0]} (fix the {what} before publishing)", folder)
    return repo_id, token


def push_to_hub(export_dir: str | Path, repo_id: str, token: str, private: bool = True,
                endpoint: str | None = None, commit_message: str | None = None) -> str:
    """Create `repo_id` (private by default) and upload the export folder; returns the repo URL."""
    from huggingface_hub import HfApi, constants


    folder = check_export_folder(export_dir)
    repo_id, token = checked_push(folder, repo_id, token, "export")
    endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
    api = HfApi(endpoint=endpoint, token=token)
    try:
        api.whoami(token=token)
        url = api.create_repo(repo_id, token=token, private=private, repo_type="model", exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model", token=token,
                          commit_message=commit_message or f"Upload {folder.name} from SAM2 VLM Studio")
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line; the export stays as it is
        raise _failure(repo_id, exc, token, endpoint) from None
    return str(url)
