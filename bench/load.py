"""Load benchmark: N concurrent gradio_client users against a local app, for a bounded time and request count.

    python bench/load.py                          # starts `python app.py` on a free loopback port, 8 clients, 20 s
    python bench/load.py --clients 16 --duration 30 --max-requests 600 --json load.json
    python bench/load.py --url http://127.0.0.1:7860/   # an app already running on this machine
    python bench/load.py --scenario heavy --duration 60  # 3 clients run /validate back to back, 6 poll the cheap calls

Loopback only: a --url whose host is not 127.0.0.1 / localhost / ::1 is refused. Without --url the app runs with a
throw-away STUDIO_HOME and stops with the benchmark; the clock starts once its start-up work (the built-in sample,
generated in the background) is done. Before the clock starts, a small generated SAM 2 session is
converted into the dataset `load` (not timed). Each client then loops over the endpoints below (each client starts
at a different one) until the duration or the total request budget is used up; every request has a timeout.

Scenario `heavy` (the jobs goal, docs/PERFORMANCE.md): 3 clients call `/validate` back to back (each a job: queued,
run by the scheduler in its own process, followed to its end), while 6 clients alternate `/list_jobs` and
`/estimate_memory`; goal: the synchronous calls at p95 <= 0.5 s with no errors.

Prints count, p50, p95 and max latency per endpoint, whether it is a job endpoint or a synchronous one, and the
error count; the last line is `requests=<n> errors=<n> p95_max=<s> p95_sync=<s> p95_job=<s>` (goal: errors=0).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
JOB_ENDPOINTS = {"convert", "validate", "evaluate", "export"}  # each call queues a job and follows it to its end
SCENARIOS = {  # name -> [(clients, endpoints each of them loops over)]; None: --clients over every endpoint
    "mixed": None,
    "heavy": [(3, ["validate"]), (6, ["list_jobs", "estimate_memory"])],
    "poll": [(6, ["list_jobs", "estimate_memory"])],  # the same polling without heavy work: the baseline
}
LABELS = {"headers": ["object id", "label in export", "name"], "data": [], "metadata": None}


def check_loopback(url: str) -> str:
    """The URL when its host is this machine's loopback; SystemExit otherwise."""
    host = urllib.parse.urlsplit(url).hostname or ""
    if host not in LOOPBACK:
        raise SystemExit(f"error: --url must point at this machine (127.0.0.1, localhost or ::1), got {host!r}")
    return url if url.endswith("/") else url + "/"


class LocalApp:
    """`python app.py` on a free loopback port with a temporary data home."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="studio-load-"))
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 300) -> str:
        env = {**os.environ, "STUDIO_HOME": str(self.root / "home"), "TMPDIR": str(self.root),
               "GRADIO_TEMP_DIR": str(self.root / "gradio"), "GRADIO_SERVER_NAME": "127.0.0.1",
               "GRADIO_SERVER_PORT": str(self.port), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
        log = open(self.root / "app.log", "ab")  # noqa: SIM115 - kept open for the app's lifetime
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=self.root, env=env, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"error: the app exited with {self.proc.returncode} (log: {self.root / 'app.log'})")
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    if response.status == 200:
                        self.wait_for_startup_work(deadline)
                        return self.url
            except OSError:
                time.sleep(0.5)
        raise SystemExit(f"error: the app did not answer within {timeout:.0f} s")

    def wait_for_startup_work(self, deadline: float) -> None:
        """The app generates its built-in sample in the background once it serves (seconds of CPU); the benchmark
        measures the app as it runs after that, not its first half minute."""
        marker = self.root / "home" / "sample" / "sample_truth.json"
        while not marker.is_file():
            if time.monotonic() > deadline or (self.proc is not None and self.proc.poll() is not None):
                raise SystemExit(f"error: the app did not finish its start-up work (no {marker})")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)


def prepare(url: str, work: Path) -> dict[str, Any]:
    """Convert a small generated session into the dataset `load` (untimed); the files the upload endpoint uses."""
    sys.path.insert(0, str(ROOT))
    from gradio_client import Client, handle_file

    from pipeline.sample import generate_sample

    info = generate_sample(work / "session", frames=24, width=64, height=48, export_every=5, seed=1)
    client = Client(url, verbose=False, download_files=False)
    files = [str(info.demo_zips[0]), str(info.demo_videos[0])]
    client.predict([handle_file(f) for f in files], False, "load", LABELS, ["grounding"], "tiny-smolvlm", 1, True,
                   api_name="/convert")
    return {"files": files}


def endpoints(setup: dict[str, Any]) -> dict[str, Callable[[Any], Any]]:
    """Name -> one request with a client: read-mostly calls of every tab, an upload among them."""
    from gradio_client import handle_file

    return {
        "list_jobs": lambda c: c.predict(api_name="/list_jobs"),
        "list_experiments": lambda c: c.predict("", "", "", "created", False, api_name="/list_experiments"),
        "estimate_memory": lambda c: c.predict("tiny-smolvlm", "quick_test", "", "load", api_name="/estimate_memory"),
        "validate": lambda c: c.predict("load", api_name="/validate"),
        "detect_format": lambda c: c.predict([handle_file(f) for f in setup["files"]], False,
                                             api_name="/detect_format"),
    }


def run_clients(url: str, calls: dict[str, Callable[[Any], Any]], clients: int, duration: float,
                max_requests: int, timeout: float, groups: list[tuple[int, list[str]]] | None = None,
                ) -> dict[str, Any]:
    """Every client loops over its calls until the time or the request budget is spent; latencies and errors.

    `groups`: [(clients, endpoint names)] (a scenario); None: `clients` clients over every endpoint.
    """
    from gradio_client import Client

    names = list(calls)
    plan = [names for _ in range(clients)] if groups is None else [
        list(group) for count, group in groups for _ in range(count)]
    latencies: dict[str, list[float]] = {name: [] for name in names}
    errors: dict[str, list[str]] = {name: [] for name in names}
    lock = threading.Lock()
    budget = [max_requests]
    deadline = time.monotonic() + duration

    def take() -> bool:
        with lock:
            if budget[0] <= 0 or time.monotonic() >= deadline:
                return False
            budget[0] -= 1
            return True

    def client_loop(index: int) -> None:
        client = Client(url, verbose=False, download_files=False)
        mine = plan[index]
        k = index
        while take():
            name = mine[k % len(mine)]
            k += 1
            started = time.monotonic()
            try:
                _call(calls[name], client, timeout)
                with lock:
                    latencies[name].append(time.monotonic() - started)
            except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
                with lock:
                    errors[name].append(f"{type(exc).__name__}: {str(exc)[:200]}")

    threads = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(len(plan))]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=duration + timeout + 60)
    return {"latencies": latencies, "errors": errors, "wall_s": round(time.monotonic() - began, 2)}


def _call(call: Callable[[Any], Any], client: Any, timeout: float) -> None:
    """One request with a timeout (a hung request counts as an error)."""
    done: dict[str, Any] = {}

    def target() -> None:
        try:
            call(client)
            done["ok"] = True
        except Exception as exc:  # noqa: BLE001 - re-raised in the caller's thread
            done["error"] = exc

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise TimeoutError(f"no answer within {timeout:.0f} s")
    if "error" in done:
        raise done["error"]


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; 0 for no values."""
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(sorted(values), n=100, method="inclusive")[min(98, max(0, int(q) - 1))]


