"""Workflow files -> validated, immutable `WorkflowSpec`.

Two formats: ccd's own (``jobs:``) and cloudmesh-cc's (``workflow: {nodes, dependencies}``).
Pure apart from reading the file and checking that referenced scripts exist.

Every problem found is collected and raised together in one `SpecError`, each located by
line. To keep lines, the YAML is read as parser events into a small tree of our own rather
than with ``yaml.compose``: the composer runs PyYAML's Python resolver on every scalar and
builds heavy node objects: 6.8 s for a 100,000-job file, against ~2.5 s for this reader.
"""

from __future__ import annotations

import difflib
import gc
import itertools
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, TypeVar

import yaml

from ccd import dag
from ccd.errors import Problem, SpecError

try:
    from yaml import CSafeLoader as _Loader
except ImportError:  # PyYAML built without libyaml: same events, slower
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

ScriptKind = Literal["shell", "sh", "py", "ipynb"]  # "shell": an inline `run:` command

LOCAL_HOST = "local"


@dataclass(frozen=True, slots=True)
class HostSpec:
    name: str
    type: str  # "local" for now; "ssh" and "slurm" arrive with their backends
    max_jobs: int | None = None  # None: the backend's default (CPU count for local)


@dataclass(frozen=True, slots=True)
class JobSpec:
    name: str
    kind: ScriptKind
    run: str | None = None  # inline shell text (kind == "shell")
    script: Path | None = None  # absolute path of the script file (other kinds)
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    needs: tuple[str, ...] = ()  # parents, in file order, without duplicates
    host: str = LOCAL_HOST
    retries: int = 0
    timeout_s: float | None = None
    python: str = "python3"  # interpreter for .py jobs
    line: int | None = None  # where the job is defined in its file


@dataclass(frozen=True, slots=True)
class WorkflowSpec:
    name: str
    source: Path  # the workflow file (absolute)
    base_dir: Path  # relative script paths resolve against this
    jobs: Mapping[str, JobSpec]  # in file order
    hosts: Mapping[str, HostSpec]

    def edges(self) -> list[tuple[str, str]]:
        """(parent, child) pairs."""
        return [(parent, job.name) for job in self.jobs.values() for parent in job.needs]


def load(path: Path) -> WorkflowSpec:
    """Read and validate a workflow file; raise `SpecError` listing every problem."""
    source = path.resolve()
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError([Problem(str(path), None, f"cannot read workflow file: {err}")]) from err
    return parse(text, source=source, base_dir=source.parent)


def parse(text: str, *, source: Path, base_dir: Path) -> WorkflowSpec:
    """Validate workflow text; ``source`` names it in problems, scripts resolve in ``base_dir``."""
    ctx = _Ctx(str(source), base_dir, [])
    with _gc_paused():
        root = _compose(text, ctx)
        spec = _dispatch(root, ctx, source) if not ctx.problems else None
    if ctx.problems or spec is None:
        raise SpecError(sorted(ctx.problems, key=lambda p: p.line or 0))
    return spec


# --- names -------------------------------------------------------------------------------

_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,100}")
_ENV_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAME_RULE = "use 1-100 of A-Z a-z 0-9 _ . -, not starting with '.' or '-'"


def valid_name(name: str) -> bool:
    """The rule for workflow, job and host names: safe as a path component, a shell word
    and an argument (never `.`/`..`, never an option)."""
    return _NAME_RE.fullmatch(name) is not None and name[0] not in ".-"


def expand_names(text: str) -> list[str]:
    """Expand a comma list with hostlist ranges, in order: ``"a,j[1-2],n[08-10]"`` ->
    ``a j1 j2 n08 n09 n10``; ``x[1,3-4]`` -> ``x1 x3 x4``. Raises ValueError if malformed."""
    if "[" not in text and "]" not in text:  # the common case, kept fast
        parts = [part.strip() for part in text.split(",")]
    else:
        parts = [name for part in _split_outside_brackets(text) for name in _expand_one(part)]
    if "" in parts:
        raise ValueError(f"empty name in '{text}'")
    return parts


