"""What a job hands on besides its exit status: its outputs (``key=value`` lines written to
``$CCD_OUTPUTS``) and jobs to add (a workflow fragment written to ``$CCD_NEW_JOBS``).

Both are files in the attempt's run directory, read once the job has succeeded and stored
with that success (`collect`). A file that breaks the rules fails the job, with the reason:
a job that meant to hand something on and could not has not done its work.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ccd.executors.base import NEW_JOBS_NAME, OUTPUTS_NAME
from ccd.spec.refs import KEY_RE

MAX_OUTPUTS_BYTES = 1 << 20  # as GitHub Actions: outputs are values, not data sets
MAX_NEW_JOBS_BYTES = 4 << 20


class ResultError(ValueError):
    """A job's outputs or new-jobs file is unusable; the message says where and why."""


@dataclass(frozen=True, slots=True)
class Results:
    outputs: dict[str, str]
    new_jobs: str | None  # the fragment's text, if the job wrote one


def parse_outputs(data: bytes) -> dict[str, str]:
    """``key=value`` lines (blank lines skipped; a later key wins, as in GitHub Actions).
    Keys are ``[A-Za-z_][A-Za-z0-9_-]*``; a value is the rest of its line, as is."""
    if len(data) > MAX_OUTPUTS_BYTES:
        raise ResultError(f"$CCD_OUTPUTS is over the limit of {MAX_OUTPUTS_BYTES} bytes")
    if b"\0" in data:
        raise ResultError("$CCD_OUTPUTS holds binary data (a NUL byte): write key=value lines")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ResultError(f"$CCD_OUTPUTS is not UTF-8 text (byte {err.start})") from err
    outputs: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ResultError(
                f"$CCD_OUTPUTS line {number}: no '=' in {line[:60]!r}: write key=value"
            )
        if not KEY_RE.fullmatch(key):
            raise ResultError(
                f"$CCD_OUTPUTS line {number}: invalid key {key[:60]!r}: use [A-Za-z_][A-Za-z0-9_-]*"
            )
        outputs[key] = value
    return outputs


def parse_new_jobs(data: bytes) -> str | None:
    if not data.strip():
        return None
    if len(data) > MAX_NEW_JOBS_BYTES:
        raise ResultError(f"$CCD_NEW_JOBS is over the limit of {MAX_NEW_JOBS_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ResultError(f"$CCD_NEW_JOBS is not UTF-8 text (byte {err.start})") from err


# (file name, most bytes wanted) -> its bytes, empty if there is no such file
ReadFile = Callable[[str, int], Awaitable[bytes]]


async def collect(read: ReadFile) -> Results:
    """Read and check both files of a succeeded attempt; ResultError if either is bad.
    One byte over each limit is read, to tell a full file from a truncated one."""
    outputs = parse_outputs(await read(OUTPUTS_NAME, MAX_OUTPUTS_BYTES + 1))
    new_jobs = parse_new_jobs(await read(NEW_JOBS_NAME, MAX_NEW_JOBS_BYTES + 1))
    return Results(outputs, new_jobs)
