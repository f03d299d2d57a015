"""``notify:`` settings, from a workflow file or the daemon's config: when a workflow ends (and,
if asked, when one of its jobs fails), run a command and/or POST the event as JSON to a URL.
Pure: `ccd.engine.notify` sends them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

# What a notifier may be told of: the three ends of a workflow, and a job's failure.
WORKFLOW_ENDS = ("succeeded", "failed", "cancelled")
JOB_FAILED = "job_failed"
EVENTS = (*WORKFLOW_ENDS, JOB_FAILED)
DEFAULT_TIMEOUT_S = 10.0
NOTIFY_FIELDS = ("command", "url", "events", "timeout")


@dataclass(frozen=True, slots=True)
class NotifySpec:
    """One notifier: a command (argv; a string is run by ``sh -c``), a URL, or both."""

    command: tuple[str, ...] | None = None
    url: str | None = None
    events: frozenset[str] = frozenset(WORKFLOW_ENDS)  # (not `on`: YAML 1.1 reads it as true)
    timeout_s: float = DEFAULT_TIMEOUT_S

    def to_json(self) -> dict[str, Any]:
        return {
            "command": list(self.command) if self.command else None,
            "url": self.url,
            "events": sorted(self.events),
            "timeout_s": self.timeout_s,
        }

    def to_mapping(self) -> dict[str, Any]:
        """As a workflow file writes it (what `ccctl export` puts back under ``notify:``)."""
        out: dict[str, Any] = {}
        if self.command is not None:
            out["command"] = list(self.command)
        if self.url is not None:
            out["url"] = self.url
        out["events"] = sorted(self.events)
        out["timeout"] = self.timeout_s
        return out


def spec_of_json(data: Mapping[str, Any]) -> NotifySpec:
    """A `NotifySpec` back from `NotifySpec.to_json` (as stored with a workflow)."""
    command = data.get("command")
    return NotifySpec(
        tuple(command) if command else None,
        data.get("url"),
        frozenset(data.get("events", WORKFLOW_ENDS)),
        float(data.get("timeout_s", DEFAULT_TIMEOUT_S)),
    )


def from_mapping(data: Any) -> NotifySpec | list[str]:
    """A notifier from its plain mapping (``command``, ``url``, ``on``, ``timeout`` in
    seconds), or the problems found, each naming its field."""
    if not isinstance(data, Mapping):
        return ["expected a mapping with 'command' and/or 'url'"]
    problems = [f"unknown field '{key}'" for key in data if key not in NOTIFY_FIELDS]
    command = _command(data.get("command"), problems)
    url = _url(data.get("url"), problems)
    events = _events(data.get("events"), problems)
    timeout_s = DEFAULT_TIMEOUT_S
    if data.get("timeout") is not None:
        value = data["timeout"]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e9:
            problems.append(f"field 'timeout': expected a number of seconds > 0, got {value!r}")
        else:
            timeout_s = float(value)
    if command is None and url is None and not problems:
        problems.append("give a 'command', a 'url', or both")
    return problems or NotifySpec(command, url, events, timeout_s)


def _command(value: Any, problems: list[str]) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str) and value.strip():
        return ("sh", "-c", value)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    problems.append("field 'command': expected a command line or a list of words")
    return None


def _url(value: Any, problems: list[str]) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        problems.append("field 'url': expected an http:// or https:// URL")
        return None
    return str(value)


def _events(value: Any, problems: list[str]) -> frozenset[str]:
    if value is None:
        return frozenset(WORKFLOW_ENDS)
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        problems.append(f"field 'events': expected a list of {', '.join(EVENTS)}")
        return frozenset()
    unknown = [n for n in names if n not in EVENTS]
    if unknown:
        problems.append(f"field 'events': unknown event '{unknown[0]}' (use {', '.join(EVENTS)})")
    return frozenset(names)


def from_plain(data: Any) -> tuple[NotifySpec, ...] | list[str]:
    """``notify:`` as a file gives it: one notifier (a mapping) or a list of them. Problems
    of the i-th of a list name their field as ``[i].field``."""
    if data is None:
        return ()
    if isinstance(data, Mapping):
        spec = from_mapping(data)
        return (spec,) if isinstance(spec, NotifySpec) else spec
    if not isinstance(data, list):
        return ["expected a mapping with 'command' and/or 'url', or a list of them"]
    specs: list[NotifySpec] = []
    problems: list[str] = []
    for index, item in enumerate(data):
        found = from_mapping(item)
        if isinstance(found, NotifySpec):
            specs.append(found)
        else:
            problems += [f"item {index + 1}: {problem}" for problem in found]
    return problems or tuple(specs)
