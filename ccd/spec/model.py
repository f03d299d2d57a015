"""The validated workflow: `WorkflowSpec`, its jobs and hosts, and the rule for names.

Plain frozen dataclasses, built by the format readers (`ccd.spec.native`, `ccd.spec.cloudmesh`)
and read by everything downstream. Import them from `ccd.spec`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from ccd.spec.hosts import FAILURE_CLASSES, Resources, SlurmOptions, SshOptions
from ccd.spec.matrix import Matrix
from ccd.spec.notify import NotifySpec

ScriptKind = Literal["shell", "sh", "py", "ipynb"]  # "shell": an inline `run:` command

LOCAL_HOST = "local"
HOST_TYPES = ("local", "ssh", "slurm")
# The fields of a host entry besides `type` and `max_jobs`, by type.
OPTION_FIELDS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "local": frozenset(),
        "ssh": frozenset(f.name for f in fields(SshOptions)),
        "slurm": frozenset(f.name for f in fields(SlurmOptions)),
    }
)


@dataclass(frozen=True, slots=True)
class HostSpec:
    name: str
    type: str  # "local", "ssh" or "slurm"
    max_jobs: int | None = None  # None: the backend's default (CPU count for local)
    options: SshOptions | SlurmOptions | None = None  # the type's own settings


BUILTIN_LOCAL = HostSpec(LOCAL_HOST, "local")


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
    inputs: tuple[str, ...] = ()  # absolute paths of files sent to a remote run dir
    outputs: tuple[str, ...] = ()  # glob patterns (relative, no '..') fetched back after success
    resources: Resources | None = None  # batch requests (slurm hosts)
    retry_on: frozenset[str] = frozenset(FAILURE_CLASSES)  # which failures use `retries`
    on_retry: Mapping[str, float] = field(default_factory=dict)  # e.g. {"mem": 2.0}
    # Dynamic workflows (`ccd.spec.templates`): a matrix job is a group that runs nothing;
    # its members name it in `group` and hold their combination's `values`.
    matrix: Matrix | None = None
    group: str | None = None
    values: Mapping[str, str] = field(default_factory=dict)
    resource_refs: Mapping[str, str] = field(default_factory=dict)  # fields given as ${{ }}


@dataclass(frozen=True, slots=True)
class WorkflowSpec:
    name: str
    source: Path  # the workflow file (absolute)
    base_dir: Path  # relative script paths resolve against this
    jobs: Mapping[str, JobSpec]  # in file order
    hosts: Mapping[str, HostSpec]
    notify: tuple[NotifySpec, ...] = ()  # the file's own notifiers

    def edges(self) -> list[tuple[str, str]]:
        """(parent, child) pairs."""
        return list(self.iter_edges())

    def iter_edges(self) -> Iterator[tuple[str, str]]:
        """(parent, child) pairs, made as they are taken: storing 100k jobs' edges one by
        one leaves the garbage collector nothing to scan, where a list of them would not.
        A matrix group's members are its parents too."""
        for job in self.jobs.values():
            for parent in job.needs:
                yield parent, job.name
            if job.group is not None:
                yield job.name, job.group


NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,100}")
NAME_RULE = "use 1-100 of A-Z a-z 0-9 _ . -, not starting with '.' or '-'"


def valid_name(name: str) -> bool:
    """The rule for workflow, job and host names: safe as a path component, a shell word
    and an argument (never `.`/`..`, never an option)."""
    return NAME_RE.fullmatch(name) is not None and name[0] not in ".-"
