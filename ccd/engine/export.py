"""A workflow as it now stands, written out: as a file of ccd's format that re-runs the same
DAG (`ccctl export`), or as JSON with every job's state, attempts and outputs (cloudmesh-cc
kept its workflows with their state; this is that, readable by any program)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ccd.engine.launch import job_spec
from ccd.engine.store import Store
from ccd.spec import HostSpec
from ccd.spec.dump import job_mapping, to_yaml, workflow_mapping
from ccd.spec.notify import spec_of_json


async def as_yaml(store: Store, workflow_id: str, hosts: Mapping[str, HostSpec]) -> str:
    """The workflow in ccd's format, with the hosts its jobs use, its added jobs, and each
    matrix decided at run time as the combinations it had."""
    wf = await store.get_workflow(workflow_id)
    specs = [job_spec(rec) for rec in await store.list_jobs(workflow_id)]
    expanded: dict[str, list[Mapping[str, str]]] = {}
    for spec in specs:
        if spec.group is not None:
            expanded.setdefault(spec.group, []).append(spec.values)
    used = {spec.host: hosts[spec.host] for spec in specs if spec.host in hosts}
    mapping = workflow_mapping(wf.name, specs, used, expanded)
    notifiers = [spec_of_json(data).to_mapping() for data in await store.get_notify(wf.id)]
    if notifiers:
        mapping["notify"] = notifiers
    return to_yaml(mapping)


async def as_json(store: Store, workflow_id: str) -> dict[str, Any]:
    """The workflow with each job's definition, state, attempts and outputs."""
    wf = await store.get_workflow(workflow_id)
    records = await store.list_jobs(workflow_id)
    outputs = await store.list_outputs(workflow_id)
    attempts: dict[str, list[dict[str, Any]]] = {}
    for attempt in await store.list_attempts(workflow_id):
        row = dataclasses.asdict(attempt)
        del row["workflow_id"], row["job"]
        attempts.setdefault(attempt.job, []).append(row)
    return {
        "workflow": {
            "id": wf.id,
            "name": wf.name,
            "state": wf.state.value,
            "source": wf.source,
            "created_at": wf.created_at,
            "updated_at": wf.updated_at,
        },
        "jobs": [
            {
                "name": rec.name,
                "state": rec.state.value,
                "host": rec.host,
                "reason": rec.reason,
                "spec": job_mapping(job_spec(rec)),
                "attempts": attempts.get(rec.name, []),
                "outputs": outputs.get(rec.name, {}),
            }
            for rec in records
        ],
        "edges": sorted(await store.list_edges(workflow_id)),
    }
