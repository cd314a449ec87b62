"""Deploy bundle: deploy_config.yaml against the estimator, Dockerfile consistency, the example and the HTTP service."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from helpers import export_runs

from pipeline.inference import DEPLOY_ENV, deploy_config, draw_boxes

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
EXAMPLE_STUDIO = {"model": "smolvlm-256m", "mode": "adapter", "base_model": "HuggingFaceTB/SmolVLM-256M-Instruct",
                  "base_revision": None, "convention": "json"}


def test_deploy_config_matches_the_memory_estimator() -> None:
    from pipeline.inference import inference_requirements

    config = yaml.safe_load((DEPLOY / "deploy_config.yaml").read_text())
    assert config == deploy_config(EXAMPLE_STUDIO)  # regenerated, not hand-edited
    hardware = config["hardware"]
    assert hardware == inference_requirements("smolvlm-256m", "bfloat16")
    assert hardware["device"] == "cuda" and 0 < hardware["gpu_memory_gib"] < hardware["cpu_ram_gib"]
    big = inference_requirements("qwen2.5-vl-7b", "bfloat16")
    assert big["gpu_memory_gib"] > 8.29e9 * 2 / 2**30 > hardware["gpu_memory_gib"]  # at least the 16-bit weights
    assert inference_requirements("tiny-smolvlm", "float32")["gpu_memory_gib"] == 0  # CPU is enough
    assert set(config["environment"]) == set(DEPLOY_ENV)
    assert "HF_TOKEN" in config["secrets"] and not any("hf_" in str(v) for v in config["environment"].values())


def test_serve_and_dockerfile_use_the_documented_environment() -> None:
    serve = (DEPLOY / "serve.py").read_text()
    read = set(re.findall(r'os\.environ\.get\("([A-Z_]+)"', serve))
    assert read == {name for name in DEPLOY_ENV if name not in ("HF_HOME", "STUDIO_HOME")}
    docker = (DEPLOY / "Dockerfile").read_text()
    assert docker.startswith("#") and "\nFROM python:3.11" in docker
    assert re.search(r'CMD \["python", "deploy/serve.py"\]', docker) and (DEPLOY / "serve.py").is_file()
    for source in re.findall(r"^COPY (\S+) ", docker, re.M):
        assert (ROOT / source).exists(), source
    env_block = " ".join(re.findall(r"^ENV (.+?)(?<!\\)$", docker, re.M | re.S))
    for name, (default, _) in DEPLOY_ENV.items():
        assert f"{name}={default}" in env_block, name
    assert "HF_TOKEN=" not in docker  # a token is passed at run time, never baked in


def test_deploy_requirements_pin_the_project_versions() -> None:
    def pins(path: Path) -> dict[str, str]:
        lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
        return dict(line.split("==") for line in lines if "==" in line)

    project, deploy = pins(ROOT / "requirements.txt"), pins(DEPLOY / "requirements.txt")
    assert deploy and all(project.get(name) == version for name, version in deploy.items())
    assert "torch==" + project["torch"] in (DEPLOY / "Dockerfile").read_text()
    assert not {"gradio", "celery", "bitsandbytes"} & set(deploy)


def test_draw_boxes_marks_the_box_edges(tmp_path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (64, 48), (0, 0, 0)).save(tmp_path / "in.png")
    out = draw_boxes(tmp_path / "in.png", [{"label": "circle", "box": [10, 8, 30, 40]}], tmp_path / "out.png")
    with Image.open(out) as image:
        assert image.size == (64, 48)
        assert image.getpixel((10, 20)) == (255, 40, 40) and image.getpixel((29, 20)) == (255, 40, 40)
        assert image.getpixel((20, 24)) == (0, 0, 0) and image.getpixel((50, 5)) == (0, 0, 0)


@pytest.fixture(scope="session")
def adapter_export(tmp_path_factory: pytest.TempPathFactory):
    return export_runs.exported(export_runs.base_dir(tmp_path_factory), "lora", "adapter")


@pytest.mark.slow
def test_inference_example_runs_on_a_tiny_export(adapter_export, tmp_path: Path, studio_home: Path) -> None:
    from PIL import Image

    dataset = export_runs.dataset(adapter_export.out_dir.parents[1])
    image = dataset / "images" / "vid" / "000003.jpg"
    env = {**os.environ, "STUDIO_HOME": str(studio_home), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(DEPLOY / "inference_example.py"), str(adapter_export.out_dir),
                           str(image), "--max-new-tokens", "12"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == "prompt: Find every circle in the image."
    assert lines[1].startswith("answer: ") and len(lines[1]) > len("answer: ")
    boxes = json.loads(next(line for line in lines if line.startswith("boxes: [")).removeprefix("boxes: "))
    assert isinstance(boxes, list)
    with Image.open(tmp_path / "000003_boxes.png") as saved, Image.open(image) as original:
        assert saved.size == original.size
    assert lines[-1] == "saved: 000003_boxes.png"
    bad = subprocess.run([sys.executable, str(DEPLOY / "inference_example.py"), str(tmp_path), str(image)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: ") and "no studio.json" in bad.stderr


@pytest.mark.slow
def test_export_carries_its_deploy_config(adapter_export) -> None:
    config = yaml.safe_load((adapter_export.out_dir / "deploy_config.yaml").read_text())
    assert config["model"] == {"mode": "adapter", "base_model": "tiny-smolvlm", "base_revision": None,
                               "convention": "json"}
    assert config["hardware"]["model"] == "tiny-smolvlm" and config["hardware"]["device"] == "cpu"


@pytest.mark.slow
def test_serve_answers_health_and_predict(adapter_export) -> None:
    sys.path.insert(0, str(DEPLOY))
    try:
        import serve
    finally:
        sys.path.remove(str(DEPLOY))
    from pipeline.inference import load_export

    loaded = load_export(adapter_export.out_dir, device="cpu")
    server = serve.make_server(loaded, "127.0.0.1", 0, max_new_tokens=8)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=60) as response:
            assert json.load(response) == {"status": "ok", "model": "tiny-smolvlm", "mode": "adapter",
                                           "convention": "json"}
        from PIL import Image

        buffer = io.BytesIO()
        Image.new("RGB", (80, 60), (30, 30, 30)).save(buffer, format="PNG")
        body = json.dumps({"image": base64.b64encode(buffer.getvalue()).decode(), "prompt": "Detect square."})
        request = urllib.request.Request(f"{url}/predict", data=body.encode(), method="POST")
        with urllib.request.urlopen(request, timeout=120) as response:
            result = json.load(response)
        assert result["prompt"] == "Detect square." and isinstance(result["answer"], str)
        assert (result["width"], result["height"]) == (80, 60) and isinstance(result["boxes"], list)
        assert result["parse_error"] is None or result["boxes"] == []
        bad = urllib.request.Request(f"{url}/predict", data=b'{"image": "not base64!"}', method="POST")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(bad, timeout=60)
        assert info.value.code == 400 and "error" in json.loads(info.value.read())
    finally:
        server.shutdown()
        server.server_close()
