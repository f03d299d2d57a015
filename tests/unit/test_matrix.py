"""Matrix sweeps: combinations (with GitHub Actions' include/exclude), names, limits."""

from __future__ import annotations

import pytest

from ccd.spec import valid_name
from ccd.spec.matrix import (
    MAX_COMBINATIONS,
    Matrix,
    combinations,
    make,
    member_names,
    values_from_output,
)
from ccd.spec.refs import Ref, RefError


def test_cross_product_in_order() -> None:
    combos = combinations(make({"lr": ("0.1", "0.01"), "seed": ("1", "2", "3")}))
    assert len(combos) == 6
    assert combos[:2] == [{"lr": "0.1", "seed": "1"}, {"lr": "0.1", "seed": "2"}]


def test_exclude_and_include_as_github_actions() -> None:
    matrix = make(
        {"os": ("linux", "mac"), "py": ("3.11", "3.12")},
        include=[{"py": "3.12", "extra": "yes"}, {"os": "windows", "py": "3.11"}],
        exclude=[{"os": "mac", "py": "3.11"}],
    )
    assert combinations(matrix) == [
        {"os": "linux", "py": "3.11"},
        {"os": "linux", "py": "3.12", "extra": "yes"},
        {"os": "mac", "py": "3.12", "extra": "yes"},
        {"os": "windows", "py": "3.11"},
    ]
    assert matrix.keys == ("os", "py", "extra")


def test_include_only() -> None:
    matrix = make({}, include=[{"model": "svm"}, {"model": "knn", "k": "3"}])
    assert combinations(matrix) == [{"model": "svm"}, {"model": "knn", "k": "3"}]


def test_names_say_the_values_and_are_valid() -> None:
    combos = [{"lr": "0.1", "opt": "sgd w/ m"}, {"lr": "0.1", "opt": "sgd_w__m"}, {"x": "y" * 200}]
    names = member_names("train", combos)
    assert names[0] == "train.lr-0.1.opt-sgd_w__m"
    assert names[1] == "train.lr-0.1.opt-sgd_w__m.2"  # clashes after cleaning: numbered
    assert len(names[2]) == 100 and names[2].endswith(".3")
    assert all(valid_name(n) for n in names)


def test_100k_combinations_are_refused_before_anything_is_built() -> None:
    matrix = make({"a": tuple(map(str, range(1000))), "b": tuple(map(str, range(100)))})
    with pytest.raises(
        ValueError, match=f"100,000 combinations, more than the limit of {MAX_COMBINATIONS:,}"
    ):
        combinations(matrix)


def test_runtime_axes_take_their_values_when_known() -> None:
    matrix = make({"chunk": "${{ jobs.split.outputs.chunks }}", "mode": ("a",)})
    assert matrix.dynamic and matrix.refs() == [Ref("split", "chunks")]
    with pytest.raises(ValueError, match="not known yet"):
        combinations(matrix)
    values = values_from_output(Ref("split", "chunks"), '["x", 2, true]')
    assert combinations(matrix, {"chunk": values})[2] == {"chunk": "true", "mode": "a"}


@pytest.mark.parametrize("text", ["[1, [2]]", '{"a": 1}', "not json", "[null]"])
def test_runtime_values_must_be_a_json_list_of_scalars(text: str) -> None:
    with pytest.raises(RefError, match="JSON list"):
        values_from_output(Ref("split", "chunks"), text)


def test_json_round_trip() -> None:
    matrix = make({"a": ("1", "2"), "b": "${{ jobs.p.outputs.k }}"}, exclude=[{"a": "1"}])
    assert Matrix.from_json(matrix.to_json()) == matrix
