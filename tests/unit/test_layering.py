"""Imports flow downward, and each third-party library lives in exactly one module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = sorted([*REPO.glob("ccd/**/*.py"), *REPO.glob("cli/**/*.py")])

# library -> the only modules allowed to import it
OWNERS = {
    "aiosqlite": {"ccd/engine/store.py"},
    "networkx": {"ccd/spec/dag.py"},
    "asyncssh": {"ccd/executors/ssh.py"},
    "cryptography": {"ccd/executors/ssh.py"},  # only to silence asyncssh's import warnings
    "click": {"cli/"},  # a trailing "/" allows a whole package
    "nbclient": {"ccd/notebook.py"},
    "nbformat": {"ccd/notebook.py"},
}
# module -> ccd modules it must never import (directly)
FORBIDDEN = {
    "ccd/engine/scheduler.py": {"ccd.executors.local", "ccd.executors.ssh", "ccd.executors.slurm"},
    "ccd/models.py": {"ccd.engine.store", "ccd.engine.scheduler", "ccd.spec"},
    "ccd/errors.py": {"ccd"},
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_third_party_libraries_stay_in_their_module(path: Path) -> None:
    rel = str(path.relative_to(REPO))
    for name in _imports(path):
        top = name.split(".")[0]
        if top in OWNERS:
            allowed = OWNERS[top]
            assert any(rel == a or (a.endswith("/") and rel.startswith(a)) for a in allowed), (
                f"{rel} imports {top}; only {allowed} may"
            )


@pytest.mark.parametrize("module", sorted(FORBIDDEN))
def test_layers_do_not_reach_up(module: str) -> None:
    imported = _imports(REPO / module)
    for banned in FORBIDDEN[module]:
        assert not any(n == banned or n.startswith(banned + ".") for n in imported), (
            f"{module} imports {banned}"
        )
