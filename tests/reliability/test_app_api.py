"""Bad inputs through the live app's API (gradio_client, as a remote user would): the upload is refused with the same
one-line message as the CLI, the server logs no traceback, and nothing is left behind: no dataset folder, no upload
staging folder, no extraction folder in the server's TMPDIR.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .cases import CASES, Case
from .hostile import Sample
from .scenario import LABELS

APP_CASES = [c for c in CASES if c.app]


def _leftovers(app: Any) -> list[str]:
    """What a refused upload must not leave: staging (cache/upload-*) and extraction (TMPDIR/safezip-*) folders."""
    cache = app.home / "cache"
    found = [p for p in cache.iterdir()] if cache.is_dir() else []
    found += [p for p in app.tmp.iterdir() if p.name.startswith(("safezip-", "upload-", "tmp"))]
    return sorted(str(p) for p in found)


@pytest.mark.parametrize("case", APP_CASES, ids=[c.id for c in APP_CASES])
def test_app_refuses_bad_uploads_cleanly(case: Case, live_app: Any, sample: Sample, tmp_path: Path) -> None:
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    args = case.build(sample, tmp_path)
    uploads = [a for a in args if Path(a).is_file()]
    client = live_app.client()
    log_start = len(live_app.log_text())
    name = f"bad-{case.id}".replace("_", "-")
    with pytest.raises(AppError) as refused:
        client.predict([handle_file(p) for p in uploads], False, name, LABELS, ["grounding"], "tiny-smolvlm", 1,
                       False, api_name="/convert")
    message = str(refused.value)
    assert case.expect in message and "\n" not in message.strip(), message
    assert f"{Path(uploads[0]).name}: " in message, "the message names the uploaded file"
    for private in (live_app.gradio_tmp, live_app.home / "cache", live_app.tmp):
        assert str(private) not in message, "the message shows a server folder"
    assert "Traceback" not in live_app.log_text()[log_start:]
    assert not (live_app.home / "datasets" / name).exists()
    assert _leftovers(live_app) == []
