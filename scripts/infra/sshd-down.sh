#!/usr/bin/env bash
# sshd-down.sh [DIR] - stop the test sshd that sshd-up.sh started from DIR
# (default /tmp/ccd-sshd), and its per-connection processes (they outlive the
# listener otherwise, keeping client sessions open). Keys, config and log are
# kept. Idempotent: nothing running is fine.
set -uo pipefail
ME=sshd-down
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
need_root

DIR=${1:-/tmp/ccd-sshd}
case $DIR in /*) ;; *) DIR=$PWD/$DIR ;; esac

# Only the sshd whose pid file is DIR/sshd.pid AND that runs DIR/sshd_config:
# never a system sshd or another test's.
if ! p=$(pid_of "$DIR/sshd.pid" sshd) \
        || ! tr '\0' ' ' < "/proc/$p/cmdline" | grep -qF -- "-f $DIR/sshd_config"; then
    log "no sshd from $DIR running"
    rm -f "$DIR/sshd.pid"
    exit 0
fi
# Connection handlers are children of the listener (each forks a per-user
# child in turn, which exits when its parent goes).
kids=$(ps -o pid= --ppid "$p" 2>/dev/null | tr -s ' \n' ' ')
if [ -n "${kids// /}" ]; then
    log "stopping connection processes:$kids"
    # shellcheck disable=SC2086  # $kids is a list of pids
    kill -TERM $kids 2>/dev/null || true
fi
stop_pid "$p" sshd 10
rm -f "$DIR/sshd.pid"
log "done"
