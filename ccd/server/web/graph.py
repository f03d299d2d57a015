"""A workflow's picture on its dashboard page: which boxes to draw, laid out once per workflow
shape, drawn as SVG whose boxes the page recolours by CSS class as events arrive.

Up to `MAX_BOXES` jobs are drawn one box per job. More cannot be drawn usefully (10,000 boxes
are a smear, and a slow page), so their jobs are grouped: by generation (the DAG's layers) and
name stem (``train-0042`` → ``train-#``), which is how matrix-like workflows are written; if
that still gives too many boxes, by generation alone, then by bands of generations. A group's
box shows how many of its jobs are in each state as a stacked bar.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from ccd.models import TERMINAL, JobState
from ccd.spec import dag

MAX_BOXES = 150
BOX_W, BOX_H = 184.0, 50.0
LABEL_CHARS = 24  # a longer name is cut, with an ellipsis; its box's tooltip has it whole
CACHED_SHAPES = 16
# The order of a group's stacked bar, left to right: done, then in flight, then to come.
BAR_ORDER: tuple[JobState, ...] = (
    JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.SKIPPED,
    JobState.RUNNING, JobState.SUBMITTED, JobState.READY, JobState.WAITING,
)  # fmt: skip
_DIGITS = re.compile(r"\d+")


@dataclass(frozen=True, slots=True)
class Box:
    label: str
    members: tuple[str, ...]
    x: float  # top left
    y: float


@dataclass(frozen=True, slots=True)
class Picture:
    """A laid-out picture of one workflow shape, without states (those come at render)."""

    boxes: list[Box]
    box_of: dict[str, int]  # job -> its box's index
    edges_svg: str
    width: float
    height: float
    how: str  # "graphviz" or "layered"
    grouped: bool


def shape_key(names: Sequence[str], edges: Sequence[tuple[str, str]]) -> str:
    digest = hashlib.sha1(usedforsecurity=False)
    for name in names:
        digest.update(name.encode() + b"\0")
    digest.update(b"\1")
    for parent, child in edges:
        digest.update(f"{parent}\0{child}\0".encode())
    return digest.hexdigest()


def stem(name: str) -> str:
    """A name with each run of digits as ``#``: what jobs made from one template share."""
    return _DIGITS.sub("#", name)