def summarize(result: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for name, values in result["latencies"].items():
        if not values and not result["errors"][name]:
            continue  # not part of this scenario
        rows.append({"endpoint": name, "kind": "job" if name in JOB_ENDPOINTS else "sync",
                     "requests": len(values) + len(result["errors"][name]),
                     "errors": len(result["errors"][name]), "p50_s": round(percentile(values, 50), 3),
                     "p95_s": round(percentile(values, 95), 3), "max_s": round(max(values, default=0.0), 3)})
    return {"settings": settings, "wall_s": result["wall_s"], "endpoints": rows,
            "requests": sum(r["requests"] for r in rows), "errors": sum(r["errors"] for r in rows),
            "error_samples": [e for errs in result["errors"].values() for e in errs][:10]}


def print_table(summary: dict[str, Any]) -> None:
    s = summary["settings"]
    print(f"scenario {s['scenario']}: {s['clients']} clients, {summary['wall_s']} s (limit {s['duration']} s, "
          f"{s['max_requests']} requests); load average before {s['load_before']}, after {summary['load_after']}")
    print(f"{'endpoint':<18} {'kind':<5} {'requests':>8} {'errors':>6} {'p50 s':>8} {'p95 s':>8} {'max s':>8}")
    for row in summary["endpoints"]:
        print(f"{row['endpoint']:<18} {row['kind']:<5} {row['requests']:>8} {row['errors']:>6} {row['p50_s']:>8.3f} "
              f"{row['p95_s']:>8.3f} {row['max_s']:>8.3f}")
    for sample in summary["error_samples"]:
        print(f"  error: {sample}")
    p95 = max((r["p95_s"] for r in summary["endpoints"]), default=0.0)
    sync = max((r["p95_s"] for r in summary["endpoints"] if r["kind"] == "sync"), default=0.0)
    job = max((r["p95_s"] for r in summary["endpoints"] if r["kind"] == "job"), default=0.0)
    print(f"requests={summary['requests']} errors={summary['errors']} p95_max={p95:.3f} p95_sync={sync:.3f} "
          f"p95_job={job:.3f}")


def _load() -> str:
    """The 1, 5 and 15 minute load averages (other work on the machine skews latencies; report them alongside)."""
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="an app already running on this machine (default: start one)")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="mixed",
                        help="mixed: --clients over every endpoint (default); heavy: 3 clients validating back to "
                             "back, 6 polling /list_jobs and /estimate_memory; poll: only the 6 polling clients")
    parser.add_argument("--clients", type=int, default=8, help="concurrent gradio_client users (default 8)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load (default 20)")
    parser.add_argument("--max-requests", type=int, default=400, help="total request budget (default 400)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds before a request counts as failed")
    parser.add_argument("--json", metavar="FILE", help="also write the summary as JSON")
    args = parser.parse_args(argv)
    if not (1 <= args.clients <= 64 and 0 < args.duration <= 600 and 1 <= args.max_requests <= 10_000):
        raise SystemExit("error: --clients 1..64, --duration up to 600 s, --max-requests 1..10000")
    app = None if args.url else LocalApp()
    try:
        url = check_loopback(args.url) if args.url else app.start()
        with tempfile.TemporaryDirectory(prefix="studio-load-input-") as work:
            setup = prepare(url, Path(work))
            groups = SCENARIOS[args.scenario]
            load_before = _load()
            result = run_clients(url, endpoints(setup), args.clients, args.duration, args.max_requests, args.timeout,
                                 groups)
        clients = args.clients if groups is None else sum(count for count, _ in groups)
        settings = {"scenario": args.scenario, "clients": clients, "duration": args.duration,
                    "max_requests": args.max_requests, "load_before": load_before}
        summary = summarize(result, settings)
        summary["load_after"] = _load()
    finally:
        if app is not None:
            app.stop()
    print_table(summary)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return 0 if summary["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
