"""systemd's notify protocol: one datagram to ``$NOTIFY_SOCKET``, no dependency needed."""

from __future__ import annotations

import os
import socket


def notify(state: str) -> bool:
    """Send e.g. ``READY=1``; returns False when not run by systemd (no socket to tell)."""
    address = os.environ.get("NOTIFY_SOCKET")
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
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and int(pid) != os.getpid()):
        return None
    return int(usec) / 2_000_000
