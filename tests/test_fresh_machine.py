"""What a new user meets on a new machine: every module imports from the pinned requirements, the app serves its page
plain and as a Hugging Face Space, and our own words come first in the CLI's output (no third-party noise)."""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "studio_app")


def all_modules() -> list[str]:
    """Every module of the project's packages, found on disk (so a new module is covered without editing this)."""
    names = list(PACKAGES)
    for package in PACKAGES:
        for info in pkgutil.walk_packages([str(ROOT / package)], prefix=f"{package}."):
            if not info.name.endswith("__main__"):
                names.append(info.name)
    return sorted(names)


def run_cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), STUDIO_HOME=str(home), PYTHONWARNINGS="default")
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=home, env=env, capture_output=True,
                          text=True, timeout=300)


def test_every_module_imports_from_the_pinned_requirements() -> None:
    """In CI's fresh virtual environment this fails for any import that requirements.txt does not install."""
    modules = all_modules()
    assert {"pipeline.cli", "pipeline.quiet", "studio_app.ui"} <= set(modules)
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\nprint('imported')"
    result = subprocess.run([sys.executable, "-c", code, *modules], cwd=ROOT, capture_output=True, text=True,
                            timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "imported"


def test_help_prints_only_our_usage(tmp_path: Path) -> None:
    result = run_cli("--help", home=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("usage: python -m pipeline")
    assert result.stderr == ""


@pytest.mark.slow
def test_an_error_is_one_line_of_ours_even_after_torch_and_bitsandbytes_load(tmp_path: Path) -> None:
    """`train` validates on this machine (torch, transformers and bitsandbytes load), then refuses the data folder:
    the only thing printed is our error line, and bitsandbytes' kernel notice sits in the debug log."""
    result = run_cli("train", "--preset", "quick_test", "--model", "tiny-smolvlm", "--data", str(tmp_path / "none"),
                     "--out", str(tmp_path / "run"), home=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"error: data.path: {tmp_path / 'none'} is not a folder"]
    assert result.stdout == ""
    assert not (tmp_path / "run").exists()
    debug_log = tmp_path / "logs" / "debug.log"
    if debug_log.exists():
        assert "Traceback" not in debug_log.read_text()


def test_bad_input_to_convert_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    result = run_cli("convert", str(bad), "--out", str(tmp_path / "ds"), home=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "broken.json" in lines[0]
    assert not (tmp_path / "ds").exists()


def test_quiet_routes_third_party_logs_and_warnings_to_the_debug_log(tmp_path: Path) -> None:
    code = ("import logging, warnings\nfrom pipeline import quiet\nquiet.install()\n"
            "logging.getLogger('bitsandbytes.backends.cpu.ops').warning('kernel notice')\n"
            "warnings.warn('a FutureWarning from a library', FutureWarning)\nprint('done')")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, PYTHONPATH=str(ROOT), STUDIO_HOME=str(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("done\n", "")
    log = (tmp_path / "logs" / "debug.log").read_text()
    assert "kernel notice" in log and "a FutureWarning from a library" in log


@pytest.mark.slow
@pytest.mark.parametrize("space", [False, True], ids=["plain", "space"])
def test_python_app_serves_the_page(tmp_path: Path, space: bool) -> None:
    """`python app.py` on the pinned install: plain, and with every variable a Space sets for `hf_oauth: true`
    (gradio then needs authlib and itsdangerous, the `oauth` extra)."""
    from hubstandin import HubStandIn
    from reliability.appserver import AppServer

    with HubStandIn({}) as provider:
        env = {"SYSTEM": "spaces", "SPACE_ID": "alice/sam2-vlm-studio", "SPACE_HOST": "alice-sam2-vlm-studio.hf.space",
               "OAUTH_CLIENT_ID": "studio-client", "OAUTH_CLIENT_SECRET": "client-secret",
               "OAUTH_SCOPES": "openid profile write-repos", "OPENID_PROVIDER_URL": provider.endpoint} if space else {}
        server = AppServer(tmp_path, **env)
        try:
            server.start()
            with urllib.request.urlopen(server.url, timeout=30) as response:
                page = response.read().decode("utf-8", "replace")
                status = response.status
        finally:
            server.stop()
    assert status == 200 and "SAM2 VLM Studio" in page
    log = server.log_text()
    # On a real Space the platform installs `spaces`, whose reload server gradio starts in a thread; without it that
    # thread alone fails (gradio's own frames). Nothing of ours may fail, and no third-party notice is printed.
    assert not [line for line in log.splitlines() if "/pipeline/" in line or "/studio_app/" in line]
    assert "kernels-community" not in log and "SAM2 VLM Studio ready" in log