_MAX_EXPANSION = 1_000_000  # a typo like j[1-100000000] must not eat the machine
_RANGE_ITEM = re.compile(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?")


def _split_outside_brackets(text: str) -> list[str]:
    parts: list[str] = []
    depth = start = 0
    for i, char in enumerate(text):
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
        if depth not in (0, 1):
            raise ValueError(f"unbalanced brackets in '{text}'")
    if depth:
        raise ValueError(f"unbalanced brackets in '{text}'")
    parts.append(text[start:])
    return parts


def _expand_one(part: str) -> list[str]:
    part = part.strip()
    if "[" not in part:
        return [part]
    open_at = part.index("[")
    close_at = part.index("]", open_at)
    tails = _expand_one(part[close_at + 1 :])
    values = _range_values(part[open_at + 1 : close_at])
    if len(values) * len(tails) > _MAX_EXPANSION:
        raise ValueError(f"'{part}' expands to more than {_MAX_EXPANSION} names")
    return [part[:open_at] + value + tail for value in values for tail in tails]


def _range_values(body: str) -> list[str]:
    values: list[str] = []
    for item in body.split(","):
        match = _RANGE_ITEM.fullmatch(item)
        if match is None:
            raise ValueError(f"bad range '[{body}]'")
        low, high = match.groups()
        if high is None:
            values.append(low)
            continue
        if int(high) < int(low) or int(high) - int(low) >= _MAX_EXPANSION:
            raise ValueError(f"bad range '{low}-{high}' in '[{body}]'")
        values.extend(f"{n:0{len(low)}d}" for n in range(int(low), int(high) + 1))
    return values


# --- YAML events -> a light tree with line numbers ---------------------------------------


@dataclass(slots=True)
class _Scalar:
    value: str
    line: int
    plain: bool  # unquoted and untagged: YAML would give it an implicit type


@dataclass(slots=True)
class _Seq:
    items: list[_Node]
    line: int


@dataclass(slots=True)
class _Map:
    fields: dict[str, tuple[int, _Node]]  # key -> (line of the key, value), in file order
    line: int
    dups: list[tuple[str, int]] = field(default_factory=list)  # repeated keys and their lines


_Node = _Scalar | _Seq | _Map


@dataclass(slots=True)
class _Ctx:
    file: str
    base_dir: Path
    problems: list[Problem]

    def add(
        self, line: int | None, message: str, job: str | None = None, fld: str | None = None
    ) -> None:
        self.problems.append(Problem(self.file, line, message, job=job, field=fld))


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Parsing allocates millions of small objects and no cycles; the cyclic collector would
    rescan the growing tree over and over (100k jobs: 3.1 s -> 1.7 s without it)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _compose(text: str, ctx: _Ctx) -> _Node | None:
    """Build the tree; a syntax error becomes one problem at the line where it was found."""
    loader = _Loader(text)
    try:
        return _Builder(ctx).run(loader.get_event)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        message = " ".join(s for s in (err.context, err.problem) if s)
        ctx.add(mark.line + 1 if mark else None, f"YAML syntax error: {message}")
    except yaml.YAMLError as err:
        ctx.add(None, f"YAML error: {err}")
    finally:
        loader.dispose()
    return None


class _Builder:
    """Turns parser events into `_Node`s. The event loop is the hot path of loading a big
    workflow (a million events for 100k jobs), hence the inlined common cases."""

    def __init__(self, ctx: _Ctx) -> None:
        self.ctx = ctx
        self.stack: list[_Map | _Seq] = []
        self.keys: list[_Node | None] = []  # per open mapping: the key awaiting its value
        self.anchors: dict[str, _Node] = {}
        self.open_anchors: dict[int, str] = {}  # id(open collection) -> its anchor
        self.merges: dict[int, list[_Node]] = {}  # id(open mapping) -> values of its '<<' keys
        self.roots: list[_Node] = []

    def run(self, get_event: Callable[[], Any]) -> _Node | None:
        scalar, alias = yaml.ScalarEvent, yaml.AliasEvent
        starts = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
        ends = (yaml.MappingEndEvent, yaml.SequenceEndEvent)
        stack, keys = self.stack, self.keys
        while (event := get_event()) is not None and type(event) is not yaml.StreamEndEvent:
            kind = type(event)
            if kind is scalar:
                node: _Node = _Scalar(event.value, event.start_mark.line + 1, event.implicit[0])
                if event.anchor is not None:
                    self.anchors[event.anchor] = node
            elif kind in starts:
                self.open(event)
                continue
            elif kind in ends:
                node = self.close()
            elif kind is alias:
                node = self.alias(event)
            else:
                continue
            top = stack[-1] if stack else None
            if type(top) is _Seq:
                top.items.append(node)
            elif type(top) is not _Map:
                self.roots.append(node)
            elif keys[-1] is None:
                keys[-1] = node
            else:
                self.add(top, node)
        if len(self.roots) > 1:
            self.ctx.add(self.roots[1].line, "expected one YAML document, found more")
        return self.roots[0] if self.roots else None

    def open(self, event: Any) -> None:
        line = event.start_mark.line + 1
        node = _Map({}, line) if type(event) is yaml.MappingStartEvent else _Seq([], line)
        self.stack.append(node)
        self.keys.append(None)
        if event.anchor is not None:
            self.open_anchors[id(node)] = event.anchor

    def add(self, top: _Map, value: _Node) -> None:
        key = self.keys[-1]
        self.keys[-1] = None
        if type(key) is not _Scalar:
            assert key is not None
            self.ctx.add(key.line, "mapping keys must be plain strings")
        elif key.plain and key.value == "<<":
            self.merges.setdefault(id(top), []).append(value)
        elif key.value in top.fields:
            top.dups.append((key.value, key.line))
        else:
            top.fields[key.value] = (key.line, value)

    def close(self) -> _Node:
        node = self.stack.pop()
        self.keys.pop()
        if id(node) in self.merges:
            self.merge(node, self.merges.pop(id(node)))
        if id(node) in self.open_anchors:  # registered when complete: no recursive data
            self.anchors[self.open_anchors.pop(id(node))] = node
        return node

    def merge(self, node: _Map | _Seq, merged: list[_Node]) -> None:
        """YAML merge keys (``<<: *base``): explicit keys win, earlier merges win."""
        for value in merged:
            for source in value.items if isinstance(value, _Seq) else [value]:
                if not isinstance(source, _Map):
                    self.ctx.add(source.line, "'<<' must merge a mapping")
                    continue
                for key, entry in source.fields.items():
                    if isinstance(node, _Map) and key not in node.fields:
                        node.fields[key] = entry

    def alias(self, event: Any) -> _Node:
        line = event.start_mark.line + 1
        if event.anchor not in self.anchors:
            self.ctx.add(line, f"unknown alias '*{event.anchor}'")
            return _Scalar("", line, True)
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
_DURATION_RE = re.compile(r"(?:(?:\d+\.?\d*|\.\d+)[dhms])+")
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)([dhms])")
_UNIT_S = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


