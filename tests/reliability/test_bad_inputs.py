"""Bad inputs through the CLI, end to end: every case exits 2 with one `error:` line holding the expected text, no
traceback, nothing written anywhere (no --out, no temporary file in the private TMPDIR, inputs untouched) and no
traversal target created. The cases run two at a time in subprocesses, each in its own folder (see harness.py).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .cases import CASES, CONFIG_CASES, ESCAPE, Case
from .harness import CaseFolder, CliResult, clean_failure_problems, run_cli
from .hostile import Sample


@pytest.fixture(scope="module")
def outcomes(sample: Sample, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[CaseFolder, CliResult]]:
    """Every case run once (two subprocesses at a time): case id -> (its folder, what the run left)."""
    base = tmp_path_factory.mktemp("bad_inputs")

    def one(case: Case) -> tuple[str, tuple[CaseFolder, CliResult]]:
        folder = CaseFolder.make(base / case.id)
        args = case.build(sample, folder.inputs)
        return case.id, (folder, run_cli(folder, case.verb, args))

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(one, CASES))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_cli_refuses_cleanly(case: Case, outcomes: dict[str, tuple[CaseFolder, CliResult]]) -> None:
    folder, result = outcomes[case.id]
    assert clean_failure_problems(result, case.expect) == [], result.describe()
    if case not in CONFIG_CASES:
        named = [a for a in result.argv[1:] if "/" in a and f"{Path(a).name}: " in result.error_lines()[0]]
        assert named, "the error names the input file at fault"
    assert list(folder.tmp.iterdir()) == [], "TMPDIR is empty afterwards"
    assert not (folder.work / "out").exists() and not (folder.work / "run").exists()
    escapes = [p for p in (folder.root.parent, folder.root, Path("/tmp"), Path("/")) if (p / ESCAPE).exists()]
    assert escapes == [], "a traversal target was written"
    assert not (folder.root / "safezip-sibling").exists()
