"""Build workflows in Python instead of YAML::

    from ccd.workflow import Workflow

    wf = (
        Workflow("sweep")
        .job("prep", run="python3 prep.py")
        .job("train", script="train.py", needs="prep",
             args=["--lr", "${{ matrix.lr }}"], matrix={"lr": [0.1, 0.01]})
        .job("best", run="python3 best.py ${{ jobs.train.outputs.accuracy }}", needs="train")
    )
    wf.run()        # in this process, like `ccctl run`; returns the final status
    wf.submit()     # to the daemon, like `ccctl submit`; returns the workflow id
    wf.to_yaml()    # the same workflow as a file `ccctl validate` accepts

A workflow built here is checked by the very reader of workflow files: the same rules and
the same messages, each placed at the line of the Python call that made the job.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ccd.errors import Problem, SpecError
from ccd.spec import WorkflowSpec, dump, parse

_JOB_FIELDS = (
    "run",
    "script",
    "args",
    "env",
    "needs",
    "host",
    "retries",
    "timeout",
    "python",
    "inputs",
    "outputs",
    "resources",
    "retry_on",
    "on_retry",
    "matrix",
)


class Workflow:
    """A workflow under construction. Each method returns the workflow, so calls chain."""

    def __init__(self, name: str, *, defaults: Mapping[str, Any] | None = None) -> None:
        self.name = name
        self._file, self._line = _caller()
        self._defaults = dict(defaults or {})
        self._hosts: dict[str, dict[str, Any]] = {}
        self._jobs: dict[str, dict[str, Any]] = {}
        self._job_lines: dict[str, int] = {}

    def host(self, name: str, type: str, **options: Any) -> Workflow:
        """A host for this workflow's jobs: ``type`` is local, ssh or slurm; the options
        are those of a workflow file's ``hosts:`` entry (``hostname=``, ``partition=``, ...)."""
        self._hosts[name] = {"type": type, **options}
        return self

    def job(self, name: str, **fields: Any) -> Workflow:
        """A job: ``run=`` or ``script=``, and any of ``needs`` (a name or a list),
        ``args``, ``env``, ``host``, ``matrix``, ``retries``, ``timeout``, ``resources``,
        ``inputs``, ``outputs``, ``python``, ``retry_on``, ``on_retry``, as in a file."""
        unknown = sorted(set(fields) - set(_JOB_FIELDS))
        if unknown:
            raise TypeError(
                f"job '{name}': unknown field(s) {', '.join(unknown)}; "
                f"the fields are {', '.join(_JOB_FIELDS)}"
            )
        if isinstance(fields.get("needs"), str):
            fields["needs"] = [fields["needs"]]
        self._jobs[name] = {k: _plain(v) for k, v in fields.items() if v is not None}
        self._job_lines[name] = _caller()[1]
        return self

    # -- what it becomes ------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name}
        if self._defaults:
            data["defaults"] = {k: _plain(v) for k, v in self._defaults.items()}
        if self._hosts:
            data["hosts"] = {k: _plain(v) for k, v in self._hosts.items()}
        data["jobs"] = self._jobs
        return data

    def to_yaml(self) -> str:
        """The workflow in ccd's file format."""
        return dump.to_yaml(self.to_dict())

    def spec(self) -> WorkflowSpec:
        """Validated, as a file would be; SpecError lists every problem, each at the line
        of the call that made the job concerned (scripts resolve beside that file)."""
        source = Path(self._file)
        try:
            return parse(self.to_yaml(), source=source, base_dir=source.parent)
        except SpecError as err:
            raise SpecError([self._locate(p) for p in err.problems]) from None

    def _locate(self, problem: Problem) -> Problem:
        line = self._job_lines.get(problem.job or "", self._line)
        return Problem(self._file, line, problem.message, problem.job, problem.field)

    # -- running it -----------------------------------------------------------------------

    def run(
        self,
        *,
        state_dir: Path | str | None = None,
        fail_fast: bool = False,
        max_jobs: int | None = None,
    ) -> dict[str, Any]:
        """Run in this process (no daemon) to the end; the final status, as
        ``ccctl run --json`` prints it."""
        from ccd import logs, paths

        spec = self.spec()
        directory = Path(state_dir) if state_dir is not None else paths.default_state_dir()
        paths.prepare_state_dir(directory)
        logs.configure(directory / paths.LOG_NAME)  # as `ccctl run`: the log file, not stdout
        return asyncio.run(_run(spec, directory, fail_fast, max_jobs))

    def submit(self, *, socket: Path | str | None = None, fail_fast: bool = False) -> str:
        """Submit to the running daemon; the workflow's id (follow it with
        ``ccd.client.Client().wait(id)``)."""
        from ccd.client import Client

        self.spec()  # problems here, located in the Python file, before any request
        client = Client(Path(socket) if socket is not None else None)
        source = Path(self._file)
        return client.submit_text(
            self.to_yaml(), source=source, base_dir=source.parent, fail_fast=fail_fast
        )


async def _run(
    spec: WorkflowSpec, state_dir: Path, fail_fast: bool, max_jobs: int | None
) -> dict[str, Any]:
    from ccd.engine import Engine, Limits

    engine = await Engine.open(state_dir, spec.hosts, Limits(max_jobs=max_jobs))
    try:
        wf_id = await engine.submit(spec, fail_fast=fail_fast)
        await engine.wait(wf_id)
        return (await engine.status(wf_id)).to_json()
    finally:
        await engine.close()


def _caller() -> tuple[str, int]:
    """File and line of the user's call (the first frame outside this module)."""
    frame = sys._getframe(1)
    while frame.f_back is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back
    return frame.f_code.co_filename, frame.f_lineno


def _plain(value: Any) -> Any:
    """Python values as YAML writes them: tuples as lists, paths as text."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
