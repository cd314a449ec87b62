"""The document itself: docs/RELIABILITY.md lists exactly the cases pytest collects here (report.py --check)."""

from __future__ import annotations

import os

import pytest

from . import report


def test_doc_lists_every_collected_case(capsys: pytest.CaptureFixture[str]) -> None:
    """docs/RELIABILITY.md has one result row per collected case and none for a removed one (regenerate it with
    `python tests/reliability/report.py` after adding a case)."""
    if os.environ.get("RELIABILITY_RESULTS"):
        pytest.skip("report.py is regenerating the document in this run")
    assert report.DOC.is_file(), "docs/RELIABILITY.md is missing: run python tests/reliability/report.py"
    assert report.check(report.DOC) == 0, capsys.readouterr().out
