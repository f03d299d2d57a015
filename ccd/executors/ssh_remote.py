"""The shell side of the ssh backend: scripts run on a remote host and parsers of their output.

Pure: nothing here talks to a host. Every script is POSIX ``sh`` fed to ``sh -s`` on stdin
(so no command line grows with the number of jobs), every value in it is quoted with
``shlex.quote``, and run directories are only ever named from validated workflow and job
names. One script serves many jobs: a launch script starts a whole batch, a poll script reads
every watched job's status file, liveness and log size in one remote command.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ccd.errors import ExecutorError
from ccd.executors.base import (
    LOG_NAME,
    STATUS_NAME,
    WRAPPER_NAME,
    Launch,
    result_env,
)
from ccd.spec.model import valid_name

_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HEADER_RE = re.compile(r"(?:^|\n)==> (.*?) <==\n")
# Files per `head`/`wc`/`cat` call in a poll: far below any ARG_MAX.
_CHUNK = 500
INLINE_SCRIPT_MAX_BYTES = 256 << 10  # larger scripts (or any with NUL bytes) go by SFTP
_SECTION = "ccd-section"


@dataclass(frozen=True, slots=True)
class RemoteLaunch:
    """One attempt to start: where, what to write there, and what to run."""

    run_dir: str  # absolute remote path
    script_name: str
    script_data: bytes | None  # None: already uploaded (by SFTP)
    argv: tuple[str, ...]
    env: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Launched:
    """What a launch script reported for one attempt: ``started`` (with the wrapper's pid),
    ``exists`` (an earlier launch of the same attempt got there first) or ``failed``."""

    outcome: str
    pid: int | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class PollItem:
    """One watched attempt: its run dir relative to the root, and a pid whose liveness to
    check (the wrapper's, once known)."""

    rel: str
    pid: int | None


@dataclass(frozen=True, slots=True)
class PollResult:
    """What one poll round saw: status text and log size per run dir (absent: no such
    file), and the start ticks of each checked pid that is alive (None: the host has no
    /proc, so liveness is unknown)."""

    status: dict[str, str]
    log_size: dict[str, int]
    alive: dict[int, int | None] | None


# --- paths -------------------------------------------------------------------------------


def rel_run_dir(run_dir: Path) -> str:
    """``<workflow>/<job>/<attempt>`` from a local run dir ``.../<wf>/<job>/<attempt>``: the
    same three components name the remote run dir under the host's root."""
    parts = run_dir.parts[-3:]
    if len(parts) != 3 or not all(map(valid_name, parts[:2])) or not parts[2].isdigit():
        raise ExecutorError(f"cannot map run dir {run_dir} to a remote one")
    return "/".join(parts)


def resolve_root(root: str, home: str) -> str:
    """The remote root with ``~`` expanded against the remote home (relative: under it)."""
    if "\n" in root or "\0" in root:
        raise ExecutorError(f"invalid remote root {root!r}")
    if root == "~" or root.startswith("~/"):
        root = home.rstrip("/") + root[1:]
    elif not root.startswith("/"):
        root = f"{home.rstrip('/')}/{root}"
    return str(PurePosixPath(root))


def job_env(env: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """The job's environment additions, checked: names must be shell names."""
    merged = {**env, **extra}
    bad = sorted(n for n in merged if _ENV_NAME_RE.fullmatch(n) is None)
    if bad:
        raise ExecutorError(f"invalid environment variable name(s): {', '.join(bad)}")
    if any("\0" in v for v in merged.values()):
        raise ExecutorError("environment values must not contain NUL")
    return merged


def ccd_env(launch: Launch, remote_dir: str) -> dict[str, str]:
    return {
        "CCD_WORKFLOW": launch.workflow_id,
        "CCD_JOB": launch.job,
        "CCD_ATTEMPT": str(launch.attempt),
        "CCD_RUN_DIR": remote_dir,
        **result_env(remote_dir),
    }


def script_bytes(launch: Launch) -> bytes | None:
    """The script's text to send inside the launch command (a small local read); None if
    it must go by SFTP."""
    data = launch.inline.encode() if launch.inline is not None else launch.script.read_bytes()
    if b"\0" in data or len(data) > INLINE_SCRIPT_MAX_BYTES:
        return None
    return data


# --- launch ------------------------------------------------------------------------------

_LAUNCH_HEAD = """\
umask 022
_ccd_s=
if command -v setsid >/dev/null 2>&1; then _ccd_s=setsid; else set -m; fi
"""


def launch_script(launches: Sequence[RemoteLaunch], wrapper: bytes) -> bytes:
    """Start each attempt detached in its own session; print one ``ccd-launch I ...`` line
    per attempt. An attempt whose ``status`` exists is never touched again (it is running,
    ran, or was claimed): that makes relaunching a batch after a lost connection safe."""
    lines = [_LAUNCH_HEAD, f"_ccd_w() {{ printf '%s' {_quote_bytes(wrapper)}; }}\n"]
    dirs = " ".join(shlex.quote(launch.run_dir) for launch in launches)
    lines.append(f"mkdir -p -- {dirs} 2>/dev/null\n")
    lines.extend(_launch_one(i, launch) for i, launch in enumerate(launches))
    return "".join(lines).encode("utf-8", "surrogateescape")


def _launch_one(index: int, launch: RemoteLaunch) -> str:
    tag = f"ccd-launch {index}"
    write = f"{{ [ -e {WRAPPER_NAME} ] || _ccd_w > {WRAPPER_NAME}; }}"
    if launch.script_data is not None:
        name = shlex.quote(launch.script_name)
        write += f" && printf '%s' {_quote_bytes(launch.script_data)} > {name}"
    assigns = " ".join(f"{k}={shlex.quote(v)}" for k, v in launch.env.items())
    command = f"{assigns} $_ccd_s sh {WRAPPER_NAME} {shlex.join(launch.argv)}"
    return (
        f"if cd {shlex.quote(launch.run_dir)} 2>/dev/null; then\n"
        f"  if [ -e {STATUS_NAME} ]; then echo '{tag} exists'\n"
        f"  elif {{ {write}; }} 2>/dev/null; then\n"
        f"    {command} </dev/null >/dev/null 2>&1 &\n"
        f'    echo "{tag} started $!"\n'
        f"  else echo '{tag} failed cannot write the run dir'; fi\n"
        f"else echo '{tag} failed cannot create the run dir'; fi\n"
    )


def parse_launch(output: str, count: int) -> list[Launched]:
    """One `Launched` per attempt of a launch script; a missing line means it did not get
    that far (e.g. the connection dropped)."""
    found: dict[int, Launched] = {}
    for line in output.splitlines():
        words = line.split(" ", 3)
        if len(words) < 3 or words[0] != "ccd-launch" or not words[1].isdigit():
            continue
        index, outcome, rest = int(words[1]), words[2], words[3] if len(words) > 3 else None
        if outcome == "started":
            found[index] = Launched("started", pid=_int(rest))
        elif outcome == "exists":
            found[index] = Launched("exists")
        else:
            found[index] = Launched("failed", reason=rest or outcome)
    return [found.get(i, Launched("failed", reason="no answer")) for i in range(count)]


# --- poll --------------------------------------------------------------------------------


def poll_script(root: str, items: Sequence[PollItem]) -> bytes:
    """Read, for every item: whether its pid lives (``/proc/PID/stat``, checked *first*, so
    that "gone" plus "no exit record" read afterwards really means the wrapper died), its
    status file and its log's size. A handful of processes whatever the number of jobs."""
    pids = sorted({item.pid for item in items if item.pid is not None})
    out = [f"cd {shlex.quote(root)} 2>/dev/null || exit 0\n"]
    out.append(f"[ -r /proc/self/stat ] && echo '{_SECTION} procs'\n")
    for chunk in _chunks([f"/proc/{pid}/stat" for pid in pids]):
        out.append(f"cat -- {chunk} 2>/dev/null\n")
    out.append(f"printf '\\n{_SECTION} status\\n'\n")
    for n, chunk in enumerate(_chunks([f"{i.rel}/{STATUS_NAME}" for i in items])):
        # /dev/null first: head then always prints a header, even for one file; between
        # chunks a newline stands in for the separator head puts before each header.
        sep = "printf '\\n'; " if n else ""
        out.append(f"{sep}head -n 8 -- /dev/null {chunk} 2>/dev/null\n")
    out.append(f"printf '\\n{_SECTION} sizes\\n'\n")
    for chunk in _chunks([f"{i.rel}/{LOG_NAME}" for i in items]):
        out.append(f"wc -c -- {chunk} 2>/dev/null\n")
    return "".join(out).encode()


def parse_poll(output: str) -> PollResult:
    sections = _split_sections(output)
    return PollResult(
        status=_parse_heads(sections.get("status", "")),
        log_size=_parse_sizes(sections.get("sizes", "")),
        alive=_parse_procs(sections["procs"]) if "procs" in sections else None,
    )


def _split_sections(output: str) -> dict[str, str]:
    parts = re.split(rf"(?:^|\n){_SECTION} (\w+)\n", output)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def _parse_heads(text: str) -> dict[str, str]:
    """``head``'s multi-file output back into {run dir: file content}, exactly: each file's
    content ends where the newline before the next header begins."""
    parts = _HEADER_RE.split(text)
    result: dict[str, str] = {}
    for name, content in zip(parts[1::2], parts[2::2], strict=True):
        if name.endswith("/" + STATUS_NAME):
            result[name[: -len(STATUS_NAME) - 1]] = content
    return result


def _parse_sizes(text: str) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for line in text.splitlines():
        size, _, name = line.strip().partition(" ")
        if name.endswith("/" + LOG_NAME) and size.isdigit():
            sizes[name[: -len(LOG_NAME) - 1]] = int(size)
    return sizes


def _parse_procs(text: str) -> dict[int, int | None]:
    alive: dict[int, int | None] = {}
    for line in text.splitlines():
        pid = line.split(" ", 1)[0]
        if not pid.isdigit():
            continue
        fields = line[line.rfind(")") + 2 :].split()
        state = fields[0] if fields else "Z"
        if state not in ("Z", "X"):  # a zombie has finished
            alive[int(pid)] = _int(fields[19]) if len(fields) > 19 else None
    return alive


def _chunks(words: list[str]) -> list[str]:
    return [
        " ".join(shlex.quote(w) for w in words[i : i + _CHUNK])
        for i in range(0, len(words), _CHUNK)
    ]


# --- reattach and signals ------------------------------------------------------------------


def claim_script(run_dir: str) -> bytes:
    """Claim an attempt that never started (create ``status`` exclusively, as the wrapper
    does), or print the status that is there: ``ccd-claim claimed`` / ``ccd-claim exists``
    followed by the file."""
    d = shlex.quote(run_dir)
    return (
        f"mkdir -p -- {d} 2>/dev/null; cd {d} || {{ echo 'ccd-claim error'; exit 0; }}\n"
        f"if (set -C; printf 'claimed\\n' > {STATUS_NAME}) 2>/dev/null; "
        f"then echo 'ccd-claim claimed'\n"
        f"else echo 'ccd-claim exists'; cat {STATUS_NAME}; fi\n"
    ).encode()


def parse_claim(output: str) -> tuple[str, str]:
    """("claimed" | "exists" | "error", status text)."""
    first, _, rest = output.partition("\n")
    outcome = first.removeprefix("ccd-claim ").strip()
    return (outcome if outcome in ("claimed", "exists") else "error"), rest


def kill_script(pid: int, ticks: int | None, signum: int) -> bytes:
    """Signal the process group ``pid`` leads, if ``pid`` is still the process that started
    at ``ticks`` (field 22 of /proc/PID/stat: a reused pid is left alone)."""
    check = ""
    if ticks is not None:
        check = (
            f"[ -r /proc/{pid}/stat ] || exit 0\n"
            f"read -r l < /proc/{pid}/stat || exit 0\n"
            "set -- ${l##*) }\n"
            "[ $# -ge 20 ] || exit 0\n"
            "shift 19\n"
            f'[ "$1" = {ticks} ] || exit 0\n'
        )
    # Not "kill -N -- -PID": dash takes "--" for a pid. After the signal, "-PID" is a group.
    return f"{check}kill -{signum} -{pid} 2>/dev/null\nexit 0\n".encode()


def _quote_bytes(data: bytes) -> str:
    # Bytes that are not UTF-8 survive the round trip through str and back unchanged.
    return shlex.quote(data.decode("utf-8", "surrogateescape"))


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
