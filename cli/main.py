"""ccctl: the command line of ccd.

Exit codes: 0 success; 1 a workflow did not succeed or a known error (one line on stderr);
2 usage or validation errors. ``-v`` shows tracebacks.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ccd.errors import CcdError, SpecError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_FAILED = 1
EXIT_USAGE = 2


def handle_errors(func: F) -> F:
    """The CLI's one error handler: a known error is one line and exit 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SpecError as err:
            click.echo(str(err), err=True)
            sys.exit(EXIT_USAGE)
        except CcdError as err:
            if click.get_current_context().find_root().params.get("verbose"):
                raise
            click.echo(f"error: {err}", err=True)
            sys.exit(EXIT_FAILED)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks and debug logs.")
@click.version_option(package_name="ccd")
def main(verbose: bool) -> None:
    """ccd's client: run, validate and draw workflows (and, with the daemon, submit them)."""


workflow_file = click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))


@main.command()
@workflow_file
@handle_errors
def validate(file: Path) -> None:
    """Check a workflow file; print 'ok: N jobs, M edges' or every problem found."""
    from ccd.spec import load

    try:
        spec = load(file)
    except SpecError as err:
        click.echo(str(err), err=True)
        sys.exit(EXIT_FAILED)
    click.echo(f"ok: {len(spec.jobs)} jobs, {len(spec.edges())} edges")


@main.command()
@workflow_file
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the run's database and run dirs go [default: XDG state dir].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the final status as JSON.")
@click.option("--fail-fast", is_flag=True, help="Cancel everything once a job fails.")
@click.option(
    "--max-jobs",
    type=click.IntRange(min=1),
    help="At most this many jobs at once, across all hosts.",
)
@handle_errors
def run(
    file: Path, state_dir: Path | None, as_json: bool, fail_fast: bool, max_jobs: int | None
) -> None:
    """Run a workflow in this process, without a daemon; exit 0 if every job succeeded."""
    from ccd import paths
    from ccd.spec import load
    from cli.runner import run_in_process

    spec = load(file)
    status = run_in_process(
        spec, state_dir or paths.default_state_dir(), fail_fast=fail_fast,
        max_jobs=max_jobs, live=sys.stdout.isatty() and not as_json, quiet=as_json,
    )  # fmt: skip
    if as_json:
        click.echo(json.dumps(status, indent=2))
    sys.exit(0 if status["workflow"]["state"] == "succeeded" else EXIT_FAILED)


@main.command()
@workflow_file
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Output file: .svg, .png, .pdf or .dot.",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Colour nodes by the latest run of this workflow found here.",
)
@handle_errors
def graph(file: Path, output: Path, state_dir: Path | None) -> None:
    """Draw a workflow's DAG, coloured by state if it has been run."""
    from ccd import dag, paths
    from ccd.spec import load
    from cli.runner import latest_states

    spec = load(file)
    states, progress = latest_states(spec, state_dir or paths.default_state_dir())
    dag.render(dag.to_dot(spec, states, progress), output)
    click.echo(f"wrote {output}")
