"""Security: the live app's file routes serve only the allowed folders, a push token leaves no trace anywhere, the
owner's HF_TOKEN is never used for a user's push, remote-code models need an allow-listed pinned revision, and a
Space refuses jobs and pushes from callers who have not signed in.
"""

from __future__ import annotations

import http.client
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .appserver import OWNER_TOKEN, AppServer

ROUTES = ["/gradio_api/file=", "/file="]


def _get(app: Any, path: str) -> tuple[int, bytes]:
    """GET a raw path (no client-side normalisation of '..' or %2F)."""
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=60)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def report(app_scenario: Any, live_app: Any) -> Path:
    """The quality report of dataset user0, written by the app into STUDIO_HOME/reports (an allowed folder)."""
    live_app.client().predict("user0", api_name="/validate")
    return live_app.home / "reports" / "user0" / "report.md"


@pytest.fixture(scope="module")
def exported(app_scenario: Any, live_app: Any) -> dict[str, Any]:
    """The scenario's trained run exported as an adapter through the app."""
    result, _, _, _ = live_app.client().predict(app_scenario.run_id, "adapter", "last", api_name="/export")
    return result


REFUSED = [
    ("etc_passwd", "a system file (/etc/passwd)", lambda home, run: "/etc/passwd"),
    ("database", "the studio database", lambda home, run: f"{home}/studio.db"),
    ("run_config", "a run folder's config.yaml", lambda home, run: f"{home}/runs/{run}/config.yaml"),
    ("run_log", "a run folder's train.log", lambda home, run: f"{home}/runs/{run}/train.log"),
    ("dataset_records", "a dataset's records.jsonl", lambda home, run: f"{home}/datasets/user0/records.jsonl"),
    ("dotdot", "../ out of the reports folder", lambda home, run: f"{home}/reports/user0/../../studio.db"),
    ("encoded_dotdot", "%2e%2e%2f out of the reports folder",
     lambda home, run: f"{home}/reports/user0/%2e%2e%2f%2e%2e%2fstudio.db"),
    ("relative", "a relative path into the data home", lambda home, run: "home/studio.db"),
]


@pytest.mark.slow
@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("what", REFUSED, ids=[r[0] for r in REFUSED])
def test_file_routes_refuse_paths_outside_the_allowed_folders(what: Any, route: str, live_app: Any,
                                                              app_scenario: Any, report: Path) -> None:
    """GET {route}<path> is refused (4xx) and returns none of the file's bytes."""
    path = what[2](live_app.home, app_scenario.run_id)
    status, body = _get(live_app, route + path)
    assert 400 <= status < 500, (status, body[:200])
    assert b"SQLite format 3" not in body and b"root:" not in body and b'"objects"' not in body


@pytest.mark.slow
def test_file_route_serves_an_allowed_report(live_app: Any, report: Path) -> None:
    """The positive control: a quality report under STUDIO_HOME/reports is served as it is."""
    status, body = _get(live_app, f"/gradio_api/file={report}")
    assert status == 200 and body == report.read_bytes()


# -- tokens -------------------------------------------------------------------------------------------------------
def _files(*roots: Path) -> Iterator[Path]:
    for root in roots:
        yield from (p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]


def _holding(needle: str, *roots: Path) -> list[str]:
    return [str(p) for p in _files(*roots) if needle.encode() in p.read_bytes()]


@pytest.fixture(scope="module")
def pushed(live_app: Any, hub: Any, exported: dict[str, Any]) -> dict[str, Any]:
    """The export pushed to the Hub stand-in with alice's token, then two refused pushes (foreign namespace, no
    token), with the stand-in's request counts around each."""
    from gradio_client.exceptions import AppError

    client = live_app.client()
    result, cleared = client.predict(exported["export"], "alice/studio-reliability", True, hub.user_token,
                                     api_name="/push_to_hub")
    refused: dict[str, Any] = {}
    for name, repo, token in (("foreign", "bob/elsewhere", hub.user_token), ("empty", "alice/empty-token", "")):
        before = len(hub.requests)
        try:
            client.predict(exported["export"], repo, True, token, api_name="/push_to_hub")
            refused[name] = ("accepted", 0)
        except AppError as exc:
            refused[name] = (str(exc), len(hub.requests) - before)
    return {"result": result, "cleared": cleared, "refused": refused}


@pytest.mark.slow
def test_push_reaches_the_hub_with_the_users_token_only(pushed: dict[str, Any], hub: Any) -> None:
    """The push lands (private repo with the card and adapter); the stand-in saw alice's token and no other."""
    repo = hub.repos["alice/studio-reliability"]
    assert repo.private and {"README.md", "adapter_config.json", "adapter_model.safetensors"} <= set(repo.files)
    assert pushed["cleared"] == "" and pushed["result"]["repo"] == "alice/studio-reliability"
    assert hub.tokens_seen() == {hub.user_token}


