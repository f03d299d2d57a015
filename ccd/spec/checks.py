"""What both workflow formats share besides the dataclasses (`ccd.spec.model`): names and
their ranges, the checks common to `ccd.spec.native` (ccd's format) and `ccd.spec.cloudmesh`
(cloudmesh-cc's), and the readers of the fields that turn a workflow file's values into
`ccd.spec.hosts` settings. This module exists so that both format readers can use them without
importing each other.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any

from ccd.spec import dag
from ccd.spec.hosts import (
    FAILURE_CLASSES,
    RESOURCE_FIELDS,
    Resources,
    SlurmOptions,
    SshOptions,
    split_problem,
)
from ccd.spec.model import NAME_RULE, HostSpec, JobSpec, ScriptKind, WorkflowSpec, valid_name
from ccd.spec.notify import NotifySpec, from_plain
from ccd.spec.yamltree import (
    Bad,
    Ctx,
    Map,
    Node,
    Reader,
    Seq,
    as_duration,
    as_plain,
    as_scalar,
    as_text,
    describe,
    is_null,
    unknown,
)


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


def default_name(source: Path) -> str:
    """The file stem, made valid: the user never wrote it, so it should not be an error."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", source.stem)[:100].lstrip(".-")
    return name or "workflow"


def check_name(ctx: Ctx, name: str, line: int, what: str) -> None:
    if not valid_name(name):
        ctx.add(line, f"invalid {what} name '{name}': {NAME_RULE}", name if what == "job" else None)


# --- checks both formats make ----------------------------------------------------------------


MAX_CYCLES_REPORTED = 10


def check_graph(ctx: Ctx, jobs: Mapping[str, JobSpec], fld: str | None) -> None:
    """Report the cycles among the known edges (unknown parents are reported elsewhere):
    each found is taken out and the rest searched again, so cycles that share no job are
    all reported (up to a limit), each once."""
    nodes = list(jobs)
    edges = [(p, job.name) for job in jobs.values() for p in job.needs if p in jobs]
    for _ in range(MAX_CYCLES_REPORTED):
        cycle = dag.find_cycle(nodes, edges)
        if not cycle:
            return
        ctx.add(jobs[cycle[0]].line, "cycle: " + " -> ".join(cycle), cycle[0], fld)
        on_cycle = set(cycle)
        nodes = [n for n in nodes if n not in on_cycle]
        edges = [(p, c) for p, c in edges if p not in on_cycle and c not in on_cycle]


# Linux's MAX_ARG_STRLEN: no single argument or environment entry of an exec may be longer
# (E2BIG). Checked here, so that such a job is an error in its file, not a failed start.
MAX_ARG_BYTES = 32 * 4096 - 1


def make_spec(
    ctx: Ctx,
    name: str,
    source: Path,
    jobs: dict[str, JobSpec],
    hosts: dict[str, HostSpec],
    notify: tuple[NotifySpec, ...] = (),
) -> WorkflowSpec:
    for job in jobs.values():
        check_arg_sizes(ctx, job)
    return WorkflowSpec(
        name, source, ctx.base_dir, MappingProxyType(jobs), MappingProxyType(hosts), notify
    )


def read_notify(reader: Reader, node: Node | None) -> tuple[NotifySpec, ...]:
    """``notify:``: a notifier (``command``, ``url``, ``on``, ``timeout``) or a list of them;
    a timeout may have units (``30s``). Empty if absent or invalid (reported)."""
    if node is None or is_null(node):
        return ()
    items = node.items if isinstance(node, Seq) else [node]
    plain: list[Any] = []
    for item in items:
        value = as_plain(item)
        timeout = item.fields.get("timeout") if isinstance(item, Map) else None
        if isinstance(value, dict) and timeout is not None and not is_null(timeout[1]):
            try:
                value["timeout"] = as_duration(timeout[1])
            except Bad as bad:
                reader.add(timeout[1].line, str(bad), "notify.timeout")
                return ()
        plain.append(value)
    found = from_plain(plain if isinstance(node, Seq) else plain[0])
    if isinstance(found, list):
        report(reader, [f"notify: {p}" for p in found], {"notify": node}, node.line)
        return ()
    return found


