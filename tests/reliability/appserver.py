"""The real app (`python app.py`) as a subprocess on a free loopback port, for the reliability and load tests.

Everything it writes goes to ROOT/home (STUDIO_HOME), ROOT/tmp (TMPDIR) and ROOT/gradio (GRADIO_TEMP_DIR); its
output goes to ROOT/app.log. The owner's HF_TOKEN is set to a secret the Hub stand-in does not know, so a push that
used it would fail and be seen.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from .harness import ROOT, child_env

OWNER_TOKEN = "hf_owner" + secrets.token_hex(16)


def require_app() -> None:
    """Skip the calling test when the app is not in this tree (checked without importing gradio here)."""
    import pytest

    if not (ROOT / "app.py").is_file() or not (ROOT / "studio_app" / "launch.py").is_file():
        pytest.skip("the app (app.py + studio_app/) is not in this tree yet")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class AppServer:
    """Start with `start()`; `url`, `client()`, `home`, `log_text()`; `stop()` kills it and its jobs' scheduler."""

    def __init__(self, root: Path, hub_endpoint: str | None = None, **env: str) -> None:
        self.root = Path(root)
        self.home, self.tmp, self.gradio_tmp = self.root / "home", self.root / "tmp", self.root / "gradio"
        for folder in (self.home, self.tmp, self.gradio_tmp):
            folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = self.root / "app.log"
        settings = {"GRADIO_SERVER_PORT": str(self.port), "GRADIO_SERVER_NAME": "127.0.0.1",
                    "GRADIO_TEMP_DIR": str(self.gradio_tmp), "HF_TOKEN": OWNER_TOKEN, "STUDIO_CPU_SLOTS": "1",
                    "STUDIO_CANCEL_GRACE": "60"}
        self.env = child_env(self.home, self.tmp, **{**settings, **env})
        if hub_endpoint:  # pushes go to the stand-in; offline mode would refuse them, so it is off
            self.env["HF_ENDPOINT"] = hub_endpoint
            for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
                self.env.pop(name, None)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 240) -> AppServer:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=self.root, env=self.env,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the app exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            if "SAM2 VLM Studio ready" in self.log_text():
                try:
                    with urllib.request.urlopen(self.url, timeout=5) as response:
                        if response.status == 200:
                            return self
                except OSError:
                    pass
            time.sleep(0.3)
        self.kill()  # never leave a half-started server behind
        raise RuntimeError(f"the app did not start in {timeout} s:\n{self.log_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the app process only (its training jobs run in their own sessions and survive)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        """Kill the app, then any job process it left (found through the studio database)."""
        self.kill()
        try:
            from pipeline.jobs.store import JobStore

            store = JobStore(self.home / "studio.db")
            for job in store.list_jobs(status="running"):
                if job.pid:
                    try:
                        os.killpg(job.pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
            store.close()
        except Exception:  # noqa: BLE001 - best effort cleanup after the tests
            pass

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def client(self) -> Any:
        from gradio_client import Client

        return Client(self.url, verbose=False, download_files=False)
