"""The job side of a step job (`python -m pipeline step JOB`): run JOB/request.json, report, write JOB/result.json.

Progress goes to JOB/progress.jsonl as run-folder events (each with the next `seq`), so the watchers of training
jobs follow a step job unchanged: `start`, then `progress` events from every tqdm bar the step opens (`stage`,
`done`/`total` also as `step`/`total_steps`, `rate`, `elapsed_s`, `eta_s`, at most two a second per bar), then `end`
(or `error` + `end`). Cancel is RUN/STOP or SIGTERM: the step stops where it is, its output is never half-written
(every step writes through `atomic.atomic_output_dir`; leftovers of a killed attempt are removed on the next one).
Steps writing the same output wait for each other (an flock per output under STUDIO_HOME/jobs/.locks).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import UserError
from .rundir import eval_path, last_event, progress_path, stop_requested
from .steps import jobs_root, read_request, write_result

EMIT_EVERY_S = 0.5


class StepCancelled(BaseException):
    """Raised in the step's main thread by SIGTERM or RUN/STOP (a BaseException: `except Exception` lets it pass)."""


class EventWriter:
    """Appends events to JOB/progress.jsonl synchronously, each with the next `seq` (continuing an earlier attempt)."""

    def __init__(self, job_dir: str | Path) -> None:
        self.path = progress_path(job_dir)
        last = last_event(self.path)
        self.seq = int(last["seq"]) if isinstance(last.get("seq"), int) else 0
        self._lock = threading.Lock()

    def emit(self, event: dict[str, Any]) -> None:
        with self._lock:
            self.seq += 1
            line = json.dumps({"seq": self.seq, "time": round(time.time(), 3), **event}, default=str)
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")


class _Nowhere:
    """A text stream that drops what the bars print (their state goes to progress.jsonl instead)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def _install_progress_bars(writer: EventWriter) -> None:
    """Every tqdm bar of this process reports to progress.jsonl (bars print nowhere; the log stays readable)."""
    import tqdm
    import tqdm.auto
    import tqdm.std

    base = tqdm.std.tqdm
    sink = _Nowhere()

    class EventBar(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"], kwargs["file"] = False, sink
            self._emitted = 0.0
            super().__init__(*args, **kwargs)
            self._emit(force=True)

        def update(self, n: float | None = 1) -> bool | None:
            shown = super().update(n)
            self._emit()
            return shown

        def close(self) -> None:
            if not getattr(self, "_closed_event", False):
                self._closed_event = True
                self._emit(force=True)
            super().close()

        def _emit(self, force: bool = False) -> None:
            if stop_requested(writer.path.parent):
                raise StepCancelled("stop requested")
            now = time.monotonic()
            if not force and now - self._emitted < EMIT_EVERY_S:
                return
            self._emitted = now
            elapsed = time.time() - self.start_t
            done, total = float(self.n), float(self.total) if self.total else None
            rate = done / elapsed if elapsed > 0 and done > 0 else None
            eta = (total - done) / rate if rate and total is not None and total >= done else None
            writer.emit({"event": "progress", "stage": self.desc or "working", "done": int(done),
                         "total": int(total) if total is not None else None, "unit": self.unit,
                         "step": int(done), "total_steps": int(total) if total is not None else None,
                         "rate": round(rate, 3) if rate else None, "elapsed_s": round(elapsed, 2),
                         "eta_s": round(eta, 1) if eta is not None else None})

    for module in (tqdm, tqdm.std, tqdm.auto):
        module.tqdm = EventBar  # type: ignore[attr-defined, misc]


def _on_sigterm(signum: int, frame: Any) -> None:
    raise StepCancelled(f"signal {signum}")


def _watch_stop(job_dir: Path, stop: threading.Event) -> None:
    """RUN/STOP from a cancel: SIGTERM to this process (the main thread raises StepCancelled where it is)."""
    while not stop.wait(0.5):
        if stop_requested(job_dir):
            os.kill(os.getpid(), signal.SIGTERM)
            return


@contextmanager
def output_lock(output: str | Path) -> Iterator[None]:
    """An flock per output folder: two steps writing one output run one after the other."""
    import fcntl

    folder = jobs_root() / ".locks"
    folder.mkdir(exist_ok=True)
    target = Path(output).expanduser().resolve()
    fd = os.open(folder / (hashlib.sha1(str(target).encode()).hexdigest()[:20] + ".lock"), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        for stale in target.parent.glob(f".{target.name}.tmp-*"):  # a killed attempt's half-written output
            shutil.rmtree(stale, ignore_errors=True)
        yield
    finally:
        os.close(fd)


# -- the steps ------------------------------------------------------------------------------------------------
def _convert(params: dict[str, Any]) -> dict[str, Any]:
    from . import service
    from .home import home_dir

    name = service.check_name(params["name"], "dataset name")
    if params.get("sample_options") and not service.SAMPLE_OPTIONS:
        service.SAMPLE_OPTIONS.update(params["sample_options"])  # the sample the app would have generated
    with output_lock(home_dir("datasets") / name):
        labels = {int(k): v for k, v in (params.get("labels") or {}).items()}
        return service.convert_inputs(params.get("files") or [], name, sample=bool(params.get("sample")),
                                      labels=labels, tasks=params.get("tasks") or service.DEFAULT_TASKS,
                                      family=params.get("family") or service.DEFAULT_MODEL,
                                      every=int(params.get("every") or 1), overwrite=bool(params.get("overwrite")),
                                      max_frames=params.get("max_frames") or None, seed=int(params.get("seed") or 0),
                                      include_auto=bool(params.get("include_auto")),
                                      allow_overlay_frames=bool(params.get("allow_overlay_frames")), progress=True,
                                      **_clip_params(params))


def _clip_params(params: dict[str, Any]) -> dict[str, Any]:
    """The video-task and --drop-fragments options of a convert job (a job queued before they existed: defaults)."""
    from .clips import DEFAULT_CLIP_FRAMES

    frames = params.get("clip_frames")
    return {"clip_frames": DEFAULT_CLIP_FRAMES if frames is None else frames, "clip_stride": params.get("clip_stride"),
            "drop_fragments": bool(params.get("drop_fragments")), "keep_share": params.get("keep_share")}


def _validate(params: dict[str, Any]) -> dict[str, Any]:
    from . import service
    from .home import home_dir

    name = service.check_name(params["dataset"], "dataset")
    with output_lock(home_dir("reports") / name):
        return service.validate_dataset(name)


def _evaluate(params: dict[str, Any]) -> dict[str, Any]:
    from . import service

    run = Path(params["run_dir"])
    with output_lock(eval_path(run, str(params.get("split") or "test"))):
        return service.evaluate_run_folder(run, params["run_id"], params.get("checkpoint") or "best",
                                           params.get("split") or "test", params.get("limit"))


def _export(params: dict[str, Any]) -> dict[str, Any]:
    from . import service

    run = Path(params["run_dir"])
    with output_lock(service.export_dir(run, params.get("mode") or "adapter")):
        return service.export_folder(run, params.get("mode") or "adapter", params.get("checkpoint") or "best",
                                     progress=True)


RUNNERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "convert": _convert, "validate": _validate, "evaluate": _evaluate, "export": _export}


def _run_cli(argv: list[str]) -> dict[str, Any]:
    """A verb's command line (`--submit` from the CLI), run in this process; its exit code is the result."""
    from .cli import _command_module, build_parser

    args = build_parser().parse_args(argv)
    module = _command_module(args.verb)
    if module is None:
        raise UserError(f"'{args.verb}' is not implemented in this version")
    return {"exit_code": int(module.run(args) or 0), "argv": argv}


