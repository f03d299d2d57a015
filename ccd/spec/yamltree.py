"""YAML text -> a light tree of our own with line numbers, and checks of its values.

Nothing here knows about workflows: `ccd.spec` and `ccd.spec.cloudmesh` read their formats from
this tree. Problems are collected in a `Ctx` rather than raised, so that one pass reports
them all, each at its line.

The YAML is read as parser events rather than with ``yaml.compose``: the composer runs
PyYAML's Python resolver on every scalar and builds heavy node objects: 6.8 s for a
100,000-job file, against ~2.5 s for this reader.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import yaml

from ccd.errors import Problem
from ccd.memory import gc_paused as gc_paused
from ccd.spec.hosts import units_s

try:
    from yaml import CSafeLoader as _Loader
except ImportError:  # PyYAML built without libyaml: same events, slower
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]


_NUL_PROBLEM = "a NUL character (\\0) is not allowed: no program can be given one"


@dataclass(slots=True)
class Scalar:
    value: str
    line: int
    plain: bool  # unquoted and untagged: YAML would give it an implicit type


@dataclass(slots=True)
class Seq:
    items: list[Node]
    line: int


@dataclass(slots=True)
class Map:
    fields: dict[str, tuple[int, Node]]  # key -> (line of the key, value), in file order
    line: int
    dups: list[tuple[str, int]] = field(default_factory=list)  # repeated keys and their lines


Node = Scalar | Seq | Map


@dataclass(slots=True)
class Ctx:
    """One file being read: where it is, and the problems found so far."""

    file: str
    base_dir: Path  # relative paths in the file resolve against this
    problems: list[Problem]

    def add(
        self, line: int | None, message: str, job: str | None = None, fld: str | None = None
    ) -> None:
        self.problems.append(Problem(self.file, line, message, job=job, field=fld))


def compose(text: str, ctx: Ctx) -> Node | None:
    """Build the tree; a syntax error becomes one problem at the line where it was found."""
    loader = _Loader(text)
    try:
        return _Builder(ctx).run(loader.get_event)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        message = " ".join(s for s in (err.context, err.problem) if s)
        if mark is not None and text[mark.index : mark.index + 1] == "\t":
            message += " (a tab: YAML indents with spaces)"
        ctx.add(mark.line + 1 if mark else None, f"YAML syntax error: {message}")
    except yaml.reader.ReaderError as err:  # a character YAML does not allow in a file
        line = text.count("\n", 0, err.position) + 1  # libyaml counts characters too
        code = ord(err.character) if isinstance(err.character, str) else err.character
        ctx.add(line, f"YAML error: {err.reason}: character #x{code:04x}")
    except yaml.YAMLError as err:
        ctx.add(None, f"YAML error: {err}")
    finally:
        loader.dispose()
    return None


class _Builder:
    """Turns parser events into `Node`s. The event loop is the hot path of loading a big
    workflow (a million events for 100k jobs), hence the inlined common cases."""

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.stack: list[Map | Seq] = []
        self.keys: list[Node | None] = []  # per open mapping: the key awaiting its value
        self.anchors: dict[str, Node] = {}
        self.open_anchors: dict[int, str] = {}  # id(open collection) -> its anchor
        self.merges: dict[int, list[Node]] = {}  # id(open mapping) -> values of its '<<' keys
        self.roots: list[Node] = []

    def run(self, get_event: Callable[[], Any]) -> Node | None:
        scalar, alias, stream_end = yaml.ScalarEvent, yaml.AliasEvent, yaml.StreamEndEvent
        map_start, seq_start = yaml.MappingStartEvent, yaml.SequenceStartEvent
        map_end, seq_end = yaml.MappingEndEvent, yaml.SequenceEndEvent
        stack, keys, roots = self.stack, self.keys, self.roots
        while True:  # the kinds tested in the order of how often they come
            event = get_event()
            kind = type(event)
            if kind is scalar:
                node: Node = Scalar(event.value, event.start_mark.line + 1, event.implicit[0])
                if event.style == '"' and "\0" in event.value:  # only "\0" can write one
                    self.ctx.add(node.line, _NUL_PROBLEM)
                if event.anchor is not None:
                    self.anchors[event.anchor] = node
            elif kind is map_end or kind is seq_end:
                node = self.close()
            elif kind is map_start or kind is seq_start:
                self.open(event)
                continue
            elif kind is alias:
                node = self.alias(event)
            elif kind is stream_end or event is None:
                break
            else:  # the stream's and documents' starts and ends
                continue
            if not stack:
                roots.append(node)
                continue
            top = stack[-1]
            if isinstance(top, Seq):
                top.items.append(node)
            elif (key := keys[-1]) is None:
                keys[-1] = node
            else:
                keys[-1] = None
                self.add(top, key, node)
        if len(roots) > 1:
            self.ctx.add(roots[1].line, "expected one YAML document, found more")
        return roots[0] if roots else None

    def open(self, event: Any) -> None:
        line = event.start_mark.line + 1
        node = Map({}, line) if type(event) is yaml.MappingStartEvent else Seq([], line)
        self.stack.append(node)
        self.keys.append(None)
        if event.anchor is not None:
            self.open_anchors[id(node)] = event.anchor

    def add(self, top: Map, key: Node, value: Node) -> None:
        if type(key) is not Scalar:
            self.ctx.add(key.line, "mapping keys must be plain strings")
        elif key.plain and key.value == "<<":
            self.merges.setdefault(id(top), []).append(value)
        elif key.value in top.fields:
            top.dups.append((key.value, key.line))
        else:
            top.fields[key.value] = (key.line, value)

    def close(self) -> Node:
        node = self.stack.pop()
        self.keys.pop()
        # each test first asks whether there is anything at all: usually there is not
        if self.merges and id(node) in self.merges:
            self.merge(node, self.merges.pop(id(node)))
        if self.open_anchors and id(node) in self.open_anchors:
            # registered when complete: no recursive data
            self.anchors[self.open_anchors.pop(id(node))] = node
        return node

    def merge(self, node: Map | Seq, merged: list[Node]) -> None:
        """YAML merge keys (``<<: *base``): explicit keys win, earlier merges win."""
        for value in merged:
            for source in value.items if isinstance(value, Seq) else [value]:
                if not isinstance(source, Map):
                    self.ctx.add(source.line, "'<<' must merge a mapping")
                    continue
                for key, entry in source.fields.items():
                    if isinstance(node, Map) and key not in node.fields:
                        node.fields[key] = entry

    def alias(self, event: Any) -> Node:
        line = event.start_mark.line + 1
        if event.anchor not in self.anchors:
            self.ctx.add(line, f"unknown alias '*{event.anchor}'")
            return Scalar("", line, True)
        return self.anchors[event.anchor]


# --- typed values --------------------------------------------------------------------------

_T = TypeVar("_T")
_NULLS = frozenset({"", "~", "null", "Null", "NULL"})
_BOOLS = frozenset(
    w
    for word in ("yes", "no", "true", "false", "on", "off")
    for w in (word, word.title(), word.upper())
)
_NUMBER_RE = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_INT_RE = re.compile(r"[-+]?\d+")
_ENV_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SPECIAL_FLOATS = frozenset({".inf", "+.inf", "-.inf", ".nan"})


class Bad(Exception):
    """A value of the wrong type or form; ``line`` when more precise than the field's."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


