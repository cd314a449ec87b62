"""The one error type for bad user input: the CLI prints it as a single `error:` line (exit 2)."""

from __future__ import annotations

import os


class UserError(Exception):
    """Unusable input or configuration; the message names the file/record and the problem."""

    def __init__(self, message: str, path: str | os.PathLike[str] | None = None) -> None:
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)
