#!/usr/bin/env bash
# sshd-up.sh [DIR] - start a private OpenSSH server for ccd's tests.
#
# Listens on 127.0.0.1:$SSHD_UP_PORT (default 2222) only, public-key auth
# only, for root and a dedicated unprivileged login user (default ccdtest).
# DIR (default /tmp/ccd-sshd) holds everything: host key, client key pair
# (id_ed25519), authorized_keys, known_hosts, sshd_config, sshd.pid, sshd.log
# and env.sh, which exports what a test needs:
#   CCD_SSH_HOST CCD_SSH_PORT CCD_SSH_USER CCD_SSH_KEY CCD_SSH_KNOWN_HOSTS
#   CCD_SSH_LOG (the sshd log, for tests that count connections/sessions)
#
# Knobs: SSHD_UP_PORT (2222), SSHD_UP_USER (ccdtest; "root" = root only).
# Idempotent: keys are kept across runs (known_hosts stays valid); a running
# sshd with the same config is only re-verified. Runs as root, needs no stdin
# or tty. Stop it with sshd-down.sh DIR.
#
# sshd.log (LogLevel VERBOSE, appended to across runs) has, per TCP connection:
#   "Connection from 127.0.0.1 port P on 127.0.0.1 port 2222 rdomain """
#   "Accepted publickey for USER from 127.0.0.1 port P ssh2: ED25519 SHA256:..."
#   ...
#   "Disconnected from user USER 127.0.0.1 port P"  (client closed)
# and per session channel (each exec/shell/subsystem, e.g. one conn.run()):
#   "Starting session: command for USER from 127.0.0.1 port P id N"
#     ("subsystem 'sftp'" / "shell" instead of "command" for those)
#   "Close session: user USER from 127.0.0.1 port P id N"  (not always: none
#     for a session still open at disconnect, e.g. a one-shot `ssh host cmd`)
# P (the client's source port) identifies the connection; N is a slot number
# reused within a connection, so count lines, not distinct ids. E.g. "200 jobs
# over one connection" = 1 "Accepted publickey for USER" line and 200
# "Starting session:" lines, all with the same P (measured: 200 sbatch via
# asyncssh conn.run on one connection gave exactly that). Reading the log:
#  - it is appended to across restarts: note its size before the test and
#    count only what follows;
#  - sshd -E ends lines with "\r\n": seek by bytes (open in binary), since a
#    text-mode read turns \r\n into \n and character offsets drift;
#  - "Accepted key ED25519 ... found at" (VERBOSE) has no port: don't use it;
#  - "Connection closed by 127.0.0.1 port P" lines with no "Accepted" are this
#    script's port probes.
set -euo pipefail
ME=sshd-up
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
need_root
T_START=$(now)

