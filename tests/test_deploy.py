"""Deploy bundle: deploy_config.yaml against the estimator, the Dockerfiles and compose file of the OpenAI-API
server (the example client and the servers themselves are tested in test_serve.py)."""

from __future__ import annotations

import re
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


def test_dockerfiles_serve_with_the_documented_environment() -> None:
    assert not (DEPLOY / "serve.py").exists()  # the hand-written server is gone: real engines serve
    for name, engine in (("Dockerfile", ""), ("Dockerfile.vllm", "--engine vllm")):
        docker = (DEPLOY / name).read_text()
        assert docker.startswith("#") and "\nFROM " in docker, name
        command = re.search(r'^(?:CMD|ENTRYPOINT) \["sh", "-c", "exec (.+)"\]$', docker, re.M)
        assert command and "-m pipeline serve \\\"$EXPORT_DIR\\\"" in command.group(1) and engine in command.group(1)
        for source in re.findall(r"^COPY (\S+) ", docker, re.M):
            assert (ROOT / source).exists(), source
        env_block = " ".join(re.findall(r"^ENV (.+?)(?<!\\)$", docker, re.M | re.S))
        for var, (default, _) in DEPLOY_ENV.items():
            assert f"{var}={default}" in env_block, (name, var)
        assert "/v1/models" in docker and "HF_TOKEN=" not in docker  # a token is passed at run time
    assert "\nFROM python:3.11" in (DEPLOY / "Dockerfile").read_text()
    compose = yaml.safe_load((DEPLOY / "compose.serve.yaml").read_text())
    services = compose["services"]
    assert services["serve"]["build"]["dockerfile"] == "deploy/Dockerfile"
    assert services["serve-vllm"]["build"]["dockerfile"] == "deploy/Dockerfile.vllm"
    assert services["serve-vllm"]["profiles"] == ["gpu"]
    assert all(port.startswith("127.0.0.1:") for service in services.values() for port in service["ports"])


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
def test_export_carries_its_deploy_config(adapter_export) -> None:
    config = yaml.safe_load((adapter_export.out_dir / "deploy_config.yaml").read_text())
    assert config["model"] == {"mode": "adapter", "base_model": "tiny-smolvlm", "base_revision": None,
                               "convention": "json"}
    assert config["hardware"]["model"] == "tiny-smolvlm" and config["hardware"]["device"] == "cpu"
