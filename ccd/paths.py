"""Where ccd keeps its state: XDG defaults, overridable by flags and environment."""

from __future__ import annotations

import os
from pathlib import Path

DB_NAME = "ccd.db"
LOG_NAME = "ccd.log"
RUNS_NAME = "runs"
SOCKET_NAME = "ccd.sock"


def default_state_dir() -> Path:
    """``$CCD_STATE_DIR``, else ``$XDG_STATE_HOME/ccd``, else ``~/.local/state/ccd``."""
    explicit = os.environ.get("CCD_STATE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return base / "ccd"


def prepare_state_dir(state_dir: Path) -> Path:
    """Create the state dir private to its user (0700) and return it."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return state_dir


def default_socket(state_dir: Path) -> Path:
    """``$XDG_RUNTIME_DIR/ccd.sock``, else beside the database."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return Path(runtime) / SOCKET_NAME if runtime else state_dir / SOCKET_NAME