class _Bad(Exception):
    """A value of the wrong type or form; ``line`` when more precise than the field's."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


def _is_null(node: _Node) -> bool:
    return isinstance(node, _Scalar) and node.plain and node.value in _NULLS


def _describe(node: _Node) -> str:
    if isinstance(node, _Scalar):
        return "nothing" if _is_null(node) else repr(node.value)
    return "a list" if isinstance(node, _Seq) else "a mapping"


def _scalar(node: _Node, what: str = "a string") -> str:
    """The text as written: `run: true` is the command "true", `SEED: 1` is "1"."""
    if type(node) is not _Scalar:
        raise _Bad(f"expected {what}, got {_describe(node)}", node.line)
    return "" if node.plain and node.value in _NULLS else node.value


def _text(node: _Node) -> str:
    value = _scalar(node)
    if not value.strip():
        raise _Bad("must not be empty")
    return value


def _name(node: _Node) -> str:
    value = _scalar(node, "a job name")
    if (
        isinstance(node, _Scalar)
        and node.plain
        and (value in _BOOLS or (value[:1] in "0123456789+-." and _NUMBER_RE.fullmatch(value)))
    ):
        raise _Bad(f"expected a job name, got {value} (quote it if it is a name)", node.line)
    return value


def _names(node: _Node) -> list[tuple[str, int]]:
    if isinstance(node, _Seq):
        return [(_name(item), item.line) for item in node.items]
    if isinstance(node, _Map):
        raise _Bad("expected a job name or a list of job names, got a mapping")
    return [(_name(node), node.line)]


def _count(node: _Node) -> int:
    value = _scalar(node, "a non-negative integer")
    if (
        not (isinstance(node, _Scalar) and node.plain and _INT_RE.fullmatch(value))
        or int(value) < 0
    ):
        raise _Bad(f"expected a non-negative integer, got {_describe(node)}")
    return int(value)


def _positive(node: _Node) -> int:
    value = _count(node)
    if value == 0:
        raise _Bad("expected a positive integer, got 0")
    return value


def _duration(node: _Node) -> float:
    """Seconds from ``90``, ``1.5``, ``30s``, ``10m``, ``1h30m``, ``2d`` or ``1.5h``."""
    text = _scalar(node, "a duration").strip()
    if _NUMBER_RE.fullmatch(text):
        seconds = float(text)
    elif _DURATION_RE.fullmatch(text):
        seconds = sum(float(n) * _UNIT_S[unit] for n, unit in _DURATION_PART.findall(text))
    else:
        raise _Bad(f"expected a duration like 90, 30s, 10m, 1h30m or 2d, got {_describe(node)}")
    if not 0 < seconds < float("inf"):
        raise _Bad(f"duration must be positive, got {_describe(node)}")
    return seconds


def _str_list(node: _Node) -> tuple[str, ...]:
    if not isinstance(node, _Seq):
        raise _Bad(f"expected a list of strings, got {_describe(node)}")
    return tuple(_scalar(item) for item in node.items)


def _env(node: _Node) -> Mapping[str, str]:
    if not isinstance(node, _Map):
        raise _Bad(f"expected a mapping of variable names to strings, got {_describe(node)}")
    if node.dups:
        raise _Bad(f"duplicate variable '{node.dups[0][0]}'", node.dups[0][1])
    for key, (line, _) in node.fields.items():
        if not _ENV_RE.fullmatch(key):
            raise _Bad(f"invalid variable name '{key}': use [A-Za-z_][A-Za-z0-9_]*", line)
    return MappingProxyType({key: _scalar(value) for key, (_, value) in node.fields.items()})


_SUFFIX_KINDS: dict[str, ScriptKind] = {".sh": "sh", ".py": "py", ".ipynb": "ipynb"}


def _script(value: str, base_dir: Path) -> tuple[ScriptKind, Path]:
    kind = _SUFFIX_KINDS.get(Path(value).suffix)
    if kind is None:
        raise _Bad(f"script '{value}' must end in .sh, .py or .ipynb")
    path = (base_dir / Path(value).expanduser()).resolve()
    if not path.is_file():
        raise _Bad(f"script file not found: {path}")
    return kind, path


@dataclass(slots=True)
class _Reader:
    """Reads the fields of one mapping, reporting problems against one job (or none)."""

    ctx: _Ctx
    job: str | None
    where: str = ""  # appended to messages about things other than jobs: " (host 'big')"

    def add(self, line: int | None, message: str, fld: str | None = None) -> None:
        self.ctx.add(line, message + self.where, self.job, fld)

    def fields(
        self,
        node: _Node | None,
        allowed: Collection[str],
        ignored: Collection[str] = (),
    ) -> dict[str, _Node]:
        if node is None or _is_null(node):
            return {}
        if not isinstance(node, _Map):
            self.add(node.line, f"expected a mapping, got {_describe(node)}")
            return {}
        for key, line in node.dups:
            self.add(line, f"duplicate field '{key}'")
        out: dict[str, _Node] = {}
        for key, (line, value) in node.fields.items():
            if key in allowed:
                out[key] = value
            elif key not in ignored:
                self.add(line, _unknown("unknown field", key, allowed))
        return out

    def opt(
        self, fields: Mapping[str, _Node], key: str, convert: Callable[[_Node], _T]
    ) -> _T | None:
        """The converted value, or None when absent, null or invalid (then reported)."""
        node = fields.get(key)
        if node is None or (type(node) is _Scalar and node.plain and node.value in _NULLS):
            return None
        try:
            return convert(node)
        except _Bad as bad:
            self.add(bad.line or node.line, str(bad), key)
            return None


def _unknown(what: str, key: str, known: Collection[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f"{what} '{key}'" + (f" (did you mean '{close[0]}'?)" if close else "")


# --- both formats ----------------------------------------------------------------------------


def _dispatch(root: _Node | None, ctx: _Ctx, source: Path) -> WorkflowSpec | None:
    if root is None or _is_null(root):
        ctx.add(1, "the workflow file is empty")
        return None
    if not isinstance(root, _Map):
        ctx.add(root.line, f"expected a mapping with 'jobs:' or 'workflow:', got {_describe(root)}")
        return None
    if "jobs" not in root.fields and "workflow" not in root.fields:
        # neither format recognisable: suggest from both, e.g. 'workflows' -> 'workflow'
        _Reader(ctx, None).fields(root, _TOP_FIELDS | _CM_TOP_FIELDS)
        ctx.add(root.line, "no 'jobs:' (ccd format) or 'workflow:' (cloudmesh-cc format) found")
        return None
    read = _native if "jobs" in root.fields else _cloudmesh
    spec = read(root, ctx, source)
    if not spec.jobs and not ctx.problems:
        ctx.add(root.line, "the workflow has no jobs")
    return spec


def _default_name(source: Path) -> str:
    """The file stem, made valid: the user never wrote it, so it should not be an error."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", source.stem)[:100].lstrip(".-")
    return name or "workflow"


