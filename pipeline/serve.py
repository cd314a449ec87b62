"""Serve an export over the OpenAI API with a real engine: `transformers serve` (CPU or GPU) or vLLM (GPUs).

    python -m pipeline serve exports/shapes-lora --port 8000                    # transformers serve, /v1/...
    python -m pipeline serve exports/shapes-merged --engine vllm --port 8000    # vllm serve where vLLM is installed

    from pipeline.serve import start_server
    with start_server("exports/shapes-lora") as server:    # a free port on 127.0.0.1, healthy when it returns
        server.url, server.model                            # http://127.0.0.1:P/v1, the served model's name

Both engines load complete models, so an adapter export is first merged into its base (16/32 bit, as `export
--mode merged` does) and cached beside the export in `<EXPORT>.merged/` (in STUDIO_HOME/serve_cache when the
export's folder is read-only); the cache is rebuilt when the adapter weights change. The served model's name is
the folder it loaded (`/v1/models` lists it). See docs/SERVING.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .errors import UserError
from .rundir import studio_path

ENGINES = ("transformers", "vllm")
MERGED_SUFFIX = ".merged"
CACHE_FILE = "serve_cache.json"
HEALTH_TIMEOUT_S = 600.0


# -- the export ----------------------------------------------------------------------------------------------------
def check_export(export_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    """(folder, studio.json) of an export; one-line UserError for anything that is not one."""
    from .inference import read_studio

    folder = Path(export_dir).expanduser()
    if not folder.is_dir():
        raise UserError("export folder not found", folder)
    folder = folder.resolve()
    if not ((folder / "adapter_config.json").is_file() or (folder / "config.json").is_file()):
        raise UserError("not an export folder (no adapter_config.json or config.json); run `python -m pipeline "
                        "export` first", folder)
    return folder, read_studio(folder)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def merged_cache_dir(export: Path) -> Path:
    """Where the merged copy of an adapter export is kept: beside it, else in STUDIO_HOME/serve_cache."""
    beside = export.with_name(export.name + MERGED_SUFFIX)
    if os.access(export.parent, os.W_OK) or beside.is_dir():
        return beside
    from .home import home_dir

    tag = hashlib.sha256(str(export).encode()).hexdigest()[:10]
    return home_dir("serve_cache") / f"{export.name}-{tag}{MERGED_SUFFIX}"


def servable_folder(export_dir: str | Path, *, device: str = "cpu", dtype: str = "auto",
                    echo: Any = None) -> Path:
    """A folder with complete weights: the export itself (merged / full) or its cached merge (adapter)."""
    from .export import PROCESSOR_PATTERNS, _copy_matching, merge_dtype

    export, studio = check_export(export_dir)
    if not (export / "adapter_config.json").is_file():
        return export
    cache = merged_cache_dir(export)
    stamp = {"adapter_sha256": _sha256(export / "adapter_model.safetensors"), "dtype": dtype}
    try:
        if json.loads((cache / CACHE_FILE).read_text(encoding="utf-8")) == stamp:
            return cache
    except (OSError, ValueError):
        pass
    from .atomic import atomic_output_dir
    from .models import load_model

    used = merge_dtype(str(studio.get("method") or "lora"), dtype, device)
    if echo:
        echo(f"merging the adapter into {studio.get('model')} ({used}) for serving -> {cache}")
    with atomic_output_dir(cache, overwrite=True) as tmp:
        model = load_model(str(studio.get("model")), dtype=used, device=device, adapter=str(export))
        model.merge_and_unload().save_pretrained(str(tmp))
        del model
        _copy_matching(export, tmp, PROCESSOR_PATTERNS)
        merged = {**studio, "mode": "merged", "dtype": used, "merged_for_serving": True}
        studio_path(tmp).write_text(json.dumps(merged, indent=2) + "\n", encoding="utf-8")
        (tmp / CACHE_FILE).write_text(json.dumps(stamp) + "\n", encoding="utf-8")
    return cache


# -- the engine command --------------------------------------------------------------------------------------------
def vllm_installed() -> bool:
    """Whether vLLM can be imported here (it is installed on GPU hosts, not by this project's requirements)."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def engine_command(engine: str, model_dir: Path, *, host: str = "127.0.0.1", port: int = 8000,
                   device: str = "auto", dtype: str = "auto") -> list[str]:
    """The server command line for `engine` serving `model_dir` (a folder with complete weights)."""
    if engine == "transformers":
        return ["transformers", "serve", str(model_dir), "--host", host, "--port", str(port), "--device", device,
                "--dtype", dtype, "--log-level", "warning"]
    if engine == "vllm":
        command = ["vllm", "serve", str(model_dir), "--host", host, "--port", str(port)]
        return command + (["--dtype", dtype] if dtype != "auto" else [])
    raise UserError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")


def _runnable(command: list[str]) -> list[str]:
    """The same command through this interpreter (no reliance on console scripts being on PATH)."""
    module = {"transformers": "transformers.cli.transformers", "vllm": "vllm.entrypoints.cli.main"}[command[0]]
    return [sys.executable, "-m", module, *command[1:]]


