"""ccctl: the command line of ccd.

Exit codes: 0 success; 1 a workflow did not succeed or a known error (one line on stderr);
2 usage or validation errors. ``-v`` shows tracebacks.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from ccd.errors import CcdError, SpecError
from cli import remote

EXIT_FAILED = 1
EXIT_USAGE = 2


class CcctlGroup(click.Group):
    """The CLI's one error handler: a known error is one line and exit 1 (2 for an invalid
    workflow file); ``-v`` lets the traceback through."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SpecError as err:
            click.echo(str(err), err=True)
            sys.exit(EXIT_USAGE)
        except CcdError as err:
            if ctx.params.get("verbose"):
                raise
            click.echo(f"error: {err}", err=True)
            sys.exit(EXIT_FAILED)
        except OSError as err:  # a state dir or output path that cannot be made, say
            if ctx.params.get("verbose"):
                raise
            where = f"{err.filename}: " if err.filename else ""
            click.echo(f"error: {where}{err.strerror or err}", err=True)
            sys.exit(EXIT_FAILED)


@click.group(cls=CcctlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks.")
@click.option(
    "--socket", type=click.Path(path_type=Path), envvar="CCD_SOCKET", help=remote.SOCKET_HELP
)
@click.version_option(package_name="ccd")
def main(verbose: bool, socket: Path | None) -> None:
    """ccd's client: run workflows in-process, or submit them to the ccd daemon."""


for command in remote.COMMANDS:
    main.add_command(command)

workflow_file = click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
state_dir_option = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the database and run dirs are [default: $CCD_STATE_DIR or XDG state dir].",
)


@main.command()
@workflow_file
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
@state_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the final status as JSON.")
@click.option("--fail-fast", is_flag=True, help="Cancel everything once a job fails.")
@click.option(
    "--max-jobs",
    type=click.IntRange(min=1),
    help="At most this many jobs at once, across all hosts.",
)
@remote.dry_run_option
def run(
    file: Path,
    state_dir: Path | None,
    as_json: bool,
    fail_fast: bool,
    max_jobs: int | None,
    dry_run: bool,
) -> None:
    """Run a workflow in this process, without a daemon; exit 0 if every job succeeded."""
    from ccd import paths
    from ccd.spec import load
    from cli.runner import run_in_process, show_dry_run

    spec = load(file)
    if dry_run:
        show_dry_run(spec, state_dir or paths.default_state_dir(), as_json=as_json)
    status = run_in_process(
        spec,
        state_dir or paths.default_state_dir(),
        fail_fast=fail_fast,
        max_jobs=max_jobs,
        live=sys.stdout.isatty() and not as_json,
        quiet=as_json,
    )
    if as_json:
        click.echo(json.dumps(status, indent=2))
    sys.exit(0 if status["workflow"]["state"] == "succeeded" else EXIT_FAILED)


@main.command()
@click.argument("target")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Output file: .svg, .png, .pdf or .dot.",
)
@state_dir_option
@click.pass_context
def graph(ctx: click.Context, target: str, output: Path, state_dir: Path | None) -> None:
    """Draw a workflow's DAG: TARGET is a workflow file (coloured by its latest `ccctl run`)
    or the id of a workflow in the daemon (live colours)."""
    from ccd.spec import dag

    path = Path(target)
    if path.exists() or path.suffix in (".yaml", ".yml") or "/" in target:  # a file, not an id
        from ccd import paths
        from ccd.spec import load
        from cli.runner import latest_states

        spec = load(path)
        states, progress = latest_states(spec, state_dir or paths.default_state_dir())
        dot = dag.to_dot(spec, states, progress)
    else:
        dot = remote.client_of(ctx).graph(target)
    dag.render(dot, output)
    click.echo(f"wrote {output}")
