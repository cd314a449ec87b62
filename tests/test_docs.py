"""The documentation's runnable examples: every fenced block preceded by `<!-- doctest -->` is executed.

Blocks of one document run in order in one scratch folder (so a later block can use what an earlier one made),
with the repository on PYTHONPATH and a private STUDIO_HOME; a failing block fails the test with its output.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"<!-- doctest -->\s*\n```(bash|python)\n(.*?)\n```", re.S)
DOCS = sorted(p for p in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")] if MARKER.search(p.read_text()))


def doc_blocks(path: Path) -> list[tuple[str, str]]:
    """(language, code) of each marked block, in document order."""
    return [(m.group(1), m.group(2)) for m in MARKER.finditer(path.read_text(encoding="utf-8"))]


def run_block(language: str, code: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = ["bash", "-euo", "pipefail", "-c", code] if language == "bash" else [sys.executable, "-c", code]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_some_documents_have_runnable_examples():
    names = {p.name for p in DOCS}
    assert "QUICKSTART.md" in names


@pytest.mark.slow
@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_documented_examples_run(doc: Path, tmp_path: Path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), STUDIO_HOME=str(tmp_path / "home"), OMP_NUM_THREADS="1")
    for index, (language, code) in enumerate(doc_blocks(doc), start=1):
        result = run_block(language, code, tmp_path, env)
        assert result.returncode == 0, (
            f"{doc.name} example {index} failed ({language}):\n{code}\n--- stdout\n{result.stdout[-3000:]}"
            f"\n--- stderr\n{result.stderr[-3000:]}"
        )