def is_null(node: Node) -> bool:
    return isinstance(node, Scalar) and node.plain and node.value in _NULLS


def describe(node: Node) -> str:
    if isinstance(node, Scalar):
        if is_null(node):
            return "nothing"
        if not node.plain and _NUMBER_RE.fullmatch(node.value):
            return f"the string {node.value!r} (a number is written without quotes)"
        return repr(node.value)
    return "a list" if isinstance(node, Seq) else "a mapping"


def unknown(what: str, key: str, known: Collection[str]) -> str:
    """``unknown field 'nmae' (did you mean 'name'?)``."""
    close = difflib.get_close_matches(key, list(known), n=1)
    return f"{what} '{key}'" + (f" (did you mean '{close[0]}'?)" if close else "")


def as_scalar(node: Node, what: str = "a string") -> str:
    """The text as written: `run: true` is the command "true", `SEED: 1` is "1"."""
    if type(node) is not Scalar:
        raise Bad(f"expected {what}, got {describe(node)}", node.line)
    return "" if node.plain and node.value in _NULLS else node.value


def as_text(node: Node) -> str:
    value = as_scalar(node)
    if not value.strip():
        raise Bad("must not be empty")
    return value


def as_name(node: Node) -> str:
    value = as_scalar(node, "a job name")
    if (
        isinstance(node, Scalar)
        and node.plain
        and (value in _BOOLS or (value[:1] in "0123456789+-." and _NUMBER_RE.fullmatch(value)))
    ):
        raise Bad(f"expected a job name, got {value} (quote it if it is a name)", node.line)
    return value


def as_names(node: Node) -> list[tuple[str, int]]:
    if isinstance(node, Seq):
        return [(as_name(item), item.line) for item in node.items]
    if isinstance(node, Map):
        raise Bad("expected a job name or a list of job names, got a mapping")
    return [(as_name(node), node.line)]


def as_count(node: Node) -> int:
    value = as_scalar(node, "a non-negative integer")
    if not (isinstance(node, Scalar) and node.plain and _INT_RE.fullmatch(value)) or int(value) < 0:
        raise Bad(f"expected a non-negative integer, got {describe(node)}")
    return int(value)


def as_positive(node: Node) -> int:
    value = as_count(node)
    if value == 0:
        raise Bad("expected a positive integer, got 0")
    return value


