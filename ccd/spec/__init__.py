"""Workflow files -> validated, immutable `WorkflowSpec`.

Two formats: ccd's own (``jobs:``, read by `ccd.spec.native`) and cloudmesh-cc's
(``workflow: {nodes, dependencies}``, read by `ccd.spec.cloudmesh`). Pure apart from reading
the file and checking that referenced scripts exist.

Every problem found is collected and raised together in one `SpecError`, each located by
line: the YAML is read into a tree that keeps lines (`ccd.spec.yamltree`). The dataclasses and
the naming rule live in `ccd.spec.model`; import them from here. The package also holds the
host settings (`ccd.spec.hosts`) and the workflow graph (`ccd.spec.dag`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ccd.errors import Problem, SpecError
from ccd.spec import cloudmesh, native
from ccd.spec.checks import expand_names
from ccd.spec.model import (
    BUILTIN_LOCAL,
    LOCAL_HOST,
    HostSpec,
    JobSpec,
    ScriptKind,
    WorkflowSpec,
    valid_name,
)
from ccd.spec.yamltree import Ctx, Map, Node, Reader, compose, describe, gc_paused, is_null

__all__ = [
    "LOCAL_HOST",
    "HostSpec",
    "JobSpec",
    "ScriptKind",
    "WorkflowSpec",
    "expand_names",
    "load",
    "parse",
    "valid_name",
]


def load(path: Path, *, extra_hosts: Mapping[str, HostSpec] | None = None) -> WorkflowSpec:
    """Read and validate a workflow file; raise `SpecError` listing every problem.

    ``extra_hosts`` are hosts defined elsewhere (the daemon's config) that jobs may name
    besides the file's own; see `parse`."""
    source = path.resolve()
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError([Problem(str(path), None, f"cannot read workflow file: {err}")]) from err
    return parse(text, source=source, base_dir=source.parent, extra_hosts=extra_hosts)


def parse(
    text: str,
    *,
    source: Path,
    base_dir: Path,
    extra_hosts: Mapping[str, HostSpec] | None = None,
    existing: Mapping[str, JobSpec] | None = None,
) -> WorkflowSpec:
    """Validate workflow text; ``source`` names it in problems, scripts resolve in ``base_dir``.
    With ``existing`` (the jobs of a running workflow), the text is a fragment of ccd's
    format (``jobs:`` and ``defaults:``) to add to it: its jobs may need existing ones.

    Jobs may run on ``local``, on a host of the file's ``hosts:`` section, or on one of
    ``extra_hosts``. The spec's hosts are ``local`` and the file's hosts, plus the extra
    hosts that jobs use; where names clash, the file's entry wins over an extra host, and
    an extra ``local`` over the built-in one."""
    ctx = Ctx(str(source), base_dir, [])
    with gc_paused():
        root = compose(text, ctx)
        spec = (
            _dispatch(root, ctx, source, extra_hosts or {}, existing) if not ctx.problems else None
        )
        # Freed while the collector still sleeps: its first pass would walk the whole tree
        # (a million nodes, 0.4 s, for 100k jobs) only to find it garbage.
        del root
    if ctx.problems or spec is None:
        raise SpecError(sorted(ctx.problems, key=lambda p: p.line or 0))
    return spec


def _dispatch(
    root: Node | None,
    ctx: Ctx,
    source: Path,
    extra_hosts: Mapping[str, HostSpec],
    existing: Mapping[str, JobSpec] | None = None,
) -> WorkflowSpec | None:
    if root is None or is_null(root):
        ctx.add(1, "the workflow file is empty")
        return None
    if not isinstance(root, Map):
        ctx.add(root.line, f"expected a mapping with 'jobs:' or 'workflow:', got {describe(root)}")
        return None
    if "jobs" in root.fields or existing is not None:
        spec = native.read(root, ctx, source, extra_hosts, existing)
    elif "workflow" in root.fields:
        spec = cloudmesh.read(root, ctx, source, extra_hosts.get(LOCAL_HOST, BUILTIN_LOCAL))
    else:
        # neither format recognisable: suggest from both, e.g. 'workflows' -> 'workflow'
        Reader(ctx, None).fields(root, native.TOP_FIELDS | cloudmesh.TOP_FIELDS)
        ctx.add(root.line, "no 'jobs:' (ccd format) or 'workflow:' (cloudmesh-cc format) found")
        return None
    if not spec.jobs and not ctx.problems:
        ctx.add(root.line, "the workflow has no jobs")
    return spec
