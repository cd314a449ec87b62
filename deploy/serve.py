"""A tiny HTTP inference service for one export (standard library server + this repository's pipeline package).

    EXPORT_DIR=exports/shapes-lora PORT=8080 python deploy/serve.py
    curl localhost:8080/health
    curl -X POST localhost:8080/predict -d '{"image": "<base64 PNG/JPEG>", "prompt": "Find every circle."}'

POST /predict answers {"answer", "boxes": [{"label", "box": [x1, y1, x2, y2]}], "parse_error", "width", "height"}.
Requests are answered one at a time (one model, one lock). Settings come from the environment: EXPORT_DIR, HOST,
PORT, DEVICE, DTYPE, MAX_NEW_TOKENS (see deploy/deploy_config.yaml).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's pipeline package

MAX_BODY = 20 * 2**20


def make_server(loaded: Any, host: str = "127.0.0.1", port: int = 8080, max_new_tokens: int = 256) -> Any:
    """A ThreadingHTTPServer answering /health and /predict with the loaded export (call serve_forever)."""
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - one short line per request
            sys.stderr.write(f"{self.command} {self.path} -> {args[1] if len(args) > 1 else ''}\n")

        def _reply(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server naming
            if self.path != "/health":
                return self._reply(404, {"error": "GET /health or POST /predict"})
            studio = loaded.studio
            return self._reply(200, {"status": "ok", "model": studio.get("model"), "mode": studio.get("mode"),
                                     "convention": studio.get("convention")})

        def do_POST(self) -> None:  # noqa: N802 - http.server naming
            if self.path != "/predict":
                return self._reply(404, {"error": "POST /predict"})
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                return self._reply(413, {"error": f"request body over {MAX_BODY} bytes"})
            try:
                request = json.loads(self.rfile.read(length) or b"{}")
                image, prompt = _decode_request(request, loaded.studio)
            except (ValueError, binascii.Error, OSError) as exc:
                return self._reply(400, {"error": str(exc)})
            from pipeline.inference import predict

            with lock:
                result = predict(loaded, image, prompt, max_new_tokens=int(request.get("max_new_tokens") or
                                                                           max_new_tokens))
            return self._reply(200, {"prompt": prompt, **result})

    return ThreadingHTTPServer((host, port), Handler)


def _decode_request(request: Any, studio: dict[str, Any]) -> tuple[Any, str]:
    """(PIL image, prompt) from {"image": base64, "prompt": str}; ValueError naming the problem."""
    from PIL import Image

    if not isinstance(request, dict) or not isinstance(request.get("image"), str):
        raise ValueError('the body must be JSON {"image": "<base64 image>", "prompt": "..."}')
    image = Image.open(io.BytesIO(base64.b64decode(request["image"], validate=True)))
    image.load()
    prompt = request.get("prompt")
    if prompt is None:
        from pipeline.inference import default_prompt

        prompt = default_prompt(studio)
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("prompt must be a non-empty string")
    return image.convert("RGB"), prompt


def main() -> int:
    from pipeline.errors import UserError
    from pipeline.inference import load_export

    device = os.environ.get("DEVICE", "auto")
    try:
        loaded = load_export(os.environ.get("EXPORT_DIR", "/model"), device=None if device == "auto" else device,
                             dtype=os.environ.get("DTYPE", "auto"))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    server = make_server(loaded, os.environ.get("HOST", "0.0.0.0"), int(os.environ.get("PORT", "8080")),
                         int(os.environ.get("MAX_NEW_TOKENS", "256")))
    print(f"serving {loaded.studio.get('model')} ({loaded.studio.get('mode')}) on port {server.server_address[1]}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
