#!/usr/bin/env bash
# Drift check: install ccd with the newest releases of everything it depends on (ignoring
# requirements/lock.txt) in a throwaway venv, and run the test suite there. CI installs from
# the lock, so a new upstream release cannot break it; run this to see such breakage on
# purpose, then fix it and refresh the lock (scripts/lock.sh). Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d /tmp/ccd-newest.XXXXXX)
trap 'rm -rf "$venv"' EXIT
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade -e '.[test,notebook]'
"$venv/bin/python" -m pip list --format=freeze | grep -iE '^(asyncssh|cryptography|fastapi|uvicorn|pydantic|aiosqlite|networkx|structlog|click|pyyaml|ruff|mypy|pytest)=' || true
"$venv/bin/python" -m pytest -n 2 "$@"
