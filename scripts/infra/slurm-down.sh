#!/usr/bin/env bash
# slurm-down.sh - stop the daemons slurm-up.sh started, found by their pid
# files only (never by process name). Packages, config, state (job-id counter)
# and accounting DB are kept, so slurm-up.sh brings the same cluster back in a
# few seconds. Idempotent: nothing running is fine.
#
#   SLURM_DOWN_CANCEL=0  leave queued/running jobs alone (default: scancel them
#                        first, so no job processes outlive slurmd)
set -uo pipefail
ME=slurm-down
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
need_root

STATE=/var/spool/ccd-slurm
PIDDIR=$STATE/pids
MYSQL_RUN=$STATE/mysql-run

if [ "${SLURM_DOWN_CANCEL:-1}" = 1 ] && pid_of "$STATE/slurmctld.pid" slurmctld >/dev/null; then
    jobs=$(squeue -h -t PD,CF,R,S,CG,RQ,RS,SI,SO,ST -o '%i' </dev/null 2>/dev/null | tr '\n' ' ')
    if [ -n "${jobs// /}" ]; then
        log "cancelling jobs: $jobs"
        # shellcheck disable=SC2086  # a list of job ids
        scancel $jobs </dev/null 2>/dev/null || true
        # Give slurmd up to 15 s to kill them (KillWait=5) before it goes.
        for _ in $(seq 1 75); do
            [ -z "$(squeue -h -t R,CG,S,SI,SO -o '%i' </dev/null 2>/dev/null)" ] && break
            sleep 0.2
        done
    fi
fi

# Reverse start order.
stop_pidfile "$STATE/slurmd.pid" slurmd
stop_pidfile "$STATE/slurmctld.pid" slurmctld
stop_pidfile "$STATE/slurmdbd.pid" slurmdbd
stop_pidfile "$MYSQL_RUN/mariadbd.pid" mariadbd
# munged only if slurm-up.sh started it (it keeps a copy of the pid file); a
# munged that was already running, e.g. a system service, is left alone.
if [ -s "$PIDDIR/munged.pid" ]; then
    stop_pidfile "$PIDDIR/munged.pid" munged
    rm -f "$PIDDIR/munged.pid"
fi
log "done"
