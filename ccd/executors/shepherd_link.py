"""The daemon's end of its connection to the local shepherd (see ``shepherd.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ccd.errors import ExecutorError
from ccd.executors import shepherd
from ccd.usage import Usage

# (key, exit code, final log size or None, what it used or None) for every attempt that ends
ExitListener = Callable[[str, int, int | None, Usage | None], None]
# How often a connection is retried when the shepherd it reached was just exiting.
_CONNECT_TRIES = 3
_ANSWER_LIMIT = 1 << 20


class ShepherdLink:
    """One connection to the shepherd of a state directory. Requests are answered in order;
    ``on_exit`` hears of every attempt that ends, ``on_lost`` once if the shepherd goes away
    (then every job it was watching has lost its parent)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_exit: ExitListener,
        on_lost: Callable[[ShepherdLink], None],
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._on_exit = on_exit
        self._on_lost = on_lost
        self._answers: deque[asyncio.Future[dict[str, Any]]] = deque()
        self._closing = False
        self.alive = True
        self._task = asyncio.create_task(self._listen())

    @classmethod
    async def open(
        cls,
        runs_root: Path,
        *,
        start: bool,
        on_exit: ExitListener,
        on_lost: Callable[[ShepherdLink], None],
    ) -> ShepherdLink | None:
        """Connect to the shepherd of ``runs_root``, starting one if ``start`` (else None if
        none runs)."""
        name = shepherd.socket_name(str(runs_root))
        for _ in range(_CONNECT_TRIES):
            try:
                reader, writer = await asyncio.open_unix_connection(
                    shepherd.address(name), limit=_ANSWER_LIMIT
                )
            except ConnectionRefusedError:
                if not start:
                    return None
                await asyncio.to_thread(start_shepherd, name, runs_root)
                continue
            if shepherd.peer_uid(writer.get_extra_info("socket")) != os.getuid():
                writer.close()
                raise ExecutorError(f"another user holds the local shepherd's address {name}")
            return cls(reader, writer, on_exit, on_lost)
        raise ExecutorError(f"cannot reach a local shepherd for {runs_root}")

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send a request and await its answer; ConnectionError if the shepherd is gone."""
        if not self.alive:
            raise ConnectionError("the local shepherd is gone")
        answer = asyncio.get_running_loop().create_future()
        self._answers.append(answer)
        self._writer.write(shepherd.encode_line(message))
        reply: dict[str, Any] = await answer
        return reply

    async def close(self) -> None:
        self._closing = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()

    async def _listen(self) -> None:
        try:
            while line := await self._reader.readline():
                message = json.loads(line.decode())
                if message["op"] == "exited":
                    usage = _usage(message.get("usage"))
                    self._on_exit(message["key"], message["code"], message["log"], usage)
                else:
                    self._answers.popleft().set_result(message)
        except (OSError, ValueError, KeyError, IndexError):
            pass  # a broken connection: the same as the shepherd going away
        finally:
            self.alive = False
            gone = ConnectionError("the local shepherd is gone")
            for answer in self._answers:
                if not answer.done():
                    answer.set_exception(gone)
            self._answers.clear()
            if not self._closing:
                self._writer.close()
                self._on_lost(self)


def _usage(figures: dict[str, float] | None) -> Usage | None:
    if not figures:
        return None
    rss_kib = figures.get("maxrss")
    return Usage(
        figures.get("wall"), figures.get("cpu"), None if rss_kib is None else int(rss_kib) * 1024
    )


def start_shepherd(name: str, runs_root: Path) -> None:
    """Start a shepherd and return once it listens (or another one already did). Blocking:
    called in a worker thread, once per shepherd."""
    runs_root.mkdir(parents=True, exist_ok=True)
    ready_r, ready_w = os.pipe()
    try:
        with open(runs_root / "shepherd.log", "ab") as log:
            # -I -S: only the standard library is needed, and starting takes a third as long.
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", shepherd.__file__, name, str(ready_w)],
                pass_fds=(ready_w,),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
                cwd="/",
            )
    finally:
        os.close(ready_w)
    # Until the shepherd says it listens (or dies). The process we started forks the
    # shepherd away and exits, so the shepherd is nobody's child to wait for.
    with os.fdopen(ready_r, "rb") as ready:
        ready.readline()
    proc.wait()
