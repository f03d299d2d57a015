"""ccd.spec.dag: cycle finding, the networkx view, DOT text and rendering."""

from __future__ import annotations

import itertools
import shutil
import subprocess
from pathlib import Path
from types import MappingProxyType

import pytest

from ccd.errors import CcdError
from ccd.models import JobState
from ccd.spec import LOCAL_HOST, HostSpec, JobSpec, WorkflowSpec, dag

needs_graphviz = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz not installed")


def make_spec(edges: dict[str, tuple[str, ...]], name: str = "wf") -> WorkflowSpec:
    jobs = {
        job: JobSpec(name=job, kind="shell", run="true", needs=needs)
        for job, needs in edges.items()
    }
    return WorkflowSpec(
        name=name,
        source=Path("/w/wf.yaml"),
        base_dir=Path("/w"),
        jobs=MappingProxyType(jobs),
        hosts=MappingProxyType({LOCAL_HOST: HostSpec(LOCAL_HOST, "local")}),
    )


DIAMOND = make_spec(
    {"fetch": (), "left": ("fetch",), "right": ("fetch",), "report": ("left", "right")}
)


def assert_is_cycle(cycle: list[str], edges: list[tuple[str, str]]) -> None:
    assert cycle[0] == cycle[-1]
    assert len(set(cycle[:-1])) == len(cycle) - 1  # a simple cycle
    assert set(itertools.pairwise(cycle)) <= set(edges)


# --- find_cycle ------------------------------------------------------------------------------


def test_no_cycle_in_a_dag() -> None:
    assert dag.find_cycle(DIAMOND.jobs, DIAMOND.edges()) is None


def test_no_cycle_without_edges() -> None:
    assert dag.find_cycle(["a", "b"], []) is None
    assert dag.find_cycle([], []) is None


def test_triangle_starts_at_the_first_node_given() -> None:
    edges = [("b", "c"), ("c", "a"), ("a", "b")]
    assert dag.find_cycle(["a", "b", "c"], edges) == ["a", "b", "c", "a"]
    assert dag.find_cycle(["c", "b", "a"], edges) == ["c", "a", "b", "c"]


def test_self_loop() -> None:
    assert dag.find_cycle(["a", "b"], [("a", "b"), ("b", "b")]) == ["b", "b"]


def test_cycle_behind_an_acyclic_prefix_and_with_a_tail() -> None:
    # start -> a -> b -> c -> d -> b, and d -> end: only b, c, d are on the cycle
    edges = [("start", "a"), ("a", "b"), ("b", "c"), ("c", "d"), ("d", "b"), ("d", "end")]
    nodes = ["start", "a", "b", "c", "d", "end"]
    assert dag.find_cycle(nodes, edges) == ["b", "c", "d", "b"]


def test_edge_ends_missing_from_nodes_are_included() -> None:
    assert dag.find_cycle([], [("x", "y"), ("y", "x")]) == ["x", "y", "x"]


def test_two_cycles_reports_one_real_cycle() -> None:
    edges = [("a", "b"), ("b", "a"), ("c", "d"), ("d", "e"), ("e", "c"), ("b", "c")]
    cycle = dag.find_cycle("abcde", edges)
    assert cycle is not None
    assert_is_cycle(cycle, edges)


def test_long_chain_and_long_cycle_need_no_recursion() -> None:
    n = 200_000
    names = [f"j{i}" for i in range(n)]
    chain = list(itertools.pairwise(names))
    assert dag.find_cycle(names, chain) is None
    cycle = dag.find_cycle(names, [*chain, (names[-1], names[0])])
    assert cycle is not None
    assert len(cycle) == n + 1
    assert cycle[0] == "j0"


# --- build -----------------------------------------------------------------------------------


def test_build_gives_a_networkx_digraph() -> None:
    import networkx as nx

    graph = dag.build(DIAMOND)
    assert isinstance(graph, nx.DiGraph)
    assert list(graph.nodes) == ["fetch", "left", "right", "report"]
    assert set(graph.edges) == {
        ("fetch", "left"),
        ("fetch", "right"),
        ("left", "report"),
        ("right", "report"),
    }
    assert graph.nodes["report"]["job"] is DIAMOND.jobs["report"]
    assert graph.graph["name"] == "wf"
    assert next(iter(nx.topological_sort(graph))) == "fetch"