def _check_name(ctx: _Ctx, name: str, line: int, what: str) -> None:
    if not valid_name(name):
        ctx.add(
            line, f"invalid {what} name '{name}': {_NAME_RULE}", name if what == "job" else None
        )


def _check_graph(ctx: _Ctx, jobs: Mapping[str, JobSpec], fld: str | None) -> None:
    """Report one cycle among the known edges (unknown parents are reported elsewhere)."""
    edges = [(p, job.name) for job in jobs.values() for p in job.needs if p in jobs]
    cycle = dag.find_cycle(jobs.keys(), edges)
    if cycle:
        ctx.add(jobs[cycle[0]].line, "cycle: " + " -> ".join(cycle), cycle[0], fld)


def _spec(
    ctx: _Ctx, name: str, source: Path, jobs: dict[str, JobSpec], hosts: dict[str, HostSpec]
) -> WorkflowSpec:
    return WorkflowSpec(name, source, ctx.base_dir, MappingProxyType(jobs), MappingProxyType(hosts))


# --- ccd's own format ------------------------------------------------------------------------

_TOP_FIELDS = frozenset({"name", "defaults", "hosts", "jobs"})
_DEFAULT_FIELDS = frozenset({"host", "retries", "timeout", "python"})
_HOST_FIELDS = frozenset({"type", "max_jobs"})
_JOB_FIELDS = frozenset(
    {"run", "script", "args", "env", "needs", "host", "retries", "timeout", "python"}
)
_LATER_HOST_TYPES = ("ssh", "slurm")
_NO_ENV: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class _Defaults:
    host: str = LOCAL_HOST
    retries: int = 0
    timeout_s: float | None = None
    python: str = "python3"


