"""The one root of every error ccd raises on purpose.

Library code raises these; only the CLI and the daemon turn them into exit codes or HTTP
statuses. Each subclass carries the data a user needs to act on it.
"""

from __future__ import annotations

from dataclasses import dataclass


class CcdError(Exception):
    """Base of all ccd errors; ``str(err)`` is a one-line message fit for a user."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a workflow file, located as precisely as we can."""

    file: str
    line: int | None
    message: str
    job: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        subject = ""
        if self.job is not None:
            subject += f"job '{self.job}': "
        if self.field is not None:
            subject += f"field '{self.field}': "
        return f"{where}: {subject}{self.message}"


class SpecError(CcdError):
    """A workflow file is invalid; carries every problem found, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class TransitionError(CcdError):
    """A job state change that the transition table does not allow."""


class StoreError(CcdError):
    """The state database is unusable (newer schema, corrupt, locked by another daemon)."""


class Conflict(CcdError):
    """A command that does not fit the workflow's current state (e.g. deleting a running one)."""


class NotFound(CcdError):
    """A workflow, job or attempt that does not exist."""


class ExecutorError(CcdError):
    """An executor could not start, watch or kill a job."""


class ConfigError(CcdError):
    """The daemon's config file is invalid."""


class AlreadyRunning(CcdError):
    """Another daemon holds the state directory's lock."""
