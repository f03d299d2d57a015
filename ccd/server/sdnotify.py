"""systemd's notify protocol: one datagram to ``$NOTIFY_SOCKET``, no dependency needed.

`take_environment` moves systemd's variables out of ``os.environ`` at start-up, so that jobs
(which inherit the daemon's environment) cannot talk to systemd in the daemon's name.
"""

from __future__ import annotations

import os
import socket

_NOTIFY_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
_taken: dict[str, str] = {}


def take_environment() -> None:
    """Remember systemd's notify variables and remove them from the environment."""
    for name in _NOTIFY_VARS:
        value = os.environ.pop(name, None)
        if value is not None:
            _taken[name] = value


def _get(name: str) -> str | None:
    return _taken.get(name) or os.environ.get(name)


def notify(state: str) -> bool:
    """Send e.g. ``READY=1``; returns False when not run by systemd (no socket to tell)."""
    address = _get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto(state.encode(), address)
        except OSError:
            return False
    return True


def watchdog_interval_s() -> float | None:
    """Half of ``$WATCHDOG_USEC`` (ping twice per period), if systemd asked for pings."""
    usec = _get("WATCHDOG_USEC")
    pid = _get("WATCHDOG_PID")
    if not usec or (pid and int(pid) != os.getpid()):
        return None
    return int(usec) / 2_000_000
