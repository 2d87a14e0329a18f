"""User-facing errors: the CLI prints these as plain messages, never as tracebacks."""

from __future__ import annotations


class CurateError(Exception):
    """A problem the user can fix (bad config, missing file, no network). Printed without a traceback."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.problems = problems or []

    def __str__(self) -> str:
        if not self.problems:
            return self.message
        lines = [self.message] + [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


class ConfigError(CurateError):
    """The pipeline YAML (or an override) is invalid; every problem is listed at once."""


class PreflightError(CurateError):
    """Inputs a run needs are missing or unreachable; raised before any work starts."""
