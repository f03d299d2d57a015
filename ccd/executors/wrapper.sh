# ccd job wrapper: sh wrapper.sh JOB_ARGV...
#
# Written next to every attempt and run by plain POSIX sh (dash), so nothing needs to be
# installed on a job's host. It claims the attempt, records start and exit in ./status and
# sends the job's output to ./log. The normal path forks nothing but the job itself: all it
# needs is read from /proc with the `read` builtin.
#
# status lines (one write each, so a reader sees whole lines or a partial last one):
#   start pid=PID ticks=STARTTIME host=HOST uptime=SECONDS   (time=EPOCH without /proc)
#   exit code=RC uptime=SECONDS utime=XmY.Zs stime=XmY.Zs   (the job tree's CPU, from `times`)
#   claimed            (written instead by a recovering daemon: this attempt must never run)

# Local executors cannot set a spawned process's cwd (posix_spawn in Python 3.11 has no chdir),
# so they pass the run directory here; other backends start us in it already.
if [ -n "${CCD_RUN_DIR-}" ]; then
    cd "$CCD_RUN_DIR" || exit 125
fi

# Trapped (not ignored: ignored signals stay ignored in the job) so that when the group is
# signalled the job dies but we live on to record its exit: a trap runs only after the
# foreground command returns. One gap no sh can close: a signal landing between our fork and
# the job's exec (microseconds) is taken by this trap in the child and never reaches the job,
# which is why a cancel escalates to SIGKILL after a grace period.
_ccd_sig=
trap '_ccd_sig=1' HUP
trap '_ccd_sig=2' INT
trap '_ccd_sig=15' TERM

# Sets _ccd_when to "uptime=SECONDS", or "time=EPOCH" where there is no /proc.
_ccd_now() {
    if [ -r /proc/uptime ]; then
        read -r _ccd_up _ccd_rest < /proc/uptime
        _ccd_when="uptime=$_ccd_up"
    else
        _ccd_when="time=$(date +%s)"
    fi
}

# Sets _ccd_ticks to field 22 (starttime) of /proc/$$/stat, which tells our pid apart from a
# later process that reuses it. A function, so that `set --` leaves the job's argv alone.
# dash's `read` takes one byte per read(2), so this ~300-byte line is most of our syscalls;
# local.same_process can check identity from the uptime= stamp alone if ever dropped.
_ccd_starttime() {
    _ccd_ticks=
    [ -r /proc/$$/stat ] || return 0
    read -r _ccd_line < /proc/$$/stat
    # Field 2 (comm) may hold spaces and parentheses: count fields after its last ") ".
    set -- ${_ccd_line##*) }
    [ $# -ge 20 ] || return 0
    shift 19
    _ccd_ticks=$1
}

_ccd_starttime
if [ -r /proc/sys/kernel/hostname ]; then
    read -r _ccd_host < /proc/sys/kernel/hostname
else
    _ccd_host=$(hostname)
fi
_ccd_now
_ccd_start="start pid=$$"
[ -n "$_ccd_ticks" ] && _ccd_start="$_ccd_start ticks=$_ccd_ticks"
_ccd_start="$_ccd_start host=$_ccd_host $_ccd_when"

# Claim the attempt by creating status exclusively, with the start record in the same breath.
# If it exists, a recovering daemon claimed the attempt (or it already ran): never run twice.
set -C
if ! printf '%s\n' "$_ccd_start" 2>/dev/null > status; then
    exit 0
fi
set +C

exec >> log 2>&1 < /dev/null

if [ -n "$_ccd_sig" ]; then
    # Signalled before the job started: do not start it.
    _ccd_rc=$((128 + _ccd_sig))
elif [ "$1" = . ]; then
    # ". ./run.sh ARGS": an inline `run:` command, sourced in a subshell (a fork, not a
    # second shell to exec). `exit` in it ends only the subshell, and trapped signals are
    # back to their defaults there, so a signal to the group still ends the job.
    shift
    _ccd_script=$1
    shift
    ( . "$_ccd_script" )
    _ccd_rc=$?
else
    "$@"
    _ccd_rc=$?
fi

_ccd_now
# The CPU time of the job's process tree, as the kernel counted it for the children we (and
# they, transitively) waited for: the second line of `times`. A builtin, so it cannot go
# through a pipe or $(...) (a subshell has no children's times); a file it is. Peak memory
# is beyond sh: the exit record has none from here.
_ccd_cpu=
if times > times 2>/dev/null && { read -r _ccd_x; read -r _ccd_cu _ccd_cs; } < times; then
    _ccd_cpu=" utime=$_ccd_cu stime=$_ccd_cs"
fi
printf 'exit code=%s %s%s\n' "$_ccd_rc" "$_ccd_when" "$_ccd_cpu" >> status
exit "$_ccd_rc"
