"""Hermetic tests: offline, a private data home per test session, real fixtures read from ../shared when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers on two cores: one compute thread each (and in every process they start), not two each.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
# The slowest groups (minutes of subprocess trainings, servers, a browser), longest first.
LONG_GROUPS = ["reliability", "test_celery.py", "test_train.py", "test_docs.py", "test_browser.py", "test_app.py",
               "test_runner.py", "test_export.py", "test_demo.py", "test_evaluate.py"]
FIXTURES = ROOT.parent / "shared" / "fixtures"


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist turns the markers into scheduling groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Groups for pytest-xdist's `--dist loadgroup`: one test file per worker (module fixtures are built once), and
    the whole reliability suite together (its files share one live app server and one multi-user scenario)."""
    tests = Path(__file__).resolve().parent
    groups: dict[str, str] = {}
    for item in items:
        path = Path(str(item.path)).resolve().relative_to(tests)
        groups[item.nodeid] = "reliability" if path.parts[0] == "reliability" else path.as_posix()
        item.add_marker(pytest.mark.xdist_group(groups[item.nodeid]))
    # Groups are handed to idle workers in collection order: the longest first, so no long file starts last.
    items.sort(key=lambda item: LONG_GROUPS.index(groups[item.nodeid]) if groups[item.nodeid] in LONG_GROUPS
               else len(LONG_GROUPS))


@pytest.fixture(scope="session", autouse=True)
def studio_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data home shared by the whole session (tiny models are built once into it)."""
    home = Path(os.environ.get("STUDIO_TEST_HOME") or tmp_path_factory.mktemp("studio_home"))
    os.environ["STUDIO_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The real SAM 2 sample files; tests that use them skip when the folder is absent."""
    if not FIXTURES.is_dir():
        pytest.skip("../shared/fixtures is not present")
    return FIXTURES


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in generated SAM 2 session (all input formats), made once per test session."""
    from pipeline.sample import generate_sample

    out = tmp_path_factory.mktemp("sample")
    generate_sample(out)
    return out
