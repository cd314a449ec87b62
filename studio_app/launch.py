"""Launch settings: address, optional basic auth, upload limit, what the file routes may serve, and `main()`.

    python app.py                                   # http://127.0.0.1:7860
    GRADIO_SERVER_NAME=0.0.0.0 GRADIO_SERVER_PORT=8080 STUDIO_AUTH=user:secret python app.py
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from pipeline import quiet, service
from pipeline.errors import UserError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
DEFAULT_MAX_FILE_SIZE = "2gb"


def parse_auth(value: str | None) -> list[tuple[str, str]] | None:
    """STUDIO_AUTH='user:pass' (several separated by commas) -> gradio's auth list; None when unset."""
    if not value or not value.strip():
        return None
    pairs = []
    for item in value.split(","):
        user, sep, password = item.strip().partition(":")
        if not sep or not user or not password:
            raise UserError("STUDIO_AUTH must look like user:password (several separated by commas)")
        pairs.append((user, password))
    return pairs


def _port(value: str | None) -> int:
    if not value:
        return DEFAULT_PORT
    if not value.strip().isdigit() or not 0 < int(value) < 65536:
        raise UserError(f"GRADIO_SERVER_PORT must be a port number (got {value!r})")
    return int(value)


def launch_kwargs(**overrides: Any) -> dict[str, Any]:
    """Everything passed to Blocks.launch(): safe defaults, the environment, then `overrides`."""
    settings: dict[str, Any] = {
        "server_name": os.environ.get("GRADIO_SERVER_NAME") or DEFAULT_HOST,
        "server_port": _port(os.environ.get("GRADIO_SERVER_PORT")),
        "auth": parse_auth(os.environ.get("STUDIO_AUTH")),
        "max_file_size": os.environ.get("STUDIO_MAX_FILE_SIZE") or DEFAULT_MAX_FILE_SIZE,
        "allowed_paths": service.download_paths(),  # export zips and quality reports, nothing else
        "blocked_paths": service.blocked_paths(),  # the database and the run folders, whatever is allowed
        "show_error": False, "enable_monitoring": False, "run_history": False, "ssr_mode": False,
        "mcp_server": False, "pwa": False, "share": False, "footer_links": ["api"],
    }
    settings.update(overrides)
    return settings


# Gradio's queue rebuilds a pandas summary of its last GRADIO_ANALYTICS_MAX_EVENTS events (default 10,000) after
# every event, by default after each one: with many polling clients that alone was a tenth of the server's CPU
# (py-spy, bench/load.py). The summary only feeds the API page's statistics, so it is refreshed every 100 events.
ANALYTICS_SETTINGS = {"GRADIO_ANALYTICS_CACHE_FREQUENCY": "100", "GRADIO_ANALYTICS_MAX_EVENTS": "2000"}


def launch(demo: Any, **overrides: Any) -> Any:
    """Queue (watch streams are not limited) and launch; returns what Blocks.launch returns."""
    from .ui import CSS

    for name, value in ANALYTICS_SETTINGS.items():
        os.environ.setdefault(name, value)  # read when the queue is made, just below
    demo.queue(default_concurrency_limit=1, max_size=64)
    return demo.launch(**{"css": CSS, **launch_kwargs(**overrides)})


def free_port() -> int:
    """A TCP port nothing listens on right now (for tests and scripts)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(**overrides: Any) -> tuple[Any, str]:
    """Start the scheduler thread and the app without blocking (tests, scripts); returns (demo, url)."""
    from .ui import build_ui

    service.start_scheduler()
    demo = build_ui()
    _, url, _ = launch(demo, prevent_thread_lock=True, quiet=True, **{"server_port": free_port(), **overrides})
    return demo, url


def _warm_sample() -> None:
    try:
        service.hardware()  # torch's import and the device probe: seconds the first /estimate_memory must not wait
    except Exception:  # noqa: BLE001 - estimate_memory probes again on demand and reports any problem
        logging.getLogger("studio_app").exception("could not probe the hardware in the background")
    try:
        service.ensure_sample()
    except Exception:  # noqa: BLE001 - the Data tab generates it again on demand and reports any problem
        logging.getLogger("studio_app").exception("could not generate the built-in sample in the background")


def main() -> None:
    """`python app.py`: start the job scheduler thread (stale jobs become interrupted), build the UI and serve it."""
    started = time.monotonic()
    quiet.install()
    from .ui import build_ui

    try:
        launch_kwargs()  # a bad STUDIO_AUTH or port is one error line, before anything starts
    except UserError as exc:
        raise SystemExit(f"error: {exc}") from None
    service.start_scheduler()
    demo = build_ui()
    launch(demo, prevent_thread_lock=True)
    print(f"SAM2 VLM Studio ready: {time.monotonic() - started:.1f} s to build and launch, {time.process_time():.1f} s "
          f"of CPU since the process started (STUDIO_HOME={service.studio_home()})", flush=True)
    # the built-in sample takes seconds to generate: make it while the first visitor reads the page
    threading.Thread(target=_warm_sample, name="studio-sample", daemon=True).start()
    demo.block_thread()