def _native(root: _Map, ctx: _Ctx, source: Path) -> WorkflowSpec:
    reader = _Reader(ctx, None)
    top = reader.fields(root, _TOP_FIELDS)
    name = reader.opt(top, "name", _text)
    if name is not None:
        _check_name(ctx, name, top["name"].line, "workflow")
    hosts = _hosts(ctx, top.get("hosts"))
    defaults = _defaults(_Reader(ctx, None, " (in defaults)"), top.get("defaults"), hosts)
    jobs = _jobs(ctx, top.get("jobs"), defaults, hosts)
    _check_graph(ctx, jobs, "needs")
    return _spec(ctx, name or _default_name(source), source, jobs, hosts)


def _hosts(ctx: _Ctx, node: _Node | None) -> dict[str, HostSpec]:
    hosts = {LOCAL_HOST: HostSpec(LOCAL_HOST, "local")}
    for name, (line, body) in _entries(ctx, node, "host").items():
        _check_name(ctx, name, line, "host")
        hosts[name] = _host(_Reader(ctx, None, f" (host '{name}')"), name, line, body)
    return hosts


def _host(reader: _Reader, name: str, line: int, body: _Node) -> HostSpec:
    type_node = body.fields["type"][1] if isinstance(body, _Map) and "type" in body.fields else None
    kind = reader.opt({"type": type_node} if type_node else {}, "type", _text)
    if kind in _LATER_HOST_TYPES:  # their fields are not defined yet: report only this
        reader.add(line, f"host type '{kind}' is not supported yet", "type")
        return HostSpec(name, kind)
    fields = reader.fields(body, _HOST_FIELDS)
    if kind is None:
        reader.add(line, "missing field 'type' (only 'local' exists yet)")
    elif kind != "local":
        reader.add(fields["type"].line, f"unknown host type '{kind}'", "type")
    return HostSpec(name, kind or "local", reader.opt(fields, "max_jobs", _positive))