def child_env() -> dict[str, str]:
    """The server's environment: ours, without update checks."""
    return {**os.environ, "HF_HUB_DISABLE_UPDATE_CHECK": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


# -- a running server ----------------------------------------------------------------------------------------------
@dataclass
class Server:
    """A started engine: its process, base URL (`.../v1`), served model name and command."""

    process: subprocess.Popen[bytes]
    url: str
    model: str
    command: list[str]
    log: Path | None = None
    started_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def stop(self, grace: float = 15.0) -> int:
        """SIGINT (the engines shut down cleanly on it), then SIGTERM, then SIGKILL; returns the exit code."""
        proc = self.process
        for sig, wait in ((signal.SIGINT, grace), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(wait)
        return int(proc.returncode if proc.returncode is not None else -9)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _tail(log: Path | None, lines: int = 3) -> str:
    if log is None or not log.is_file():
        return ""
    text = [line for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    return " | ".join(text[-lines:])[-600:]


def models_listed(base_url: str, timeout: float = 5.0) -> list[str]:
    """The model ids `GET {base_url}/models` lists; raises OSError when nothing answers."""
    with urllib.request.urlopen(f"{base_url.rstrip('/')}/models", timeout=timeout) as response:
        data = json.load(response)
    return [str(item.get("id")) for item in data.get("data", []) if isinstance(item, dict)]


def wait_healthy(proc: subprocess.Popen[bytes], base_url: str, *, timeout: float = HEALTH_TIMEOUT_S,
                 log: Path | None = None) -> list[str]:
    """Poll `/v1/models` until it lists a model; UserError when the server exits or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = _tail(log)
            raise UserError(f"the server exited with code {proc.returncode} before it answered"
                            + (f": {tail}" if tail else " (see its output above)"))
        try:
            listed = models_listed(base_url, timeout=2.0)
            if listed:
                return listed
        except (OSError, ValueError):
            pass
        time.sleep(0.5)
    raise UserError(f"the server did not answer {base_url}/models within {timeout:.0f} s")


def launch(export_dir: str | Path, *, engine: str = "transformers", host: str = "127.0.0.1", port: int | None = None,
           device: str = "auto", dtype: str = "auto", log: Path | IO[bytes] | None = None,
           echo: Any = None, health_timeout: float = HEALTH_TIMEOUT_S) -> Server:
    """Merge if needed, start the engine in its own process group and wait until `/v1/models` answers."""
    if engine not in ENGINES:
        raise UserError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    check_export(export_dir)
    if engine == "transformers":
        from transformers.utils.import_utils import is_serve_available

        if not is_serve_available():
            raise UserError("transformers serve needs its serving extras: pip install -r requirements.txt "
                            "(openai, fastapi, uvicorn)")
    if engine == "vllm" and not vllm_installed():
        raise UserError("vLLM is not installed here (pip install vllm on a GPU host); use --engine transformers")
    merge_device = "cuda" if device.startswith("cuda") or (device == "auto" and _cuda()) else "cpu"
    folder = servable_folder(export_dir, device=merge_device, dtype=dtype, echo=echo)
    port = port or free_port(host if host not in ("0.0.0.0", "::") else "127.0.0.1")
    command = engine_command(engine, folder, host=host, port=port, device=device, dtype=dtype)
    if echo:
        echo(f"$ {shlex.join(command)}")
    log_path = log if isinstance(log, Path) else None
    handle: Any = open(log, "wb") if isinstance(log, Path) else log  # noqa: SIM115 - lives as long as the child
    started = time.monotonic()
    # the engine's output goes to the log, else to our stderr: our stdout carries only our own lines
    proc = subprocess.Popen(_runnable(command), stdout=handle if handle else 2,
                            stderr=subprocess.STDOUT if handle else None, env=child_env(), start_new_session=True)
    if isinstance(log, Path):
        handle.close()  # the child holds its own copy
    client_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    url = f"http://{client_host}:{port}/v1"
    server = Server(proc, url, str(folder), command, log_path)
    try:
        listed = wait_healthy(proc, url, timeout=health_timeout, log=log_path)
    except BaseException:
        server.stop(grace=5.0)
        raise
    server.model = listed[0]
    server.started_s = round(time.monotonic() - started, 1)
    return server


def _cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:  # pragma: no cover
        return False


@contextlib.contextmanager
def start_server(export_dir: str | Path, **options: Any) -> Iterator[Server]:
    """`launch` on 127.0.0.1 with the server's output in a temporary log; stopped when the block ends."""
    with tempfile.TemporaryDirectory(prefix="studio-serve-") as tmp:
        options.setdefault("log", Path(tmp) / "server.log")
        server = launch(export_dir, **options)
        try:
            yield server
        finally:
            server.stop()


def serve_forever(export_dir: str | Path, *, engine: str = "transformers", host: str = "127.0.0.1",
                  port: int = 8000, device: str = "auto", dtype: str = "auto") -> int:
    """The `serve` verb: start, report the URL, and on Ctrl-C / SIGTERM stop the server cleanly."""
    def echo(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    stopping: list[int] = []
    ready: list[bool] = []

    def on_signal(signum: int, _frame: Any) -> None:
        stopping.append(signum)
        if not ready:  # still merging or waiting for health: unwind (launch stops what it started)
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    server: Server | None = None
    try:
        server = launch(export_dir, engine=engine, host=host, port=port, device=device, dtype=dtype, echo=echo)
        ready.append(True)
        print(f"serving {server.model} with {engine} at {server.url} (ready in {server.started_s:.0f} s; "
              "Ctrl-C stops it)", flush=True)
        while not stopping and server.process.poll() is None:
            time.sleep(0.2)
        if server.process.poll() is not None and not stopping:
            raise UserError(f"the server exited with code {server.process.returncode}")
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if server is not None:
            code = server.stop()
            echo(f"stopped the server (exit code {code})")
    return 0


def remove_merged_cache(export_dir: str | Path) -> None:
    """Delete the merged copy `serve` made of an adapter export (it is rebuilt on the next `serve`)."""
    export = Path(export_dir).expanduser().resolve()
    shutil.rmtree(merged_cache_dir(export), ignore_errors=True)
