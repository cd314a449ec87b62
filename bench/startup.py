"""Benchmark: how long `python app.py` takes until its page answers, against a bare Gradio app on the same machine.

    python bench/startup.py [--rounds 3]

Each round starts, in a fresh STUDIO_HOME, (a) `python app.py` and (b) a one-textbox `gr.Blocks` app launched the
same way (the baseline: Python, torch-free Gradio import and server start), and times each from process start to
the first HTTP 200 on `/`. Rounds alternate the two so that machine noise hits both. The last line is
`studio_s=<median> gradio_s=<median> ratio=<studio / gradio> goal_s=15 goals=met|missed`.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_SECONDS = 15.0
BARE_APP = ("import gradio as gr\n"
            "with gr.Blocks() as demo:\n"
            "    gr.Textbox()\n"
            "demo.launch(server_name='127.0.0.1', server_port=int(__import__('os').environ['GRADIO_SERVER_PORT']))\n")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def time_until_served(command: list[str], home: Path, timeout: float = 120.0) -> float:
    """Seconds from starting `command` until http://127.0.0.1:PORT/ answers 200; the process is stopped after."""
    port = free_port()
    env = {**os.environ, "STUDIO_HOME": str(home), "GRADIO_SERVER_PORT": str(port), "HF_HUB_OFFLINE": "1",
           "GRADIO_ANALYTICS_ENABLED": "False"}
    started = time.monotonic()
    child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        while time.monotonic() - started < timeout:
            if child.poll() is not None:
                raise SystemExit(f"error: {' '.join(command)} exited with code {child.returncode} before serving")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    if response.status == 200:
                        return time.monotonic() - started
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
        raise SystemExit(f"error: {' '.join(command)} did not serve within {timeout:.0f} s")
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    studio, bare = [], []
    for round_no in range(1, args.rounds + 1):
        with tempfile.TemporaryDirectory(prefix="startup-") as tmp:
            studio.append(time_until_served([sys.executable, "app.py"], Path(tmp) / "studio"))
            bare.append(time_until_served([sys.executable, "-c", BARE_APP], Path(tmp) / "bare"))
        print(f"round {round_no}: app.py {studio[-1]:.1f} s, bare gradio {bare[-1]:.1f} s", flush=True)
    studio_s, gradio_s = statistics.median(studio), statistics.median(bare)
    verdict = "met" if studio_s <= GOAL_SECONDS else "missed"
    print(f"studio_s={studio_s:.1f} gradio_s={gradio_s:.1f} ratio={studio_s / gradio_s:.2f} goal_s={GOAL_SECONDS:.0f} "
          f"goals={verdict}")


if __name__ == "__main__":
    main()
