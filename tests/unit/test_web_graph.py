"""The dashboard's picture of a workflow: which boxes, where, and the SVG they make."""

from __future__ import annotations

import asyncio
import itertools
import re
import shutil
import xml.etree.ElementTree as ET
from importlib import resources
from pathlib import Path

import pytest

from ccd.models import JobState
from ccd.server.web import graph
from ccd.spec import dag

DIAMOND = (["a", "b", "c", "d"], [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")])


def fan(count: int) -> tuple[list[str], list[tuple[str, str]]]:
    """prep -> work-0000 .. work-NNNN -> merge"""
    work = [f"work-{i:04d}" for i in range(count)]
    edges = [("prep", w) for w in work] + [(w, "merge") for w in work]
    return ["prep", *work, "merge"], edges


def test_a_small_workflow_gets_a_box_per_job() -> None:
    assert graph.group(*DIAMOND) == [(n, [n]) for n in DIAMOND[0]]


def test_jobs_made_from_one_template_are_one_box_per_layer() -> None:
    names, edges = fan(5000)
    boxes = graph.group(names, edges)
    assert [label for label, _ in boxes] == ["prep", "work-#", "merge"]
    assert boxes[1][1] == names[1:-1]


def test_a_chain_too_long_to_draw_is_cut_into_bands_of_layers() -> None:
    names = [f"step{i}" for i in range(1000)]  # one stem, 1000 layers: 1000 groups
    boxes = graph.group(names, list(itertools.pairwise(names)))
    assert len(boxes) <= graph.MAX_BOXES
    assert [n for _, members in boxes for n in members] == names  # each job once, in order
    assert boxes[0][0] == "layers 1-7" and boxes[-1][0].endswith("-1000")


def test_stems_replace_each_run_of_digits() -> None:
    assert graph.stem("train-0042-fold3") == "train-#-fold#"
    assert graph.stem("report") == "report"


@pytest.mark.parametrize("use_graphviz", [False, True], ids=["layered", "graphviz"])
def test_parents_are_drawn_left_of_their_children_and_boxes_never_overlap(
    use_graphviz: bool,
) -> None:
    if use_graphviz and shutil.which("dot") is None:
        pytest.skip("graphviz is not installed")
    names, edges = fan(30)
    laid = dag.layout(names, edges, (100, 40), use_graphviz=use_graphviz)
    assert laid.how == ("graphviz" if use_graphviz else "layered")
    assert set(laid.centres) == set(names) and len(laid.edges) == len(edges)
    for parent, child in edges:
        assert laid.centres[parent][0] + 100 <= laid.centres[child][0]
    spots = sorted(laid.centres.values())
    for (x1, y1), (x2, y2) in itertools.pairwise(spots):
        assert abs(x1 - x2) >= 100 or abs(y1 - y2) >= 40, "two boxes overlap"
    for x, y in laid.centres.values():
        assert x - 50 >= -1 and x + 50 <= laid.width + 1 and -1 <= y - 20 <= laid.height


def test_without_graphviz_the_layered_layout_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dag.shutil, "which", lambda _: None)
    assert dag.layout(*DIAMOND, (100, 40)).how == "layered"


def test_the_layered_layout_orders_a_layer_by_its_parents() -> None:
    # b2's parent is drawn below b1's: so is b2, and the two edges do not cross.
    names = ["a1", "a2", "b2", "b1"]
    laid = dag.layered_layout(names, [("a1", "b1"), ("a2", "b2")], (100, 40))
    assert laid.centres["b1"][1] < laid.centres["b2"][1]


def svg_of(picture: graph.Picture, states: dict[str, str], progress: dict[str, int]) -> ET.Element:
    markup = graph.render(picture, states, progress, lambda n: f"j/{n}", lambda i: f"?box={i}")
    return ET.fromstring(str(markup))


NS = {"svg": "http://www.w3.org/2000/svg"}


def test_each_job_box_shows_its_state_and_progress() -> None:
    picture = graph.draw(*DIAMOND, use_graphviz=False)
    svg = svg_of(picture, {"a": "succeeded", "b": "running"}, {"b": 40})
    boxes = {a.get("data-job"): a for a in svg.iterfind(".//svg:a", NS)}
    assert boxes["a"].get("class") == "box s-succeeded"
    assert boxes["b"].get("class") == "box s-running"
    assert boxes["c"].get("class") == "box s-waiting"  # no state yet: waiting
    status = boxes["b"].find("svg:text[@class='status']", NS)
    assert status is not None and status.text == "running · 40%"
    bar = boxes["b"].find("svg:rect[@class='bar']", NS)
    assert bar is not None and float(bar.get("width", 0)) == pytest.approx(0.4 * (graph.BOX_W - 2))
    assert boxes["b"].get("href") == "j/b"


def test_a_group_box_shows_its_jobs_by_state_in_a_stacked_bar() -> None:
    names, edges = fan(400)
    picture = graph.draw(names, edges, use_graphviz=False)
    states = {f"work-{i:04d}": "succeeded" for i in range(100)} | {"work-0100": "running"}
    svg = svg_of(picture, states, {})
    work = next(a for a in svg.iterfind(".//svg:a", NS) if "work-#" in "".join(a.itertext()))
    assert work.get("class") == "box group s-running"
    widths = {
        seg.get("class"): float(seg.get("width", 0))
        for seg in work.iterfind(".//svg:rect[@class]", NS)
        if "seg" in (seg.get("class") or "")
    }
    inner = graph.BOX_W - 2
    assert widths["seg s-succeeded"] == pytest.approx(inner * 100 / 400, abs=0.1)
    assert widths["seg s-running"] == pytest.approx(inner / 400, abs=0.1)
    assert widths["seg s-waiting"] == pytest.approx(inner * 299 / 400, abs=0.1)
    assert graph.box_counts(picture, states)[1] == {"succeeded": 100, "running": 1, "waiting": 299}


@pytest.mark.parametrize(
    ("counts", "shown"),
    [
        ({"succeeded": 3}, "succeeded"),
        ({"succeeded": 2, "failed": 1}, "failed"),
        ({"failed": 1, "running": 1}, "running"),
        ({"succeeded": 1, "waiting": 1}, "waiting"),
        ({"succeeded": 1, "skipped": 1}, "cancelled"),
    ],
)
def test_a_group_is_coloured_by_what_most_needs_a_look(counts: dict[str, int], shown: str) -> None:
    assert graph.aggregate(counts) == shown


async def test_a_shape_is_laid_out_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = graph.draw

    def counting(*args: object, **kwargs: object) -> graph.Picture:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(graph, "draw", counting)
    cache = graph.PictureCache(lambda: False)
    first, second = await asyncio.gather(cache.get(*DIAMOND), cache.get(*DIAMOND))
    assert first is second and len(calls) == 1
    await cache.get(["a", "b"], [("a", "b")])
    assert len(calls) == 2


def test_the_pages_use_cloudmesh_colours() -> None:
    css = (resources.files("ccd.server.web") / "static" / "dashboard.css").read_text()
    for state, colour in dag.STATE_COLORS.items():
        if state in (JobState.READY, JobState.SKIPPED):
            continue  # drawn as waiting and cancelled
        declared = re.search(rf"--{state.value}: (#[0-9a-f]+);", css)
        assert declared, state
        assert declared.group(1) == {"white": "#ffffff"}.get(colour, colour.lower())


def test_no_page_asset_names_another_host() -> None:
    web = Path(str(resources.files("ccd.server.web")))
    for path in [*web.glob("templates/*.html"), *web.glob("static/*")]:
        text = path.read_text().replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text), path.name
