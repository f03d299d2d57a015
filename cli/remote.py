"""ccctl commands that talk to the daemon. They import only the HTTP client and rendering
(never the engine), so each starts in tens of milliseconds."""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from ccd.client import TERMINAL_STATES, ApiError, Client, DaemonNotRunning
from cli import render

LOG_FOLLOW_INTERVAL_S = 0.5
FOLLOW_RECONNECT_S = 60.0  # how long `logs -f` waits for a restarting daemon
SOCKET_HELP = "The daemon's socket [default: $XDG_RUNTIME_DIR/ccd.sock or in the state dir]."


def client_of(ctx: click.Context) -> Client:
    socket: Path | None = ctx.find_root().params.get("socket")
    return Client(socket)


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


def exit_for(status: dict[str, Any]) -> None:
    sys.exit(0 if status["workflow"]["state"] == "succeeded" else 1)


dry_run_option = click.option(
    "--dry-run",
    is_flag=True,
    help="Show each job's command (Slurm: batch script and sbatch line, checked against the "
    "partition's limits) and run nothing.",
)


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--wait", is_flag=True, help="Follow the run and exit like `ccctl run`.")
@click.option("--fail-fast", is_flag=True, help="Cancel everything once a job fails.")
@click.option("--request-id", help="Idempotency key: a repeat returns the first workflow.")
@click.option("--json", "as_json", is_flag=True)
@dry_run_option
@click.pass_context
def submit(
    ctx: click.Context,
    file: Path,
    wait: bool,
    fail_fast: bool,
    request_id: str | None,
    as_json: bool,
    dry_run: bool,
) -> None:
    """Submit a workflow to the daemon; prints its id."""
    if dry_run:  # rendered here, from the file's own hosts: nothing reaches the daemon
        from ccd import paths
        from ccd.spec import load
        from cli.runner import show_dry_run

        show_dry_run(load(file), paths.default_state_dir(), as_json=as_json)
    client = client_of(ctx)
    try:
        wf_id = client.submit(file, fail_fast=fail_fast, request_id=request_id)
    except ApiError as err:
        if err.status == 422:  # validation: every problem, exit 2 like `run`
            click.echo("\n".join(err.body.get("problems", [str(err)])), err=True)
            sys.exit(2)
        raise
    if not wait:
        if as_json:
            echo_json({"id": wf_id})
        else:
            click.echo(wf_id)
        return
    result = follow(client, wf_id, quiet=as_json)
    if as_json:
        echo_json(result)
    else:
        click.echo(render.summary(result))
    exit_for(result)


def follow(client: Client, wf_id: str, *, quiet: bool = False) -> dict[str, Any]:
    """Print events until the workflow ends; return its final status."""
    for event in client.events(wf_id):
        if not quiet and event.get("progress") is None:
            at = event.get("at", time.time())
            line = render.event_line(wf_id, event["job"], event["state"], event.get("reason"), at)
            click.echo(line)
        if event["job"] is None and event["state"] in TERMINAL_STATES:
            break
    return client.status(wf_id)


@click.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def list_(ctx: click.Context, as_json: bool) -> None:
    """List the daemon's workflows."""
    workflows = client_of(ctx).list_workflows()
    if as_json:
        echo_json(workflows)
        return
    rows = [
        (
            w["id"],
            w["name"],
            w["state"],
            time.strftime("%Y-%m-%d %H:%M", time.localtime(w["created_at"])),
        )
        for w in workflows
    ]
    click.echo(render.table(("ID", "NAME", "STATE", "CREATED"), rows))


@click.command()
@click.argument("workflow_id", required=False)
@click.option("--json", "as_json", is_flag=True)
@click.option("--watch", is_flag=True, help="Redraw until the workflow ends.")
@click.option(
    "--usage",
    is_flag=True,
    help="What each job used (wall, CPU, peak memory) against what it asked for.",
)
@click.pass_context
def status(
    ctx: click.Context, workflow_id: str | None, as_json: bool, watch: bool, usage: bool
) -> None:
    """A workflow's jobs (the newest workflow if no id is given)."""
    client = client_of(ctx)
    if workflow_id is None:
        workflows = client.list_workflows()
        if not workflows:
            click.echo("no workflows")
            return
        workflow_id = workflows[-1]["id"]
    if watch:
        _watch(client, workflow_id)
    result = client.status(workflow_id)
    if as_json:
        echo_json(result)
    elif not watch:
        click.echo(render.summary(result, usage=usage))


def _watch(client: Client, wf_id: str) -> None:
    view = render.LiveView(sys.stdout)
    view.draw(client.status(wf_id))
    for event in client.events(wf_id):
        view.draw(client.status(wf_id))
        if event["job"] is None and event["state"] in TERMINAL_STATES:
            return


@click.command()
@click.argument("workflow_id")
@click.argument("job")
@click.option("-f", "--follow", "follow_", is_flag=True, help="Keep printing as it grows.")
@click.option("--attempt", type=click.IntRange(min=1), help="Attempt number [default: latest].")
@click.pass_context
def logs(
    ctx: click.Context, workflow_id: str, job: str, follow_: bool, attempt: int | None
) -> None:
    """Print a job's log (stdout and stderr)."""
    client = client_of(ctx)
    offset = 0
    out = sys.stdout.buffer
    daemon_back_by: float | None = None  # while following across a daemon restart
    while True:
        try:
            chunk = client.log(workflow_id, job, offset=offset, attempt=attempt)
        except (DaemonNotRunning, ConnectionError):
            now = time.monotonic()
            daemon_back_by = daemon_back_by or now + FOLLOW_RECONNECT_S
            if not follow_ or now > daemon_back_by:
                raise
            time.sleep(LOG_FOLLOW_INTERVAL_S)  # a restart, most likely: the job runs on
            continue
        except ApiError as err:
            if not (follow_ and err.status == 404 and _yet_to_start(client, workflow_id, job)):
                raise
            time.sleep(LOG_FOLLOW_INTERVAL_S)  # following a job that will start: wait for it
            continue
        daemon_back_by = None
        attempt = chunk.attempt  # stick to one attempt while following
        out.write(chunk.data)
        out.flush()
        offset = chunk.offset
        if not follow_ or (chunk.done and not chunk.data):
            return
        if not chunk.data:
            time.sleep(LOG_FOLLOW_INTERVAL_S)


