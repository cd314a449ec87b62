"""Hermetic tests: offline, a private data home per test session, real fixtures read from ../shared when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures"


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
