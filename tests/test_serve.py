"""Serving over the OpenAI API: `serve` (real `transformers serve`), `evaluate --endpoint`, parity with offline
evaluation of the same export, the parity record in the card, the example client, and the clear errors.

The export is a quickly trained one on the demo's data and recipe (helpers/served_run.py: it answers in its
convention, so parity is measured on parsed boxes), served by a real server on 127.0.0.1 and a free port; nothing is
mocked.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from helpers import export_runs
from helpers.served_run import served_run

from pipeline.cli import main
from pipeline.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 16  # more than the test split holds: every test example, as many on both sides
SECRET = "sk-test-0123456789abcdefSECRET"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return {key: str(path) for key, path in served_run(tmp_path_factory.mktemp("served")).items()}


def _env(studio_home: Path) -> dict[str, str]:
    return {**os.environ, "STUDIO_HOME": str(studio_home), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


# -- fast: what is refused, in one line -----------------------------------------------------------------------------
def test_serve_refuses_what_is_not_an_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'missing'}: export folder not found"
    (tmp_path / "README.md").write_text("# not an export\n")
    assert main(["serve", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "not an export folder" in err and len(err.splitlines()) == 1
    (tmp_path / "config.json").write_text("{}")
    assert main(["serve", str(tmp_path)]) == 2
    assert "no studio.json" in capsys.readouterr().err


def test_vllm_engine_names_its_command_or_says_it_is_missing(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.serve import engine_command, vllm_installed

    assert engine_command("vllm", tmp_path, host="127.0.0.1", port=9000) == [
        "vllm", "serve", str(tmp_path), "--host", "127.0.0.1", "--port", "9000"]
    assert engine_command("transformers", tmp_path, port=9000)[:5] == [
        "transformers", "serve", str(tmp_path), "--host", "127.0.0.1"]
    if vllm_installed():
        pytest.skip("vLLM is installed here")
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "studio.json").write_text('{"convention": "json"}')
    assert main(["serve", str(tmp_path), "--engine", "vllm"]) == 2
    assert capsys.readouterr().err.strip() == ("error: vLLM is not installed here (pip install vllm on a GPU host); "
                                               "use --engine transformers")


def test_endpoint_down_and_missing_key_are_one_clear_line(tmp_path: Path) -> None:
    from pipeline.endpoint_eval import Endpoint, evaluate_endpoint
    from pipeline.serve import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"
    started = time.monotonic()
    with pytest.raises(UserError, match=r"cannot reach http://127\.0\.0\.1:\d+/v1 after 3 attempt\(s\) "
                                        r"\(APIConnectionError\); is the server running\?"):
        Endpoint(url, retries=2, backoff=0.2).models()
    assert time.monotonic() - started >= 0.6  # backed off 0.2 + 0.4 s between the attempts
    os.environ.pop("STUDIO_TEST_UNSET_KEY", None)
    with pytest.raises(UserError, match="STUDIO_TEST_UNSET_KEY is unset or empty"):
        evaluate_endpoint(url, tmp_path, api_key_env="STUDIO_TEST_UNSET_KEY")
    with pytest.raises(UserError, match="must be an http"):
        Endpoint("127.0.0.1:8000")


# -- the demo's export, served --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_served_demo_export_scores_like_offline(demo: dict, tmp_path: Path, studio_home: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.serve import free_port, models_listed

    export, dataset = demo["export"], demo["dataset"]
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "pipeline", "serve", export, "--port", str(port)],
                              cwd=tmp_path, env=_env(studio_home), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        line = server.stdout.readline() if server.stdout else ""
        assert line.startswith(f"serving {export} with transformers at http://127.0.0.1:{port}/v1"), (
            line + (server.stderr.read() if server.poll() is not None and server.stderr else ""))
        url = f"http://127.0.0.1:{port}/v1"
        assert models_listed(url) == [export]

        # offline evaluation of the export and the endpoint, on the same split, limit and examples
        assert main(["evaluate", "--model", export, "--data", dataset, "--split", "test", "--limit", str(LIMIT),
                     "--no-base", "--no-baseline", "--out", str(tmp_path / "offline")]) == 0
        os.environ["STUDIO_TEST_API_KEY"] = SECRET
        try:
            assert main(["evaluate", "--endpoint", url, "--api-key-env", "STUDIO_TEST_API_KEY", "--data", dataset,
                         "--split", "test", "--limit", str(LIMIT), "--out", str(tmp_path / "served")]) == 0
        finally:
            del os.environ["STUDIO_TEST_API_KEY"]
        capsys.readouterr()
        offline = json.loads((tmp_path / "offline" / "metrics.json").read_text())
        served = json.loads((tmp_path / "served" / "metrics.json").read_text())
        assert offline["n"] == served["n"] >= 8
        assert served["meta"]["endpoint"] == url and served["meta"]["api_model"] == export
        assert served["parse_failure_rate"] < 1.0  # it answers boxes in its convention, not noise
        assert abs(offline["miou"] - served["miou"]) <= 0.02, (offline["miou"], served["miou"])
        rows = [[json.loads(x) for x in (tmp_path / name / "predictions.jsonl").read_text().splitlines()]
                for name in ("offline", "served")]
        assert [r["id"] for r in rows[0]] == [r["id"] for r in rows[1]]
        assert [r["answer"] for r in rows[0]] == [r["answer"] for r in rows[1]]  # greedy: the very same answers
        assert (tmp_path / "served" / "baseline" / "metrics.json").is_file()  # the same files as offline
        for path in (tmp_path / "served").rglob("*"):  # the key went to the endpoint only
            assert not path.is_file() or SECRET.encode() not in path.read_bytes(), path
        print(f"\nparity ({served['n']} test examples): offline mIoU {offline['miou']:.4f}, served "
              f"{served['miou']:.4f}, identical answers "
              f"{sum(a['answer'] == b['answer'] for a, b in zip(*rows, strict=True))}/{served['n']}", file=sys.stderr)

        # the example client: openai package + the project's parser
        image = Path(dataset) / rows[1][0]["image"]
        proc = subprocess.run([sys.executable, str(ROOT / "deploy" / "inference_example.py"), str(image),
                               "--base-url", url], cwd=tmp_path, env=_env(studio_home), capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        lines = dict(line.split(": ", 1) for line in proc.stdout.splitlines() if ": " in line)
        assert lines["model"] == export and lines["prompt"] == "Find every circle in the image."
        assert lines["answer"] == rows[1][0]["answer"] or rows[1][0]["prompt"] != lines["prompt"]
        assert isinstance(json.loads(lines["boxes"]), list) and (tmp_path / lines["saved"]).is_file()
    finally:
        server.send_signal(signal.SIGINT)
        code = server.wait(60)
    assert code == 0 and "stopped the server" in (server.stderr.read() if server.stderr else "")
    with pytest.raises(OSError):
        models_listed(f"http://127.0.0.1:{port}/v1", timeout=2)


@pytest.mark.slow
def test_export_records_serving_parity_in_the_card(demo: dict, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "export"
    assert main(["export", demo["run"], "--mode", "merged", "--out", str(out), "--serve-parity", "8",
                 "--parity-samples", "0"]) == 0
    printed = capsys.readouterr().out
    assert "serving parity: agree: mIoU served" in printed
    report = json.loads((out / "serving_parity.json").read_text())
    assert report["agree"] is True and report["n_served"] == report["n_offline"] == 8
    assert report["miou_abs_diff"] <= 0.02 and report["split"] == "test"
    assert json.loads((out / "studio.json").read_text())["serving_parity"]["agree"] is True
    card = (out / "README.md").read_text()
    assert "Serving check: served with transformers" in card and "agree on 8 `test` examples" in card
    assert f"mIoU {report['miou_served']:.4f} served vs {report['miou_offline']:.4f} offline" in card
    assert "from openai import OpenAI" in card and "AutoModelForImageTextToText" in card
    with zipfile.ZipFile(out.with_name("export.zip")) as archive:
        assert archive.read("export/README.md").decode() == card
        assert "export/serving_parity.json" in archive.namelist()
    from pipeline.leaks import find_leaks

    assert find_leaks(out, extra_paths=[tmp_path, Path(demo["run"]).parent]) == []


# -- an adapter export: merged for serving, cached beside it ----------------------------------------------------------
@pytest.mark.slow
def test_adapter_export_is_merged_beside_it_and_served(tmp_path_factory: pytest.TempPathFactory) -> None:
    from pipeline.endpoint_eval import evaluate_endpoint
    from pipeline.evaluate import evaluate_model
    from pipeline.serve import start_server

    base = export_runs.base_dir(tmp_path_factory)
    export = export_runs.exported(base, "lora", "adapter").out_dir
    dataset = export_runs.dataset(base)
    with start_server(export) as server:
        merged = export.with_name(export.name + ".merged")
        assert server.model == str(merged)
        assert json.loads((merged / "studio.json").read_text())["mode"] == "merged"
        assert (merged / "model.safetensors").is_file() and (merged / "serve_cache.json").is_file()
        served = evaluate_endpoint(server.url, dataset, split="val", limit=4, out=tmp_path_factory.mktemp("ep"),
                                   progress=False, max_new_tokens=12, with_baseline=False)
    offline = evaluate_model(str(export), dataset=dataset, split="val", limit=4, out=tmp_path_factory.mktemp("off"),
                             max_new_tokens=12, with_base=False, with_baseline=False)
    assert served.metrics["n"] == offline.metrics["n"] == 4
    assert abs(served.metrics["miou"] - offline.metrics["miou"]) <= 0.02
    stamp = (merged / "serve_cache.json").stat().st_mtime
    from pipeline.serve import servable_folder

    assert servable_folder(export) == merged and (merged / "serve_cache.json").stat().st_mtime == stamp  # cached
