"""Imports flow downward, and each third-party library lives in exactly one module.

The rules, over the folders of ccd/:
1. `spec` imports only itself and the leaves (errors, models, paths, logs, memory);
2. `executors` never import `engine`, `server` or `cli`;
3. a backend's modules never import another backend's: backends share only through the
   common modules of `executors/` (base, shell, procfs, batching);
4. `engine` never imports `server` or `cli`; the scheduler knows backends only through
   `executors.base`;
5. the leaves import only leaves.
"""

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
LEAVES = {"ccd", "ccd.errors", "ccd.models", "ccd.paths", "ccd.logs", "ccd.memory", "ccd.usage"}
# Each backend's own modules. `shepherd.py` runs as a script without ccd; `base` re-exports
# the names of the files it writes.
BACKENDS = {
    "local": {"local", "shepherd", "shepherd_link"},
    "ssh": {"ssh", "ssh_remote", "ssh_watch"},
    "slurm": {
        "slurm",
        "slurm_parse",
        "slurm_arrays",
        "slurm_submit",
        "slurm_cancel",
        "slurm_commands",
    },
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            # `from ccd.executors import slurm_parse` imports a module too
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _ccd_imports(path: Path) -> set[str]:
    return {n for n in _imports(path) if n == "ccd" or n.startswith(("ccd.", "cli"))}


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _leaf(name: str) -> bool:
    return name == "ccd" or any(_within(name, leaf) for leaf in LEAVES - {"ccd"})


def _files(folder: str) -> list[Path]:
    return sorted((REPO / folder).glob("**/*.py"))


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


def test_spec_imports_only_itself_and_the_leaves() -> None:
    for path in _files("ccd/spec"):
        for name in _ccd_imports(path):
            assert _within(name, "ccd.spec") or _leaf(name), f"{path.name} imports {name}"


def test_executors_never_import_engine_server_or_cli() -> None:
    for path in _files("ccd/executors"):
        for name in _ccd_imports(path):
            assert not any(_within(name, p) for p in ("ccd.engine", "ccd.server", "cli")), (
                f"executors/{path.name} imports {name}"
            )


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_a_backend_never_imports_another(backend: str) -> None:
    others = {f"ccd.executors.{m}" for b, mods in BACKENDS.items() if b != backend for m in mods}
    for module in BACKENDS[backend]:
        imported = _ccd_imports(REPO / "ccd" / "executors" / f"{module}.py")
        assert not imported & others, f"{module} imports {imported & others}"


def test_engine_never_imports_server_or_cli() -> None:
    for path in _files("ccd/engine"):
        for name in _ccd_imports(path):
            assert not (_within(name, "ccd.server") or _within(name, "cli")), (
                f"engine/{path.name} imports {name}"
            )
    backends = {f"ccd.executors.{m}" for mods in BACKENDS.values() for m in mods}
    assert not _ccd_imports(REPO / "ccd" / "engine" / "scheduler.py") & backends


def test_leaves_import_only_leaves() -> None:
    for leaf in sorted(LEAVES - {"ccd"}):
        path = REPO / (leaf.replace(".", "/") + ".py")
        for name in _ccd_imports(path):
            assert _leaf(name), f"{leaf} imports {name}"


def test_the_readme_layout_map_names_every_module_and_folder() -> None:
    readme = (REPO / "README.md").read_text()
    layout = readme[readme.index("## Layout") : readme.index("### The `Job*` types")]
    names = {p.name for p in SOURCES} | {p.parent.name + "/" for p in SOURCES}
    names |= {p.name for p in REPO.glob("ccd/**/*.sh")}
    missing = sorted(name for name in names if name not in layout)
    assert not missing, f"README's layout map does not mention {missing}"
