"""No third-party warning reaches a user's terminal: every module of ccd imports silently,
even with every warning turned into an error (as a newer dependency may start warning)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODULES = sorted(
    ".".join(p.relative_to(REPO).with_suffix("").parts)
    for p in [*REPO.glob("ccd/**/*.py"), *REPO.glob("cli/**/*.py")]
    if p.name not in ("__main__.py", "shepherd.py")  # scripts, run as programs
)


def test_every_module_imports_without_a_warning() -> None:
    code = "import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module(m)"
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code, *MODULES],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr == ""
