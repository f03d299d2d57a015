"""The systemd user unit: `systemd-analyze verify` accepts it, and the daemon speaks systemd's
notify protocol (READY, WATCHDOG, RELOADING, STOPPING) over a real datagram socket."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "ccd.service"
EXAMPLE_CONFIG = ROOT / "configs" / "ccd.yaml"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
START_TIMEOUT_S = 20.0
STEP_TIMEOUT_S = 10.0


def _require(program: str, install: str) -> str:
    """The program's path; a missing one fails in CI (it must not go unnoticed), else skips."""
    found = shutil.which(program)
    if found is None:
        message = f"{program} is not installed: {install} (scripts/setup.sh does)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


def _unit_settings(text: str) -> dict[str, str]:
    """``Key=value`` lines of a unit file (the last one wins), comments skipped."""
    settings = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";")):
            key, value = line.split("=", 1)
            settings[key.strip()] = value.strip()
    return settings


def _verify(unit: Path, tmp_path: Path) -> tuple[int, list[str]]:
    """Run `systemd-analyze --user verify`; its exit code and the lines about ``unit``."""
    analyze = _require("systemd-analyze", "apt-get install systemd")
    runtime = tmp_path / "runtime"  # --user needs a runtime dir; keep it private and ours
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime), SYSTEMD_PAGER="", SYSTEMD_COLORS="0")
    result = subprocess.run(
        [analyze, "--user", "verify", str(unit)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    output = result.stdout + result.stderr
    # Only lines about our unit count: on machines without a running systemd (containers,
    # CI) systemd-analyze may also complain about the system's own units or /run/systemd.
    ours = [line for line in output.splitlines() if unit.name in line]
    return result.returncode, ours


def _installable_copy(tmp_path: Path, text: str | None = None) -> Path:
    """The unit with ExecStart pointing at the installed `ccd` script.

    `systemd-analyze verify` checks that ExecStart's program exists, and the unit names
    %h/.local/bin/ccd (a `pip install --user`), which a venv or an editable install does not
    create. Only the program is rewritten; its arguments and every other line stay."""
    ccd = _require("ccd", "pip install -e .")
    text = UNIT.read_text() if text is None else text
    text, count = re.subn(
        r"^ExecStart=\S+", lambda _: f"ExecStart={Path(ccd).resolve()}", text, flags=re.M
    )
    assert count == 1, "expected exactly one ExecStart= line"
    copy = tmp_path / "unit" / UNIT.name
    copy.parent.mkdir()
    copy.write_text(text)
    return copy


# -- the unit file ------------------------------------------------------------------------


def test_unit_file_settings() -> None:
    settings = _unit_settings(UNIT.read_text())
    assert settings["Type"] == "notify"
    assert settings["NotifyAccess"] == "main"
    assert settings["ExecStart"].startswith("%h/.local/bin/ccd")
    assert settings["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert settings["KillMode"] == "process"  # jobs share the cgroup: never kill them
    assert settings["OOMPolicy"] == "continue"
    assert settings["WatchdogSec"] == "60"
    assert settings["Restart"] == "on-failure"
    assert settings["WantedBy"] == "default.target"


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    code, ours = _verify(_installable_copy(tmp_path), tmp_path)
    assert code == 0 and not ours, "\n".join(ours) or f"systemd-analyze exited {code}"


def test_systemd_analyze_warnings_are_seen(tmp_path: Path) -> None:
    """systemd-analyze only warns (exit 0) about a bad setting: check the filter catches it."""
    broken = UNIT.read_text().replace("KillMode=process", "KillMode=procez")
    code, ours = _verify(_installable_copy(tmp_path, broken), tmp_path)
    assert any("procez" in line for line in ours), (code, ours)


# -- the notify protocol ------------------------------------------------------------------


class Notifications:
    """Datagrams the daemon sends to $NOTIFY_SOCKET, each as {key: value}."""

    def __init__(self, sock: socket.socket, proc: subprocess.Popen[bytes], stderr: Path):
        self.sock = sock
        self.proc = proc
        self.stderr = stderr
        self.seen: list[dict[str, str]] = []

    def next(self, deadline: float) -> dict[str, str]:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no notification in time; seen {self.seen}")
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"ccd exited {self.proc.returncode}; seen {self.seen}; "
                    f"stderr: {self.stderr.read_text()}"
                )
            self.sock.settimeout(min(remaining, 0.5))  # wake up to notice an early exit
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            message = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.seen.append(message)
            return message

    def expect(self, key: str, timeout_s: float = STEP_TIMEOUT_S) -> dict[str, str]:
        """The next message setting ``key=1``; only watchdog pings may come before it."""
        deadline = time.monotonic() + timeout_s
        while True:
            message = self.next(deadline)
            if message.get(key) == "1":
                return message
            assert message.keys() <= {"WATCHDOG", "STATUS"}, f"expected {key}=1: {self.seen}"


def test_daemon_speaks_the_notify_protocol(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir(mode=0o700)  # ccd refuses a socket directory others can enter
    notify_path = run / "notify"
    api_socket = run / "ccd.sock"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"}
    }
    env |= {"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "200000"}
    # This interpreter, so the daemon is this checkout's code (the `ccd` script runs the same
    # main()); --config: the example file must be one the daemon starts and reloads with.
    argv = [
        sys.executable,
        "-c",
        "from ccd.server.daemon import main; main()",
        "--state-dir",
        str(tmp_path / "state"),
        "--socket",
        str(api_socket),
        "--config",
        str(EXAMPLE_CONFIG),
    ]
    stderr = tmp_path / "ccd.stderr"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(notify_path))
        with stderr.open("wb") as err:
            proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            notes = Notifications(sock, proc, stderr)
            ready = notes.expect("READY", START_TIMEOUT_S)
            assert ready.get("MAINPID") == str(proc.pid)  # NotifyAccess=main: no forking
            assert api_socket.exists()  # READY only once it listens
            notes.expect("WATCHDOG")
            notes.expect("WATCHDOG")  # pinged again, not once

            proc.send_signal(signal.SIGHUP)
            notes.expect("RELOADING")
            notes.expect("READY")

            proc.send_signal(signal.SIGTERM)
            notes.expect("STOPPING")
            assert proc.wait(STEP_TIMEOUT_S) == 0, stderr.read_text()
            assert not api_socket.exists()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