def check_arg_sizes(ctx: Ctx, job: JobSpec) -> None:
    # A character is at most 4 bytes: a shorter text needs no encoding to be known to fit.
    surely_fits = MAX_ARG_BYTES // 4
    if not (job.args or job.env) and (job.run is None or len(job.run) <= surely_fits):
        return  # most jobs, and every load checks every job
    entries = [("run", job.run or ""), *(("args", arg) for arg in job.args)]
    entries += [("env", f"{key}={value}") for key, value in job.env.items()]
    for fld, text in entries:
        if len(text) > surely_fits and (size := len(text.encode())) > MAX_ARG_BYTES:
            limit = f"more than the {MAX_ARG_BYTES} a program can take in one argument or variable"
            ctx.add(job.line, f"{size} bytes: {limit}", job.name, fld)


SUFFIX_KINDS: dict[str, ScriptKind] = {".sh": "sh", ".py": "py", ".ipynb": "ipynb"}


def _script(value: str, base_dir: Path) -> tuple[ScriptKind, Path]:
    kind = SUFFIX_KINDS.get(Path(value).suffix)
    if kind is None:
        raise Bad(f"script '{value}' must end in .sh, .py or .ipynb")
    path = (base_dir / Path(value).expanduser()).resolve()
    if not path.is_file():
        raise Bad(f"script file not found: {path}")
    return kind, path


def script_field(
    reader: Reader, fields: Mapping[str, Node], key: str
) -> tuple[ScriptKind, str | None, Path | None]:
    """The script named by ``key``, which must exist; a bad one yields a placeholder
    (reported)."""
    base_dir = reader.ctx.base_dir
    found = reader.opt(fields, key, lambda node: _script(as_text(node), base_dir))
    if found is None:
        if is_null(fields[key]):
            reader.add(fields[key].line, "must not be empty", key)
        return "shell", None, None
    return found[0], None, found[1]


# --- host options and job fields (ccd.spec.hosts settings) --------------------------------------


def host_options(
    reader: Reader, name: str, kind: str, fields: Mapping[str, Node], line: int
) -> SshOptions | SlurmOptions | None:
    """An ssh or slurm host's settings from its fields besides `type` and `max_jobs` (known
    ones only: unknown fields are reported by the caller); None if invalid (reported)."""
    values = {key: as_plain(node) for key, node in fields.items()}
    resources = fields.get("resources")
    if isinstance(resources, Map):  # unknown keys reported here, with suggestions
        known = reader.fields(resources, RESOURCE_FIELDS, fld="resources")
        values["resources"] = {key: as_plain(node) for key, node in known.items()}
    if kind == "ssh":
        result: SshOptions | SlurmOptions | list[str] = SshOptions.from_mapping(name, values)
    else:
        result = SlurmOptions.from_mapping(values)
    if isinstance(result, list):
        report(reader, result, fields, line)
        return None
    return result


def read_resources(reader: Reader, node: Node) -> Resources | None:
    """A job's (or the defaults') ``resources:``; None if null or invalid (reported)."""
    if is_null(node):
        return None
    known = reader.fields(node, RESOURCE_FIELDS, fld="resources")
    if not isinstance(node, Map):
        return None
    result = Resources.from_mapping({key: as_plain(value) for key, value in known.items()})
    if isinstance(result, list):
        report(reader, result, {"resources": node}, node.line, "resources.")
        return None
    return result


def report(
    reader: Reader, problems: list[str], fields: Mapping[str, Node], line: int, prefix: str = ""
) -> None:
    """Problems from `ccd.spec.hosts`, each at the line of the field it names (else ``line``)."""
    for problem in problems:
        path, message = split_problem(problem)
        if path is not None and prefix:
            path = prefix.rstrip(".") + "." + path
        reader.add(_line_of(fields, path, line), message, path)