DIR=${1:-/tmp/ccd-sshd}
case $DIR in /*) ;; *) DIR=$PWD/$DIR ;; esac
HOST=127.0.0.1
PORT=${SSHD_UP_PORT:-2222}
TUSER=${SSHD_UP_USER:-ccdtest}

# our_sshd: print the pid of the sshd running DIR/sshd_config, if any.
our_sshd() {
    local p
    p=$(pid_of "$DIR/sshd.pid" sshd) || return 1
    tr '\0' ' ' < "/proc/$p/cmdline" | grep -qF -- "-f $DIR/sshd_config" || return 1
    echo "$p"
}
port_busy() { (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; }

# --- packages ---------------------------------------------------------------
if [ ! -x /usr/sbin/sshd ] || ! command -v ssh-keygen >/dev/null || ! command -v ssh >/dev/null; then
    apt_install /tmp/ccd-sshd-up-apt.log openssh-server openssh-client
fi

# --- login user -------------------------------------------------------------
RC_MARK="# written by ccd scripts/infra/sshd-up.sh"
if [ "$TUSER" != root ]; then
    if ! id "$TUSER" >/dev/null 2>&1; then
        # Empty skeleton: the rc files are written below.
        useradd -m -k /dev/null -s /bin/bash -c "ccd test user" "$TUSER"
        log "created user $TUSER"
    fi
    # Without PAM, sshd refuses a "locked" account (useradd leaves the password
    # field as '!'); '*' still allows no password login but is not locked.
    case $(getent shadow "$TUSER" | cut -d: -f2) in '!'*) usermod -p '*' "$TUSER" ;; esac
    # A clean, fast shell: bash sources ~/.bashrc for every command run over
    # ssh, and rc files like root's here (pyenv init) cost ~150 ms per command
    # and seconds of CPU with many parallel channels. Files we did not write
    # (a pre-existing user) are left alone.
    HOME_T=$(getent passwd "$TUSER" | cut -d: -f6)
    for f in .bashrc .profile; do
        if [ ! -e "$HOME_T/$f" ] || head -1 "$HOME_T/$f" | grep -qF "$RC_MARK"; then
            printf '%s\n# Intentionally empty: sshd sets PATH=/usr/local/bin:/usr/bin:/bin:/usr/games.\n' \
                "$RC_MARK" > "$HOME_T/$f"
            chown "$TUSER:" "$HOME_T/$f"
        fi
    done
fi

# --- keys -------------------------------------------------------------------
# sshd reads AuthorizedKeysFile with the target user's privileges, so DIR must
# be traversable and authorized_keys readable by that user. Private keys stay
# root-only.
mkdir -p "$DIR"
chmod 0755 "$DIR"
[ -s "$DIR/ssh_host_ed25519_key" ] \
    || ssh-keygen -q -t ed25519 -N '' -C ccd-test-host -f "$DIR/ssh_host_ed25519_key" </dev/null
[ -s "$DIR/id_ed25519" ] \
    || ssh-keygen -q -t ed25519 -N '' -C ccd-test-client -f "$DIR/id_ed25519" </dev/null
chmod 0600 "$DIR/ssh_host_ed25519_key" "$DIR/id_ed25519"
install -m 0644 "$DIR/id_ed25519.pub" "$DIR/authorized_keys"
# Real host-key checking in tests (not known_hosts=None): the non-default port
# makes the entry "[127.0.0.1]:PORT".
printf '[%s]:%s %s\n' "$HOST" "$PORT" "$(cut -d' ' -f1,2 "$DIR/ssh_host_ed25519_key.pub")" \
    > "$DIR/known_hosts"
chmod 0644 "$DIR/known_hosts"

# --- config -----------------------------------------------------------------
ALLOW=root
[ "$TUSER" != root ] && ALLOW="root $TUSER"
NEW_CONF="# Generated by ccd scripts/infra/sshd-up.sh: loopback-only test sshd.
Port $PORT
ListenAddress $HOST
AddressFamily inet
HostKey $DIR/ssh_host_ed25519_key
PidFile $DIR/sshd.pid
AuthorizedKeysFile $DIR/authorized_keys
AllowUsers $ALLOW
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
# No PAM: nothing to configure, no pam_systemd/motd delays.
UsePAM no
# DIR may be under world-writable /tmp, which StrictModes rejects.
StrictModes no
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
# Tests open many channels on one connection (default cap 10) and many
# connections at once (default 10:30:100 randomly drops connects beyond 10).
MaxSessions 64
MaxStartups 64:30:128
LoginGraceTime 30
Subsystem sftp internal-sftp
# VERBOSE logs each session open/close (INFO only logs connections).
LogLevel VERBOSE"
if [ ! -f "$DIR/sshd_config" ] || [ "$(cat "$DIR/sshd_config")" != "$NEW_CONF" ]; then
    if p=$(our_sshd); then stop_pid "$p" sshd; fi   # restart with the new config
    printf '%s\n' "$NEW_CONF" > "$DIR/sshd_config"
fi

# --- start ------------------------------------------------------------------
if p=$(our_sshd); then
    log "sshd already running (pid $p)"
else
    port_busy && die "$HOST:$PORT is already in use by another process (set SSHD_UP_PORT)"
    install -d -m 0755 -o root -g root /run/sshd   # privilege separation dir
    /usr/sbin/sshd -t -f "$DIR/sshd_config" </dev/null || die "sshd -t: bad config"
    # Absolute path: sshd re-execs itself for each connection. -E: log to a
    # file, there is no syslog here. sshd daemonises (own session, stdio on
    # /dev/null), so a caller's pipe is not held open.
    /usr/sbin/sshd -f "$DIR/sshd_config" -E "$DIR/sshd.log" </dev/null >/dev/null 2>&1 \
        || die "sshd failed to start; see $DIR/sshd.log"
    for _ in $(seq 1 50); do our_sshd >/dev/null && port_busy && break; sleep 0.1; done
    p=$(our_sshd) || { tail -5 "$DIR/sshd.log" >&2; die "sshd did not come up"; }
    log "sshd started (pid $p) on $HOST:$PORT"
fi

# --- verify -----------------------------------------------------------------
for u in $ALLOW; do
    ssh -i "$DIR/id_ed25519" -p "$PORT" -o BatchMode=yes -o StrictHostKeyChecking=yes \
        -o UserKnownHostsFile="$DIR/known_hosts" -o ConnectTimeout=10 -o LogLevel=ERROR \
        "$u@$HOST" true </dev/null \
        || { tail -5 "$DIR/sshd.log" >&2; die "ssh $u@$HOST -p $PORT failed"; }
done
log "verified key login for: $ALLOW"

cat > "$DIR/env.sh" <<EOF
# Generated by ccd scripts/infra/sshd-up.sh; source it before running tests.
export CCD_SSH_HOST=$HOST
export CCD_SSH_PORT=$PORT
export CCD_SSH_USER=$TUSER
export CCD_SSH_KEY=$DIR/id_ed25519
export CCD_SSH_KNOWN_HOSTS=$DIR/known_hosts
export CCD_SSH_LOG=$DIR/sshd.log
EOF
log "sshd ready in $(since "$T_START")s; $DIR/env.sh:"
grep '^export' "$DIR/env.sh"