def as_duration(node: Node) -> float:
    """Seconds from ``90``, ``1.5``, ``30s``, ``10m``, ``1h30m``, ``2d`` or ``1.5h``."""
    text = as_scalar(node, "a duration").strip()
    seconds = float(text) if _NUMBER_RE.fullmatch(text) else units_s(text)
    if seconds is None:
        raise Bad(f"expected a duration like 90, 30s, 10m, 1h30m or 2d, got {describe(node)}")
    if not 0 < seconds < float("inf"):
        raise Bad(f"duration must be positive, got {describe(node)}")
    return seconds


def as_str_list(node: Node) -> tuple[str, ...]:
    if not isinstance(node, Seq):
        raise Bad(f"expected a list of strings, got {describe(node)}")
    return tuple(as_scalar(item) for item in node.items)


def as_plain(node: Node) -> Any:
    """Plain Python values, typed as PyYAML's safe loader types them, except that only
    decimal numbers are numbers: ``1:30:00`` stays a string (YAML 1.1 would read 5400)."""
    return _plain(node, {})


def _plain(node: Node, built: dict[int, Any]) -> Any:
    """``built`` holds the collections made so far: an alias (the same node again) gets the
    same value, not a copy, so that nested aliases (a "billion laughs") cost no more than
    the text that wrote them."""
    if isinstance(node, Map | Seq):
        if id(node) not in built:
            if isinstance(node, Map):
                built[id(node)] = {k: _plain(v, built) for k, (_, v) in node.fields.items()}
            else:
                built[id(node)] = [_plain(item, built) for item in node.items]
        return built[id(node)]
    value = node.value
    if not node.plain:
        return value
    if value in _NULLS:
        return None
    if value in _BOOLS:
        return value.lower() in ("yes", "true", "on")
    if _INT_RE.fullmatch(value):
        return int(value)
    if _NUMBER_RE.fullmatch(value) or value.lower() in _SPECIAL_FLOATS:
        return float(value.replace(".", "") if value[-3:].lower() in ("inf", "nan") else value)
    return value


def as_env(node: Node) -> Mapping[str, str]:
    if not isinstance(node, Map):
        raise Bad(f"expected a mapping of variable names to strings, got {describe(node)}")
    if node.dups:
        raise Bad(f"duplicate variable '{node.dups[0][0]}'", node.dups[0][1])
    for key, (line, _) in node.fields.items():
        if not _ENV_RE.fullmatch(key):
            raise Bad(f"invalid variable name '{key}': use [A-Za-z_][A-Za-z0-9_]*", line)
    return MappingProxyType({key: as_scalar(value) for key, (_, value) in node.fields.items()})


# --- mappings ------------------------------------------------------------------------------


def entries(ctx: Ctx, node: Node | None, what: str) -> dict[str, tuple[int, Node]]:
    """The entries of a mapping of named things (hosts, jobs, nodes), duplicates reported."""
    if node is None or is_null(node):
        return {}
    if not isinstance(node, Map):
        ctx.add(node.line, f"expected a mapping of {what}s, got {describe(node)}")
        return {}
    for key, line in node.dups:
        first = node.fields[key][0]
        ctx.add(line, f"duplicate {what} '{key}' (first defined on line {first})", key)
    return node.fields


@dataclass(slots=True)
class Reader:
    """Reads the fields of one mapping, reporting problems against one job (or none)."""

    ctx: Ctx
    job: str | None
    where: str = ""  # appended to messages about things other than jobs: " (host 'big')"

    def add(self, line: int | None, message: str, fld: str | None = None) -> None:
        self.ctx.add(line, message + self.where, self.job, fld)

    def fields(
        self,
        node: Node | None,
        allowed: Collection[str],
        ignored: Collection[str] = (),
        fld: str | None = None,
    ) -> dict[str, Node]:
        """The allowed fields; ``fld`` names the mapping in problems, if it is a field."""
        if node is None or is_null(node):
            return {}
        if not isinstance(node, Map):
            self.add(node.line, f"expected a mapping, got {describe(node)}", fld)
            return {}
        for key, line in node.dups:
            self.add(line, f"duplicate field '{key}'", fld)
        out: dict[str, Node] = {}
        for key, (line, value) in node.fields.items():
            if key in allowed:
                out[key] = value
            elif key not in ignored:
                self.add(line, unknown("unknown field", key, allowed), fld)
        return out

    def opt(self, fields: Mapping[str, Node], key: str, convert: Callable[[Node], _T]) -> _T | None:
        """The converted value, or None when absent, null or invalid (then reported)."""
        node = fields.get(key)
        if node is None or (type(node) is Scalar and node.plain and node.value in _NULLS):
            return None
        try:
            return convert(node)
        except Bad as bad:
            self.add(bad.line or node.line, str(bad), key)
            return None
