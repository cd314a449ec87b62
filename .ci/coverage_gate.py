"""Coverage targets from the product spec: ingestion and quality modules >= 80%, training code >= 70%."""

from __future__ import annotations

import sys
from pathlib import Path

import coverage

GROUPS = {
    "ingestion and quality": (
        80.0,
        ["safezip.py", "sources/", "ingest.py", "masks.py", "records.py", "quality", "split.py", "coords/",
         "dataset.py", "tasks.py", "formats.py"],
    ),
    "training": (70.0, ["config.py", "plan.py", "presets.py", "memory.py", "train.py", "train_setup.py", "callbacks.py",
                        "collate.py", "tokenize_cache.py"]),
}


def group_percent(cov: coverage.Coverage, patterns: list[str]) -> tuple[float, int]:
    """Statement coverage over every measured pipeline file matching one of the patterns."""
    statements = missing = files = 0
    for filename in cov.get_data().measured_files():
        rel = Path(filename).as_posix().split("/pipeline/", 1)[-1]
        if any(rel.startswith(p) or rel == p for p in patterns):
            _, stmts, _, miss, _ = cov.analysis2(filename)
            statements += len(stmts)
            missing += len(miss)
            files += 1
    return (100.0 * (statements - missing) / statements if statements else 0.0), files


def main() -> int:
    cov = coverage.Coverage()
    cov.load()
    failed = False
    for name, (target, patterns) in GROUPS.items():
        percent, files = group_percent(cov, patterns)
        status = "ok" if percent >= target else "BELOW TARGET"
        print(f"{name}: {percent:.1f}% over {files} files (target {target:.0f}%) {status}")
        failed |= percent < target
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
