"""Reliability suite fixtures: the generated session every hostile input derives from, one live app server with a
local Hub stand-in, and the hook that records each case's outcome for docs/RELIABILITY.md (tests/reliability/report.py).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .hostile import Sample, make_sample

RESULTS_ENV = "RELIABILITY_RESULTS"  # report.py sets it: where to write the per-case outcomes as JSON
_ROWS: dict[str, dict[str, Any]] = {}


# -- recording outcomes ---------------------------------------------------------------------------------------------
def describe(item: pytest.Item) -> str:
    """What a case checks: its Case's description and expected text, else the test's docstring (first line)."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    case = next((v for v in params.values() if hasattr(v, "what") and hasattr(v, "expect")), None)
    if case is not None:
        via = "app API" if item.module.__name__.endswith("test_app_api") else f"CLI `{case.verb}`"
        return f"{case.what} ({via}): one line with `{case.expect}`, nothing left behind"
    doc = " ".join((getattr(item, "function", None).__doc__ or "").strip().split("\n\n")[0].split()) or item.name
    extra = [v[1] if isinstance(v, tuple) else v for v in params.values()
             if isinstance(v, str) or (isinstance(v, tuple) and len(v) > 1 and isinstance(v[1], str))]
    return f"{doc} [{'; '.join(f'`{e}`' if e.startswith('/') else e for e in extra)}]" if extra else doc


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        message = ""
        if report.skipped and isinstance(report.longrepr, tuple):
            message = str(report.longrepr[2]).removeprefix("Skipped: ")
        elif report.failed:
            message = (report.longreprtext or "").strip().splitlines()[-1:][0][:300] if report.longreprtext else ""
        notes = [str(v) for k, v in item.user_properties if k == "note"]
        _ROWS[item.nodeid] = {"nodeid": item.nodeid, "theme": item.module.__name__.rsplit(".", 1)[-1],
                              "case": item.name, "what": describe(item), "outcome": report.outcome,
                              "seconds": round(report.duration, 2), "message": message, "notes": notes}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = os.environ.get(RESULTS_ENV)
    if path and _ROWS:
        Path(path).write_text(json.dumps(list(_ROWS.values()), indent=1) + "\n", encoding="utf-8")


# -- shared inputs --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Sample:
    """A 24-frame, 64x48 generated SAM 2 session in every input format (made once)."""
    return make_sample(tmp_path_factory.mktemp("reliability_sample") / "session")


@pytest.fixture(scope="session")
def hub() -> Iterator[Any]:
    """The local Hub stand-in (loopback HTTP) with one write user, alice."""
    from hubstandin import HubStandIn

    token = "hf_" + secrets.token_hex(16)
    with HubStandIn({token: ("alice", "write")}) as stand_in:
        stand_in.user_token = token
        yield stand_in


@pytest.fixture(scope="session")
def live_app(tmp_path_factory: pytest.TempPathFactory, hub: Any) -> Iterator[Any]:
    """`python app.py` on a free loopback port with a private STUDIO_HOME, TMPDIR and gradio cache (see appserver)."""
    from .appserver import AppServer, require_app

    require_app()

    server = AppServer(tmp_path_factory.mktemp("live_app"), hub_endpoint=hub.endpoint)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def app_scenario(live_app: Any, sample: Sample) -> Any:
    """Three gradio_client users at once on the live app (scenario.py): convert, submit, watch, cancel, resume."""
    from . import scenario

    return scenario.run(live_app, sample)
