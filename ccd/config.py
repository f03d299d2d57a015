"""The daemon's configuration: one frozen tree, loaded and validated once.

Every option is documented in ``configs/ccd.yaml`` (a test loads that file). Building the
config only validates; nothing is opened here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ccd import paths
from ccd.errors import CcdError
from ccd.spec import LOCAL_HOST, HostSpec

SOCKET_NAME = "ccd.sock"
HOST_TYPES = ("local",)


class ConfigError(CcdError):
    """The daemon's config file is invalid."""


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_jobs: int | None = None
    retry_backoff_s: float = 1.0
    retry_backoff_max_s: float = 300.0
    kill_grace_s: float = 5.0
    progress_interval_s: float = 1.0


@dataclass(frozen=True, slots=True)
class Config:
    state_dir: Path
    socket: Path
    hosts: Mapping[str, HostSpec]
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    max_request_bytes: int = 16 << 20
    shutdown_grace_s: float = 5.0  # how long a stop waits for in-flight writes


def default_socket(state_dir: Path) -> Path:
    """``$XDG_RUNTIME_DIR/ccd.sock``, else beside the database."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return Path(runtime) / SOCKET_NAME if runtime else state_dir / SOCKET_NAME


def load(path: Path | None, *, state_dir: Path | None = None, socket: Path | None = None) -> Config:
    """Read the config file (if any); command-line values win over the file's."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"{path}: {err}") from err
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        data = loaded or {}
    return _build(data, str(path or "<defaults>"), state_dir, socket)


_TOP_FIELDS = {"state_dir", "socket", "hosts", "limits", "max_request_bytes", "shutdown_grace_s"}
_LIMIT_FIELDS = set(LimitsConfig.__dataclass_fields__)


def _build(data: dict[str, Any], where: str, state_dir: Path | None, socket: Path | None) -> Config:
    _check_fields(data, _TOP_FIELDS, where, "")
    state = state_dir or _path(data.get("state_dir")) or paths.default_state_dir()
    sock = socket or _path(data.get("socket")) or default_socket(state)
    limits_data = data.get("limits") or {}
    _check_fields(limits_data, _LIMIT_FIELDS, where, "limits.")
    limits = LimitsConfig(**{k: _number(v, where, f"limits.{k}") for k, v in limits_data.items()})
    return Config(
        state_dir=state,
        socket=sock,
        hosts=_hosts(data.get("hosts") or {}, where),
        limits=limits,
        max_request_bytes=int(_number(data.get("max_request_bytes", 16 << 20), where,
                                      "max_request_bytes")),
        shutdown_grace_s=float(_number(data.get("shutdown_grace_s", 5.0), where,
                                       "shutdown_grace_s")),
    )  # fmt: skip


def _hosts(data: Any, where: str) -> dict[str, HostSpec]:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: field 'hosts': expected a mapping of host names")
    hosts = {LOCAL_HOST: HostSpec(LOCAL_HOST, "local")}
    for name, entry in data.items():
        entry = entry or {}
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: host '{name}': expected a mapping")
        _check_fields(entry, {"type", "max_jobs"}, where, f"hosts.{name}.")
        host_type = entry.get("type", "local")
        if host_type not in HOST_TYPES:
            raise ConfigError(f"{where}: host '{name}': field 'type': unknown type '{host_type}'")
        max_jobs = entry.get("max_jobs")
        if max_jobs is not None and (not isinstance(max_jobs, int) or max_jobs < 1):
            raise ConfigError(f"{where}: host '{name}': field 'max_jobs': expected an integer >= 1")
        hosts[str(name)] = HostSpec(str(name), host_type, max_jobs)
    return hosts


def _check_fields(data: Any, allowed: set[str], where: str, prefix: str) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: field '{prefix.rstrip('.')}': expected a mapping")
    unknown = sorted(set(map(str, data)) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown field '{prefix}{unknown[0]}'")


def _number(value: Any, where: str, name: str) -> Any:
    if value is None and name == "limits.max_jobs":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"{where}: field '{name}': expected a non-negative number")
    return value


def _path(value: Any) -> Path | None:
    return Path(str(value)).expanduser() if value else None
