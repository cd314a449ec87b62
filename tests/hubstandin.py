"""A local stand-in of the Hugging Face Hub HTTP API, enough for `HfApi.whoami/create_repo/upload_folder`.

A real `http.server` on 127.0.0.1 (random port) in a thread. It checks the `Authorization: Bearer` token of every
request against its users, answers preupload with "regular" for every file (so contents travel base64-inlined in
the commit NDJSON: no LFS/xet storage needed) and records what arrived. Endpoints (as huggingface_hub 2.4 calls them):

    GET  /api/whoami-v2                               -> 401 unless the token is known
    POST /api/repos/create                            -> 401 / 403 (read token or foreign org) / 404 (unknown org)
    GET  /api/models/{ns}/{name}[/revision/{rev}]     -> repo info or 404 (create_repo's exist_ok fallback)
    (the same routes under /api/spaces/ for Spaces; one namespace of repo ids for both, type and sdk recorded)
    POST /api/validate-yaml                           -> README front matter must parse as YAML
    POST /api/models/{ns}/{name}/preupload/{rev}      -> {"files": [{"path", "uploadMode": "regular", ...}]}
    POST /api/models/{ns}/{name}/commit/{rev}         -> NDJSON header + file lines; lfsFile is refused
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlparse

REPO_PATH = re.compile(r"^/api/(?:models|spaces)/([^/]+)/([^/]+)(?:/(preupload|commit|revision)/(.+))?$")


@dataclass
class Repo:
    """A repo held by the stand-in: visibility, files (path -> bytes) and the commits that made them."""

    repo_id: str
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    repo_type: str = "model"
    sdk: str | None = None
    commits: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Seen:
    """One request as received: method, path and the bearer token (None when absent)."""

    method: str
    path: str
    token: str | None


class HubStandIn:
    """Start with `with HubStandIn({"tok": ("alice", "write")}) as hub:`; `hub.endpoint` is its base URL."""

    def __init__(self, tokens: dict[str, tuple[str, str]], orgs: dict[str, list[str]] | None = None) -> None:
        self.tokens = tokens  # token -> (user name, "read" | "write")
        self.orgs = orgs or {}  # org name -> member user names
        self.repos: dict[str, Repo] = {}
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._endpoint = ""

    @property
    def endpoint(self) -> str:
        assert self._endpoint, "start() the stand-in first"
        return self._endpoint

    def start(self) -> HubStandIn:
        handler = type("Handler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        host, port = self._server.server_address[:2]
        self._endpoint = f"http://{host}:{port}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="hub-stand-in",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> HubStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def tokens_seen(self) -> set[str | None]:
        """Every token (or None) that came with a request."""
        return {seen.token for seen in self.requests}


class _Handler(BaseHTTPRequestHandler):
    hub: HubStandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output quiet
        return

    # -- plumbing ---------------------------------------------------------------------------------------------
    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, payload: Any, error_code: str | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")  # no kept-alive handler threads outlive stop()
        if error_code:
            self.send_header("X-Error-Code", error_code)
            self.send_header("X-Error-Message", str(payload.get("error", "")))
        self.end_headers()
        self.wfile.write(data)

    def _user(self) -> tuple[str, str] | None:
        """(user, role) of the bearer token; records the request either way."""
        auth = self.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else None
        with self.hub._lock:
            self.hub.requests.append(Seen(self.command, urlparse(self.path).path, token))
        return self.hub.tokens.get(token) if token else None

    def _may_write(self, user: str, namespace: str) -> bool:
        return namespace == user or user in self.hub.orgs.get(namespace, [])

    def _known_namespace(self, namespace: str) -> bool:
        return namespace in self.hub.orgs or namespace in {u for u, _ in self.hub.tokens.values()}

    # -- verbs --------------------------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        path = urlparse(self.path).path
        if path == "/.well-known/openid-configuration":  # the Hub as the OpenID provider of a Space's sign-in
            base = self.hub.endpoint
            return self._send(200, {
                "issuer": base, "authorization_endpoint": f"{base}/oauth/authorize",
                "token_endpoint": f"{base}/oauth/token", "userinfo_endpoint": f"{base}/oauth/userinfo",
                "jwks_uri": f"{base}/oauth/jwks", "response_types_supported": ["code"]})
        who = self._user()
        if who is None:
            return self._send(401, {"error": "Invalid credentials in Authorization header"})
        if path == "/api/whoami-v2":
            return self._send(200, {"type": "user", "name": who[0], "fullname": who[0], "avatarUrl": "",
                                    "orgs": [{"name": o} for o in self.hub.orgs],
                                    "auth": {"type": "access_token", "accessToken": {"role": who[1]}}})
        match = REPO_PATH.match(path)
        repo = self.hub.repos.get(f"{match.group(1)}/{match.group(2)}") if match else None
        if repo is None:
            return self._send(404, {"error": "Repository not found"}, "RepoNotFound")
        sha = repo.commits[-1]["oid"] if repo.commits else "0" * 40
        return self._send(200, {"id": repo.repo_id, "private": repo.private, "sha": sha,
                                "siblings": [{"rfilename": name} for name in sorted(repo.files)]})

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        who = self._user()
        body = self._body()
        path = urlparse(self.path).path
        if who is None:
            return self._send(401, {"error": "Invalid credentials in Authorization header"})
        if path == "/api/repos/create":
            return self._create(who, json.loads(body))
        if path == "/api/validate-yaml":
            return self._validate_yaml(json.loads(body))
        match = REPO_PATH.match(path)
        if not match or match.group(3) not in ("preupload", "commit"):
            return self._send(404, {"error": f"no stand-in route for POST {path}"})
        repo_id = f"{match.group(1)}/{match.group(2)}"
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            return self._send(404, {"error": "Repository not found"}, "RepoNotFound")
        if who[1] != "write" or not self._may_write(who[0], match.group(1)):
            return self._send(403, {"error": "You don't have the rights to write to this repo"})
        if match.group(3) == "preupload":
            files = json.loads(body)["files"]
            return self._send(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                                               "oid": None} for f in files], "commitOid": "0" * 40})
        return self._commit(repo, unquote(match.group(4)), body)

    def _create(self, who: tuple[str, str], payload: dict[str, Any]) -> None:
        namespace = payload.get("organization") or who[0]
        if not self._known_namespace(namespace):
            return self._send(404, {"error": f"Namespace {namespace} not found"})
        if who[1] != "write" or not self._may_write(who[0], namespace):
            return self._send(403, {"error": f"You don't have the rights to create a model under {namespace}"})
        repo_id = f"{namespace}/{payload['name']}"
        url = f"{self.hub.endpoint}/{repo_id}"
        with self.hub._lock:
            if repo_id in self.hub.repos:
                return self._send(409, {"error": "You already created this model repo", "url": url})
            private = payload.get("visibility", "private" if payload.get("private") else "public") == "private"
            self.hub.repos[repo_id] = Repo(repo_id, private, repo_type=payload.get("type") or "model",
                                           sdk=payload.get("sdk"))
        return self._send(200, {"url": url, "name": repo_id, "id": repo_id})

    def _validate_yaml(self, payload: dict[str, Any]) -> None:
        import yaml

        content = payload.get("content", "")
        if content.startswith("---"):
            try:
                yaml.safe_load(content.split("---", 2)[1])
            except yaml.YAMLError as exc:
                return self._send(400, {"errors": [{"message": str(exc)}]})
        return self._send(200, {"errors": [], "warnings": []})

    def _commit(self, repo: Repo, revision: str, body: bytes) -> None:
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header = next((line["value"] for line in lines if line["key"] == "header"), {})
        files: dict[str, bytes] = {}
        for line in lines:
            if line["key"] == "file":
                files[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
            elif line["key"] != "header":
                return self._send(400, {"error": f"stand-in accepts inline files only, got {line['key']}"})
        oid = hashlib.sha1(body).hexdigest()
        with self.hub._lock:
            repo.files.update(files)
            repo.commits.append({"oid": oid, "revision": revision, "summary": header.get("summary"),
                                 "files": sorted(files)})
        return self._send(200, {"commitUrl": f"{self.hub.endpoint}/{repo.repo_id}/commit/{oid}",
                                "commitOid": oid, "pullRequestUrl": None})
