"""The submit queue's decisions, against a scripted cluster: arrays and their size, what
refusals mean, halving under a submit limit, holding with backoff, and never submitting twice
when sbatch got no answer. (The real-Slurm side is in tests/integration/test_slurm_arrays.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from ccd.errors import ExecutorError
from ccd.executors import slurm_submit
from ccd.executors.base import Launch
from ccd.executors.shell import CommandResult
from ccd.executors.slurm_arrays import MARKER_NAME, parse_marker, render_array
from ccd.executors.slurm_parse import JobRow
from ccd.executors.slurm_submit import Cluster, Entry, Refusal, SubmitQueue, refusal, short_reason

DATA = Path(__file__).resolve().parents[1] / "data" / "slurm"
LIMIT = "sbatch: error: QOSMaxSubmitJobPerUserLimit\nsbatch: error: Batch job submission failed: Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)\n"  # noqa: E501


FAILED = "sbatch: error: Batch job submission failed: "


@pytest.mark.parametrize(
    ("stderr", "kind"),
    [
        (LIMIT, Refusal.LATER),
        ("sbatch: error: AssocMaxSubmitJobLimit\n", Refusal.LATER),
        (FAILED + "Resource temporarily unavailable", Refusal.LATER),
        (FAILED + "Socket timed out on send/recv operation", Refusal.UNSURE),
        (FAILED + "Unable to contact slurm controller (connect failure)", Refusal.UNSURE),
        ((DATA / "sbatch_invalid_partition.txt").read_text(), Refusal.NEVER),
        (FAILED + "Invalid account or account/partition combination specified", Refusal.NEVER),
        (FAILED + "Requested node configuration is not available", Refusal.NEVER),
        ("something nobody has seen before", Refusal.NEVER),
    ],
)
def test_refusals_read_as_never_later_or_unsure(stderr: str, kind: Refusal) -> None:
    assert refusal(stderr) is kind


def test_the_reason_shown_is_sbatchs_last_line_without_its_prefix() -> None:
    assert short_reason((DATA / "sbatch_invalid_partition.txt").read_text()) == (
        "invalid partition specified: no-such-partition; Invalid partition name specified"
    )
    assert short_reason(LIMIT).startswith("QOSMaxSubmitJobPerUserLimit; Job violates")


def test_an_array_script_picks_its_elements_run_dir(tmp_path: Path) -> None:
    import subprocess

    dirs = [str(tmp_path / f"d{i}") for i in range(3)] + [str(tmp_path / "it's")]
    for d in dirs:
        Path(d).mkdir()
        (Path(d) / "job.sbatch").write_text("pwd\n")
    script, argv = render_array("ccd:w:@ab", dirs, ["--time=00:10:00"], 2, str(tmp_path))
    assert "#SBATCH --array=0-3%2" in script and "#SBATCH --job-name=ccd:w:@ab" in script
    assert "#SBATCH --time=00:10:00" in script and argv[-1] == f"{tmp_path}/job.sbatch"
    (tmp_path / "a.sh").write_text(script)
    for index in (3, 1):
        out = subprocess.run(["sh", str(tmp_path / "a.sh")], capture_output=True, text=True,
                             env={"SLURM_ARRAY_TASK_ID": str(index), "PATH": "/usr/bin:/bin"},
                             check=True)  # fmt: skip
        assert out.stdout.strip() == dirs[index]
    bad = subprocess.run(["sh", str(tmp_path / "a.sh")], env={"SLURM_ARRAY_TASK_ID": "9"},
                         capture_output=True, check=False)  # fmt: skip
    assert bad.returncode == 125


class Scripted:
    """A cluster whose sbatch answers from a script; records every sbatch and file."""

    def __init__(self, answers: Sequence[CommandResult | Exception], max_array: int = 1001,
                 room: int | None = None):  # fmt: skip
        self.answers = list(answers)
        self.room = room  # jobs the cluster still takes (a submit limit); None: any
        self.calls: list[list[str]] = []
        self.files: dict[str, bytes] = {}
        self.lookups: list[str] = []
        self.found: dict[str, JobRow] = {}
        self.max_array = max_array
        self.accepted: list[tuple[str, str]] = []
        self.refused: list[tuple[str, str]] = []
        self.held: list[tuple[str, str | None]] = []
        self.next_id = 100

    def cluster(self) -> Cluster:
        return Cluster(self.sbatch, self.lookup, self.write, self.max_size,
                       lambda e, job_id: self.accepted.append((e.launch.job, job_id)),
                       lambda e, why: self.refused.append((e.launch.job, why)),
                       lambda es: self.held.extend((e.launch.job, e.held) for e in es))  # fmt: skip

    async def sbatch(self, argv: Sequence[str]) -> CommandResult:
        self.calls.append(list(argv))
        answer = self.answers.pop(0) if self.answers else None
        if isinstance(answer, Exception):
            raise answer
        if answer is not None:
            return answer
        script = self.files.get(argv[-1], b"").decode()
        size = int(script.split("--array=0-")[1].split("%")[0].split("\n")[0]) + 1 if (
            "--array=" in script) else 1  # fmt: skip
        if self.room is not None:
            if size > self.room:
                return refused(LIMIT)
            self.room -= size
        self.next_id += 1
        return CommandResult(0, f"{self.next_id}\n".encode(), b"")

    async def lookup(self, tag: str) -> JobRow | None:
        self.lookups.append(tag)
        return self.found.get(tag)

    async def write(self, files: Mapping[str, bytes]) -> None:
        self.files.update(files)

    async def max_size(self) -> int:
        return self.max_array


def refused(stderr: str) -> CommandResult:
    return CommandResult(1, b"", stderr.encode())


def entry(job: str, wf: str = "w", key: tuple[str, ...] = ("--time=00:10:00",)) -> Entry:
    run_dir = f"/c/{wf}/{job}/1"
    launch = Launch(wf, job, 1, Path(run_dir), Path(run_dir) / "run.sh", ("true",), {})
    return Entry(launch, run_dir, (wf, *key), {f"{run_dir}/job.sbatch": b"#!/bin/sh\n"})


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slurm_submit, "HOLD_BACKOFF_S", (0.01, 0.02))
    monkeypatch.setattr(slurm_submit, "UNSURE_RETRY_S", (0.01,))


async def outcomes(entries: Sequence[Entry]) -> list[str | None]:
    return list(await asyncio.gather(*(e.outcome for e in entries)))


async def test_one_moments_attempts_go_as_arrays_per_workflow_and_options() -> None:
    fake = Scripted([])
    queue = SubmitQueue(fake.cluster(), throttle=3)
    a = [entry(f"a{i}") for i in range(5)]
    b = [entry(f"b{i}", key=("--time=01:00:00",)) for i in range(2)]
    c = [entry("c0", wf="v")]
    for e in (*a, *b, *c):
        queue.add(e)
    got = await outcomes([*a, *b, *c])
    assert got == [f"101_{i}" for i in range(5)] + ["102_0", "102_1", "103"]
    assert len(fake.calls) == 3 and queue.arrays == 2
    script = fake.files[fake.calls[0][-1]].decode()
    assert "#SBATCH --array=0-4%3" in script and "#SBATCH --time=00:10:00" in script
    markers = [parse_marker(fake.files[f"/c/w/a{i}/1/{MARKER_NAME}"].decode()) for i in range(5)]
    assert [m[1] for m in markers if m] == [0, 1, 2, 3, 4]
    assert fake.calls[2] == ["sbatch", "--parsable", "/c/v/c0/1/job.sbatch"]  # alone: no array
    await queue.close()


async def test_arrays_stay_within_max_array_size() -> None:
    fake = Scripted([], max_array=4)
    queue = SubmitQueue(fake.cluster(), throttle=None)
    entries = [entry(f"j{i}") for i in range(10)]
    for e in entries:
        queue.add(e)
    got = await outcomes(entries)
    assert [len([g for g in got if g and g.startswith(f"{n}_")]) for n in (101, 102)] == [4, 4]
    assert got[8:] == ["103_0", "103_1"] and len(fake.calls) == 3
    assert "%" not in fake.files[fake.calls[0][-1]].decode().split("--array=")[1].split("\n")[0]
    await queue.close()


async def test_a_submit_limit_halves_the_array_then_holds_the_rest() -> None:
    # The cluster takes 3 more jobs: 8 refused, 4 refused, 2 taken, 1 (of 2) taken, held.
    fake = Scripted([], room=3)
    queue = SubmitQueue(fake.cluster(), throttle=None)
    entries = [entry(f"j{i}") for i in range(8)]
    for e in entries:
        queue.add(e)
    got = await outcomes(entries)
    assert got[:3] == ["101_0", "101_1", "102"]
    assert got[3:] == [None] * 5  # held, saying why
    assert {why for _, why in fake.held} == {
        f"held: sbatch said not now ({short_reason(LIMIT)}); next try in 0s"
    }
    calls = len(fake.calls)
    assert calls == 6  # 8, 4, 2 (taken), 2, 1 (taken), 1: a limit costs about log2(N) tries
    fake.room = 5  # jobs ended: the cluster takes them again, one at first, then doubling
    async with asyncio.timeout(10):
        while len(fake.accepted) < 5:  # noqa: ASYNC110 (the fake records the callback)
            await asyncio.sleep(0.01)
    assert sorted(job for job, _ in fake.accepted) == [f"j{i}" for i in range(3, 8)]
    assert fake.refused == []
    await queue.close()


async def test_a_never_refusal_fails_the_attempts_with_slurms_words() -> None:
    fake = Scripted([refused((DATA / "sbatch_invalid_partition.txt").read_text())])
    queue = SubmitQueue(fake.cluster(), throttle=None)
    entries = [entry("a"), entry("b")]
    for e in entries:
        queue.add(e)
    for e in entries:
        with pytest.raises(ExecutorError, match=r"sbatch failed: .*Invalid partition name"):
            await e.outcome
    assert len(fake.calls) == 1
    await queue.close()


async def test_no_answer_is_looked_up_before_any_second_sbatch() -> None:
    fake = Scripted([ExecutorError("sbatch failed: timed out"), ExecutorError("still down")])
    queue = SubmitQueue(fake.cluster(), throttle=None)
    taken, lost = entry("taken"), entry("lost")
    queue.add(taken)
    fake.found[taken.tag] = JobRow("555", "PENDING", name=taken.tag)
    assert await taken.outcome == "555"  # found by its tag: not submitted again
    assert len(fake.calls) == 1 and fake.lookups == [taken.tag]
    queue.add(lost)  # its sbatch gets no answer, the lookup finds nothing: submitted again
    assert await lost.outcome == "101"
    assert len(fake.calls) == 3
    await queue.close()


async def test_a_held_entry_can_be_taken_out_before_it_goes() -> None:
    fake = Scripted([refused(LIMIT)] * 3)
    queue = SubmitQueue(fake.cluster(), throttle=None)
    a = entry("a")
    queue.add(a)
    assert await a.outcome is None and a.held
    assert queue.cancel(a)
    async with asyncio.timeout(5):
        while queue._task is not None and not queue._task.done():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert fake.accepted == [] and fake.refused == []
    await queue.close()