def _yet_to_start(client: Client, workflow_id: str, job: str) -> bool:
    """Whether ``job`` exists and waits to run (so it has no log yet, but will)."""
    states = {j["name"]: j["state"] for j in client.status(workflow_id)["jobs"]}
    return states.get(job) in ("waiting", "ready")


@click.command()
@click.argument("workflow_id")
@click.argument("jobs", nargs=-1)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def cancel(ctx: click.Context, workflow_id: str, jobs: tuple[str, ...], as_json: bool) -> None:
    """Cancel a workflow, or some of its jobs (their descendants are skipped)."""
    result = client_of(ctx).cancel(workflow_id, list(jobs) or None)
    if as_json:
        echo_json(result)
    else:
        click.echo(f"cancelling: {', '.join(result['cancelled']) or 'nothing left to cancel'}")


@click.command()
@click.argument("workflow_id")
@click.argument("jobs", nargs=-1)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def retry(ctx: click.Context, workflow_id: str, jobs: tuple[str, ...], as_json: bool) -> None:
    """Run failed, cancelled or skipped jobs again, with their descendants."""
    result = client_of(ctx).retry(workflow_id, list(jobs) or None)
    if as_json:
        echo_json(result)
    else:
        click.echo(f"retrying: {', '.join(result['retried']) or 'nothing to retry'}")


@click.command()
@click.argument("workflow_id")
@click.pass_context
def delete(ctx: click.Context, workflow_id: str) -> None:
    """Delete a finished workflow and its run directories."""
    client_of(ctx).delete(workflow_id)
    click.echo(f"deleted {workflow_id}")


@click.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def ping(ctx: click.Context, as_json: bool) -> None:
    """Check that the daemon answers."""
    health = client_of(ctx).health()
    if as_json:
        echo_json(health)
    else:
        click.echo(
            f"ccd {health['version']} (pid {health['pid']}) up {health['uptime_s']:.0f}s, "
            f"{health['jobs_running']} jobs running"
        )


@click.command()
@click.option(
    "--rotate-token",
    is_flag=True,
    help="First make a new token: the old one and every browser session stop working now.",
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def web(ctx: click.Context, rotate_token: bool, as_json: bool) -> None:
    """Print the dashboard's URL and a one-time link that logs a browser in."""
    client = client_of(ctx)
    result: dict[str, Any] = client.rotate_token() if rotate_token else {}
    if rotate_token and not as_json:
        click.echo(
            "token rotated: the old one and every browser session stop working now; "
            f"scripts read the new one from {result['token_file']}"
        )
    try:
        result |= client.login_link()
    except ApiError as err:
        if not (rotate_token and err.status == 409):  # 409: no TCP door, nothing to log in to
            raise
    if as_json:
        echo_json(result)
    elif "url" in result:
        click.echo(_web_text(result))


def _web_text(link: dict[str, Any]) -> str:
    port = urlsplit(link["url"]).port
    minutes = link["expires_in_s"] / 60
    return (
        f"dashboard: {link['url']}\n"
        f"log in:    {link['login_url']}\n"
        f"           (the link works once, within {minutes:.0f} minutes; then the browser "
        "stays logged in)\n"
        f"from a laptop: ssh -N -L {port}:localhost:{port} {socket.gethostname()}\n"
        "           then open the links there"
    )


@click.command()
@click.argument("workflow_id")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def add(ctx: click.Context, workflow_id: str, file: Path, as_json: bool) -> None:
    """Add the jobs of FILE (ccd's format: `jobs:`, whose `needs` may name the workflow's
    jobs) to a workflow, running or finished. Safe to repeat."""
    try:
        result = client_of(ctx).add_jobs(workflow_id, file)
    except ApiError as err:
        if err.status == 422:  # validation: every problem, exit 2 like `submit`
            click.echo("\n".join(err.body.get("problems", [str(err)])), err=True)
            sys.exit(2)
        raise
    if as_json:
        echo_json(result)
        return
    click.echo(f"added: {', '.join(result['added']) or 'nothing'}")
    if result["existing"]:
        click.echo(f"already there: {', '.join(result['existing'])}")


@click.command()
@click.argument("workflow_id")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["yaml", "json"]),
    default="yaml",
    help="yaml: a workflow file that re-runs the same DAG; json: with every job's "
    "state, attempts and outputs.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file [default: stdout].",
)
@click.pass_context
def export(ctx: click.Context, workflow_id: str, fmt: str, output: Path | None) -> None:
    """Write a workflow as it stands, with the jobs added and expanded since it started."""
    text = client_of(ctx).export(workflow_id, fmt)
    if output is None:
        click.echo(text, nl=not text.endswith("\n"))
        return
    output.write_text(text, encoding="utf-8")
    click.echo(f"wrote {output}")


COMMANDS = (submit, list_, status, logs, cancel, retry, delete, ping, web, add, export)
