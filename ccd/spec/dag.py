"""The workflow graph: cycle check, the networkx view, and graphviz pictures coloured by state.

The only module that imports networkx, and it does so lazily: `ccd.spec.checks` needs
`find_cycle` on every load, and importing networkx costs ~0.4 s that a `ccctl` command
should not pay. networkx stays a dependency for `build`: the graph that exports and the web
view's layered layout of a workflow start from.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ccd.errors import CcdError
from ccd.models import JobState
from ccd.spec.model import WorkflowSpec

# cloudmesh-cc's status colours, so its users recognise the picture.
STATE_COLORS: Mapping[JobState, str] = {
    JobState.WAITING: "white",
    JobState.READY: "white",
    JobState.SUBMITTED: "#FFF2CC",  # queued in a batch system: not cloudmesh's, ours
    JobState.RUNNING: "#CCE5FF",
    JobState.SUCCEEDED: "#CCFFCC",
    JobState.FAILED: "#FFCCCC",
    JobState.CANCELLED: "#E0E0E0",
    JobState.SKIPPED: "#E0E0E0",
}
_RENDER_FORMATS = ("svg", "png", "pdf")


def build(spec: WorkflowSpec) -> Any:
    """A `networkx.DiGraph` of the workflow: one node per job (attribute ``job``: its
    `JobSpec`), edges parent -> child, graph attribute ``name``."""
    import networkx as nx  # lazy: see the module docstring

    graph = nx.DiGraph(name=spec.name)
    graph.add_nodes_from((name, {"job": job}) for name, job in spec.jobs.items())
    graph.add_edges_from(spec.edges())
    return graph


def find_cycle(nodes: Iterable[str], edges: Iterable[tuple[str, str]]) -> list[str] | None:
    """One cycle as a path of node names with the first repeated at the end
    (``["a", "b", "a"]``: a -> b -> a), or None if the graph is acyclic.

    Kahn's algorithm peels off every node that is not on or behind a cycle in O(V + E);
    what is left has a parent inside the rest, so walking parents from any of it must
    come back to a node already seen. Edge ends missing from ``nodes`` are added."""
    nodes, edges = list(nodes), list(edges)
    if _in_order(nodes, edges):
        return None
    children: dict[str, list[str]] = {node: [] for node in nodes}
    indegree = dict.fromkeys(children, 0)
    for parent, child in edges:
        children.setdefault(parent, []).append(child)
        children.setdefault(child, [])
        indegree[child] = indegree.get(child, 0) + 1
        indegree.setdefault(parent, 0)
    ready = [node for node, count in indegree.items() if count == 0]
    while ready:
        for child in children[ready.pop()]:
            indegree[child] -= 1
            if indegree[child] == 0:
                ready.append(child)
    left = {node for node, count in indegree.items() if count > 0}
    return _walk_back(left, children) if left else None


def _in_order(nodes: list[str], edges: list[tuple[str, str]]) -> bool:
    """True when every edge points forward in ``nodes``: that order is then topological, so
    there is no cycle. Workflow files are mostly written parents first; this is 3x cheaper."""
    position = {node: i for i, node in enumerate(nodes)}
    try:
        return all(position[parent] < position[child] for parent, child in edges)
    except KeyError:  # an edge end outside nodes: leave it to the full check
        return False


def _walk_back(left: set[str], children: Mapping[str, list[str]]) -> list[str]:
    parent_of: dict[str, str] = {}
    for parent, kids in children.items():  # in given order, not set order: same file, same cycle
        if parent in left:
            for child in kids:
                if child in left:
                    parent_of.setdefault(child, parent)
    path: list[str] = []
    seen: dict[str, int] = {}
    node = next(node for node in children if node in left)
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = parent_of[node]
    cycle = path[seen[node] :][::-1]  # we walked child -> parent; report parent -> child
    # start at the node given first, so a file always reports its cycle the same way
    on_cycle = set(cycle)
    first = cycle.index(next(node for node in children if node in on_cycle))
    cycle = cycle[first:] + cycle[:first]
    return [*cycle, cycle[0]]


def _quote(text: str) -> str:
    """A DOT double-quoted string; names are validated, but a label is still text."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def to_dot(
    spec: WorkflowSpec,
    states: Mapping[str, JobState] | None = None,
    progress: Mapping[str, int] | None = None,
) -> str:
    """Graphviz DOT text of the workflow; each job filled with the colour of its state
    (white when unknown) and labelled with its name, plus its percentage while running."""
    states = states or {}
    progress = progress or {}
    lines = [
        f"digraph {_quote(spec.name)} {{",
        '  node [shape=box, style="filled,rounded", fontname="Helvetica"];',
    ]
    for name in spec.jobs:
        state = states.get(name, JobState.WAITING)
        label = name
        if state == JobState.RUNNING and name in progress:
            label += f"\n{progress[name]}%"
        color = STATE_COLORS.get(state, "white")
        lines.append(f"  {_quote(name)} [label={_quote(label)}, fillcolor={_quote(color)}];")
    lines.extend(f"  {_quote(parent)} -> {_quote(child)};" for parent, child in spec.edges())
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(dot_text: str, out: Path) -> None:
    """Write ``out`` by its suffix: ``.dot`` as text; ``.svg``/``.png``/``.pdf`` through
    graphviz's ``dot`` program."""
    fmt = out.suffix.lower().lstrip(".")
    if fmt == "dot":
        out.write_text(dot_text, encoding="utf-8")
        return
    if fmt not in _RENDER_FORMATS:
        raise CcdError(f"cannot render a graph to '{out.name}': use .dot, .svg, .png or .pdf")
    try:
        subprocess.run(
            ["dot", "-T" + fmt, "-o", str(out)],
            input=dot_text.encode(),
            capture_output=True,
            check=True,
        )
    except FileNotFoundError as err:
        raise CcdError(
            "graphviz 'dot' not found: install graphviz (apt-get install graphviz)"
        ) from err
    except subprocess.CalledProcessError as err:
        detail = err.stderr.decode(errors="replace").strip().splitlines()
        raise CcdError(f"graphviz 'dot' failed on {out}: {detail[-1] if detail else err}") from err