@pytest.mark.slow
def test_token_never_appears_in_logs_database_runs_exports_or_errors(pushed: dict[str, Any], live_app: Any,
                                                                     hub: Any, exported: dict[str, Any]) -> None:
    """After a push and a failed push: no file under STUDIO_HOME (database, runs, exports and zip, logs), the app log,
    TMPDIR, the gradio cache or the pushed repo holds the token, and the error message does not show it."""
    message, _ = pushed["refused"]["foreign"]
    assert message.startswith("push to bob/elsewhere failed:") and hub.user_token not in message
    assert _holding(hub.user_token, live_app.root) == []
    archive = live_app.home / "exports" / exported["zip"]  # the API names the zip; it lies beside the export
    assert Path(exported["zip"]).name == exported["zip"] and archive.is_file()
    assert _holding(hub.user_token, archive) == []
    assert not any(hub.user_token.encode() in data for data in hub.repos["alice/studio-reliability"].files.values())


@pytest.mark.slow
def test_owner_hf_token_is_never_used_for_a_users_push(pushed: dict[str, Any], hub: Any, live_app: Any) -> None:
    """HF_TOKEN=<owner secret> in the server's environment: a push without a token is refused before any request,
    and the stand-in never received the owner's token."""
    message, requests = pushed["refused"]["empty"]
    assert "empty token" in message and requests == 0
    assert OWNER_TOKEN not in hub.tokens_seen() and None not in hub.tokens_seen()
    assert _holding(OWNER_TOKEN, live_app.home) == []


