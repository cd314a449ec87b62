"""Load: bench/load.py drives concurrent gradio_client users against the live app for a bounded time and request
count, and refuses any server that is not on this machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .harness import ROOT, child_env

LOAD = ROOT / "bench" / "load.py"


def test_load_benchmark_refuses_a_remote_server(tmp_path: Path) -> None:
    """--url with a non-loopback host exits at once with one error line; no request is made."""
    proc = subprocess.run([sys.executable, str(LOAD), "--url", "http://example.com:7860/", "--duration", "1"],
                          capture_output=True, text=True, timeout=60, env=child_env(tmp_path, tmp_path))
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip() == "error: --url must point at this machine (127.0.0.1, localhost or ::1), got " \
                                  "'example.com'"


@pytest.mark.slow
def test_load_benchmark_runs_without_errors(live_app: Any, tmp_path: Path) -> None:
    """4 clients for 8 s (at most 40 requests) on the live app: zero errors, every endpoint answered, p50 <= p95,
    the request budget respected, and the summary line printed last."""
    out = tmp_path / "load.json"
    proc = subprocess.run([sys.executable, str(LOAD), "--url", live_app.url, "--clients", "4", "--duration", "8",
                           "--max-requests", "40", "--json", str(out)], capture_output=True, text=True, timeout=600,
                          env=child_env(live_app.home, tmp_path))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = json.loads(out.read_text())
    assert summary["errors"] == 0 and 0 < summary["requests"] <= 40
    assert all(row["requests"] >= 1 and row["p50_s"] <= row["p95_s"] <= row["max_s"] for row in summary["endpoints"])
    assert proc.stdout.strip().splitlines()[-1].startswith(f"requests={summary['requests']} errors=0 p95_max=")
