#!/usr/bin/env bash
# Refresh requirements/lock.txt, the exact versions (with hashes) that scripts/setup.sh and CI
# install: run this after changing dependencies in pyproject.toml, or to take newer releases
# on purpose (then run the tests, and commit the lock with what changed). Uses uv's resolver;
# pip alone installs from the result, so neither setup nor CI needs uv.
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=0.13.9
python3 -m uv --version 2>/dev/null | grep -q " $UV_VERSION" \
    || python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "uv==$UV_VERSION"
python3 -m uv pip compile pyproject.toml requirements/build.in \
    --extra test --extra notebook --extra examples \
    --universal --python-version 3.11 --generate-hashes --quiet \
    --custom-compile-command "bash scripts/lock.sh" \
    -o requirements/lock.txt "$@"
echo "wrote requirements/lock.txt"
