"""The daemon's configuration: one frozen tree, loaded and validated once.

Every option is documented in ``configs/ccd.yaml`` (a test loads that file). Building the
config only validates; nothing is opened here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from ccd import paths
from ccd.errors import ConfigError
from ccd.models import Limits
from ccd.paths import SOCKET_NAME as SOCKET_NAME
from ccd.paths import default_socket as default_socket
from ccd.spec import LOCAL_HOST, HostSpec, valid_name
from ccd.spec.hosts import RESOURCE_FIELDS, SlurmOptions, SshOptions, split_problem
from ccd.spec.model import HOST_TYPES as HOST_TYPES  # ("local", "ssh", "slurm")
from ccd.spec.model import OPTION_FIELDS
from ccd.spec.notify import NotifySpec
from ccd.spec.notify import from_plain as notify_from_plain


@dataclass(frozen=True, slots=True)
class HttpConfig:
    listen: str | None = None  # "HOST:PORT"; None: no TCP listener
    allow_remote: bool = False  # may `listen` be other than a loopback address?

    def address(self) -> tuple[str, int] | None:
        return None if self.listen is None else parse_listen(self.listen)


@dataclass(frozen=True, slots=True)
class Config:
    state_dir: Path
    socket: Path
    hosts: Mapping[str, HostSpec]
    limits: Limits = field(default_factory=Limits)
    max_request_bytes: int = 16 << 20
    shutdown_grace_s: float = 5.0  # how long a stop waits for in-flight writes
    http: HttpConfig = field(default_factory=HttpConfig)
    notify: tuple[NotifySpec, ...] = ()  # for every workflow, besides each one's own


def load(
    path: Path | None,
    *,
    state_dir: Path | None = None,
    socket: Path | None = None,
    http_listen: str | None = None,
    http_allow_remote: bool = False,
) -> Config:
    """Read the config file (if any); command-line values win over the file's."""
    data: dict[str, Any] = {}
    if path is not None:
        data = _read(path)
    where = str(path or "<defaults>")
    config = _build(data, where, state_dir, socket)
    if http_listen is not None or http_allow_remote:
        listen = http_listen or config.http.listen
        http = HttpConfig(listen, http_allow_remote or config.http.allow_remote)
        config = replace(config, http=_checked_http(http, "--http"))
    return config


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port); ValueError if it is not."""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected HOST:PORT such as 127.0.0.1:8787, not '{text}'")
    return host, int(port)


class _Loader(yaml.SafeLoader):
    """The safe loader, except that ``1:30:00`` stays a string: YAML 1.1 reads base-60
    numbers (5400), which would turn a walltime into as many minutes."""


_BASE_60 = re.compile(r"[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$")
_Loader.yaml_implicit_resolvers = {
    first: (
        [("tag:yaml.org,2002:str", _BASE_60), *resolvers]
        if first in "+-0123456789"
        else list(resolvers)
    )
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _read(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.load(path.read_text(), Loader=_Loader)  # a SafeLoader
    except OSError as err:
        raise ConfigError(f"{path}: {err.strerror}") from err
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: {err.problem}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML") from err
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return loaded


_TOP_FIELDS = {
    "state_dir",
    "socket",
    "hosts",
    "limits",
    "max_request_bytes",
    "shutdown_grace_s",
    "http",
    "notify",
}
_LIMIT_FIELDS = set(Limits.__dataclass_fields__)
_HTTP_FIELDS = set(HttpConfig.__dataclass_fields__)


def _build(data: dict[str, Any], where: str, state_dir: Path | None, socket: Path | None) -> Config:
    _check_fields(data, _TOP_FIELDS, where, "")
    state = state_dir or _path(data.get("state_dir"), where, "state_dir")
    state = state or paths.default_state_dir()
    sock = socket or _path(data.get("socket"), where, "socket") or default_socket(state)
    return Config(
        state_dir=state,
        socket=sock,
        hosts=_hosts(_mapping(data, "hosts", where), where),
        limits=_limits(_mapping(data, "limits", where), where),
        max_request_bytes=_count(
            data.get("max_request_bytes", 16 << 20), where, "max_request_bytes"
        ),
        shutdown_grace_s=_seconds(data.get("shutdown_grace_s", 5.0), where, "shutdown_grace_s"),
        http=_http(_mapping(data, "http", where), where),
        notify=_notify(data.get("notify"), where),
    )


def _notify(data: Any, where: str) -> tuple[NotifySpec, ...]:
    found = notify_from_plain(data)
    if isinstance(found, list):  # the first problem, as every config error is one line
        raise ConfigError(f"{where}: field 'notify': {found[0]}")
    return found


def _http(data: dict[str, Any], where: str) -> HttpConfig:
    _check_fields(data, _HTTP_FIELDS, where, "http.")
    listen = data.get("listen")
    if listen is not None and not isinstance(listen, str):
        raise ConfigError(
            f"{where}: field 'http.listen': expected HOST:PORT such as 127.0.0.1:8787"
        )
    allow_remote = data.get("allow_remote", False)
    if not isinstance(allow_remote, bool):
        raise ConfigError(f"{where}: field 'http.allow_remote': expected true or false")
    return _checked_http(HttpConfig(listen, allow_remote), f"{where}: field 'http.listen'")


def _checked_http(http: HttpConfig, where: str) -> HttpConfig:
    try:
        http.address()
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None
    return http


def _limits(data: dict[str, Any], where: str) -> Limits:
    _check_fields(data, _LIMIT_FIELDS, where, "limits.")
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key == "max_jobs":
            values[key] = None if value is None else _count(value, where, "limits.max_jobs")
        else:
            values[key] = _seconds(value, where, f"limits.{key}")
    return Limits(**values)


def _hosts(data: dict[str, Any], where: str) -> dict[str, HostSpec]:
    hosts = {LOCAL_HOST: HostSpec(LOCAL_HOST, "local")}
    for name, entry in data.items():
        if not isinstance(name, str) or not valid_name(name):
            raise ConfigError(f"{where}: host '{name}': invalid name (use [A-Za-z0-9_.-])")
        entry = {} if entry is None else entry
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: host '{name}': expected a mapping")
        hosts[name] = _host(name, entry, where)
    for name, host in hosts.items():  # a slurm host reaches its cluster through an ssh host
        via = host.options.via if isinstance(host.options, SlurmOptions) else LOCAL_HOST
        if via != LOCAL_HOST and (via not in hosts or hosts[via].type != "ssh"):
            raise ConfigError(
                f"{where}: field 'hosts.{name}.via': '{via}' is not "
                f"'{LOCAL_HOST}' or an ssh host of this file"
            )
    return hosts


def _host(name: str, entry: dict[str, Any], where: str) -> HostSpec:
    prefix = f"hosts.{name}."
    host_type = entry.get("type", "local")
    if host_type not in HOST_TYPES:
        raise ConfigError(
            f"{where}: field '{prefix}type': unknown type '{host_type}' "
            f"(use {', '.join(HOST_TYPES)})"
        )
    if name == LOCAL_HOST and host_type != "local":
        raise ConfigError(f"{where}: field '{prefix}type': the host 'local' is always local")
    _check_fields(entry, {"type", "max_jobs", *OPTION_FIELDS[host_type]}, where, prefix)
    max_jobs = entry.get("max_jobs")
    if max_jobs is not None:
        max_jobs = _count(max_jobs, where, f"{prefix}max_jobs")
    values = {key: value for key, value in entry.items() if key not in ("type", "max_jobs")}
    if isinstance(values.get("resources"), dict):
        _check_fields(values["resources"], set(RESOURCE_FIELDS), where, f"{prefix}resources.")
    if host_type == "local":
        return HostSpec(name, host_type, max_jobs)
    if host_type == "ssh":
        options: SshOptions | SlurmOptions | list[str] = SshOptions.from_mapping(name, values)
    else:
        options = SlurmOptions.from_mapping(values)
    if isinstance(options, list):  # the first problem, as every config error is one line
        path, message = split_problem(options[0])
        what = f"field '{prefix}{path}'" if path else f"host '{name}'"
        raise ConfigError(f"{where}: {what}: {message}")
    return HostSpec(name, host_type, max_jobs, options)


def _mapping(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: field '{key}': expected a mapping")
    return value


def _check_fields(data: dict[str, Any], allowed: set[str], where: str, prefix: str) -> None:
    unknown = sorted(set(map(str, data)) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown field '{prefix}{unknown[0]}'")


def _count(value: Any, where: str, name: str) -> int:
    """An integer >= 1 (booleans are not numbers here, though Python says they are)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}: field '{name}': expected an integer >= 1")
    return value


def _seconds(value: Any, where: str, name: str) -> float:
    """A finite number of seconds >= 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not (0 <= value < math.inf):
        raise ConfigError(f"{where}: field '{name}': expected a number of seconds >= 0")
    return float(value)


def _path(value: Any, where: str, name: str) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: field '{name}': expected a path")
    return Path(value).expanduser()