def _line_of(fields: Mapping[str, Node], path: str | None, default: int) -> int:
    head, _, rest = (path or "").partition(".")
    node = fields.get(head)
    if node is None:
        return default
    if isinstance(node, Map) and rest.split(".")[0] in node.fields:
        return node.fields[rest.split(".")[0]][1].line
    return node.line


def as_inputs(node: Node, base_dir: Path) -> tuple[str, ...]:
    """Files that must exist, relative to ``base_dir`` (or absolute) -> absolute paths. Each
    is copied into the run directory under its own name, so names must not clash."""
    paths: dict[str, Path] = {}  # by the name the file gets in the run directory
    for item in _items(node, "a list of file paths"):
        path = (base_dir / Path(as_text(item)).expanduser()).resolve()
        if not path.exists():
            raise Bad(f"input file not found: {path}", item.line)
        if not path.is_file():
            raise Bad(f"input is not a file: {path}", item.line)
        if paths.get(path.name, path) != path:
            raise Bad(
                f"inputs {paths[path.name]} and {path} would both be '{path.name}' in the "
                "run directory",
                item.line,
            )
        paths[path.name] = path
    return tuple(str(path) for path in paths.values())


def as_outputs(node: Node) -> tuple[str, ...]:
    """Glob patterns inside the run directory: relative, without '..'."""
    patterns: list[str] = []
    for item in _items(node, "a list of glob patterns"):
        pattern = as_text(item)
        if pattern.startswith(("/", "~")):
            raise Bad(f"output '{pattern}' must be relative to the run directory", item.line)
        if ".." in PurePosixPath(pattern).parts:
            raise Bad(f"output '{pattern}' must not leave the run directory ('..')", item.line)
        patterns.append(pattern)
    return tuple(dict.fromkeys(patterns))


def as_retry_on(node: Node) -> frozenset[str]:
    """Failure classes, e.g. ``[timeout, node_fail]``; ``[]`` retries none."""
    classes: set[str] = set()
    for item in _items(node, "a list of failure classes", single=True):
        name = as_scalar(item, "a failure class")
        if name not in FAILURE_CLASSES:
            message = unknown("unknown failure class", name, FAILURE_CLASSES)
            raise Bad(f"{message}; the classes are {', '.join(FAILURE_CLASSES)}", item.line)
        classes.add(name)
    return frozenset(classes)


_FACTOR_RE = re.compile(r"[xX]?(\d+\.?\d*|\.\d+)|(\d+\.?\d*|\.\d+)[xX]")


def as_on_retry(node: Node) -> Mapping[str, float]:
    """How each retry scales the request: ``{mem: x2, time: 1.5}`` -> ``{"mem": 2.0, ...}``."""
    if not isinstance(node, Map):
        raise Bad(f"expected a mapping like {{mem: x2, time: x1.5}}, got {describe(node)}")
    if node.dups:
        raise Bad(f"duplicate field '{node.dups[0][0]}'", node.dups[0][1])
    factors: dict[str, float] = {}
    for key, (line, value) in node.fields.items():
        if key not in ("mem", "time"):
            raise Bad(unknown("unknown field", key, ("mem", "time")), line)
        match = _FACTOR_RE.fullmatch(as_scalar(value, "a factor").strip())
        if match is None or float(match.group(1) or match.group(2)) < 1:
            raise Bad(
                f"'{key}': expected a factor >= 1 like x2, 2x or 1.5, got {describe(value)}",
                value.line,
            )
        factors[key] = float(match.group(1) or match.group(2))
    return MappingProxyType(factors)


def _items(node: Node, what: str, *, single: bool = False) -> list[Node]:
    if isinstance(node, Seq):
        return node.items
    if single and not isinstance(node, Map):
        return [node]
    raise Bad(f"expected {what}, got {describe(node)}")