AUTOGROUP = Path("/proc/self/autogroup")


def _lower_priority() -> None:
    """Batch work yields the CPU to the app's requests: nice STUDIO_STEP_NICE (default 10; 0 keeps the priority)."""
    try:
        nice = int(os.environ.get("STUDIO_STEP_NICE", "10"))
    except ValueError:
        raise UserError(f"STUDIO_STEP_NICE must be a whole number, got {os.environ['STUDIO_STEP_NICE']!r}") from None
    if nice <= 0:
        return
    try:
        os.nice(nice)
    except OSError:
        pass  # not allowed here: run at the inherited priority
    _nice_autogroup(nice)


def _nice_autogroup(nice: int) -> None:
    """Linux with autogroup scheduling shares the CPU between sessions first, and a job runs in a session of its
    own (setsid): a process's nice then only ranks it inside that session, against nothing. The session's own nice
    (/proc/self/autogroup) is what makes it yield to the app's session."""
    if not AUTOGROUP.exists():
        return
    try:
        AUTOGROUP.write_text(str(nice))
    except OSError:
        pass  # no autogroup scheduling here, or not allowed: the process nice above is all there is


def run_step(job_dir: str | Path) -> int:
    """Run one step job to its end; 0 with an `end` event in every handled outcome, 1 for an unexpected error."""
    folder = Path(job_dir).resolve()
    _lower_priority()
    request = read_request(folder)
    kind = request["kind"]
    writer = EventWriter(folder)
    _install_progress_bars(writer)
    signal.signal(signal.SIGTERM, _on_sigterm)
    stop = threading.Event()
    threading.Thread(target=_watch_stop, args=(folder, stop), name="step-stop", daemon=True).start()
    started = time.monotonic()
    writer.emit({"event": "start", "kind": kind, "pid": os.getpid()})
    try:
        result = _run_cli(request["cli"]) if request.get("cli") else RUNNERS[kind](request.get("params") or {})
        result = {"kind": kind, **result, "seconds": round(time.monotonic() - started, 3)}
        write_result(folder, result)
    except StepCancelled as exc:
        writer.emit({"event": "end", "status": "cancelled", "message": f"cancelled ({exc})"})
        return 0
    except UserError as exc:
        writer.emit({"event": "error", "message": str(exc)})
        writer.emit({"event": "end", "status": "failed", "error": str(exc)})
        return 0
    except Exception as exc:
        writer.emit({"event": "error", "message": f"{type(exc).__name__}: {exc}"})
        writer.emit({"event": "end", "status": "failed", "error": f"{type(exc).__name__}: {exc}"})
        raise
    finally:
        stop.set()
    writer.emit({"event": "end", "status": "succeeded", "elapsed_s": round(time.monotonic() - started, 2)})
    return 0
