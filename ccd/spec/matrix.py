"""`matrix:` sweeps: the combinations a matrix job expands into, and their job names.

A matrix maps keys to lists of values (``{lr: [0.1, 0.01], seed: [1, 2, 3]}``: 6
combinations, in the order of `itertools.product`), or to one reference to a parent's output
holding a JSON list (decided when that parent has succeeded). ``exclude`` drops the
combinations that match an entry; ``include`` adds keys to the matching combinations, or
adds a combination of its own, as GitHub Actions does. Pure.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ccd.spec.refs import Ref, RefError, parse_ref

# A sweep of more jobs than this is refused, with this limit named: the engine takes 100k
# jobs, but one loop turn expanding that many would stall every other workflow for seconds.
MAX_COMBINATIONS = 10_000
_UNSAFE_RE = re.compile(r"[^A-Za-z0-9_.-]")
_NAME_MAX = 100

Combination = dict[str, str]


@dataclass(frozen=True, slots=True)
class Matrix:
    """A matrix job's sweep. ``axes`` maps each key to its values, or to the reference
    (``${{ jobs.P.outputs.K }}`` text) whose JSON list gives them at run time."""

    axes: Mapping[str, tuple[str, ...] | str]
    include: tuple[Mapping[str, str], ...] = ()
    exclude: tuple[Mapping[str, str], ...] = ()
    keys: tuple[str, ...] = field(default=())  # every key a combination may have

    @property
    def dynamic(self) -> bool:
        return any(isinstance(values, str) for values in self.axes.values())

    def refs(self) -> list[Ref]:
        return [parse_ref(v.strip()[3:-2]) for v in self.axes.values() if isinstance(v, str)]

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {
            key: list(v) if isinstance(v, tuple) else v for key, v in self.axes.items()
        }
        if self.include:
            data["include"] = [dict(entry) for entry in self.include]
        if self.exclude:
            data["exclude"] = [dict(entry) for entry in self.exclude]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Matrix:
        axes: dict[str, tuple[str, ...] | str] = {
            key: values if isinstance(values, str) else tuple(values)
            for key, values in data.items()
            if key not in ("include", "exclude")
        }
        return make(axes, data.get("include", ()), data.get("exclude", ()))


def make(
    axes: Mapping[str, tuple[str, ...] | str],
    include: Sequence[Mapping[str, str]] = (),
    exclude: Sequence[Mapping[str, str]] = (),
) -> Matrix:
    keys = dict.fromkeys(axes)
    for entry in include:
        keys.update(dict.fromkeys(entry))
    return Matrix(dict(axes), tuple(include), tuple(exclude), tuple(keys))


def combinations(
    matrix: Matrix, values: Mapping[str, Sequence[str]] | None = None
) -> list[Combination]:
    """Every combination, in order; ``values`` gives the run-time axes' lists. Raises
    ValueError past `MAX_COMBINATIONS` (counted before anything is built)."""
    axes = {k: tuple(values[k]) if values and k in values else v for k, v in matrix.axes.items()}
    if any(isinstance(v, str) for v in axes.values()):
        raise ValueError("the matrix's run-time values are not known yet")
    check_size(axes, len(matrix.include))
    keys = list(axes)
    base = [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*axes.values())]
    if not keys:
        base = []
    base = [c for c in base if not any(_matches(c, entry) for entry in matrix.exclude)]
    extra: list[Combination] = []
    for entry in matrix.include:
        matched = False
        for combo in base:
            if all(combo[k] == v for k, v in entry.items() if k in axes):
                combo.update(entry)
                matched = True
        if not matched:
            extra.append(dict(entry))
    return base + extra


def check_size(axes: Mapping[str, Sequence[str] | str], included: int) -> None:
    """ValueError past `MAX_COMBINATIONS`, counted without building anything."""
    count = math.prod(len(v) for v in axes.values() if not isinstance(v, str)) if axes else 0
    if count + included > MAX_COMBINATIONS:
        total = f"{count:,}" + (f" + {included} included" if included else "")
        raise ValueError(
            f"{total} combinations, more than the limit of {MAX_COMBINATIONS:,} "
            "jobs per matrix: split the sweep"
        )


def _matches(combo: Combination, entry: Mapping[str, str]) -> bool:
    return all(combo.get(k) == v for k, v in entry.items())


def member_names(group: str, combos: Sequence[Combination]) -> list[str]:
    """Job names that say each combination's values (``train.lr-0.1.seed-1``), valid as job
    names; a clash (after unsafe characters became ``_``) or an over-long name gets the
    combination's number appended."""
    names: list[str] = []
    seen: set[str] = set()
    for number, combo in enumerate(combos, start=1):
        name = group + "".join(f".{k}-{_UNSAFE_RE.sub('_', v)}" for k, v in combo.items())
        if len(name) > _NAME_MAX or name in seen:
            suffix = f".{number}"
            name = name[: _NAME_MAX - len(suffix)] + suffix
        seen.add(name)
        names.append(name)
    return names


def values_from_output(ref: Ref, text: str) -> list[str]:
    """A run-time axis: the JSON list of scalars ``text`` (the output ``ref`` names)."""
    try:
        data = json.loads(text)
    except ValueError as err:
        raise RefError(f"{ref} is not a JSON list: {err}") from err
    if not isinstance(data, list) or not all(
        isinstance(v, str | int | float | bool) and v is not None for v in data
    ):
        raise RefError(f"{ref} is not a JSON list of strings or numbers: {text[:80]!r}")
    return [scalar_text(v) for v in data]


def scalar_text(value: object) -> str:
    """How a matrix value reads as text: JSON's spelling for true/false, else str()."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
