"""The workflow graph: cycle check, the networkx view, graphviz pictures coloured by state,
and box layouts for the web view (graphviz's, or our own layered one where it is missing).

The only module that imports networkx, and it does so lazily: `ccd.spec.checks` needs
`find_cycle` on every load, and importing networkx costs ~0.4 s that a `ccctl` command
should not pay. networkx stays a dependency for `build`: the graph that exports and the web
view's layered layout of a workflow start from.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
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


# -- pictures laid out for the web view ------------------------------------------------------

Point = tuple[float, float]
PX_PER_INCH = 72.0  # graphviz works in inches, at 72 points to the inch
GRAPHVIZ_TIMEOUT_S = 20.0


@dataclass(frozen=True, slots=True)
class Layout:
    """Where each box of a picture goes (its centre, in px, y down) and the path of each edge
    (cubic Bezier: a start point, then three points per segment)."""

    width: float
    height: float
    centres: Mapping[str, Point]
    edges: list[tuple[str, str, list[Point]]]
    how: str  # "graphviz" or "layered": which layout made it


def generations(nodes: Iterable[str], edges: Iterable[tuple[str, str]]) -> list[list[str]]:
    """The DAG's layers: roots first, each node one layer after its deepest parent; within a
    layer, nodes in the order given."""
    import networkx as nx  # lazy: see the module docstring

    graph = nx.DiGraph()
    nodes = list(nodes)
    graph.add_nodes_from(nodes)
    graph.add_edges_from(edges)
    order = {node: i for i, node in enumerate(nodes)}
    return [sorted(layer, key=order.__getitem__) for layer in nx.topological_generations(graph)]


def layout(
    nodes: Sequence[str],
    edges: Sequence[tuple[str, str]],
    box: Point,
    *,
    use_graphviz: bool = True,
) -> Layout:
    """Lay out boxes of size ``box`` (w, h) left to right: by graphviz's ``dot`` when it is
    installed (and ``use_graphviz``), else by `layered_layout`."""
    if use_graphviz and shutil.which("dot") is not None:
        laid = graphviz_layout(nodes, edges, box)
        if laid is not None:
            return laid
    return layered_layout(nodes, edges, box)


def layered_layout(
    nodes: Sequence[str], edges: Sequence[tuple[str, str]], box: Point, gap: Point = (56, 14)
) -> Layout:
    """Our own layout, for machines without graphviz: a column per generation, each column's
    boxes ordered by the mean row of their parents (one sweep of the barycenter heuristic,
    which removes most crossings of the usual fan-out/fan-in shapes), columns centred."""
    width, height = box
    step_x, step_y = width + gap[0], height + gap[1]
    parents: dict[str, list[str]] = {node: [] for node in nodes}
    for parent, child in edges:
        parents[child].append(parent)
    row: dict[str, float] = {}
    columns = generations(nodes, edges)
    for layer in columns:
        # sorted() is stable: unparented and tied boxes keep the file's order
        ranked = sorted(layer, key=lambda n: _mean(row[p] for p in parents[n]))
        for i, node in enumerate(ranked):
            row[node] = i
        layer[:] = ranked
    tallest = max((len(layer) for layer in columns), default=0)
    centres: dict[str, Point] = {}
    for x, layer in enumerate(columns):
        top = (tallest - len(layer)) * step_y / 2
        for y, node in enumerate(layer):
            centres[node] = (gap[0] / 2 + x * step_x + width / 2, top + y * step_y + step_y / 2)
    paths = [(p, c, _curve(centres[p], centres[c], width)) for p, c in edges]
    return Layout(len(columns) * step_x, tallest * step_y, centres, paths, "layered")


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else -1.0


def _curve(start: Point, end: Point, box_width: float) -> list[Point]:
    """From the right side of one box to the left side of another, leaving and arriving
    horizontally."""
    x0, y0 = start[0] + box_width / 2, start[1]
    x1, y1 = end[0] - box_width / 2, end[1]
    bend = max(20.0, (x1 - x0) / 2)
    return [(x0, y0), (x0 + bend, y0), (x1 - bend, y1), (x1, y1)]


def graphviz_layout(
    nodes: Sequence[str], edges: Sequence[tuple[str, str]], box: Point
) -> Layout | None:
    """graphviz's ``dot`` layout (``-Tplain``), or None if ``dot`` failed or took too long.
    Nodes go to dot as n0, n1, ...: no name needs quoting, whatever it holds."""
    ids = {node: f"n{i}" for i, node in enumerate(nodes)}
    lines = [
        "digraph g {",
        "  rankdir=LR; nodesep=0.2; ranksep=0.6;",
        f"  node [shape=box, fixedsize=true, width={box[0] / PX_PER_INCH:.3f},"
        f" height={box[1] / PX_PER_INCH:.3f}];",
        *(f"  {ids[node]};" for node in nodes),
        *(f"  {ids[p]} -> {ids[c]};" for p, c in edges),
        "}",
    ]
    try:
        done = subprocess.run(
            ["dot", "-Tplain"], input="\n".join(lines).encode(), capture_output=True,
            check=True, timeout=GRAPHVIZ_TIMEOUT_S,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return _parse_plain(done.stdout.decode(), {v: k for k, v in ids.items()}, len(edges))


def _parse_plain(text: str, names: Mapping[str, str], edge_count: int) -> Layout | None:
    """Read ``dot -Tplain``: ``graph scale w h``, ``node id x y ...``, ``edge a b n x1 y1
    ...``, in inches with y up."""
    height_in = 0.0
    width_in = 0.0
    centres: dict[str, Point] = {}
    paths: list[tuple[str, str, list[Point]]] = []
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] == "graph":
            width_in, height_in = float(words[2]), float(words[3])
        elif words[0] == "node":
            x, y = float(words[2]), float(words[3])
            centres[names[words[1]]] = (x * PX_PER_INCH, (height_in - y) * PX_PER_INCH)
        elif words[0] == "edge":
            count = int(words[3])
            coords = [float(w) for w in words[4 : 4 + 2 * count]]
            points = [
                (coords[i] * PX_PER_INCH, (height_in - coords[i + 1]) * PX_PER_INCH)
                for i in range(0, len(coords), 2)
            ]
            paths.append((names[words[1]], names[words[2]], points))
    if len(centres) != len(names) or len(paths) != edge_count:
        return None
    return Layout(width_in * PX_PER_INCH, height_in * PX_PER_INCH, centres, paths, "graphviz")
