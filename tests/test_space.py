"""The inference Space of an export: `export --space` writes it, `push --space` uploads it to the Hub stand-in, and the
pushed copy starts (a real Gradio server on 127.0.0.1, a free port) and answers through `gradio_client` exactly like
the export run in-process. The export is a real LoRA adapter (2-step run), loaded on its base by the Space."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import export_runs
from hubstandin import HubStandIn

from pipeline.cli import main
from pipeline.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_writeTOKENforALICE0123456789abcdef"
PROMPT = "Find every circle in the image."


@pytest.fixture(scope="module")
def space(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(export folder, its Space folder, the dataset) written by the export verb with --space."""
    base = export_runs.base_dir(tmp_path_factory)
    run = export_runs.trained_run(base, "lora")
    out = tmp_path_factory.mktemp("space") / "shapes-lora"
    assert main(["export", str(run), "--out", str(out), "--repo-id", "alice/shapes-lora", "--space"]) == 0
    return out, out.with_name("shapes-lora-space"), export_runs.dataset(base)


def test_export_space_writes_app_requirements_and_card(space: tuple[Path, Path, Path]) -> None:
    import yaml

    export, folder, _ = space
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "app.py", "requirements.txt", "studio_coords.py"]
    front = yaml.safe_load((folder / "README.md").read_text().split("---")[1])
    assert front["sdk"] == "gradio" and front["app_file"] == "app.py" and front["models"] == ["alice/shapes-lora"]
    pins = {name.split("[")[0]: version for name, version in (  # gradio[oauth]==X pins gradio
        line.split("==") for line in (ROOT / "requirements.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#"))}
    wanted = dict(line.split("==") for line in (folder / "requirements.txt").read_text().splitlines())
    assert {"gradio", "transformers", "peft", "torch"} <= set(wanted)
    assert all(pins[name].split()[0] == version for name, version in wanted.items())
    assert front["sdk_version"] == pins["gradio"].split()[0]
    app = (folder / "app.py").read_text()
    assert 'os.environ.get("STUDIO_SPACE_MODEL", "alice/shapes-lora")' in app and f'PROMPT = "{PROMPT}"' in app
    compile(app, "app.py", "exec")
    compile((folder / "studio_coords.py").read_text(), "studio_coords.py", "exec")
    from pipeline.leaks import find_leaks

    assert find_leaks(folder, extra_paths=[export.parent]) == []


def test_push_space_refuses_a_folder_that_is_not_a_space(space: tuple[Path, Path, Path]) -> None:
    from pipeline.space import check_space_folder

    with pytest.raises(UserError, match="not a Space folder"):
        check_space_folder(space[0])


def _wait_up(url: str, proc: subprocess.Popen[str], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the Space did not answer {url} in {timeout} s")


@pytest.mark.slow
def test_pushed_space_starts_and_answers_like_the_export(space: tuple[Path, Path, Path], tmp_path: Path,
                                                         studio_home: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from gradio_client import Client, handle_file
    from huggingface_hub import constants

    from pipeline.serve import free_port

    export, folder, dataset = space
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("STUDIO_TEST_HUB_TOKEN", TOKEN)
    with HubStandIn({TOKEN: ("alice", "write")}) as hub:
        assert main(["push", str(folder), "--space", "alice/shapes-lora-demo", "--token-env", "STUDIO_TEST_HUB_TOKEN",
                     "--endpoint", hub.endpoint]) == 0
        assert capsys.readouterr().out.strip().endswith("alice/shapes-lora-demo")
        repo = hub.repos["alice/shapes-lora-demo"]
        assert (repo.repo_type, repo.sdk, repo.private) == ("space", "gradio", True)
        assert repo.files == {p.name: p.read_bytes() for p in folder.iterdir()}
    pushed = tmp_path / "pushed"
    pushed.mkdir()
    for name, data in repo.files.items():
        (pushed / name).write_bytes(data)

    port = free_port()
    env = {**os.environ, "STUDIO_SPACE_MODEL": str(export), "GRADIO_SERVER_NAME": "127.0.0.1",
           "GRADIO_SERVER_PORT": str(port), "PYTHONPATH": str(ROOT), "STUDIO_HOME": str(studio_home),
           "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=pushed, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        _wait_up(f"http://127.0.0.1:{port}/", proc)
        image = dataset / "images" / "vid" / "000003.jpg"
        drawn, answer, boxes = Client(f"http://127.0.0.1:{port}/", verbose=False).predict(
            handle_file(str(image)), PROMPT, api_name="/predict")
    finally:
        proc.terminate()
        proc.wait(30)
    from PIL import Image

    from pipeline.inference import load_export, predict

    expected = predict(load_export(export, device="cpu"), image, PROMPT)
    assert answer == expected["answer"] and boxes == expected["boxes"]
    with Image.open(drawn) as picture, Image.open(image) as original:
        assert picture.size == original.size
