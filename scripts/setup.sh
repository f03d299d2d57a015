#!/usr/bin/env bash
# Install what ccd and its tests need on a fresh Debian machine: Debian packages (graphviz;
# Chromium for the dashboard's browser tests, which drive it headless, never a browser of their own;
# systemd for systemd-analyze, which checks the user unit; it installs fine where PID 1 is
# not systemd; OpenSSH's server and Slurm for the backends' tests), then ccd's Python
# dependencies at the exact versions of requirements/lock.txt, every extra included (test,
# notebook, and examples: scikit-learn and matplotlib for configs/examples/digits);
# hash-checked, so a new upstream release cannot change what is installed; scripts/lock.sh
# refreshes it. Then ccd itself, editable. Into the active venv if there is one. Idempotent; run as root (or sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v dot >/dev/null || need_apt+=(graphviz)
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
if ((${#need_apt[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_="sudo"
    $sudo_ apt-get update -qq
    $sudo_ apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# sshd and Slurm for the ssh and Slurm backends' tests (started by the tests themselves).
if [ "$(id -u)" -eq 0 ]; then
    bash scripts/infra/install.sh
else
    sudo bash scripts/infra/install.sh
fi

pip_install() {
    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "$@"
}
pip_install --require-hashes --no-deps -r requirements/lock.txt
pip_install --no-deps --no-build-isolation -e .
