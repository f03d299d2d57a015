"""Running short commands and moving small files on one machine: the `Shell` protocol, and
`LocalShell` for this machine (an ssh host's is `ccd.executors.ssh.SshShell`). The Slurm
backend runs ``sbatch``/``squeue`` through one of these.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# The most one read returns: a log's new bytes (the next read goes on), a status file.
READ_MAX_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class CommandResult:
    returncode: int
    stdout: bytes
    stderr: bytes


class Shell(Protocol):
    """Runs short commands and moves small files on one machine: this one, or one reached
    over SSH."""

    async def run(
        self, argv: Sequence[str], *, stdin: bytes | None = None, timeout_s: float | None = None
    ) -> CommandResult:
        """Run ``argv`` (no shell: arguments are passed as they are) and collect output."""
        ...

    async def write_files(self, files: Mapping[str, bytes], *, mode: int = 0o644) -> None:
        """Create each file (absolute path -> content), creating parent directories."""
        ...

    async def read_file(self, path: str, offset: int = 0, limit: int = READ_MAX_BYTES) -> bytes:
        """Bytes of ``path`` from ``offset`` (empty if the file does not exist)."""
        ...


class LocalShell:
    """The `Shell` of this machine: subprocesses and plain files."""

    async def run(
        self, argv: Sequence[str], *, stdin: bytes | None = None, timeout_s: float | None = None
    ) -> CommandResult:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin), timeout_s)
        except (TimeoutError, asyncio.CancelledError):
            # Timed out, or the caller is closing: no process (nor its pipes) left behind.
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.communicate()
            raise
        assert proc.returncode is not None
        return CommandResult(proc.returncode, out, err)

    async def write_files(self, files: Mapping[str, bytes], *, mode: int = 0o644) -> None:
        await asyncio.to_thread(_write_files, files, mode)

    async def read_file(self, path: str, offset: int = 0, limit: int = READ_MAX_BYTES) -> bytes:
        return read_bytes(_expand(path), offset, limit)


def _expand(path: str) -> Path:
    return Path(path).expanduser()


def read_bytes(path: Path, offset: int, limit: int) -> bytes:
    """Up to ``limit`` bytes of a local file from ``offset`` (empty if it does not exist, or
    if ``offset`` is at or past its end)."""
    try:
        with open(path, "rb") as f:
            if offset >= os.fstat(f.fileno()).st_size:
                return b""  # seek() past the file system's largest file size is EINVAL
            f.seek(offset)
            return f.read(limit)
    except FileNotFoundError:
        return b""


def _write_files(files: Mapping[str, bytes], mode: int) -> None:
    for name, data in files.items():
        path = _expand(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(mode)