@pytest.mark.slow
def test_cli_push_uses_only_the_token_it_is_given(exported: dict[str, Any], live_app: Any, hub: Any,
                                                  tmp_path: Path) -> None:
    """`python -m pipeline push` with HF_TOKEN=<owner> set and no STUDIO_HF_TOKEN is refused before any request;
    with STUDIO_HF_TOKEN it pushes with that token only, and neither token is printed."""
    import subprocess
    import sys

    from .harness import child_env

    folder = live_app.home / "exports" / exported["export"]
    argv = [sys.executable, "-m", "pipeline", "push", str(folder), "--repo", "alice/studio-cli", "--endpoint",
            hub.endpoint]
    env = child_env(live_app.home, tmp_path, HF_TOKEN=OWNER_TOKEN)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "STUDIO_HF_TOKEN"):
        env.pop(name, None)
    before = len(hub.requests)
    refused = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and refused.stderr.startswith("error: no Hub token: set the environment variable "
                                                                 "STUDIO_HF_TOKEN")
    assert len(hub.requests) == before
    done = subprocess.run(argv, env={**env, "STUDIO_HF_TOKEN": hub.user_token}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "alice/studio-cli" in hub.repos and {s.token for s in hub.requests[before:]} == {hub.user_token}
    for text in (refused.stdout, refused.stderr, done.stdout, done.stderr):
        assert hub.user_token not in text and OWNER_TOKEN not in text


# -- remote code ----------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_remote_code_model_is_refused_through_the_app(live_app: Any, app_scenario: Any) -> None:
    """start_training with a registry model that runs Hub code (not allow-listed) is refused; no job is queued."""
    from gradio_client.exceptions import AppError

    client = live_app.client()
    before = len(client.predict(api_name="/list_jobs")["data"])
    with pytest.raises(AppError, match="runs code from its Hub repo|runs code from the Hub repo"):
        client.predict("user0", "florence2-base-remote", "quick_test", "", 2, "", api_name="/start_training")
    assert len(client.predict(api_name="/list_jobs")["data"]) == before


def test_remote_code_needs_an_allowlisted_pinned_revision(monkeypatch: pytest.MonkeyPatch) -> None:
    """Disabled by default; allow-listing the repo without a revision does nothing; `repo@commit` enables it pinned to
    that commit, and any other revision is still refused."""
    from pipeline.errors import UserError
    from pipeline.registry import ALLOWLIST_ENV, check_allowed, get_spec

    monkeypatch.delenv(ALLOWLIST_ENV, raising=False)
    spec = get_spec("florence2-base-remote")
    assert not spec.enabled and "allow-list it" in spec.disabled_reason
    with pytest.raises(UserError, match="pin a revision"):
        check_allowed(spec)
    monkeypatch.setenv(ALLOWLIST_ENV, "microsoft/Florence-2-base")
    assert not get_spec("florence2-base-remote").enabled
    monkeypatch.setenv(ALLOWLIST_ENV, "microsoft/Florence-2-base@0123abcd")
    pinned = get_spec("florence2-base-remote")
    assert pinned.enabled and pinned.revision == "0123abcd"
    check_allowed(pinned)
    with pytest.raises(UserError, match="not allow-listed"):
        check_allowed(pinned, revision="main")


# -- a Space configuration --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def space_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    """The app with SPACE_ID set (sign-in required), nobody signed in.

    Gradio's real Space OAuth needs authlib (gradio[oauth], which Spaces install for `hf_oauth: true`); without it
    gradio mounts its local OAuth stand-in, which asks the Hub who the owner is: a Hub stand-in of its own answers.
    """
    from hubstandin import HubStandIn

    from .appserver import require_app

    require_app()

    owner = "hf_spaceowner" + secrets.token_hex(12)
    with HubStandIn({owner: ("owner", "write")}) as owner_hub:
        server = AppServer(tmp_path_factory.mktemp("space_app"), hub_endpoint=owner_hub.endpoint, HF_TOKEN=owner,
                           SPACE_ID="alice/sam2-vlm-studio")
        try:
            yield server.start()
        finally:
            server.stop()


@pytest.mark.slow
@pytest.mark.parametrize("action, call", [
    ("start training jobs", lambda c: c.predict("any", "tiny-smolvlm", "quick_test", "", 2, "",
                                                api_name="/start_training")),
    ("resume training jobs", lambda c: c.predict(1, api_name="/resume_job")),
    ("push to the Hub", lambda c: c.predict("any", "alice/x", True, "hf_" + "x" * 34, api_name="/push_to_hub")),
], ids=["space_start_training", "space_resume_job", "space_push_to_hub"])
def test_space_refuses_callers_who_are_not_signed_in(action: str, call: Any, space_app: AppServer) -> None:
    """SPACE_ID set: an API caller without a Hugging Face sign-in cannot start, resume or push; nothing is queued."""
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=f"sign in with Hugging Face .* to {action}"):
        call(space_app.client())
    db = space_app.home / "studio.db"
    if db.is_file():
        from pipeline.jobs.store import JobStore

        assert JobStore(db).list_jobs() == []
    assert os.environ.get("SPACE_ID") is None, "the test process itself is not a Space"


@pytest.mark.slow
def test_a_real_space_sends_visitors_to_hugging_face_sign_in(tmp_path: Path) -> None:
    """SYSTEM=spaces with the OAuth variables a Space sets for `hf_oauth: true`: gradio mounts the real sign-in
    (authlib, pinned in requirements.txt), and /login/huggingface redirects to the provider's authorize page with
    the Space's client id and a callback on the app."""
    import urllib.error
    import urllib.parse
    import urllib.request

    from hubstandin import HubStandIn

    from .appserver import require_app

    require_app()

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    with HubStandIn({}) as provider:
        server = AppServer(tmp_path, SYSTEM="spaces", SPACE_ID="alice/sam2-vlm-studio", OAUTH_CLIENT_ID="studio-client",
                           OAUTH_CLIENT_SECRET="client-secret", OAUTH_SCOPES="openid profile write-repos",
                           OPENID_PROVIDER_URL=provider.endpoint)
        try:
            server.start()
            opener = urllib.request.build_opener(NoRedirect)
            with pytest.raises(urllib.error.HTTPError) as redirect:
                opener.open(server.url + "login/huggingface", timeout=30)
        finally:
            server.stop()
    assert redirect.value.code in (302, 303, 307)
    target = urllib.parse.urlsplit(redirect.value.headers["Location"])
    query = urllib.parse.parse_qs(target.query)
    assert f"{target.scheme}://{target.netloc}{target.path}" == f"{provider.endpoint}/oauth/authorize"
    assert query["client_id"] == ["studio-client"] and query["response_type"] == ["code"]
    assert query["scope"] == ["openid profile write-repos"]
    callback = urllib.parse.urlsplit(query["redirect_uri"][0])
    assert (callback.netloc, callback.path) == (f"127.0.0.1:{server.port}", "/login/callback")


# -- after everything -----------------------------------------------------------------------------------------------
THIRD_PARTY_CACHES = {"torchinductor_root"}  # torch's compile cache, created in TMPDIR by the training processes


@pytest.mark.slow
def test_the_app_leaves_no_temporary_files_and_logs_no_traceback(live_app: Any) -> None:
    """Once every app case above has run (uploads, refusals, training, export, push, load): the server's TMPDIR holds
    no file of ours, the upload staging folder is empty, and the server log has no traceback."""
    leftovers = sorted(p.name for p in live_app.tmp.iterdir() if p.name not in THIRD_PARTY_CACHES)
    assert leftovers == []
    cache = live_app.home / "cache"
    assert not cache.exists() or list(cache.iterdir()) == []
    assert "Traceback" not in live_app.log_text()
