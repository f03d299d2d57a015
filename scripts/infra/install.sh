#!/usr/bin/env bash
# install.sh - install (only) the Debian packages the test infrastructure needs: OpenSSH's
# server for the ssh backend's tests, munge + Slurm + slurmdbd + MariaDB for the Slurm
# backend's. The up scripts install what is missing too; doing it once here, before the test
# run, keeps apt out of test fixtures. Idempotent; needs root.
set -euo pipefail
ME=install
# shellcheck source=scripts/infra/lib.sh
. "$(dirname "$0")/lib.sh"
need_root
PKGS=(openssh-server openssh-client munge slurmctld slurmd slurm-client slurmdbd mariadb-server)
if missing_pkgs "${PKGS[@]}" >/dev/null; then
    apt_install /tmp/ccd-infra-install-apt.log "${PKGS[@]}"
fi
