"""Reading matrices, resources given as references and fragments; expanding members;
resolving references; writing specs back (export) so that they read back the same."""

from __future__ import annotations

from pathlib import Path

import pytest

from ccd.errors import SpecError
from ccd.spec import parse
from ccd.spec.dump import to_yaml, workflow_mapping
from ccd.spec.hosts import Resources
from ccd.spec.refs import RefError
from ccd.spec.templates import resolve

SLURM = "hosts:\n  hpc: {type: slurm, partition: p}\n"


def _parse(text: str, **kwargs: object):
    return parse(text, source=Path("/w/wf.yaml"), base_dir=Path("/w"), **kwargs)  # type: ignore[arg-type]


def _problems(text: str, **kwargs: object) -> list[str]:
    with pytest.raises(SpecError) as err:
        _parse(text, **kwargs)
    return [str(p) for p in err.value.problems]


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        ("[1, 2]", "expected a mapping of keys to lists of values"),
        ("{lr: []}", "matrix key 'lr' has no values"),
        ("{lr: 0.1}", "expected a list of values, or one ${{ jobs.NAME.outputs.KEY }}"),
        ("{a-b: [1]}", "invalid matrix key 'a-b'"),
        ("{include: [1]}", "'include' expects a list of mappings"),
        ("{exclude: [{x: 1}]}", "the matrix has no values"),
        ("{a: [1], b: ['x ${{ jobs.p.outputs.k }}']}", "a value in a list cannot hold a"),
        ("{a: [1, 2], b: '${{ jobs.p.outputs.k }}'}", None),
    ],
)
def test_matrix_fields_are_checked(matrix: str, message: str | None) -> None:
    text = f"jobs:\n  p: {{run: x}}\n  t:\n    needs: [p]\n    run: x\n    matrix: {matrix}\n"
    if message is None:
        assert list(_parse(text).jobs) == ["p", "t"]  # expands once p has run
        return
    [problem] = _problems(text)
    assert problem.startswith("/w/wf.yaml:6: job 't': field 'matrix': ") and message in problem


def test_a_member_name_may_not_clash_with_a_job() -> None:
    [problem] = _problems("jobs:\n  t.n-1: {run: x}\n  t: {run: x, matrix: {n: [1]}}\n")
    assert "its member 't.n-1' clashes with a job of that name" in problem


def test_matrix_values_fill_run_args_env_and_resources() -> None:
    spec = _parse(
        SLURM + "jobs:\n  t:\n    host: hpc\n    matrix: {cpus: [2], mem: [1G]}\n"
        "    run: echo ${{ matrix.mem }}\n    args: ['--c=${{ matrix.cpus }}']\n"
        "    env: {M: '${{ matrix.mem }}'}\n"
        "    resources: {cpus: '${{ matrix.cpus }}', mem: '${{ matrix.mem }}', time: 1h}\n"
    )
    member = spec.jobs["t.cpus-2.mem-1G"]
    assert member.run == 'echo "${CCD_MATRIX_mem}"' and member.args == ("--c=2",)
    assert dict(member.env) == {"CCD_MATRIX_cpus": "2", "CCD_MATRIX_mem": "1G", "M": "1G"}
    assert member.resources == Resources(cpus=2, mem_kib=1 << 20, time_s=3600)
    assert not member.resource_refs and member.group == "t"


def test_a_bad_resource_from_a_matrix_is_refused_at_submit() -> None:
    [problem] = _problems(
        SLURM + "jobs:\n  t: {host: hpc, run: x, matrix: {c: [two]}, "
        "resources: {cpus: '${{ matrix.c }}'}}\n"
    )
    assert "job 't'" in problem and "cpus" in problem


def test_resources_from_outputs_are_checked_when_known() -> None:
    spec = _parse(
        SLURM + "jobs:\n  a: {run: x}\n"
        "  b: {needs: [a], host: hpc, run: x, resources: {mem: '${{ jobs.a.outputs.m }}', "
        "time: 1h}}\n"
    )
    job = spec.jobs["b"]
    assert dict(job.resource_refs) == {"mem": "${{ jobs.a.outputs.m }}"}
    assert resolve(job, lambda _: {"m": "2G"}).resources == Resources(mem_kib=2 << 20, time_s=3600)
    with pytest.raises(RefError, match="resources: field 'mem': 'lots' is not a size"):
        resolve(job, lambda _: {"m": "lots"})


def test_resources_from_outputs_only_on_slurm_hosts() -> None:
    [problem] = _problems(
        "jobs:\n  a: {run: x}\n"
        "  b: {needs: [a], run: x, resources: {mem: '${{ jobs.a.outputs.m }}'}}\n"
    )
    assert "only jobs on a slurm host take resources ('local' is local)" in problem


def test_a_fragment_may_need_existing_jobs_but_not_define_hosts() -> None:
    base = _parse("jobs:\n  a: {run: x}\n")
    spec = _parse("jobs:\n  b: {needs: [a], run: 'echo ${{ jobs.a.outputs.k }}'}\n",
                  existing=base.jobs)  # fmt: skip
    assert list(spec.jobs) == ["b"]
    [problem] = _problems("hosts: {}\njobs:\n  b: {run: x}\n", existing=base.jobs)
    assert "unknown field 'hosts'" in problem


def test_an_oversized_value_fails_resolution() -> None:
    job = _parse(
        "jobs:\n  a: {run: x}\n  b: {needs: [a], args: ['${{ jobs.a.outputs.k }}'], run: x}\n"
    ).jobs["b"]
    with pytest.raises(RefError, match="more than the 131071 a program can take"):
        resolve(job, lambda _: {"k": "x" * 200_000})


def test_specs_written_back_read_back_the_same() -> None:
    text = (
        SLURM + "jobs:\n  a: {run: 'echo hi', retries: 2, timeout: 90, env: {X: '1'}}\n"
        "  b:\n    needs: [a]\n    host: hpc\n    run: x\n    retry_on: [timeout]\n"
        "    on_retry: {mem: x2}\n    resources: {cpus: 2, mem: 1G, time: 1h, "
        "gpus: '${{ jobs.a.outputs.g }}'}\n"
        "  c: {needs: [b], run: x, matrix: {n: [1, 2], include: [{n: 3, extra: y}]}}\n"
    )
    spec = _parse(text)
    again = _parse(to_yaml(workflow_mapping(spec.name, spec.jobs.values(), spec.hosts)))
    assert again.jobs.keys() == spec.jobs.keys()
    for name, job in spec.jobs.items():
        assert again.jobs[name].__class__.__name__ == "JobSpec"
        assert {**_fields(again.jobs[name])} == {**_fields(job)}, name
    assert again.hosts == spec.hosts


def _fields(job: object) -> dict[str, object]:
    from dataclasses import fields

    return {f.name: getattr(job, f.name) for f in fields(job) if f.name != "line"}  # type: ignore[arg-type]