# --- to_dot ----------------------------------------------------------------------------------


def node_line(dot: str, name: str) -> str:
    return next(line for line in dot.splitlines() if line.strip().startswith(f'"{name}" ['))


def test_dot_without_states_is_all_white() -> None:
    dot = dag.to_dot(DIAMOND)
    assert dot.startswith('digraph "wf" {')
    assert dot.rstrip().endswith("}")
    for name in DIAMOND.jobs:
        assert f'label="{name}", fillcolor="white"' in node_line(dot, name)
    assert '"fetch" -> "left";' in dot
    assert '"right" -> "report";' in dot
    assert dot.count("->") == 4


@pytest.mark.parametrize(
    ("state", "color"),
    [
        (JobState.WAITING, "white"),
        (JobState.READY, "white"),
        (JobState.RUNNING, "#CCE5FF"),
        (JobState.SUCCEEDED, "#CCFFCC"),
        (JobState.FAILED, "#FFCCCC"),
        (JobState.CANCELLED, "#E0E0E0"),
        (JobState.SKIPPED, "#E0E0E0"),
    ],
)
def test_dot_colours_by_state(state: JobState, color: str) -> None:
    dot = dag.to_dot(DIAMOND, {"left": state})
    assert f'fillcolor="{color}"' in node_line(dot, "left")
    assert 'fillcolor="white"' in node_line(dot, "right")


def test_dot_shows_progress_only_while_running() -> None:
    states = {"fetch": JobState.SUCCEEDED, "left": JobState.RUNNING, "right": JobState.RUNNING}
    dot = dag.to_dot(DIAMOND, states, {"fetch": 100, "left": 40})
    assert 'label="left\\n40%"' in node_line(dot, "left")
    assert 'label="right"' in node_line(dot, "right")  # running, progress unknown
    assert 'label="fetch"' in node_line(dot, "fetch")  # progress, but not running


def test_dot_quotes_and_escapes_names() -> None:
    spec = make_spec({'say "hi"': (), "back\\slash": ('say "hi"',)}, name='my "wf"')
    dot = dag.to_dot(spec)
    assert dot.startswith('digraph "my \\"wf\\"" {')
    assert '"say \\"hi\\"" -> "back\\\\slash";' in dot


@needs_graphviz
def test_dot_text_is_valid_graphviz() -> None:
    spec = make_spec({'odd "name"': (), "x.y-z": ('odd "name"',)})
    result = subprocess.run(
        ["dot", "-Tplain"],
        input=dag.to_dot(spec, {"x.y-z": JobState.RUNNING}, {"x.y-z": 5}),
        capture_output=True,
        text=True,
        check=True,
    )
    assert "x.y-z" in result.stdout


# --- render ----------------------------------------------------------------------------------


def test_render_dot_writes_the_text(tmp_path: Path) -> None:
    text = dag.to_dot(DIAMOND)
    dag.render(text, tmp_path / "g.dot")
    assert (tmp_path / "g.dot").read_text() == text


@needs_graphviz
def test_render_svg(tmp_path: Path) -> None:
    out = tmp_path / "g.svg"
    dag.render(dag.to_dot(DIAMOND, {"fetch": JobState.SUCCEEDED}), out)
    svg = out.read_text()
    assert "<svg" in svg
    assert "report" in svg
    assert "#ccffcc" in svg.lower()


@needs_graphviz
def test_render_png(tmp_path: Path) -> None:
    out = tmp_path / "g.png"
    dag.render(dag.to_dot(DIAMOND), out)
    assert out.read_bytes().startswith(b"\x89PNG")


def test_render_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(CcdError, match=r"'g\.gif'"):
        dag.render("digraph {}", tmp_path / "g.gif")


def test_render_without_graphviz(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no dot here
    with pytest.raises(CcdError, match="graphviz 'dot' not found: install graphviz"):
        dag.render("digraph {}", tmp_path / "g.svg")


@needs_graphviz
def test_render_reports_dot_failures(tmp_path: Path) -> None:
    with pytest.raises(CcdError, match="graphviz 'dot' failed"):
        dag.render("this is not dot", tmp_path / "g.svg")
