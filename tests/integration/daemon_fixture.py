"""A real `ccd` daemon process in a temp state dir, for tests that drive it over its socket."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ccd.client import Client, DaemonNotRunning
from tests.helpers import wait_for

START_TIMEOUT_S = 20.0


class DaemonProcess:
    def __init__(self, root: Path, config: Path | None = None) -> None:
        self.root = root
        self.state_dir = root / "state"
        sock_dir = root / "run"
        sock_dir.mkdir(mode=0o700, exist_ok=True)
        self.socket = sock_dir / "ccd.sock"
        self.config = config
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = Client(self.socket, timeout_s=10)
        self.stderr_path = root / "ccd.stderr"

    def argv(self) -> list[str]:
        argv = [
            sys.executable,
            "-m",
            "ccd",
            "--state-dir",
            str(self.state_dir),
            "--socket",
            str(self.socket),
        ]
        if self.config is not None:
            argv += ["--config", str(self.config)]
        return argv

    def start(self) -> DaemonProcess:
        with self.stderr_path.open("ab") as err:
            self.proc = subprocess.Popen(self.argv(), stdout=subprocess.DEVNULL, stderr=err)
        wait_for(self._healthy, START_TIMEOUT_S, "the daemon to answer")
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(
                f"ccd exited {self.proc.returncode}: {self.stderr_path.read_text()}"
            )
        try:
            return self.client.health()["status"] == "ok"
        except (DaemonNotRunning, OSError):
            return False

    def stop(self, signum: int = signal.SIGTERM, timeout_s: float = 15.0) -> int:
        """Signal the daemon and wait for it to exit; its exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        return self.proc.wait(timeout_s)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def ccctl_popen(self, *args: str) -> subprocess.Popen[str]:
        env = dict(os.environ, CCD_SOCKET=str(self.socket))
        return subprocess.Popen(
            [sys.executable, "-m", "cli", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    def ccctl(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, CCD_SOCKET=str(self.socket))
        return subprocess.run(
            [sys.executable, "-m", "cli", *args],
            capture_output=True,
            text=True,
            env=env,
            check=check,
            timeout=120,
        )


@dataclass(frozen=True, slots=True)
class Sse:
    """One server-sent event as a client sees it (``id`` None: the event has none)."""

    id: str | None
    kind: str | None
    data: dict[str, Any]


def read_events(
    socket_path: Path,
    path: str,
    stop: Callable[[list[Sse]], bool],
    *,
    headers: dict[str, str] | None = None,
    timeout_s: float = 30.0,
) -> list[Sse]:
    """GET an event stream from the daemon's socket until ``stop(events so far)`` holds.
    HTTP/1.0, so the body comes unchunked."""
    head = f"GET {path} HTTP/1.0\r\nHost: ccd\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    events: list[Sse] = []
    deadline = time.monotonic() + timeout_s
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        sock.connect(str(socket_path))
        sock.sendall(head.encode() + b"\r\n")
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            buffer += sock.recv(65536)
        status_line, _, buffer = buffer.partition(b"\r\n\r\n")
        assert b" 200 " in status_line.split(b"\r\n")[0], status_line
        while not stop(events):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {len(events)} events: {events[-3:]}")
            while b"\n\n" not in buffer:
                chunk = sock.recv(65536)
                if not chunk:
                    return events
                buffer += chunk
            block, _, buffer = buffer.partition(b"\n\n")
            fields: dict[str, str] = {}
            for line in block.decode().splitlines():
                name, _, value = line.partition(": ")
                fields[name] = value
            if "data" in fields:
                events.append(
                    Sse(fields.get("id"), fields.get("event"), json.loads(fields["data"]))
                )
    return events
