"""The shape of one row of the error table; each adapter holds the rows for its own CLI.

A row is a real message (a regex, case-insensitive) or exit code that identifies an error
class. The classes and the order they are tried in are ``recovery.error_patterns``'s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ErrorPattern:
    """One real message (a regex, case-insensitive) or exit code that identifies a class."""

    cli: str  # an agent name, or "*" for a row that holds for every CLI
    cause: str
    regex: str | None = None
    exit_codes: tuple[int, ...] = ()
    source: str = "reference"
    compiled: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.regex is not None:
            object.__setattr__(self, "compiled", re.compile(self.regex, re.IGNORECASE))


def error_pattern(
    cli: str, cause: str, regex: str | None = None, *codes: int, source: str = "reference"
) -> ErrorPattern:
    """Shorthand for a table row: ``error_pattern("codex", "auth", r"401 Unauthorized")``."""
    return ErrorPattern(cli=cli, cause=cause, regex=regex, exit_codes=codes, source=source)
