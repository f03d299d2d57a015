"""Specs back to ccd's workflow format: the mappings that `ccctl export` writes as YAML.

The inverse of the native reader for what a spec holds: reading the text written here gives
the same jobs (`ccctl validate` accepts it, and it re-runs the same DAG). A matrix group is
written once, as its template with its matrix; members are not written, being made from it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import Any

import yaml

from ccd.spec.hosts import FAILURE_CLASSES, Resources, SlurmOptions, SshOptions
from ccd.spec.model import LOCAL_HOST, HostSpec, JobSpec

_ALL_CLASSES = frozenset(FAILURE_CLASSES)


def workflow_mapping(
    name: str,
    jobs: Iterable[JobSpec],
    hosts: Mapping[str, HostSpec],
    expanded: Mapping[str, list[Mapping[str, str]]] | None = None,
) -> dict[str, Any]:
    """The workflow as a mapping of ccd's format. ``expanded`` holds, per matrix group that
    has expanded, its members' values: written as the group's matrix (``include`` of each
    combination), so that a sweep decided at run time re-runs as it turned out."""
    expanded = expanded or {}
    out: dict[str, Any] = {"name": name}
    used = {h: hosts[h] for h in sorted(hosts) if h != LOCAL_HOST}
    if used:
        out["hosts"] = {h: host_mapping(spec) for h, spec in used.items()}
    job_map: dict[str, Any] = {}
    for job in jobs:
        if job.group is not None:
            continue
        fields_ = job_mapping(job)
        if job.name in expanded and job.matrix is not None and job.matrix.dynamic:
            fields_["matrix"] = {"include": [dict(v) for v in expanded[job.name]]}
        job_map[job.name] = fields_
    out["jobs"] = job_map
    return out


def to_yaml(data: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(data), sort_keys=False, allow_unicode=True, width=100)


def job_mapping(job: JobSpec) -> dict[str, Any]:
    """The fields of one job that differ from the defaults."""
    out: dict[str, Any] = {}
    if job.run is not None:
        out["run"] = job.run
    elif job.script is not None:
        out["script"] = str(job.script)
    if job.args:
        out["args"] = list(job.args)
    if job.env:
        out["env"] = dict(job.env)
    if job.needs:
        out["needs"] = list(job.needs)
    if job.host != LOCAL_HOST:
        out["host"] = job.host
    out.update(_settings(job))
    return out


def _settings(job: JobSpec) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if job.retries:
        out["retries"] = job.retries
    if job.timeout_s is not None:
        out["timeout"] = job.timeout_s
    if job.python != "python3":
        out["python"] = job.python
    if job.inputs:
        out["inputs"] = list(job.inputs)
    if job.outputs:
        out["outputs"] = list(job.outputs)
    resources = resources_mapping(job.resources) if job.resources else {}
    resources.update(job.resource_refs)
    if resources:
        out["resources"] = resources
    if job.retry_on != _ALL_CLASSES:
        out["retry_on"] = sorted(job.retry_on)
    if job.on_retry:
        out["on_retry"] = {k: f"x{v:g}" for k, v in job.on_retry.items()}
    if job.matrix is not None:
        out["matrix"] = job.matrix.to_json()
    return out


def resources_mapping(resources: Resources) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(resources):
        value = getattr(resources, f.name)
        if value is None or value == ():
            continue
        if f.name == "mem_kib":
            out["mem"] = f"{value}K"
        elif f.name == "time_s":
            out["time"] = f"{value}s"
        else:
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def host_mapping(host: HostSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"type": host.type}
    if host.max_jobs is not None:
        out["max_jobs"] = host.max_jobs
    options = host.options
    if isinstance(options, SshOptions | SlurmOptions):
        blank: Any = SlurmOptions() if isinstance(options, SlurmOptions) else None
        for f in fields(options):
            value = getattr(options, f.name)
            default = getattr(blank, f.name) if blank is not None else f.default
            if value == default:
                continue
            if isinstance(value, Resources):
                out[f.name] = resources_mapping(value)
            else:
                out[f.name] = list(value) if isinstance(value, tuple) else value
    return out
