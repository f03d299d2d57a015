# shellcheck shell=bash
# lib.sh - helpers shared by the scripts in scripts/infra/ (sourced, not run).
# The caller sets ME (its short name, used in log lines) before sourcing.

ME=${ME:-infra}
# Package scripts and daemons must never wait on a terminal: CI runs us with
# stdin closed and no tty.
export DEBIAN_FRONTEND=noninteractive

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
log() { printf '[%s %s] %s\n' "$ME" "$(date +%T)" "$*"; }
die() { printf '[%s %s] ERROR: %s\n' "$ME" "$(date +%T)" "$*" >&2; exit 1; }
need_root() { [ "$(id -u)" -eq 0 ] || die "must run as root"; }

# alive PID: the process exists and is not a zombie. PID 1 on these machines
# is not an init system and reaps orphans only after ~1 s, so a daemon we
# killed lingers as state Z; treating Z as "running" made every stop wait.
alive() {
    local st
    st=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) && [ -n "$st" ] && [ "$st" != Z ]
}

# pid_of PIDFILE COMM: print the pid in PIDFILE if it is a live process whose
# name is COMM. Daemons are only ever found through their pid files (never by
# process name) so we cannot hit someone else's sshd/munged/mariadbd, and a
# stale pid file whose number was reused by another program is ignored.
pid_of() {
    local p
    [ -s "$1" ] || return 1
    p=$(tr -dc '0-9' < "$1")
    [ -n "$p" ] && [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$2" ] && alive "$p" || return 1
    echo "$p"
}

# stop_pid PID NAME [SECONDS]: TERM, wait up to SECONDS (20), then KILL.
stop_pid() {
    local p=$1 name=$2 secs=${3:-20}
    log "stopping $name (pid $p)"
    kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 1 $((secs * 10))); do alive "$p" || return 0; sleep 0.1; done
    log "$name (pid $p) still alive after ${secs}s: sending KILL"
    kill -KILL "$p" 2>/dev/null || true
}

# stop_pidfile PIDFILE COMM: stop the process PIDFILE names, if it is COMM.
stop_pidfile() {
    local p
    p=$(pid_of "$1" "$2") || return 0
    stop_pid "$p" "$2"
}

# wait_for SECONDS WHAT CMD...: poll CMD every 0.2 s until it succeeds.
wait_for() {
    local secs=$1 what=$2
    shift 2
    for _ in $(seq 1 $((secs * 5))); do
        "$@" </dev/null >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    die "timed out after ${secs}s waiting for $what"
}

# apt_install LOGFILE PKG...: install the packages that are not installed yet
# (--no-install-recommends: Slurm's recommends drag in 42 packages, HDF5/ROCm
# plugins among them; without them it is 8).
#  - Serialised with flock, so sshd-up.sh and slurm-up.sh may run in parallel
#    without tripping over the dpkg lock (or each other's policy-rc.d).
#  - A policy-rc.d that forbids service starts is put in place if the machine
#    has none: without it the postinst scripts of openssh-server, munge and
#    mariadb-server would start system daemons listening on 0.0.0.0:22 and
#    3306. (Docker-style images ship one already; then it is left alone.)
apt_install() {
    local logfile=$1
    shift
    (
        exec 9>/var/lock/ccd-infra-apt.lock
        flock 9
        missing=()
        for p in "$@"; do
            dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
                || missing+=("$p")
        done
        [ ${#missing[@]} -eq 0 ] && exit 0   # installed meanwhile by a parallel run
        T=$(now)
        log "installing ${missing[*]} (log: $logfile)"
        if [ ! -e /usr/sbin/policy-rc.d ]; then
            trap 'rm -f /usr/sbin/policy-rc.d' EXIT
            printf '#!/bin/sh\n# temporary, from ccd scripts/infra\nexit 101\n' > /usr/sbin/policy-rc.d
            chmod 755 /usr/sbin/policy-rc.d
        fi
        if ! { apt-get update -q \
               && apt-get install -y -q --no-install-recommends \
                      -o DPkg::Lock::Timeout=300 "${missing[@]}"; } </dev/null >"$logfile" 2>&1; then
            tail -20 "$logfile" >&2
            exit 1
        fi
        log "packages installed in $(since "$T")s"
    ) || die "apt-get install failed (full log: $logfile)"
}

# missing_pkgs PKG...: succeed (and print them) if any package is not installed
missing_pkgs() {
    local p out=""
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || out+="$p "
    done
    [ -n "$out" ] && echo "$out"
}
