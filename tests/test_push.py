"""Hub push against tests/hubstandin.py (a real local HTTP server): explicit token only, files, visibility, failures."""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path

import pytest
from helpers import export_runs
from hubstandin import HubStandIn

from pipeline.errors import UserError
from pipeline.hub import push_to_hub

TOKEN = "hf_writeTOKENforALICE0123456789abcdef"
READ_TOKEN = "hf_readONLYtokenALICE0123456789abcdef"
OWNER_TOKEN = "hf_ownerCACHEDloginMUSTneverBEsent0123"


@pytest.fixture()
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests run with HF_HUB_OFFLINE=1; pushing to the local stand-in needs huggingface_hub online."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", OWNER_TOKEN)  # the owner's implicit token: must never be used


@pytest.fixture()
def hub(online: None):
    with HubStandIn({TOKEN: ("alice", "write"), READ_TOKEN: ("alice", "read")}, orgs={"acme": ["bob"]}) as server:
        yield server


@pytest.fixture()
def export_dir(tmp_path: Path) -> Path:
    """A small export folder of the real layout (card with front matter, adapter files, studio.json)."""
    import numpy as np
    from safetensors.numpy import save_file

    folder = tmp_path / "shapes-lora"
    folder.mkdir()
    (folder / "README.md").write_text("---\nlibrary_name: peft\nlicense: apache-2.0\n---\n\n# shapes\n")
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "tiny-smolvlm"}))
    (folder / "studio.json").write_text(json.dumps({"convention": "json", "mode": "adapter"}))
    save_file({"w": np.arange(6, dtype=np.float32)}, str(folder / "adapter_model.safetensors"))
    return folder


def _digest(folder: Path) -> str:
    return hashlib.sha256(json.dumps({k: v.hex() for k, v in export_runs.folder_bytes(folder).items()})
                          .encode()).hexdigest()


def test_push_creates_a_private_repo_and_uploads_every_file(hub: HubStandIn, export_dir: Path) -> None:
    url = push_to_hub(export_dir, "alice/shapes-lora", TOKEN, endpoint=hub.endpoint)
    assert url == f"{hub.endpoint}/alice/shapes-lora"
    repo = hub.repos["alice/shapes-lora"]
    assert repo.private is True
    assert repo.files == export_runs.folder_bytes(export_dir)
    assert len(repo.commits) == 1 and repo.commits[0]["revision"] == "main"
    assert hub.tokens_seen() == {TOKEN}  # never HF_TOKEN, never nothing
    paths = [seen.path for seen in hub.requests]
    assert paths[:2] == ["/api/whoami-v2", "/api/repos/create"] and paths[-1].endswith("/commit/main")


def test_push_public_and_again_into_the_same_repo(hub: HubStandIn, export_dir: Path) -> None:
    push_to_hub(export_dir, "alice/shapes", TOKEN, private=False, endpoint=hub.endpoint)
    (export_dir / "studio.json").write_text(json.dumps({"convention": "json", "mode": "adapter", "v": 2}))
    push_to_hub(export_dir, "alice/shapes", TOKEN, private=False, endpoint=hub.endpoint)
    repo = hub.repos["alice/shapes"]
    assert repo.private is False and len(repo.commits) == 2
    assert json.loads(repo.files["studio.json"])["v"] == 2


@pytest.mark.parametrize(("token", "repo_id", "message"), [
    ("hf_wrongTOKEN0123456789abcdefghijkl", "alice/x", "token rejected (401)"),
    (READ_TOKEN, "alice/x", "permission denied (403): the token cannot create or write repos in 'alice'"),
    (TOKEN, "acme/x", "permission denied (403): the token cannot create or write repos in 'acme'"),
    (TOKEN, "nobody/x", "not found (404): the namespace 'nobody' does not exist"),
])
def test_push_failures_are_one_clear_line(hub: HubStandIn, export_dir: Path, token: str, repo_id: str,
                                          message: str) -> None:
    before = _digest(export_dir)
    with pytest.raises(UserError) as info:
        push_to_hub(export_dir, repo_id, token, endpoint=hub.endpoint)
    text = str(info.value)
    assert text.startswith(f"push to {repo_id} failed: {message}") and "\n" not in text
    assert token not in text and "retry" in text
    assert _digest(export_dir) == before and not hub.repos
    assert OWNER_TOKEN not in hub.tokens_seen()


def test_push_to_a_refused_connection(online: None, export_dir: Path) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(UserError, match=rf"push to alice/x failed: cannot reach http://127.0.0.1:{port} \(Connect"):
        push_to_hub(export_dir, "alice/x", TOKEN, endpoint=f"http://127.0.0.1:{port}")
    assert (export_dir / "README.md").is_file()


def test_push_refuses_empty_token_leaks_and_bad_input(hub: HubStandIn, export_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="refused: empty token"):
        push_to_hub(export_dir, "alice/x", "  ", endpoint=hub.endpoint)
    with pytest.raises(UserError, match="--repo must look like USER/NAME"):
        push_to_hub(export_dir, "no-namespace", TOKEN, endpoint=hub.endpoint)
    with pytest.raises(UserError, match=r"not an export folder \(no README.md\)"):
        push_to_hub(tmp_path, "alice/x", TOKEN, endpoint=hub.endpoint)
    (export_dir / "notes.txt").write_text(f"my token is {TOKEN}")
    with pytest.raises(UserError, match="refused: notes.txt contains a secret token"):
        push_to_hub(export_dir, "alice/x", TOKEN, endpoint=hub.endpoint)
    (export_dir / "notes.txt").write_text(f"trained in {tmp_path}")
    with pytest.raises(UserError, match="refused: notes.txt contains the local path"):
        push_to_hub(export_dir, "alice/x", TOKEN, endpoint=hub.endpoint)
    assert hub.requests == []  # nothing was sent for any of these


def test_push_in_offline_mode_says_so(export_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError, match="offline mode is on"):
        push_to_hub(export_dir, "alice/x", TOKEN, endpoint="http://127.0.0.1:9")


def test_push_cli_reads_the_named_variable_only(hub: HubStandIn, export_dir: Path, capsys,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.cli import main

    argv = ["push", str(export_dir), "--repo", "alice/cli", "--endpoint", hub.endpoint, "--token-env", "PUSH_TOKEN"]
    monkeypatch.delenv("PUSH_TOKEN", raising=False)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no Hub token: set the environment variable PUSH_TOKEN") and hub.requests == []
    monkeypatch.setenv("PUSH_TOKEN", "hf_wrongTOKEN0123456789abcdefghijkl")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: push to alice/cli failed: token rejected (401)") and err.count("\n") == 1
    monkeypatch.setenv("PUSH_TOKEN", TOKEN)
    assert main([*argv, "--public"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == f"{hub.endpoint}/alice/cli" and hub.repos["alice/cli"].private is False
    assert "usage code does not load alice/cli" in err
    assert OWNER_TOKEN not in hub.tokens_seen()


@pytest.mark.slow
def test_push_real_export_sends_no_token_or_local_path(hub: HubStandIn, tmp_path_factory: pytest.TempPathFactory,
                                                       studio_home: Path) -> None:
    base = export_runs.base_dir(tmp_path_factory)
    result = export_runs.exported(base, "lora", "adapter")
    push_to_hub(result.out_dir, "alice/real", TOKEN, endpoint=hub.endpoint)
    files = hub.repos["alice/real"].files
    assert set(files) == set(result.files)
    needles = [TOKEN, OWNER_TOKEN, "/tmp", str(Path.home()), str(studio_home), str(base)]
    assert export_runs.scan_for_leaks(files, needles) == []
