"""`${{ }}` references: reading them, and substituting values so no shell parses them."""

from __future__ import annotations

import subprocess

import pytest

from ccd.spec.refs import Ref, RefError, parse_ref, refs_in, substitute, substitute_shell


def test_parse_both_kinds() -> None:
    assert parse_ref(" jobs.a.b-1.outputs.key_2 ") == Ref("a.b-1", "key_2")
    assert parse_ref("matrix.lr") == Ref(None, "lr")
    assert str(Ref("a", "k")) == "${{ jobs.a.outputs.k }}"


@pytest.mark.parametrize(
    "text", ["${{ job.a.outputs.k }}", "${{ jobs.a.k }}", "${{ matrix.a-b }}", "${{ }}"]
)
def test_malformed_references_say_what_is_expected(text: str) -> None:
    with pytest.raises(RefError, match=r"expected \$\{\{ jobs.NAME.outputs.KEY \}\}"):
        refs_in(text)


def test_unclosed_reference_is_an_error() -> None:
    with pytest.raises(RefError, match="unclosed"):
        refs_in("echo ${{ jobs.a.outputs.k }} ${{ jobs.a.outputs")


def test_substitute_puts_values_as_they_are() -> None:
    values = {Ref("a", "k"): "x y;$(rm -rf /)", Ref(None, "lr"): "0.1"}
    text = "--k=${{ jobs.a.outputs.k }} lr=${{matrix.lr}}"
    assert substitute(text, values.__getitem__) == "--k=x y;$(rm -rf /) lr=0.1"


def test_substitute_can_leave_some_references() -> None:
    text = "${{ matrix.lr }} ${{ jobs.a.outputs.k }}"
    assert substitute(text, lambda r: "1" if r.job is None else None) == (
        "1 ${{ jobs.a.outputs.k }}"
    )


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("printf '%s\\n' ${{ jobs.a.outputs.k }}", "<VALUE>"),
        ('printf "%s\\n" "v=${{ jobs.a.outputs.k }}."', "v=<VALUE>."),
        ("printf '%s\\n' 'v=${{ jobs.a.outputs.k }}.'", "v=<VALUE>."),
        ("printf '%s\\n' \\'${{ jobs.a.outputs.k }}", "'<VALUE>"),
    ],
)
def test_shell_substitution_keeps_hostile_values_data(template: str, expected: str) -> None:
    """Whatever the value holds and wherever the reference stands, the shell prints it as it
    is: it is read from the environment, never parsed as shell text."""
    value = "a  b * $(touch pwned) `id` ' \" ;|&\n$HOME"
    text = substitute_shell(template, lambda ref: "CCD_REF_1")
    done = subprocess.run(
        ["sh", "-c", text],
        env={"CCD_REF_1": value, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout == expected.replace("<VALUE>", value) + "\n"


def test_shell_substitution_without_references_is_unchanged() -> None:
    assert substitute_shell("echo '$x'", lambda r: "V") == "echo '$x'"
