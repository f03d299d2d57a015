"""Slurm output parsers and the batch script renderer, on output captured from a real Slurm
22.05 (tests/data/slurm/, made by its capture.sh); and the executor's polling logic against a
scripted cluster. No Slurm needed here."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from ccd.errors import ExecutorError
from ccd.executors import slurm_parse as sp
from ccd.executors import slurm_submit
from ccd.executors.base import Launch, StatusRecord, parse_status
from ccd.executors.shell import CommandResult
from ccd.executors.slurm import SlurmExecutor, cluster_run_dir, job_tag, render_batch
from ccd.models import ExitStatus
from ccd.spec.hosts import Resources, SlurmOptions

DATA = Path(__file__).resolve().parents[1] / "data" / "slurm"


def captured(name: str) -> str:
    return (DATA / name).read_text()


def by_name(rows: dict[str, sp.JobRow]) -> dict[str, sp.JobRow]:
    return {row.name.split(":")[2]: row for row in rows.values()}


def test_sbatch_parsable_gives_the_job_id() -> None:
    assert sp.parse_sbatch(captured("sbatch_parsable.txt")) == "22"
    assert sp.parse_sbatch("4242;cluster2\n") == "4242"
    with pytest.raises(ValueError, match="no job id"):
        sp.parse_sbatch("sbatch: error: Batch job submission failed\n")


def test_squeue_pending_reasons_and_running() -> None:
    rows = by_name(sp.parse_squeue(captured("squeue_submitted.txt")))
    assert rows["sig"] == sp.JobRow("15", "PENDING", "Resources", 0, 0, "ccd:cap:sig:1")
    assert (rows["big"].state, rows["big"].reason) == ("PENDING", "Priority")
    assert rows["held"].reason == "JobHeldUser"
    assert (rows["ok"].state, rows["ok"].reason) == ("RUNNING", None)
    assert not any(row.finished for row in rows.values())


def test_squeue_final_states_and_raw_exit_codes() -> None:
    rows = by_name(sp.parse_squeue(captured("squeue_final.txt")))
    assert len(rows) == 9
    assert (rows["ok"].state, rows["ok"].code, rows["ok"].signal) == ("COMPLETED", 0, 0)
    assert (rows["fail"].state, rows["fail"].code, rows["fail"].signal) == ("FAILED", 3, 0)
    assert (rows["sig"].reason, rows["sig"].signal) == ("JobLaunchFailure", 9)
    assert (rows["timeout"].state, rows["timeout"].reason) == ("TIMEOUT", "TimeLimit")
    assert rows["heldcancel"].state == "CANCELLED"
    assert all(row.finished for row in rows.values())


def test_squeue_by_name_and_invalid_id_output() -> None:
    rows = sp.parse_squeue(captured("squeue_by_name.txt"))
    assert sorted(row.name for row in rows.values()) == ["ccd:cap:ok:1", "ccd:cap:run:1"]
    assert sp.parse_squeue(captured("squeue_invalid_id.txt")) == {}


def test_sacct_states_strip_cancelled_by_and_skip_steps() -> None:
    rows = by_name(sp.parse_sacct(captured("sacct_final.txt")))
    assert rows["run"] == sp.JobRow("19", "CANCELLED", None, 0, 0, "ccd:cap:run:1")
    assert (rows["fail"].state, rows["fail"].code) == ("FAILED", 3)
    assert (rows["sig"].code, rows["sig"].signal) == (0, 9)
    assert rows["timeout"].state == "TIMEOUT"
    assert rows["held"].reason == "JobHeldUser"
    with_steps = sp.parse_sacct(captured("sacct_with_steps.txt"))
    assert sorted(with_steps, key=int) == [str(i) for i in range(13, 22)]


def test_exit_code_decoders() -> None:
    assert sp.decode_wait_status("768") == (3, 0)
    assert sp.decode_wait_status("15") == (0, 15)
    assert sp.decode_wait_status("N/A") == (None, None)
    assert sp.parse_exit_pair("0:9") == (0, 9)
    assert sp.parse_exit_pair("") == (None, None)


EXITED_3 = StatusRecord(pid=1, exit_code=3)
KILLED_TERM = StatusRecord(pid=1, exit_code=143)
NO_EXIT = StatusRecord(pid=1)
NEVER_RAN = StatusRecord()


@pytest.mark.parametrize(
    ("row", "record", "expected"),
    [
        # captured rows (squeue_final.txt / sacct_final.txt)
        (("COMPLETED", 0, 0), StatusRecord(pid=1, exit_code=0), ExitStatus(0)),
        (("FAILED", 3, 0), EXITED_3, ExitStatus(3)),
        (("FAILED", 0, 9), NO_EXIT, ExitStatus(None, 9)),
        (("TIMEOUT", 0, 15), KILLED_TERM, ExitStatus(143, 15, "timeout")),
        (("TIMEOUT", 0, 0), NO_EXIT, ExitStatus(None, None, "timeout")),
        (("CANCELLED", 0, 15), KILLED_TERM, ExitStatus(143, 15, "cancelled")),
        (("CANCELLED", 0, 0), NEVER_RAN, ExitStatus(None, None, "cancelled")),
        # states this single node cannot produce (no memory cgroups, preemption or 2nd node)
        (("OUT_OF_MEMORY", 0, 9), NO_EXIT, ExitStatus(None, 9, "out_of_memory")),
        (("NODE_FAIL", 0, 0), NO_EXIT, ExitStatus(None, None, "node_fail")),
        (("BOOT_FAIL", 0, 0), NEVER_RAN, ExitStatus(None, None, "node_fail")),
        (("PREEMPTED", 0, 15), KILLED_TERM, ExitStatus(143, 15, "preempted")),
        (("DEADLINE", 0, 0), NEVER_RAN, ExitStatus(None, None, "timeout")),
        # an exit code of 0 wins whatever Slurm says; no exit record and nothing to blame
        (("TIMEOUT", 0, 0), StatusRecord(pid=1, exit_code=0), ExitStatus(0)),
        (("COMPLETED", 0, 0), NEVER_RAN, ExitStatus(None, None, "lost")),
        (("FAILED", 2, 0), NEVER_RAN, ExitStatus(2)),
    ],
)
def test_classify(row: tuple[str, int, int], record: StatusRecord, expected: ExitStatus) -> None:
    state, code, signum = row
    assert sp.classify(sp.JobRow("1", state, None, code, signum), record) == expected


def test_classify_without_any_slurm_record() -> None:
    assert sp.classify(None, EXITED_3) == ExitStatus(3)
    assert sp.classify(None, NO_EXIT) == ExitStatus(None, reason="lost")


def test_status_dump_of_the_batched_read() -> None:
    data = b"/r/a/status\0start pid=5 host=n1 uptime=1.5\nexit code=0 uptime=2\n\0/r/b/status\0\0"
    files = sp.parse_status_dump(data)
    assert parse_status(files["/r/a/status"]).exit_code == 0
    assert files["/r/b/status"] == ""
    assert sp.parse_status_dump(b"") == {}


def test_durations() -> None:
    assert sp.parse_duration_s("UNLIMITED") is None
    assert sp.parse_duration_s("30") == 1800
    assert sp.parse_duration_s("1-00:00:00") == 86400
    assert sp.parse_duration_s("2:30") == 150
    assert sp.parse_duration_s("01:00:00") == 3600


def test_partition_nodes_and_limits() -> None:
    parts = sp.parse_partitions(captured("scontrol_partition.txt"))
    debug = parts["debug"]
    assert (debug.default, debug.state, debug.max_time_s, debug.max_nodes) == (
        True,
        "UP",
        None,
        None,
    )
    nodes = sp.parse_sinfo_nodes(captured("sinfo_nodes.txt"))
    assert nodes == [sp.NodeInfo("vm", 2, 21693, 0, ("debug",))]
    assert sp.limit_problems(Resources(cpus=2, mem_kib=1024, time_s=10**6), debug, nodes) == []
    problems = sp.limit_problems(
        Resources(cpus=3, mem_kib=22000 * 1024, nodes=2, gpus=1), debug, nodes
    )
    assert len(problems) == 4, problems
    tight = sp.PartitionInfo("short", max_time_s=600, max_nodes=1, max_mem_per_node_mib=100)
    on_short = [sp.NodeInfo("vm", 2, 21693, 4, ("short",))]
    problems = sp.limit_problems(Resources(time_s=3600, mem_kib=200 * 1024), tight, on_short)
    assert [p.split()[0] for p in problems] == ["time", "mem"]
    assert "MaxTime 00:10:00" in problems[0]
    assert sp.limit_problems(Resources(gpus=4), tight, on_short) == []


def test_gres_gpu_counts() -> None:
    text = "g1|64|512000|gpu:a100:4(S:0-1)|gpu\ng2|64|512000|gpu:2,tmpdisk:100|gpu\n"
    assert [n.gpus for n in sp.parse_sinfo_nodes(text)] == [4, 2]


def test_sdiag_rpc_counts_by_message_type_only() -> None:
    counts = sp.parse_sdiag_rpcs(captured("sdiag.txt"))
    assert counts["REQUEST_JOB_INFO"] == 12
    assert counts["REQUEST_SUBMIT_BATCH_JOB"] == 11
    assert counts["REQUEST_KILL_JOB"] == 4
    assert "root" not in counts
    assert len(counts) == 12


def _launch(tmp_path: Path, resources: Resources | None = None, **env: str) -> Launch:
    run_dir = tmp_path / "runs" / "wf1" / "train" / "2"
    return Launch(
        "wf1",
        "train",
        2,
        run_dir,
        run_dir / "inline.sh",
        ("sh", "./inline.sh", "a b"),
        env,
        inline="echo hi",
        resources=resources,
    )


def test_render_batch_from_resources_over_host_defaults(tmp_path: Path) -> None:
    options = SlurmOptions(
        partition="debug", account="lab", resources=Resources(cpus=1, time_s=600)
    )
    res = Resources(cpus=4, mem_kib=4 * 1024**2, gpus=1, qos="high", sbatch_args=("--exclusive",))
    script, argv = render_batch(_launch(tmp_path, res, GREETING="it's me"), options)
    run_dir = str(tmp_path / "runs" / "wf1" / "train" / "2")
    sbatch = [line.removeprefix("#SBATCH ") for line in script.splitlines() if "#SBATCH" in line]
    assert sbatch == [
        "--job-name=ccd:wf1:train:2",
        f"--chdir={run_dir}",
        f"--output={run_dir}/slurm.out",
        "--no-requeue",
        "--partition=debug",
        "--account=lab",
        "--qos=high",
        "--cpus-per-task=4",
        "--gpus=1",
        f"--mem={4 * 1024**2}K",
        "--time=00:10:00",
        "--exclusive",
    ]
    assert "export GREETING='it'\"'\"'s me'" in script
    assert script.rstrip().endswith("exec sh ./wrapper.sh sh ./inline.sh 'a b'")
    assert argv == ["sbatch", "--parsable", f"{run_dir}/job.sbatch"]


def test_render_batch_over_ssh_uses_the_cluster_root(tmp_path: Path) -> None:
    options = SlurmOptions(via="login", root="/scratch/me/ccd")
    launch = _launch(tmp_path)
    assert cluster_run_dir(launch, options) == "/scratch/me/ccd/wf1/train/2"
    assert job_tag("wf1", "train", 2) == "ccd:wf1:train:2"
    script, argv = render_batch(launch, options)
    assert "#SBATCH --chdir=/scratch/me/ccd/wf1/train/2" in script
    assert "--partition" not in script
    assert argv[-1] == "/scratch/me/ccd/wf1/train/2/job.sbatch"


def test_render_batch_refuses_a_bad_environment_name(tmp_path: Path) -> None:
    launch = _launch(tmp_path, None, **{"BAD;rm": "x"})
    with pytest.raises(ExecutorError, match="BAD;rm"):
        render_batch(launch, SlurmOptions())


def test_newest_job_by_name_and_chunks() -> None:
    found: dict[str, sp.JobRow] = {}
    sp.newest_by_name(
        {"9": sp.JobRow("9", "COMPLETED", name="t"), "12": sp.JobRow("12", "PENDING", name="t")},
        found,
    )
    sp.newest_by_name({"10": sp.JobRow("10", "FAILED", name="t")}, found)
    assert found["t"].job_id == "12"
    assert [list(c) for c in sp.chunks([1, 2, 3, 4, 5], 2)] == [[1, 2], [3, 4], [5]]


# -- the executor's polling logic, against a scripted cluster (no Slurm needed) -------------


class FakeCluster:
    """A `Shell` that plays Slurm: jobs by id, status files in a dict, every call logged."""

    def __init__(self) -> None:
        self.jobs: dict[str, list[str]] = {}  # id -> [name, state, reason, wait status]
        self.purged: set[str] = set()  # gone from squeue (older than MinJobAge)
        self.accounting = True
        self.unreachable = False
        self.lose_sbatch_reply = False  # submit, then fail as if the connection dropped
        self.files: dict[str, bytes] = {}
        self.calls: list[tuple[float, list[str]]] = []

    def commands(self, name: str) -> list[list[str]]:
        return [argv for _, argv in self.calls if argv[0] == name]

    async def run(
        self, argv: Sequence[str], *, stdin: bytes | None = None, timeout_s: float | None = None
    ) -> CommandResult:
        argv = list(argv)
        self.calls.append((asyncio.get_running_loop().time(), argv))
        if self.unreachable and argv[0] != "sh":
            return CommandResult(1, b"", b"error: Unable to contact slurm controller")
        handler = getattr(self, f"_{argv[0]}")
        result: CommandResult = handler(argv)
        return result

    async def write_files(self, files: Mapping[str, bytes], *, mode: int = 0o644) -> None:
        self.files.update(files)

    async def read_file(self, path: str, offset: int = 0, limit: int = 1 << 20) -> bytes:
        return self.files.get(path, b"")[offset : offset + limit]

    def _sbatch(self, argv: list[str]) -> CommandResult:
        script = self.files[argv[-1]].decode()
        name = script.split("--job-name=", 1)[1].split()[0]
        job_id = str(100 + len(self.jobs))
        self.jobs[job_id] = [name, "PENDING", "Priority", "0"]
        if self.lose_sbatch_reply:
            self.lose_sbatch_reply = False
            raise ExecutorError("connection lost")
        return CommandResult(0, f"{job_id}\n".encode(), b"")

    def _selected(self, argv: list[str]) -> list[str]:
        if "-j" in argv:
            return argv[argv.index("-j") + 1].split(",")
        names = next(a for a in argv if a.startswith("--name=")).split("=", 1)[1].split(",")
        return [i for i, job in self.jobs.items() if job[0] in names]

    def _squeue(self, argv: list[str]) -> CommandResult:
        ids = [i for i in self._selected(argv) if i in self.jobs and i not in self.purged]
        lines = [
            f"{i}|{self.jobs[i][1]}|{self.jobs[i][2]}|{self.jobs[i][3]}|{self.jobs[i][0]}|"
            for i in ids
        ]
        return CommandResult(0, "".join(f"{line}\n" for line in lines).encode(), b"")

    def _sacct(self, argv: list[str]) -> CommandResult:
        if not self.accounting:
            return CommandResult(1, b"", b"sacct: error: Slurm accounting storage is disabled")
        ids = [i for i in self._selected(argv) if i in self.jobs]
        figures = "00:00.010|1000K|00:00:01|1000M|1|01:00:00"  # TotalCPU ... Timelimit
        lines = [f"{i}|{self.jobs[i][0]}|{self.jobs[i][1]}|0:0|None|{figures}\n" for i in ids]
        return CommandResult(0, "".join(lines).encode(), b"")

    def _sinfo(self, argv: list[str]) -> CommandResult:
        return CommandResult(0, b"up\n", b"")

    def _scancel(self, argv: list[str]) -> CommandResult:
        self.jobs[argv[-1]][1:3] = ["CANCELLED", "None"]
        return CommandResult(0, b"", b"")

    def _sh(self, argv: list[str]) -> CommandResult:
        if tuple(argv[:4]) == SlurmExecutor.READ_STATUS:
            out = b"".join(
                p.encode() + b"\0" + self.files[p] + b"\0" for p in argv[4:] if p in self.files
            )
            return CommandResult(0, out, b"")
        if tuple(argv[:4]) == SlurmExecutor.CLAIM:
            path = f"{argv[4]}/status"
            if path in self.files:
                return CommandResult(1, b"", b"exists")
            self.files[path] = b"claimed\n"
            return CommandResult(0, b"", b"")
        raise AssertionError(argv)


# One sbatch per job: arrays are tested against the real Slurm (test_slurm_arrays.py).
FAST_POLL = SlurmOptions(poll_interval_s=0.08, poll_interval_min_s=0.01, arrays=False)
DONE = b"start pid=7 host=n1 uptime=1\nexit code=0 uptime=2\n"


def _attempt(tmp_path: Path, job: str) -> Launch:
    run_dir = tmp_path / "wf1" / job / "1"
    return Launch(
        "wf1", job, 1, run_dir, run_dir / "inline.sh", ("sh", "./inline.sh"), {}, inline="true"
    )


def _status_path(launch: Launch) -> str:
    return f"{launch.run_dir}/status"


async def test_one_squeue_per_round_for_many_jobs_and_reasons_on_change(tmp_path: Path) -> None:
    cluster = FakeCluster()
    ex = SlurmExecutor("hpc", cluster, FAST_POLL)
    told: list[tuple[str, str, str | None]] = []
    ex.listen(lambda h, state, reason: told.append((h.job, state, reason)), lambda: None)
    launches = [_attempt(tmp_path, f"j{i}") for i in range(50)]
    handles = [await ex.start(launch) for launch in launches]
    waits = [asyncio.ensure_future(ex.wait(h)) for h in handles]
    first = len(ex.round_commands)  # rounds during the submissions (the budget paces sbatch)
    try:
        async with asyncio.timeout(5):
            while len(ex.round_commands) < first + 3:  # noqa: ASYNC110 (counters, no events)
                await asyncio.sleep(0.01)
        cluster.jobs["100"][1:3] = ["RUNNING", "None"]
        for launch in launches:
            cluster.files[_status_path(launch)] = DONE
        async with asyncio.timeout(5):
            results = await asyncio.gather(*waits)
    finally:
        await ex.close()
    assert all(r == ExitStatus(0) for r in results)
    assert set(ex.round_commands) <= {0, 1}
    squeues = cluster.commands("squeue")
    assert max(len(argv[argv.index("-j") + 1].split(",")) for argv in squeues) == 50
    assert told.count(("j1", "pending", "Priority")) == 1  # told once, not every round
    assert cluster.commands("sacct") == []


async def test_jobs_gone_from_squeue_are_settled_by_one_sacct(tmp_path: Path) -> None:
    cluster = FakeCluster()
    ex = SlurmExecutor("hpc", cluster, FAST_POLL)
    a, b = _attempt(tmp_path, "a"), _attempt(tmp_path, "b")
    ha, hb = await ex.start(a), await ex.start(b)
    cluster.jobs["100"][1] = "TIMEOUT"
    cluster.jobs["101"][1] = "CANCELLED"
    cluster.purged |= {"100", "101"}
    try:
        async with asyncio.timeout(5):
            results = [await ex.wait(ha), await ex.wait(hb)]
    finally:
        await ex.close()
    assert [r.reason for r in results] == ["timeout", "cancelled"]
    assert [argv[-1] for argv in cluster.commands("sacct")] == ["100,101"]


async def test_without_accounting_the_status_file_settles(tmp_path: Path) -> None:
    cluster = FakeCluster()
    cluster.accounting = False
    ex = SlurmExecutor("hpc", cluster, FAST_POLL)
    a, b = _attempt(tmp_path, "a"), _attempt(tmp_path, "b")
    ha, hb = await ex.start(a), await ex.start(b)
    cluster.purged |= {"100", "101"}
    cluster.files[_status_path(a)] = b"start pid=7 host=n1 uptime=1\nexit code=5 uptime=2\n"
    try:
        async with asyncio.timeout(5):
            results = [await ex.wait(ha), await ex.wait(hb)]
    finally:
        await ex.close()
    assert results == [ExitStatus(5), ExitStatus(None, reason="lost")]
    assert len(cluster.commands("sacct")) == 1  # detected once, then not asked again


async def test_interval_grows_while_quiet_and_resets_on_news(tmp_path: Path) -> None:
    cluster = FakeCluster()
    options = SlurmOptions(poll_interval_s=0.32, poll_interval_min_s=0.02, arrays=False)
    ex = SlurmExecutor("hpc", cluster, options)
    handle = await ex.start(_attempt(tmp_path, "a"))
    waiter = asyncio.ensure_future(ex.wait(handle))
    try:
        async with asyncio.timeout(5):
            while len(cluster.commands("squeue")) < 6:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
        quiet = [t for t, argv in cluster.calls if argv[0] == "squeue"]
        await ex.start(_attempt(tmp_path, "b"))  # news: poll soon again
        count = len(cluster.commands("squeue"))
        async with asyncio.timeout(5):
            while len(cluster.commands("squeue")) == count:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
        after = [t for t, argv in cluster.calls if argv[0] == "squeue"][count]
        cluster.files[_status_path(_attempt(tmp_path, "a"))] = DONE
        async with asyncio.timeout(5):
            await waiter
    finally:
        await ex.close()
    gaps = [b - a for a, b in itertools.pairwise(quiet)]
    assert gaps[-1] >= 0.3 and gaps[0] < gaps[-1] / 3, gaps  # 0.02 doubling up to 0.32
    assert after - quiet[-1] < 0.2  # reset by the submission: no wait for another 0.32 s


async def test_lost_sbatch_reply_finds_the_job_by_tag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(slurm_submit, "UNSURE_RETRY_S", (0.01,))
    cluster = FakeCluster()
    cluster.lose_sbatch_reply = True
    ex = SlurmExecutor("hpc", cluster, FAST_POLL)
    try:
        handle = await ex.start(_attempt(tmp_path, "a"))
    finally:
        await ex.close()
    assert handle.job_id == "100"
    assert len(cluster.commands("sbatch")) == 1 and len(cluster.jobs) == 1


async def test_unreachable_controller_marks_the_host(tmp_path: Path) -> None:
    cluster = FakeCluster()
    ex = SlurmExecutor("hpc", cluster, FAST_POLL)
    changes: list[str] = []
    ex.listen(lambda h, s, r: None, lambda: changes.append(ex.health().state))
    handle = await ex.start(_attempt(tmp_path, "a"))
    cluster.unreachable = True
    try:
        async with asyncio.timeout(5):
            while ex.health().state == "ok":  # noqa: ASYNC110
                await asyncio.sleep(0.005)
            cluster.files[_status_path(_attempt(tmp_path, "a"))] = DONE
            assert await ex.wait(handle) == ExitStatus(0)  # status files need no Slurm
            assert ex.health().state == "unreachable"
            # Nothing is watched: the poller probes on its own (sacct, for the ended job's
            # figures, or sinfo once there is nothing left to ask).
            cluster.unreachable = False
            while ex.health().state != "ok":  # noqa: ASYNC110
                await asyncio.sleep(0.005)
    finally:
        await ex.close()
    assert changes == ["unreachable", "ok"]
    assert cluster.commands("sinfo") or cluster.commands("sacct")
