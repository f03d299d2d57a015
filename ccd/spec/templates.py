"""Jobs as templates: a matrix job's members, `${{ }}` references checked at submit and
resolved when a job becomes ready. Pure: the engine passes in the outputs it has stored.

A reference to a job's outputs must name one of the job's own parents (``needs``): that is
what makes its value known, and committed, before the job can start. A matrix job is a
*group*: its members are ordinary jobs made from it, one per combination, and the group
itself runs nothing: it succeeds once all its members have, and its outputs are theirs,
each key a JSON list in member order, so that a child needing the group reads them all.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import replace
from types import MappingProxyType

from ccd.spec.checks import MAX_ARG_BYTES
from ccd.spec.hosts import Resources
from ccd.spec.matrix import (
    Combination,
    Matrix,
    check_size,
    combinations,
    make,
    member_names,
    values_from_output,
)
from ccd.spec.model import JobSpec
from ccd.spec.refs import (
    MATRIX_KEY_RE,
    REF_VAR_PREFIX,
    Ref,
    RefError,
    iter_texts,
    matrix_variable,
    refs_in,
    substitute,
    substitute_shell,
)
from ccd.spec.yamltree import Bad, Ctx, Map, Node, Scalar, Seq, as_scalar, describe, unknown

OutputsOf = Callable[[str], Mapping[str, str]]


# --- checks at submit --------------------------------------------------------------------


def check_refs(ctx: Ctx, jobs: Mapping[str, JobSpec], existing: Collection[str] = ()) -> None:
    """Report every reference that can be known to be wrong: malformed, naming a job that
    is not a parent, or a matrix key the job's matrix does not have. (A parent's output
    keys are known only once it has run: a missing one fails the child then.)"""
    for job in jobs.values():
        if job.group is not None:
            continue  # made from its group's template, which is checked
        texts = list(iter_texts(job.run, job.args, job.env, job.resource_refs))
        if job.matrix is not None:
            texts += [(f"matrix.{k}", v) for k, v in job.matrix.axes.items() if isinstance(v, str)]
        for fld, text in texts:
            if "${{" in text:
                _check_text(ctx, job, fld, text, jobs, existing)


def _check_text(
    ctx: Ctx,
    job: JobSpec,
    fld: str,
    text: str,
    jobs: Mapping[str, JobSpec],
    existing: Collection[str],
) -> None:
    try:
        refs = refs_in(text)
    except RefError as err:
        ctx.add(job.line, str(err), job.name, fld)
        return
    for ref in refs:
        problem = _ref_problem(job, ref, jobs, existing, fld)
        if problem is not None:
            ctx.add(job.line, f"{ref}: {problem}", job.name, fld)


def _ref_problem(
    job: JobSpec, ref: Ref, jobs: Mapping[str, JobSpec], existing: Collection[str], fld: str
) -> str | None:
    if ref.job is None:
        if job.matrix is None:
            return "only a job with a matrix has matrix values"
        if fld.startswith("matrix."):
            return "a matrix value cannot come from the matrix itself"
        if ref.key not in job.matrix.keys:
            return unknown("unknown matrix key", ref.key, job.matrix.keys)
        return None
    if ref.job not in jobs and ref.job not in existing:
        return unknown("unknown job", ref.job, [*jobs, *existing])
    if ref.job not in job.needs:
        return f"'{ref.job}' is not a parent of '{job.name}': add it to its needs"
    return None


# --- matrix members ----------------------------------------------------------------------


def expand(template: JobSpec, values: Mapping[str, list[str]] | None = None) -> list[JobSpec]:
    """The members of a matrix job (``values``: its run-time axes' lists). ValueError or
    RefError if there are too many combinations or one cannot be made."""
    assert template.matrix is not None
    combos = combinations(template.matrix, values)
    names = member_names(template.name, combos)
    return [member(template, name, combo) for name, combo in zip(names, combos, strict=True)]


def member(template: JobSpec, name: str, combo: Combination) -> JobSpec:
    """One combination's job: ``${{ matrix.KEY }}`` replaced (in ``run`` by the variable
    ``CCD_MATRIX_KEY``, which every member has), output references left for later."""

    def value(ref: Ref) -> str | None:
        if ref.job is not None:
            return None
        if ref.key not in combo:
            raise RefError(f"{ref}: combination {combo} has no '{ref.key}'")
        return combo[ref.key]

    def variable(ref: Ref) -> str | None:
        value(ref)  # a missing key is an error here too
        return None if ref.job is not None else matrix_variable(ref.key)

    env = {matrix_variable(k): v for k, v in combo.items()}
    env.update({k: substitute(v, value) for k, v in template.env.items()})
    resources, pending = _resources(template, lambda text: substitute(text, value))
    return replace(
        template,
        name=name,
        run=substitute_shell(template.run, variable) if template.run is not None else None,
        args=tuple(substitute(arg, value) for arg in template.args),
        env=MappingProxyType(env),
        matrix=None,
        group=template.name,
        values=MappingProxyType(dict(combo)),
        resources=resources,
        resource_refs=MappingProxyType(pending),
    )


# --- resolving output references ---------------------------------------------------------


def needs_resolving(job: JobSpec) -> bool:
    """Whether the job has output references (a cheap test: every job is asked)."""
    if job.resource_refs or (job.run is not None and "${{" in job.run):
        return True
    # One search of the joined texts, not one per text: every job that becomes ready is asked.
    return "${{" in "\0".join(job.args) or "${{" in "\0".join(job.env.values())


def resolve(job: JobSpec, outputs_of: OutputsOf) -> JobSpec:
    """The job with its parents' outputs in place; RefError naming the first that cannot
    be (a key the parent did not write, say). In ``run`` each becomes ``CCD_REF_N``."""
    variables: dict[Ref, str] = {}

    def value(ref: Ref) -> str:
        if ref.job is None:
            raise RefError(f"{ref}: not a matrix job")
        return output(ref, outputs_of)

    def variable(ref: Ref) -> str:
        value(ref)
        return variables.setdefault(ref, f"{REF_VAR_PREFIX}{len(variables) + 1}")

    run = substitute_shell(job.run, variable) if job.run is not None else None
    env = {k: substitute(v, value) for k, v in job.env.items()}
    env.update({name: value(ref) for ref, name in variables.items()})
    args = tuple(substitute(arg, value) for arg in job.args)
    _check_sizes(args, env)
    resources, pending = _resources(job, lambda text: substitute(text, value))
    assert not pending
    return replace(
        job,
        run=run,
        args=args,
        env=MappingProxyType(env),
        resources=resources,
        resource_refs=MappingProxyType({}),
    )


def _check_sizes(args: tuple[str, ...], env: Mapping[str, str]) -> None:
    entries = [("an argument", a) for a in args] + [(f"${k}", v) for k, v in env.items()]
    for what, text in entries:
        if len(text) > MAX_ARG_BYTES // 4 and len(text.encode()) > MAX_ARG_BYTES:
            raise RefError(
                f"{what} would be {len(text.encode())} bytes, more than the "
                f"{MAX_ARG_BYTES} a program can take"
            )


def _resources(job: JobSpec, fill: Callable[[str], str]) -> tuple[Resources | None, dict[str, str]]:
    """The job's resources with its referenced fields filled in where ``fill`` could (and
    checked); the fields still waiting for a value stay as text."""
    if not job.resource_refs:
        return job.resources, {}
    filled = {k: fill(v) for k, v in job.resource_refs.items()}
    pending = {k: v for k, v in filled.items() if "${{" in v}
    ready = {k: _typed(v) for k, v in filled.items() if k not in pending}
    if not ready:
        return job.resources, pending
    own = Resources.from_mapping(ready)
    if isinstance(own, list):
        raise RefError(f"resources: {'; '.join(own)}")
    return (own.merged_over(job.resources) if job.resources else own), pending


def _typed(text: str) -> object:
    """A count as a number (``cpus: "4"`` is 4); any other value as its text."""
    return int(text) if text.strip().isdigit() else text.strip()


# --- groups ------------------------------------------------------------------------------


def group_outputs(members: list[Mapping[str, str]]) -> dict[str, str]:
    """A group's outputs: each key its members wrote, as a JSON list in member order (a
    member that did not write it gives null)."""
    keys = dict.fromkeys(key for outputs in members for key in outputs)
    return {key: json.dumps([outputs.get(key) for outputs in members]) for key in keys}


def runtime_values(matrix: Matrix, outputs_of: OutputsOf) -> dict[str, list[str]]:
    """The run-time axes' values, from the parents' outputs."""
    values: dict[str, list[str]] = {}
    for key, axis in matrix.axes.items():
        if isinstance(axis, str):
            [ref] = refs_in(axis)
            values[key] = values_from_output(ref, output(ref, outputs_of))
    return values


def output(ref: Ref, outputs_of: OutputsOf) -> str:
    """The value of an output reference; RefError if its job did not write that key."""
    assert ref.job is not None
    outputs = outputs_of(ref.job)
    if ref.key not in outputs:
        wrote = ", ".join(sorted(outputs)) or "nothing"
        message = unknown(f"job '{ref.job}' wrote no output", ref.key, outputs)
        raise RefError(f"{ref}: {message} (it wrote: {wrote})")
    return outputs[ref.key]


# --- reading `matrix:` -------------------------------------------------------------------


def as_matrix(node: Node) -> Matrix:
    """``{key: [values], ...}`` or ``{key: "${{ jobs.P.outputs.K }}"}``, with optional
    ``include``/``exclude`` lists of ``{key: value}`` mappings."""
    if not isinstance(node, Map):
        raise Bad(f"expected a mapping of keys to lists of values, got {describe(node)}")
    if node.dups:
        raise Bad(f"duplicate key '{node.dups[0][0]}'", node.dups[0][1])
    axes: dict[str, tuple[str, ...] | str] = {}
    lists: dict[str, list[dict[str, str]]] = {"include": [], "exclude": []}
    for key, (line, value) in node.fields.items():
        if key in lists:
            lists[key] = _entries(value, key)
            continue
        if not MATRIX_KEY_RE.fullmatch(key):
            raise Bad(f"invalid matrix key '{key}': use [A-Za-z_][A-Za-z0-9_]*", line)
        axes[key] = _axis(key, value)
    if not axes and not lists["include"]:
        raise Bad("the matrix has no values")
    try:
        check_size(axes, len(lists["include"]))
    except ValueError as err:
        raise Bad(str(err)) from None
    return make(axes, lists["include"], lists["exclude"])


def _axis(key: str, node: Node) -> tuple[str, ...] | str:
    if isinstance(node, Seq):
        if not node.items:
            raise Bad(f"matrix key '{key}' has no values", node.line)
        values = tuple(as_scalar(item, "a value") for item in node.items)
        if any("${{" in value for value in values):
            raise Bad(
                f"matrix key '{key}': a value in a list cannot hold a reference; give "
                "one ${{ jobs.NAME.outputs.KEY }} that holds a JSON list",
                node.line,
            )
        return values
    if isinstance(node, Scalar):
        text = node.value.strip()
        refs = refs_in(text) if "${{" in text else []
        if (
            len(refs) == 1
            and refs[0].job is not None
            and text.startswith("${{")
            and text.endswith("}}")
        ):
            return text
    raise Bad(
        f"matrix key '{key}': expected a list of values, or one "
        "${{ jobs.NAME.outputs.KEY }} that holds a JSON list",
        node.line,
    )


def _entries(node: Node, what: str) -> list[dict[str, str]]:
    if not isinstance(node, Seq):
        raise Bad(f"'{what}' expects a list of mappings like {{key: value}}", node.line)
    entries: list[dict[str, str]] = []
    for item in node.items:
        if not isinstance(item, Map) or not item.fields:
            raise Bad(f"'{what}' expects a list of mappings like {{key: value}}", item.line)
        for key, (line, _) in item.fields.items():
            if not MATRIX_KEY_RE.fullmatch(key):
                raise Bad(f"invalid matrix key '{key}': use [A-Za-z_][A-Za-z0-9_]*", line)
        entries.append({k: as_scalar(v, "a value") for k, (_, v) in item.fields.items()})
    return entries