def group(names: Sequence[str], edges: Sequence[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """The boxes to draw, as (label, member jobs), at most `MAX_BOXES` of them."""
    if len(names) <= MAX_BOXES:
        return [(name, [name]) for name in names]
    layers = dag.generations(names, edges)
    by_stem: dict[tuple[int, str], list[str]] = {}
    for depth, layer in enumerate(layers):
        for name in layer:
            by_stem.setdefault((depth, stem(name)), []).append(name)
    if len(by_stem) <= MAX_BOXES:
        return [
            (members[0] if len(members) == 1 else key, members)
            for (_, key), members in by_stem.items()
        ]
    band = math.ceil(len(layers) / MAX_BOXES)
    boxes = []
    for start in range(0, len(layers), band):
        end = min(start + band, len(layers))
        label = f"layer {start + 1}" if end == start + 1 else f"layers {start + 1}-{end}"
        boxes.append((label, [name for layer in layers[start:end] for name in layer]))
    return boxes


def draw(
    names: Sequence[str], edges: Sequence[tuple[str, str]], *, use_graphviz: bool = True
) -> Picture:
    """Group and lay out a workflow's jobs (seconds for a big one under graphviz: run it in
    a thread, and once per shape: `PictureCache`)."""
    groups = group(names, edges)
    box_of = {name: i for i, (_, members) in enumerate(groups) for name in members}
    box_edges = sorted({(box_of[p], box_of[c]) for p, c in edges if box_of[p] != box_of[c]})
    ids = [str(i) for i in range(len(groups))]
    laid = dag.layout(
        ids, [(ids[p], ids[c]) for p, c in box_edges], (BOX_W, BOX_H), use_graphviz=use_graphviz
    )
    boxes = [
        Box(label, tuple(members), laid.centres[ids[i]][0] - BOX_W / 2,
            laid.centres[ids[i]][1] - BOX_H / 2)
        for i, (label, members) in enumerate(groups)
    ]  # fmt: skip
    paths = "".join(f'<path d="{_path(points)}"/>' for _, _, points in laid.edges)
    return Picture(
        boxes, box_of, paths, laid.width, laid.height, laid.how, len(groups) < len(names)
    )


def _path(points: Sequence[dag.Point]) -> str:
    (x0, y0), rest = points[0], points[1:]
    curves = " ".join(
        "C" + " ".join(f"{x:.1f},{y:.1f}" for x, y in rest[i : i + 3])
        for i in range(0, len(rest) - 2, 3)
    )
    return f"M{x0:.1f},{y0:.1f} {curves}"


class PictureCache:
    """Pictures by workflow shape: a page view lays out only a shape not seen lately, and two
    views of one new shape at once share the one layout."""

    def __init__(self, use_graphviz: Callable[[], bool] = lambda: True) -> None:
        self._pictures: OrderedDict[str, asyncio.Future[Picture]] = OrderedDict()
        self._use_graphviz = use_graphviz

    async def get(self, names: Sequence[str], edges: Sequence[tuple[str, str]]) -> Picture:
        key = shape_key(names, edges)
        future = self._pictures.get(key)
        if future is None:
            future = asyncio.ensure_future(
                asyncio.to_thread(draw, names, edges, use_graphviz=self._use_graphviz())
            )
            self._pictures[key] = future
            while len(self._pictures) > CACHED_SHAPES:
                self._pictures.popitem(last=False)
        self._pictures.move_to_end(key)
        try:
            return await asyncio.shield(future)
        except Exception:
            self._pictures.pop(key, None)  # let the next view try again
            raise


# -- SVG ---------------------------------------------------------------------------------------


def aggregate(counts: Mapping[str, int]) -> str:
    """The one state a group's box is coloured by: what most needs a look first."""
    for state in (JobState.RUNNING, JobState.SUBMITTED, JobState.FAILED):
        if counts.get(state):
            return state.value
    if any(counts.get(s) for s in (JobState.READY, JobState.WAITING)):
        return JobState.WAITING.value
    total = sum(counts.values())
    return JobState.SUCCEEDED.value if counts.get(JobState.SUCCEEDED) == total else "cancelled"


def box_counts(picture: Picture, states: Mapping[str, str]) -> list[dict[str, int]]:
    """How many of each box's jobs are in each state (jobs not in ``states``: waiting)."""
    counts: list[dict[str, int]] = [{} for _ in picture.boxes]
    for i, box in enumerate(picture.boxes):
        for name in box.members:
            state = states.get(name, JobState.WAITING.value)
            counts[i][state] = counts[i].get(state, 0) + 1
    return counts


def render(
    picture: Picture,
    states: Mapping[str, str],
    progress: Mapping[str, int],
    job_href: Callable[[str], str],
    group_href: Callable[[int], str],
    counts: list[dict[str, int]] | None = None,
) -> Markup:
    """The picture as inline SVG, coloured by ``states`` (job -> state); a grouped one by
    ``counts`` (`box_counts`), if given."""
    parts = [
        f'<svg class="dag" xmlns="http://www.w3.org/2000/svg" role="img"'
        f' width="{picture.width:.0f}" height="{picture.height:.0f}"'
        f' viewBox="0 0 {picture.width:.1f} {picture.height:.1f}"'
        f' aria-label="Workflow graph ({len(picture.boxes)} boxes)">'
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7"'
        ' markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"/>'
        "</marker></defs>"
        f'<g class="edges">{picture.edges_svg}</g><g class="boxes">'
    ]
    if picture.grouped:
        counts = counts if counts is not None else box_counts(picture, states)
        for i, (box, box_states) in enumerate(zip(picture.boxes, counts, strict=True)):
            parts.append(_group_box(i, box, box_states, group_href(i)))
    else:
        for i, box in enumerate(picture.boxes):
            name = box.members[0]
            state = states.get(name, JobState.WAITING.value)
            parts.append(_job_box(i, box, state, progress.get(name), job_href(name)))
    parts.append("</g></svg>")
    return Markup("".join(parts))


def _label(text: str) -> str:
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"


def _job_box(i: int, box: Box, state: str, percent: int | None, href: str) -> str:
    name = box.members[0]
    shown = percent if percent is not None and state not in TERMINAL else None
    status = state if shown is None else f"{state} · {shown}%"
    bar = (shown or 0) / 100 * (BOX_W - 2)
    return (
        f'<a class="box s-{state}" id="b{i}" href="{escape(href)}" data-job="{escape(name)}">'
        f"<title>{escape(name)}</title>"
        f'<rect class="frame" x="{box.x:.1f}" y="{box.y:.1f}" width="{BOX_W:.0f}"'
        f' height="{BOX_H:.0f}" rx="7"/>'
        f'<text class="name" x="{box.x + 10:.1f}" y="{box.y + 20:.1f}">'
        f"{escape(_label(name))}</text>"
        f'<text class="status" x="{box.x + 10:.1f}" y="{box.y + 37:.1f}">{status}</text>'
        f'<rect class="bar" x="{box.x + 1:.1f}" y="{box.y + BOX_H - 5:.1f}" width="{bar:.1f}"'
        ' height="4"/></a>'
    )


def _group_box(i: int, box: Box, counts: Mapping[str, int], href: str) -> str:
    total = len(box.members)
    done = sum(n for s, n in counts.items() if s in TERMINAL)
    segments, x = [], box.x + 1
    for state in BAR_ORDER:
        width = counts.get(state, 0) / total * (BOX_W - 2)
        segments.append(
            f'<rect class="seg s-{state.value}" x="{x:.1f}" y="{box.y + BOX_H - 9:.1f}"'
            f' width="{width:.1f}" height="8"/>'
        )
        x += width
    return (
        f'<a class="box group s-{aggregate(counts)}" id="b{i}" href="{escape(href)}"'
        f' data-total="{total}">'
        f"<title>{escape(box.label)}: {total:,} jobs</title>"
        f'<rect class="frame" x="{box.x:.1f}" y="{box.y:.1f}" width="{BOX_W:.0f}"'
        f' height="{BOX_H:.0f}" rx="7"/>'
        f'<text class="name" x="{box.x + 10:.1f}" y="{box.y + 19:.1f}">'
        f"{escape(_label(box.label))}</text>"
        f'<text class="status" x="{box.x + 10:.1f}" y="{box.y + 35:.1f}">'
        f"{done:,} of {total:,} done</text>"
        f'<g class="segs">{"".join(segments)}</g></a>'
    )
