"""The reader of ccd's own workflow format: a mapping with ``name:``, ``defaults:``,
``hosts:`` and ``jobs:``, each job a ``run:`` command or a ``script:`` with its settings.

Called by `ccd.spec.parse` on a tree from `ccd.spec.yamltree`; problems go to its `Ctx`, each
with its line, and the caller raises them together.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ccd.spec.checks import (
    as_inputs,
    as_on_retry,
    as_outputs,
    as_retry_on,
    check_graph,
    check_name,
    default_name,
    host_options,
    make_spec,
    read_notify,
    read_resources,
    script_field,
)
from ccd.spec.hosts import FAILURE_CLASSES, Resources, SlurmOptions
from ccd.spec.matrix import MAX_COMBINATIONS
from ccd.spec.model import (
    BUILTIN_LOCAL,
    HOST_TYPES,
    LOCAL_HOST,
    OPTION_FIELDS,
    HostSpec,
    JobSpec,
    ScriptKind,
    WorkflowSpec,
)
from ccd.spec.refs import RefError
from ccd.spec.templates import as_matrix, check_refs, expand
from ccd.spec.yamltree import (
    Ctx,
    Map,
    Node,
    Reader,
    Scalar,
    as_count,
    as_duration,
    as_env,
    as_names,
    as_positive,
    as_str_list,
    as_text,
    entries,
    is_null,
    unknown,
)

# --- ccd's own format ------------------------------------------------------------------------

TOP_FIELDS = frozenset({"name", "defaults", "hosts", "jobs", "notify"})
FRAGMENT_FIELDS = frozenset({"defaults", "jobs"})  # jobs added to a running workflow
_DEFAULT_FIELDS = frozenset(
    {"host", "retries", "timeout", "python", "resources", "retry_on", "on_retry"}
)
_HOST_FIELDS = frozenset({"type", "max_jobs"})
_ALL_OPTIONS = frozenset().union(*OPTION_FIELDS.values())  # of every host type
_JOB_FIELDS = _DEFAULT_FIELDS | {
    "run",
    "script",
    "args",
    "env",
    "needs",
    "inputs",
    "outputs",
    "matrix",
}
_ALL_CLASSES = frozenset(FAILURE_CLASSES)
_NO_FACTORS: Mapping[str, float] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class _Defaults:
    host: str = LOCAL_HOST
    retries: int = 0
    timeout_s: float | None = None
    python: str = "python3"
    resources: Resources | None = None  # for the jobs on slurm hosts
    retry_on: frozenset[str] = _ALL_CLASSES
    on_retry: Mapping[str, float] = field(default_factory=lambda: _NO_FACTORS)


def read(
    root: Map,
    ctx: Ctx,
    source: Path,
    extra_hosts: Mapping[str, HostSpec],
    existing: Mapping[str, JobSpec] | None = None,
) -> WorkflowSpec:
    """The spec of a workflow in ccd's format (a mapping with ``jobs:``); with ``existing``
    (a running workflow's jobs), of a fragment of jobs to add to it, whose ``needs`` may name
    those jobs."""
    reader = Reader(ctx, None)
    top = reader.fields(root, TOP_FIELDS if existing is None else FRAGMENT_FIELDS)
    name = reader.opt(top, "name", as_text)
    if name is not None:
        check_name(ctx, name, top["name"].line, "workflow")
    own = _hosts(ctx, top.get("hosts"), extra_hosts)
    known = {LOCAL_HOST: BUILTIN_LOCAL, **extra_hosts, **own}  # what jobs may name
    defaults = _defaults(Reader(ctx, None, " (in defaults)"), top.get("defaults"), known)
    jobs = _jobs(ctx, top.get("jobs"), defaults, known, existing or {})
    check_graph(ctx, jobs, "needs")
    used = {job.host for job in jobs.values()} if extra_hosts else set()
    used |= {_via(known[host]) for host in (*own, *used) if host in known}
    hosts = {
        host: spec
        for host, spec in known.items()
        if host == LOCAL_HOST or host in own or host in used
    }
    notify = read_notify(reader, top.get("notify"))
    return make_spec(ctx, name or default_name(source), source, jobs, hosts, notify)


def _via(host: HostSpec) -> str:
    """The host a slurm host reaches its cluster through (``local`` for the others)."""
    return host.options.via if isinstance(host.options, SlurmOptions) else LOCAL_HOST


def _hosts(ctx: Ctx, node: Node | None, extra: Mapping[str, HostSpec]) -> dict[str, HostSpec]:
    """The file's own hosts; a slurm host's `via` must name an ssh host (or be local)."""
    hosts: dict[str, HostSpec] = {}
    bodies = entries(ctx, node, "host")
    for name, (line, body) in bodies.items():
        check_name(ctx, name, line, "host")
        hosts[name] = _host(Reader(ctx, None, f" (host '{name}')"), name, line, body)
    known = {**extra, **hosts}
    ssh = [name for name, host in known.items() if host.type == "ssh"]
    for name, host in hosts.items():
        via = _via(host)
        if via != LOCAL_HOST and via not in ssh:
            body = bodies[name][1]
            assert isinstance(body, Map)  # it has options
            message = (
                unknown("unknown ssh host", via, ssh)
                if via not in known
                else f"host '{via}' is a {known[via].type} host, not an ssh host"
            )
            ctx.add(body.fields["via"][1].line, f"{message} (host '{name}')", fld="via")
    return hosts


def _host(reader: Reader, name: str, line: int, body: Node) -> HostSpec:
    kind = _host_type(reader, name, line, body)
    if kind is None:  # reported; its other fields cannot be checked
        fields = reader.fields(body, _HOST_FIELDS, ignored=_ALL_OPTIONS)
        return HostSpec(name, "local", reader.opt(fields, "max_jobs", as_positive))
    fields = reader.fields(body, _HOST_FIELDS | OPTION_FIELDS[kind])
    max_jobs = reader.opt(fields, "max_jobs", as_positive)
    if kind == "local":
        return HostSpec(name, kind, max_jobs)
    options = {key: node for key, node in fields.items() if key not in _HOST_FIELDS}
    return HostSpec(name, kind, max_jobs, host_options(reader, name, kind, options, line))


def _host_type(reader: Reader, name: str, line: int, body: Node) -> str | None:
    """The entry's valid `type`, else None (reported); the local host is always local."""
    node = body.fields["type"][1] if isinstance(body, Map) and "type" in body.fields else None
    kind = reader.opt({"type": node} if node else {}, "type", as_text)
    if node is None or kind is None:
        if node is None or is_null(node):
            reader.add(line, f"missing field 'type' ({', '.join(HOST_TYPES)})")
        return None
    if kind not in HOST_TYPES:
        reader.add(node.line, unknown("unknown host type", kind, HOST_TYPES), "type")
        return None
    if name == LOCAL_HOST and kind != "local":
        reader.add(node.line, f"the host '{LOCAL_HOST}' is always of type local", "type")
        return None
    return kind


def _known_host(
    reader: Reader, fields: Mapping[str, Node], hosts: Mapping[str, HostSpec]
) -> str | None:
    host = reader.opt(fields, "host", as_text)
    if host is not None and host not in hosts:
        reader.add(fields["host"].line, unknown("unknown host", host, hosts), "host")
        return None
    return host


def _defaults(reader: Reader, node: Node | None, hosts: Mapping[str, HostSpec]) -> _Defaults:
    fields = reader.fields(node, _DEFAULT_FIELDS)
    plain = _Defaults()
    return _Defaults(
        host=_known_host(reader, fields, hosts) or plain.host,
        retries=reader.opt(fields, "retries", as_count) or 0,
        timeout_s=reader.opt(fields, "timeout", as_duration),
        python=reader.opt(fields, "python", as_text) or plain.python,
        resources=read_resources(reader, fields["resources"]) if "resources" in fields else None,
        retry_on=_or(reader.opt(fields, "retry_on", as_retry_on), plain.retry_on),
        on_retry=reader.opt(fields, "on_retry", as_on_retry) or plain.on_retry,
    )


def _or(value: frozenset[str] | None, default: frozenset[str]) -> frozenset[str]:
    return default if value is None else value  # an empty set is a value: retry on nothing


def _jobs(
    ctx: Ctx,
    node: Node | None,
    defaults: _Defaults,
    hosts: Mapping[str, HostSpec],
    existing: Mapping[str, JobSpec],
) -> dict[str, JobSpec]:
    jobs: dict[str, JobSpec] = {}
    needs_at: list[tuple[str, list[tuple[str, int]]]] = []  # job, [(parent, line)]: checked last
    for name, (line, body) in entries(ctx, node, "job").items():
        check_name(ctx, name, line, "job")
        jobs[name] = _job(Reader(ctx, name), line, body, defaults, hosts, needs_at)
    for job, needs in needs_at:
        for parent, at in needs:
            if parent not in jobs and parent not in existing:
                ctx.add(at, _unknown_parent(parent, {**existing, **jobs}), job, "needs")
    check_refs(ctx, jobs, existing)
    return _expand_matrices(ctx, jobs, existing) if not ctx.problems else jobs


def _expand_matrices(
    ctx: Ctx, jobs: dict[str, JobSpec], existing: Mapping[str, JobSpec]
) -> dict[str, JobSpec]:
    """Each matrix job whose values are known now, preceded by its members."""
    if not any(job.matrix is not None for job in jobs.values()):
        return jobs
    expanded: dict[str, JobSpec] = {}
    for job in jobs.values():
        if job.matrix is not None and not job.matrix.dynamic:
            try:
                members = expand(job)
            except (ValueError, RefError) as err:
                ctx.add(job.line, str(err), job.name, "matrix")
                members = []
            for member in members:
                if member.name in jobs or member.name in existing or member.name in expanded:
                    ctx.add(job.line, f"its member '{member.name}' clashes with a job of "
                            "that name", job.name, "matrix")  # fmt: skip
                expanded[member.name] = member
        expanded[job.name] = job
    if len(expanded) > len(jobs) + MAX_COMBINATIONS * 10:
        ctx.add(None, "the matrices make too many jobs")
    return expanded


def _unknown_parent(parent: str, jobs: Mapping[str, JobSpec]) -> str:
    names = [name.strip() for name in parent.split(",")]
    if len(names) > 1 and all(name in jobs for name in names):  # needs: "a, b"
        return f"unknown parent '{parent}' (several parents are a list: [{', '.join(names)}])"
    return unknown("unknown parent", parent, jobs)


def _job(
    reader: Reader,
    line: int,
    body: Node,
    d: _Defaults,
    hosts: Mapping[str, HostSpec],
    needs_at: list[tuple[str, list[tuple[str, int]]]],
) -> JobSpec:
    name = reader.job or ""
    fields = reader.fields(body, _JOB_FIELDS)
    if not isinstance(body, Map) and not is_null(body):
        return JobSpec(name, "shell", line=line)  # reported; a placeholder saves more noise
    kind, run, script = _command(reader, line, fields)
    options: dict[str, Any] = {
        "host": d.host,
        "retries": d.retries,
        "python": d.python,
        "retry_on": d.retry_on,
        "on_retry": d.on_retry,
    }
    options["timeout_s"] = d.timeout_s if "timeout" not in fields else None
    for key in fields:  # only what is there (in file order): the 100k-job path
        if key in _JOB_OPTIONS:
            attr, convert = _JOB_OPTIONS[key]
            value = reader.opt(fields, key, convert)
            if value is not None:
                options[attr] = value
    if "inputs" in fields:
        base_dir = reader.ctx.base_dir
        options["inputs"] = reader.opt(fields, "inputs", lambda n: as_inputs(n, base_dir)) or ()
    if "needs" in options:
        needs_at.append((name, options["needs"]))
        # dict() of the (parent, line) pairs: the parents in file order, without repeats
        options["needs"] = tuple(dict(options["needs"]))
    if options["host"] not in hosts:
        reader.add(fields["host"].line, unknown("unknown host", options["host"], hosts), "host")
    if "resources" in fields:
        node = fields["resources"]
        fields = dict(fields)
        fields["resources"], options["resource_refs"] = _resource_refs(node)
        rest = fields["resources"]
        if options["resource_refs"] and isinstance(rest, Map) and not rest.fields:
            del fields["resources"]  # all of them references: nothing to read now
        host = hosts.get(options["host"])
        if options["resource_refs"] and host is not None and host.type != "slurm":
            message = f"only jobs on a slurm host take resources ('{host.name}' is {host.type})"
            reader.add(node.line, message, "resources")
    options["resources"] = _resources(reader, fields, d.resources, hosts.get(options["host"]))
    return JobSpec(name=name, kind=kind, run=run, script=script, line=line, **options)


def _resource_refs(node: Node) -> tuple[Node, Mapping[str, str]]:
    """Resources given as ``${{ }}`` references are kept as text, to be filled in and
    checked when their values are known; the others are read now."""
    if not isinstance(node, Map):
        return node, MappingProxyType({})
    refs = {
        key: value.value
        for key, (_, value) in node.fields.items()
        if isinstance(value, Scalar) and "${{" in value.value
    }
    if not refs:
        return node, MappingProxyType({})
    rest = {key: entry for key, entry in node.fields.items() if key not in refs}
    return Map(rest, node.line, node.dups), MappingProxyType(refs)


def _resources(
    reader: Reader, fields: Mapping[str, Node], default: Resources | None, host: HostSpec | None
) -> Resources | None:
    """The job's own resources over the defaults'; only jobs on a slurm host have them."""
    own = read_resources(reader, fields["resources"]) if "resources" in fields else None
    if host is None or host.type != "slurm":
        if own is not None and host is not None:
            message = "only jobs on a slurm host take resources"
            reader.add(
                fields["resources"].line, f"{message} ('{host.name}' is {host.type})", "resources"
            )
        return None
    if own is None or default is None:
        return default if own is None else own
    return own.merged_over(default)


# field -> (JobSpec attribute, converter), for the fields other than run and script
_JOB_OPTIONS: dict[str, tuple[str, Callable[[Node], Any]]] = {
    "args": ("args", as_str_list),
    "env": ("env", as_env),
    "needs": ("needs", as_names),
    "host": ("host", as_text),
    "retries": ("retries", as_count),
    "timeout": ("timeout_s", as_duration),
    "python": ("python", as_text),
    "outputs": ("outputs", as_outputs),
    "retry_on": ("retry_on", as_retry_on),
    "on_retry": ("on_retry", as_on_retry),
    "matrix": ("matrix", as_matrix),
}


def _command(
    reader: Reader, line: int, fields: Mapping[str, Node]
) -> tuple[ScriptKind, str | None, Path | None]:
    """Exactly one of ``run`` and ``script``; a bad one yields a placeholder (already reported)."""
    if ("run" in fields) == ("script" in fields):
        both = "run" in fields
        message = "give either 'run' or 'script', not both" if both else "missing 'run' or 'script'"
        reader.add(line, message)
        return "shell", None, None
    run = reader.opt(fields, "run", as_text)
    if "run" in fields:
        if run is None and is_null(fields["run"]):
            reader.add(fields["run"].line, "must not be empty", "run")
        return "shell", run, None
    return script_field(reader, fields, "script")
