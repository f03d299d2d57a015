"""Run a Jupyter notebook as a job: ``python3 -m ccd.notebook NOTEBOOK.ipynb [OUT.ipynb]``.

Cells run in a fresh kernel with the current directory as their working directory. Their
printed output is copied to our stdout/stderr as it arrives, so progress markers printed by a
long cell reach the job's log while it runs, not after. The executed notebook is written to
OUT (default ``<stem>.out.ipynb`` in the current directory), also when a cell fails; a failing
cell makes the exit status 1.

Needs the optional ``ccd[notebook]`` extra (nbclient, nbformat, ipykernel).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

# Tracebacks come coloured for a terminal; a log file wants plain text.
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


class _EchoingClient(NotebookClient):
    """A NotebookClient that also echoes each stream message (print output) as it comes."""

    def output(
        self,
        outs: list[Any],
        msg: dict[str, Any],
        display_id: str | None,
        cell_index: int,
    ) -> Any:
        if msg["msg_type"] == "stream":
            content = msg["content"]
            stream = sys.stderr if content.get("name") == "stderr" else sys.stdout
            stream.write(content.get("text", ""))
            stream.flush()
        return super().output(outs, msg, display_id, cell_index)


def run(notebook: Path, out: Path, cwd: Path) -> None:
    """Execute ``notebook`` in ``cwd`` and write the result to ``out``; raises
    CellExecutionError (after writing ``out``) if a cell fails."""
    nb = nbformat.read(notebook, as_version=4)  # type: ignore[no-untyped-call]
    kernel_name = nb.metadata.get("kernelspec", {}).get("name") or "python3"
    client = _EchoingClient(
        nb, timeout=None, kernel_name=kernel_name, resources={"metadata": {"path": str(cwd)}}
    )
    try:
        client.execute()
    finally:
        nbformat.write(nb, out)  # type: ignore[no-untyped-call]


def default_out(notebook: Path, cwd: Path) -> Path:
    return cwd / f"{notebook.stem}.out.ipynb"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2):
        print("usage: python3 -m ccd.notebook NOTEBOOK.ipynb [OUT.ipynb]", file=sys.stderr)
        return 2
    cwd = Path.cwd()
    notebook = Path(args[0])
    out = Path(args[1]) if len(args) == 2 else default_out(notebook, cwd)
    try:
        run(notebook, out, cwd)
    except CellExecutionError as err:
        plain = _ANSI_ESCAPE.sub("", str(err))
        print(f"ccd.notebook: a cell failed in {notebook}:\n{plain}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
