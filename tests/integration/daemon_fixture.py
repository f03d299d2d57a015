"""A real `ccd` daemon process in a temp state dir, for tests that drive it over its socket."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

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
