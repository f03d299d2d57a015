"""`${{ ... }}` references in a job's fields: finding, checking and substituting them.

Two kinds exist: ``${{ jobs.NAME.outputs.KEY }}``, a value a parent job wrote to its
``$CCD_OUTPUTS`` file (known once that parent has succeeded), and ``${{ matrix.KEY }}``, the
value of a matrix job's own combination. Pure: nothing here reads files or the store.

Substituted values never become shell text. In ``args``, ``env`` and ``resources`` a
reference is replaced by the value itself (each is one argument, one variable, one field);
in an inline ``run:`` command it is replaced by a quoted expansion of an environment
variable that holds the value (``"${CCD_REF_1}"``, or ``"${CCD_MATRIX_lr}"``), quoted as its
place in the command needs: the shell reads the value as data, whatever characters it has.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

OPEN = "${{"
_REF_RE = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)
_KEY = r"[A-Za-z_][A-Za-z0-9_-]*"
_OUTPUT_RE = re.compile(rf"jobs\.([A-Za-z0-9_.-]+)\.outputs\.({_KEY})")
_MATRIX_RE = re.compile(r"matrix\.([A-Za-z_][A-Za-z0-9_]*)")
KEY_RE = re.compile(_KEY)
MATRIX_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
REF_VAR_PREFIX = "CCD_REF_"
MATRIX_VAR_PREFIX = "CCD_MATRIX_"
SYNTAX = "${{ jobs.NAME.outputs.KEY }} or ${{ matrix.KEY }}"


class RefError(ValueError):
    """A reference that cannot be read or resolved; the message names it."""


@dataclass(frozen=True, slots=True)
class Ref:
    """One reference: ``job`` is None for a matrix value."""

    job: str | None
    key: str

    def __str__(self) -> str:
        if self.job is None:
            return f"${{{{ matrix.{self.key} }}}}"
        return f"${{{{ jobs.{self.job}.outputs.{self.key} }}}}"


def has_refs(text: str) -> bool:
    return OPEN in text


def parse_ref(expr: str) -> Ref:
    """The reference inside ``${{ }}`` (the text between the braces)."""
    body = expr.strip()
    if match := _OUTPUT_RE.fullmatch(body):
        return Ref(match[1], match[2])
    if match := _MATRIX_RE.fullmatch(body):
        return Ref(None, match[1])
    raise RefError(f"cannot read '${{{{{expr}}}}}': expected {SYNTAX}")


def refs_in(text: str) -> list[Ref]:
    """Every reference in ``text``, in order (repeats kept); RefError for a malformed one."""
    refs: list[Ref] = []
    end = 0
    for match in _REF_RE.finditer(text):
        _check_between(text, end, match.start())
        refs.append(parse_ref(match[1]))
        end = match.end()
    _check_between(text, end, len(text))
    return refs


def _check_between(text: str, start: int, stop: int) -> None:
    if OPEN in text[start:stop]:
        raise RefError("unclosed '${{' (a reference ends with '}}')")


def substitute(text: str, value_of: Callable[[Ref], str | None]) -> str:
    """``text`` with each reference replaced by its value, as is (for one argument, one
    variable or one field: no shell reads it); one whose value is None stays."""
    if OPEN not in text:
        return text
    refs_in(text)  # malformed ones raise before anything is replaced

    def value(match: re.Match[str]) -> str:
        found = value_of(parse_ref(match[1]))
        return match[0] if found is None else found

    return _REF_RE.sub(value, text)


def substitute_shell(text: str, variable_of: Callable[[Ref], str | None]) -> str:
    """Shell text with each reference replaced by a quoted expansion of the variable
    ``variable_of(ref)`` names, quoted for where it stands: ``"${V}"`` outside quotes,
    ``${V}`` inside double quotes, ``'"${V}"'`` inside single quotes (closing and reopening
    them). The value then never passes through the shell's parser, only its expansion. A
    reference whose variable is None stays as it is."""
    if OPEN not in text:
        return text
    refs_in(text)
    out: list[str] = []
    end = 0
    states = _quote_states(text)
    for match in _REF_RE.finditer(text):
        out.append(text[end : match.start()])
        name = variable_of(parse_ref(match[1]))
        state = states[match.start()]
        if name is None:
            out.append(match[0])
        else:
            out.append(
                f"${{{name}}}"
                if state == '"'
                else f"'\"${{{name}}}\"'"
                if state == "'"
                else f'"${{{name}}}"'
            )
        end = match.end()
    out.append(text[end:])
    return "".join(out)


def _quote_states(text: str) -> list[str]:
    """For each character: the quoting it stands in ("" none, "'" or '"'), as sh reads it
    (backslash escapes outside single quotes). Here-documents and nested command
    substitutions are not followed: there a value may be split into words, but it is still
    never parsed as commands."""
    states: list[str] = []
    state = ""
    escaped = False
    for char in text:
        states.append(state)
        if escaped:
            escaped = False
        elif char == "\\" and state != "'":
            escaped = True
        elif char == "'" and state != '"':
            state = "" if state == "'" else "'"
        elif char == '"' and state != "'":
            state = "" if state == '"' else '"'
    return states


def matrix_variable(key: str) -> str:
    return MATRIX_VAR_PREFIX + key


def iter_texts(
    run: str | None, args: Iterable[str], env: Mapping[str, str], resources: Mapping[str, str]
) -> Iterator[tuple[str, str]]:
    """(field, text) of every place a reference may stand."""
    if run is not None:
        yield "run", run
    for arg in args:
        yield "args", arg
    for key, value in env.items():
        yield f"env.{key}", value
    for key, value in resources.items():
        yield f"resources.{key}", value
