#!/usr/bin/env bash
# smoke.sh [SSHD_DIR] - quick end-to-end check of the test infrastructure after
# slurm-up.sh and sshd-up.sh: a job to COMPLETED (exit code and output file),
# one to FAILED 3:0, one CANCELLED while running, sacct agreeing (or sacct -c
# in filetxt mode), and, if SSHD_DIR/env.sh exists (default /tmp/ccd-sshd), a
# job submitted over ssh as the login user. Prints "N passed, N failed"; exit
# status 1 if anything failed. Takes ~3-5 s.
set -uo pipefail
SSHD_DIR=${1:-/tmp/ccd-sshd}
pass=0
fail=0
check() { # DESCRIPTION CMD...: one test line
    local what=$1
    shift
    if "$@"; then pass=$((pass + 1)); echo "ok   - $what"; return 0; fi
    fail=$((fail + 1))
    echo "FAIL - $what"
    return 1
}
W=$(mktemp -d /tmp/ccd-smoke.XXXXXX)
trap 'rm -rf "$W"' EXIT
chmod 755 "$W"
cd "$W" || exit 1

# "STATE EXITCODE" from slurmctld, which keeps finished jobs for MinJobAge s.
state() {
    local j
    j=$(scontrol show job "$1" </dev/null 2>/dev/null)
    echo "$(grep -o 'JobState=[A-Z_]*' <<<"$j" | cut -d= -f2) $(grep -o ' ExitCode=[0-9:]*' <<<"$j" | cut -d= -f2)"
}
wait_done() { # JOBID: wait up to 30 s for a final state
    for _ in $(seq 1 150); do
        case $(state "$1") in PENDING* | RUNNING* | COMPLETING* | CONFIGURING* | " ") sleep 0.2 ;; *) return 0 ;; esac
    done
    return 1
}
is() { [ "$1" = "$2" ] || { echo "     got '$1', want '$2'"; return 1; }; }

a=$(sbatch --parsable --wrap 'echo hello-from-slurm' </dev/null)
b=$(sbatch --parsable --wrap 'exit 3' </dev/null)
c=$(sbatch --parsable --wrap 'sleep 60' </dev/null)
check "sbatch" test -n "$a" -a -n "$b" -a -n "$c"
for _ in $(seq 1 50); do [ "$(squeue -h -j "$c" -o %T </dev/null)" = RUNNING ] && break; sleep 0.2; done
scancel "$c" </dev/null
wait_done "$a"; wait_done "$b"; wait_done "$c"
check "job $a COMPLETED 0:0" is "$(state "$a")" "COMPLETED 0:0"
check "job $a output file" is "$(cat "slurm-$a.out" 2>/dev/null)" hello-from-slurm
check "job $b FAILED 3:0" is "$(state "$b")" "FAILED 3:0"
check "job $c CANCELLED" is "$(state "$c" | cut -d' ' -f1)" CANCELLED

if grep -q '^AccountingStorageType=accounting_storage/slurmdbd' /etc/slurm/slurm.conf; then
    # sacct is eventually consistent (slurmctld -> slurmdbd): poll a little.
    want="$a|COMPLETED|0:0 $b|FAILED|3:0 "
    for _ in $(seq 1 25); do
        got=$(sacct -X -n -P -j "$a,$b" -o JobID,State,ExitCode </dev/null 2>/dev/null | sort -n | tr '\n' ' ')
        [ "$got" = "$want" ] && break
        sleep 0.2
    done
    check "sacct agrees" is "$got" "$want"
else
    check "sacct -c agrees" is "$(sacct -c -n -P -j "$b" -o State,ExitCode </dev/null 2>/dev/null)" "FAILED|3:0"
fi

if [ -f "$SSHD_DIR/env.sh" ]; then
    # shellcheck disable=SC1091
    . "$SSHD_DIR/env.sh"
    rsh() {
        ssh -i "$CCD_SSH_KEY" -p "$CCD_SSH_PORT" -o BatchMode=yes -o ConnectTimeout=10 \
            -o UserKnownHostsFile="$CCD_SSH_KNOWN_HOSTS" "$CCD_SSH_USER@$CCD_SSH_HOST" "$@" </dev/null
    }
    if check "ssh $CCD_SSH_USER@$CCD_SSH_HOST:$CCD_SSH_PORT" is "$(rsh whoami 2>&1)" "$CCD_SSH_USER"; then
        d=$(rsh "cd /tmp && sbatch --parsable --wrap 'echo over-ssh'" 2>&1)
        if check "sbatch over ssh" is "$(tr -d '0-9' <<<"$d")" ""; then
            wait_done "$d"
            check "job $d COMPLETED 0:0" is "$(state "$d")" "COMPLETED 0:0"
            check "job $d owned by $CCD_SSH_USER" is "$(squeue -h -t all -j "$d" -o %u </dev/null)" "$CCD_SSH_USER"
            rm -f "/tmp/slurm-$d.out"
        fi
    fi
fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
