"""cloudmesh-cc's workflow format (``workflow: {nodes, dependencies}``) -> `WorkflowSpec`.

Called by `ccd.spec.parse` on a tree from `ccd.spec.yamltree`, which has found no ``jobs:``
(ccd's own format) but a ``workflow:``. Jobs run on the local host, except ``kind: ssh``
nodes: they run on an ssh host named by their ``host`` field, logged in as their ``user``
(as cloudmesh-cc's ``ssh user@host``), with every other ssh setting at its default
(``~/.ssh/config`` and the agent still apply).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from pathlib import Path

from ccd.spec.checks import (
    SUFFIX_KINDS,
    check_graph,
    check_name,
    default_name,
    expand_names,
    make_spec,
    script_field,
)
from ccd.spec.hosts import SshOptions
from ccd.spec.model import LOCAL_HOST, HostSpec, JobSpec, ScriptKind, WorkflowSpec, valid_name
from ccd.spec.yamltree import (
    Ctx,
    Map,
    Node,
    Reader,
    Scalar,
    Seq,
    as_text,
    describe,
    entries,
    is_null,
    unknown,
)

TOP_FIELDS = frozenset({"workflow", "colors"})
_WORKFLOW_FIELDS = frozenset({"nodes", "dependencies"})
_NODE_FIELDS = frozenset({"kind", "exec", "script", "host", "user"})  # host, user: ssh
# cloudmesh-cc's bookkeeping and display fields (its Graph, Workflow.add_job and Job
# classes): accepted and ignored, so files it wrote load unchanged.
_IGNORED = (
    "name",
    "label",
    "label_format",
    "format",
    "number",
    "status",
    "progress",
    "created",
    "modified",
    "pid",
    "venv",
    "instance",
    "parent",
    "shape",
    "style",
    "directory",
    "output",
    "filetype",
    "tstart",
    "tend",
    "workflow_name",
)
_LATER_KINDS = ("slurm", "lsf", "wsl")
_PROBE = (".sh", ".py", ".ipynb")


def read(root: Map, ctx: Ctx, source: Path, local: HostSpec) -> WorkflowSpec:
    """The workflow in ``root``; problems go to ``ctx``. ``local`` is the host jobs run on."""
    reader = Reader(ctx, None)
    workflow = reader.fields(reader.fields(root, TOP_FIELDS).get("workflow"), _WORKFLOW_FIELDS)
    if "nodes" not in workflow:
        ctx.add(root.fields["workflow"][0], "missing field 'nodes'", fld="workflow")
    nodes = _nodes(ctx, workflow.get("nodes"))
    needs: dict[str, list[str]] = {name: [] for name in nodes}
    for parent, child in _edges(ctx, workflow.get("dependencies"), nodes):
        needs[child].append(parent)
    hosts = {LOCAL_HOST: local}
    jobs = {
        name: _job(Reader(ctx, name), line, body, needs[name], hosts)
        for name, (line, body) in nodes.items()
    }
    check_graph(ctx, jobs, None)
    return make_spec(ctx, default_name(source), source, jobs, hosts)


def _nodes(ctx: Ctx, node: Node | None) -> dict[str, tuple[int, Node]]:
    """Nodes by name, with hostlist ranges in keys expanded (``j[1-3]`` is three nodes)."""
    nodes: dict[str, tuple[int, Node]] = {}
    for key, (line, body) in entries(ctx, node, "node").items():
        try:
            names = expand_names(key) if "[" in key else [key]
        except ValueError as err:
            ctx.add(line, str(err), key)
            continue
        for name in names:
            check_name(ctx, name, line, "job")
            if name in nodes:
                ctx.add(
                    line, f"duplicate job '{name}' (first defined on line {nodes[name][0]})", name
                )
            nodes[name] = (line, body)
    return nodes


def _edges(ctx: Ctx, node: Node | None, nodes: Mapping[str, object]) -> Iterator[tuple[str, str]]:
    """Each dependency is a chain: ``a,b[1-2],c`` links a -> b1 -> b2 -> c."""
    for line, chain in _chains(ctx, node):
        try:
            names = expand_names(chain)
        except ValueError as err:
            ctx.add(line, str(err), fld="dependencies")
            continue
        missing = [name for name in names if name not in nodes]
        for name in missing:
            ctx.add(
                line,
                unknown("unknown job", name, nodes) + f" in dependency '{chain}'",
                fld="dependencies",
            )
        if not missing:
            yield from itertools.pairwise(names)


def _chains(ctx: Ctx, node: Node | None) -> Iterator[tuple[int, str]]:
    """Chains as written, or the ``{name: {source, destination}}`` edges cloudmesh-cc saves."""
    if node is None or is_null(node):
        return
    if isinstance(node, Map):
        reader = Reader(ctx, None, " (in dependencies)")
        for _, (line, edge) in node.fields.items():
            ends = reader.fields(edge, ("source", "destination"), ("name",))
            source = reader.opt(ends, "source", as_text)
            destination = reader.opt(ends, "destination", as_text)
            if "source" not in ends or "destination" not in ends:
                reader.add(line, "an edge needs a 'source' and a 'destination'")
            elif source is not None and destination is not None:
                yield line, f"{source},{destination}"
        return
    items = node.items if isinstance(node, Seq) else [node]
    for item in items:
        if isinstance(item, Scalar) and not is_null(item):
            yield item.line, item.value
        else:
            ctx.add(
                item.line,
                f"expected a chain like 'a,b,c', got {describe(item)}",
                fld="dependencies",
            )


def _job(
    reader: Reader, line: int, body: Node, needs: list[str], hosts: dict[str, HostSpec]
) -> JobSpec:
    name = reader.job or ""
    fields = reader.fields(body, _NODE_FIELDS, _IGNORED)
    kind = reader.opt(fields, "kind", as_text)
    host = LOCAL_HOST
    if kind == "ssh":
        host = _ssh_host(reader, line, fields, hosts) or LOCAL_HOST
    elif kind in _LATER_KINDS:
        reader.add(fields["kind"].line, f"kind '{kind}' is not supported yet", "kind")
    elif kind not in (None, "local"):
        known = ("local", "ssh", *_LATER_KINDS)
        reader.add(fields["kind"].line, unknown("unknown kind", kind, known), "kind")
    script_kind, run, script = _command(reader, line, fields)
    return JobSpec(
        name=name,
        kind=script_kind,
        run=run,
        script=script,
        needs=tuple(dict.fromkeys(needs)),
        host=host,
        line=line,
    )


def _ssh_host(
    reader: Reader, line: int, fields: dict[str, Node], hosts: dict[str, HostSpec]
) -> str | None:
    """The name of the ssh host a ``kind: ssh`` node runs on (added to ``hosts``), or None
    (reported). Nodes naming one host must agree on its user."""
    name = reader.opt(fields, "host", as_text)
    user = reader.opt(fields, "user", as_text)
    if name is None:
        at = fields["host"].line if "host" in fields else line
        reader.add(at, "kind 'ssh' needs the host to log in to", "host")
        return None
    at = fields["host"].line
    if not valid_name(name) or name == LOCAL_HOST:
        reader.add(at, f"'{name}' cannot name an ssh host", "host")
        return None
    options = SshOptions.from_mapping(name, {"user": user})
    if isinstance(options, list):
        reader.add(at, "; ".join(options), "host")
        return None
    spec = HostSpec(name, "ssh", options=options)
    if hosts.setdefault(name, spec) != spec:
        other = hosts[name].options
        assert isinstance(other, SshOptions)
        before, here = (f"'{u}'" if u else "none" for u in (other.user, user))
        message = f"nodes on host '{name}' disagree on its user: {here} here, {before} before"
        reader.add(fields.get("user", fields["host"]).line, message, "user")
    return name


def _command(
    reader: Reader, line: int, fields: dict[str, Node]
) -> tuple[ScriptKind, str | None, Path | None]:
    """``exec`` (a command; a lone ``x.py`` names a script, as cloudmesh-cc reads it), else
    ``script``, else the node's name if it ends in .sh/.py/.ipynb, else NAME.sh/.py/.ipynb."""
    command = reader.opt(fields, "exec", as_text)
    if command is not None:
        if not (Path(command).suffix in SUFFIX_KINDS and len(command.split()) == 1):
            return "shell", command, None
        return script_field(reader, fields, "exec")
    if "script" in fields and not is_null(fields["script"]):
        return script_field(reader, fields, "script")
    name = reader.job or ""
    base_dir = reader.ctx.base_dir
    candidates = [name] if Path(name).suffix in SUFFIX_KINDS else [name + s for s in _PROBE]
    for candidate in candidates:
        if (base_dir / candidate).is_file():
            return SUFFIX_KINDS[Path(candidate).suffix], None, (base_dir / candidate).resolve()
    wanted = " or ".join(candidates)
    reader.add(line, f"no exec or script given, and no {wanted} in {base_dir}", "script")
    return "shell", None, None