def _entries(ctx: _Ctx, node: _Node | None, what: str) -> dict[str, tuple[int, _Node]]:
    """The entries of a mapping of named things (hosts, jobs, nodes), duplicates reported."""
    if node is None or _is_null(node):
        return {}
    if not isinstance(node, _Map):
        ctx.add(node.line, f"expected a mapping of {what}s, got {_describe(node)}")
        return {}
    for key, line in node.dups:
        first = node.fields[key][0]
        ctx.add(line, f"duplicate {what} '{key}' (first defined on line {first})", key)
    return node.fields


def _known_host(
    reader: _Reader, fields: Mapping[str, _Node], hosts: Mapping[str, HostSpec]
) -> str | None:
    host = reader.opt(fields, "host", _text)
    if host is not None and host not in hosts:
        reader.add(fields["host"].line, _unknown("unknown host", host, hosts), "host")
        return None
    return host


def _defaults(reader: _Reader, node: _Node | None, hosts: Mapping[str, HostSpec]) -> _Defaults:
    fields = reader.fields(node, _DEFAULT_FIELDS)
    plain = _Defaults()
    return _Defaults(
        host=_known_host(reader, fields, hosts) or plain.host,
        retries=reader.opt(fields, "retries", _count) or 0,
        timeout_s=reader.opt(fields, "timeout", _duration),
        python=reader.opt(fields, "python", _text) or plain.python,
    )


def _jobs(
    ctx: _Ctx, node: _Node | None, defaults: _Defaults, hosts: Mapping[str, HostSpec]
) -> dict[str, JobSpec]:
    entries = _entries(ctx, node, "job")
    jobs: dict[str, JobSpec] = {}
    needs_at: list[tuple[str, list[tuple[str, int]]]] = []  # job, [(parent, line)]: checked last
    for name, (line, body) in entries.items():
        _check_name(ctx, name, line, "job")
        jobs[name] = _job(_Reader(ctx, name), line, body, defaults, hosts, needs_at)
    for job, needs in needs_at:
        for parent, at in needs:
            if parent not in jobs:
                ctx.add(at, _unknown("unknown parent", parent, jobs), job, "needs")
    return jobs


def _job(
    reader: _Reader,
    line: int,
    body: _Node,
    d: _Defaults,
    hosts: Mapping[str, HostSpec],
    needs_at: list[tuple[str, list[tuple[str, int]]]],
) -> JobSpec:
    name = reader.job or ""
    fields = reader.fields(body, _JOB_FIELDS)
    if not isinstance(body, _Map) and not _is_null(body):
        return JobSpec(name, "shell", line=line)  # reported; a placeholder saves more noise
    kind, run, script = _command(reader, line, fields)
    options: dict[str, Any] = {"host": d.host, "retries": d.retries, "python": d.python}
    options["timeout_s"] = d.timeout_s if "timeout" not in fields else None
    for key in fields:  # only what is there (in file order): the 100k-job path
        if key in _JOB_OPTIONS:
            attr, convert = _JOB_OPTIONS[key]
            value = reader.opt(fields, key, convert)
            if value is not None:
                options[attr] = value
    if "needs" in options:
        needs_at.append((name, options["needs"]))
        options["needs"] = tuple(dict.fromkeys([parent for parent, _ in options["needs"]]))
    if options["host"] not in hosts:
        reader.add(fields["host"].line, _unknown("unknown host", options["host"], hosts), "host")
    return JobSpec(name=name, kind=kind, run=run, script=script, line=line, **options)


