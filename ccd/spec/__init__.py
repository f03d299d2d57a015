"""Workflow files -> validated, immutable `WorkflowSpec` (see `ccd.spec.native`)."""

from ccd.spec.native import (
    LOCAL_HOST,
    HostSpec,
    JobSpec,
    ScriptKind,
    WorkflowSpec,
    expand_names,
    load,
    parse,
    valid_name,
)

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