# field -> (JobSpec attribute, converter), for the fields other than run and script
_JOB_OPTIONS: dict[str, tuple[str, Callable[[_Node], Any]]] = {
    "args": ("args", _str_list),
    "env": ("env", _env),
    "needs": ("needs", _names),
    "host": ("host", _text),
    "retries": ("retries", _count),
    "timeout": ("timeout_s", _duration),
    "python": ("python", _text),
}


def _command(
    reader: _Reader, line: int, fields: Mapping[str, _Node]
) -> tuple[ScriptKind, str | None, Path | None]:
    """Exactly one of ``run`` and ``script``; a bad one yields a placeholder (already reported)."""
    if ("run" in fields) == ("script" in fields):
        both = "run" in fields
        message = "give either 'run' or 'script', not both" if both else "missing 'run' or 'script'"
        reader.add(line, message)
        return "shell", None, None
    run = reader.opt(fields, "run", _text)
    if "run" in fields:
        if run is None and _is_null(fields["run"]):
            reader.add(fields["run"].line, "must not be empty", "run")
        return "shell", run, None
    return _script_field(reader, fields, "script")


def _script_field(
    reader: _Reader, fields: Mapping[str, _Node], key: str
) -> tuple[ScriptKind, str | None, Path | None]:
    base_dir = reader.ctx.base_dir
    found = reader.opt(fields, key, lambda node: _script(_text(node), base_dir))
    if found is None:
        if _is_null(fields[key]):
            reader.add(fields[key].line, "must not be empty", key)
        return "shell", None, None
    return found[0], None, found[1]


# --- cloudmesh-cc's format -------------------------------------------------------------------

_CM_TOP_FIELDS = frozenset({"workflow", "colors"})
_CM_WORKFLOW_FIELDS = frozenset({"nodes", "dependencies"})
_CM_NODE_FIELDS = frozenset({"kind", "exec", "script"})
# cloudmesh-cc's bookkeeping and display fields (its Graph, Workflow.add_job and Job
# classes): accepted and ignored, so files it wrote load unchanged.
_CM_IGNORED = (
    "name", "user", "host", "label", "label_format", "format", "number", "status", "progress",
    "created", "modified", "pid", "venv", "instance", "parent", "shape", "style", "directory",
    "output", "filetype", "tstart", "tend", "workflow_name",
)  # fmt: skip
_CM_LATER_KINDS = ("ssh", "slurm", "lsf", "wsl")
_CM_PROBE = (".sh", ".py", ".ipynb")


def _cloudmesh(root: _Map, ctx: _Ctx, source: Path) -> WorkflowSpec:
    reader = _Reader(ctx, None)
    workflow = reader.fields(
        reader.fields(root, _CM_TOP_FIELDS).get("workflow"), _CM_WORKFLOW_FIELDS
    )
    if "nodes" not in workflow:
        ctx.add(root.fields["workflow"][0], "missing field 'nodes'", fld="workflow")
    nodes = _cm_nodes(ctx, workflow.get("nodes"))
    needs: dict[str, list[str]] = {name: [] for name in nodes}
    for parent, child in _cm_edges(ctx, workflow.get("dependencies"), nodes):
        needs[child].append(parent)
    jobs = {
        name: _cm_job(_Reader(ctx, name), line, body, needs[name])
        for name, (line, body) in nodes.items()
    }
    _check_graph(ctx, jobs, None)
    return _spec(
        ctx, _default_name(source), source, jobs, {LOCAL_HOST: HostSpec(LOCAL_HOST, "local")}
    )


def _cm_nodes(ctx: _Ctx, node: _Node | None) -> dict[str, tuple[int, _Node]]:
    """Nodes by name, with hostlist ranges in keys expanded (``j[1-3]`` is three nodes)."""
    nodes: dict[str, tuple[int, _Node]] = {}
    for key, (line, body) in _entries(ctx, node, "node").items():
        try:
            names = expand_names(key) if "[" in key else [key]
        except ValueError as err:
            ctx.add(line, str(err), key)
            continue
        for name in names:
            _check_name(ctx, name, line, "job")
            if name in nodes:
                ctx.add(
                    line, f"duplicate job '{name}' (first defined on line {nodes[name][0]})", name
                )
            nodes[name] = (line, body)
    return nodes


def _cm_edges(
    ctx: _Ctx, node: _Node | None, nodes: Mapping[str, object]
) -> Iterator[tuple[str, str]]:
    """Each dependency is a chain: ``a,b[1-2],c`` links a -> b1 -> b2 -> c."""
    for line, chain in _cm_chains(ctx, node):
        try:
            names = expand_names(chain)
        except ValueError as err:
            ctx.add(line, str(err), fld="dependencies")
            continue
        unknown = [name for name in names if name not in nodes]
        for name in unknown:
            ctx.add(
                line,
                _unknown("unknown job", name, nodes) + f" in dependency '{chain}'",
                fld="dependencies",
            )
        if not unknown:
            yield from itertools.pairwise(names)


def _cm_chains(ctx: _Ctx, node: _Node | None) -> Iterator[tuple[int, str]]:
    """Chains as written, or the ``{name: {source, destination}}`` edges cloudmesh-cc saves."""
    if node is None or _is_null(node):
        return
    if isinstance(node, _Map):
        reader = _Reader(ctx, None, " (in dependencies)")
        for _, (line, edge) in node.fields.items():
            ends = reader.fields(edge, ("source", "destination"), ("name",))
            source = reader.opt(ends, "source", _text)
            destination = reader.opt(ends, "destination", _text)
            if "source" not in ends or "destination" not in ends:
                reader.add(line, "an edge needs a 'source' and a 'destination'")
            elif source is not None and destination is not None:
                yield line, f"{source},{destination}"
        return
    items = node.items if isinstance(node, _Seq) else [node]
    for item in items:
        if isinstance(item, _Scalar) and not _is_null(item):
            yield item.line, item.value
        else:
            ctx.add(
                item.line,
                f"expected a chain like 'a,b,c', got {_describe(item)}",
                fld="dependencies",
            )


def _cm_job(reader: _Reader, line: int, body: _Node, needs: list[str]) -> JobSpec:
    name = reader.job or ""
    fields = reader.fields(body, _CM_NODE_FIELDS, _CM_IGNORED)
    kind = reader.opt(fields, "kind", _text)
    if kind in _CM_LATER_KINDS:
        reader.add(fields["kind"].line, f"kind '{kind}' is not supported yet", "kind")
    elif kind not in (None, "local"):
        known = ("local", *_CM_LATER_KINDS)
        reader.add(fields["kind"].line, _unknown("unknown kind", kind, known), "kind")
    script_kind, run, script = _cm_command(reader, line, fields)
    return JobSpec(
        name=name,
        kind=script_kind,
        run=run,
        script=script,
        needs=tuple(dict.fromkeys(needs)),
        line=line,
    )


def _cm_command(
    reader: _Reader, line: int, fields: dict[str, _Node]
) -> tuple[ScriptKind, str | None, Path | None]:
    """``exec`` (a command; a lone ``x.py`` names a script, as cloudmesh-cc reads it), else
    ``script``, else the node's name if it ends in .sh/.py/.ipynb, else NAME.sh/.py/.ipynb."""
    command = reader.opt(fields, "exec", _text)
    if command is not None:
        if not (Path(command).suffix in _SUFFIX_KINDS and len(command.split()) == 1):
            return "shell", command, None
        return _script_field(reader, fields, "exec")
    if "script" in fields and not _is_null(fields["script"]):
        return _script_field(reader, fields, "script")
    name = reader.job or ""
    base_dir = reader.ctx.base_dir
    candidates = [name] if Path(name).suffix in _SUFFIX_KINDS else [name + s for s in _CM_PROBE]
    for candidate in candidates:
        if (base_dir / candidate).is_file():
            return _SUFFIX_KINDS[Path(candidate).suffix], None, (base_dir / candidate).resolve()
    wanted = " or ".join(candidates)
    reader.add(line, f"no exec or script given, and no {wanted} in {base_dir}", "script")
    return "shell", None, None
