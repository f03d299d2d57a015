"""ccd.spec: both workflow formats, every validation problem, the real cloudmesh-cc files."""

from __future__ import annotations

import itertools
import shutil
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from ccd.errors import Problem, SpecError
from ccd.spec import LOCAL_HOST, HostSpec, WorkflowSpec, expand_names, load, parse, valid_name
from ccd.spec.hosts import FAILURE_CLASSES, Resources, SlurmOptions, SshOptions

DATA = Path(__file__).parent.parent / "data" / "cloudmesh"
EXAMPLES = Path(__file__).parent.parent.parent / "configs" / "examples"


def write(tmp_path: Path, text: str, name: str = "wf.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def touch(tmp_path: Path, *names: str) -> None:
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")


def problems_of(tmp_path: Path, text: str) -> list[Problem]:
    with pytest.raises(SpecError) as info:
        load(write(tmp_path, text))
    return info.value.problems


def only(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, problems
    return problems[0]


# --- ccd's own format ----------------------------------------------------------------------


def test_native_format_reads_every_field(tmp_path: Path) -> None:
    touch(tmp_path, "train.py", "steps/clean.sh", "report.ipynb")
    path = write(
        tmp_path,
        """
        name: demo
        defaults: {host: local, retries: 0, timeout: 1h, python: python3}
        hosts:
          big: {type: local, max_jobs: 4}
        jobs:
          prepare:
            run: echo preparing
          clean:
            needs: prepare
            script: steps/clean.sh
          train:
            needs: [prepare, clean, prepare]
            script: train.py
            args: ["--epochs", 3, 0.5]
            env: {SEED: 1, NAME: x, FLAG: yes}
            host: big
            retries: 2
            timeout: 10m
            python: /usr/bin/python3.11
          report:
            needs: [train]
            script: report.ipynb
        """,
    )
    spec = load(path)
    assert spec.name == "demo"
    assert spec.source == path.resolve()
    assert spec.base_dir == tmp_path.resolve()
    assert list(spec.jobs) == ["prepare", "clean", "train", "report"]
    assert spec.hosts == {
        "local": HostSpec("local", "local", None),
        "big": HostSpec("big", "local", 4),
    }
    prepare, clean, train, report = spec.jobs.values()
    assert (prepare.kind, prepare.run, prepare.script, prepare.line) == (
        "shell",
        "echo preparing",
        None,
        6,
    )
    assert (clean.kind, clean.script, clean.needs) == (
        "sh",
        (tmp_path / "steps/clean.sh").resolve(),
        ("prepare",),
    )
    assert train.kind == "py"
    assert train.script == (tmp_path / "train.py").resolve()
    assert train.script.is_absolute()
    assert train.run is None
    assert train.args == ("--epochs", "3", "0.5")
    assert dict(train.env) == {"SEED": "1", "NAME": "x", "FLAG": "yes"}
    assert train.needs == ("prepare", "clean")  # in file order, duplicates dropped
    assert (train.host, train.retries, train.timeout_s) == ("big", 2, 600.0)
    assert train.python == "/usr/bin/python3.11"
    assert train.line == 11
    assert report.kind == "ipynb"
    assert spec.edges() == [
        ("prepare", "clean"),
        ("prepare", "train"),
        ("clean", "train"),
        ("train", "report"),
    ]


def test_defaults_apply_unless_a_job_overrides_them(tmp_path: Path) -> None:
    spec = load(
        write(
            tmp_path,
            """
            defaults: {host: big, retries: 3, timeout: 90, python: python3.12}
            hosts: {big: {type: local}}
            jobs:
              plain: {run: "true"}
              own: {run: "true", host: local, retries: 0, timeout: 5s, python: py}
              unlimited: {run: "true", timeout: null}
            """,
        )
    )
    plain, own, unlimited = spec.jobs.values()
    assert (plain.host, plain.retries, plain.timeout_s, plain.python) == (
        "big",
        3,
        90.0,
        "python3.12",
    )
    assert (own.host, own.retries, own.timeout_s, own.python) == ("local", 0, 5.0, "py")
    assert unlimited.timeout_s is None


def test_without_defaults_jobs_get_the_built_in_ones(tmp_path: Path) -> None:
    job = load(write(tmp_path, "jobs: {a: {run: x}}")).jobs["a"]
    assert (job.host, job.retries, job.timeout_s, job.python, job.args, dict(job.env)) == (
        LOCAL_HOST,
        0,
        None,
        "python3",
        (),
        {},
    )
    assert job.needs == ()


def test_values_are_the_text_as_written(tmp_path: Path) -> None:
    # YAML 1.1 would make these booleans and numbers; a command is text
    spec = load(write(tmp_path, "jobs: {a: {run: true, args: [1.50, no, '~']}}"))
    assert spec.jobs["a"].run == "true"
    assert spec.jobs["a"].args == ("1.50", "no", "~")


def test_workflow_name_defaults_to_the_file_stem_made_valid(tmp_path: Path) -> None:
    assert load(write(tmp_path, "jobs: {a: {run: x}}", "nightly.yaml")).name == "nightly"
    assert load(write(tmp_path, "jobs: {a: {run: x}}", "-my flow!.yaml")).name == "my_flow_"


def test_spec_is_immutable(tmp_path: Path) -> None:
    spec = load(write(tmp_path, "jobs: {a: {run: x, env: {A: b}}}"))
    with pytest.raises(TypeError):
        spec.jobs["b"] = spec.jobs["a"]  # type: ignore[index]
    with pytest.raises(TypeError):
        spec.jobs["a"].env["A"] = "c"  # type: ignore[index]


def test_yaml_anchors_and_merge_keys(tmp_path: Path) -> None:
    spec = load(
        write(
            tmp_path,
            """
            jobs:
              a: &base {run: echo a, retries: 2, timeout: 1m}
              b:
                <<: *base
                run: echo b
                needs: a
            """,
        )
    )
    b = spec.jobs["b"]
    assert (b.run, b.retries, b.timeout_s, b.needs) == ("echo b", 2, 60.0, ("a",))


def test_nested_aliases_cost_what_their_text_does(tmp_path: Path) -> None:
    """A "billion laughs": 12 levels of 10 aliases each would be 10**12 strings expanded."""
    levels = [f"l0: &l0 [{', '.join(['a'] * 10)}]"] + [
        f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 12)
    ]
    anchors = "anchors:\n" + "".join(f"  {line}\n" for line in levels)
    host = "hosts:\n  hpc: {type: slurm, resources: {sbatch_args: *l11}}\n"
    text = anchors + host + "jobs: {a: {run: 'true'}}\n"
    problems = [str(p).split(": ", 1)[1] for p in problems_of(tmp_path, text)]
    assert problems == [
        "unknown field 'anchors'",
        "field 'resources.sbatch_args': expected a list of strings (host 'hpc')",
    ]


def test_parse_takes_text_and_resolves_scripts_in_base_dir(tmp_path: Path) -> None:
    touch(tmp_path, "s.sh")
    spec = parse("jobs: {a: {script: s.sh}}", source=Path("/x/flow.yaml"), base_dir=tmp_path)
    assert spec.name == "flow"
    assert spec.source == Path("/x/flow.yaml")
    assert spec.jobs["a"].script == (tmp_path / "s.sh").resolve()


def test_absolute_script_paths_are_kept(tmp_path: Path) -> None:
    touch(tmp_path, "elsewhere/job.sh")
    target = (tmp_path / "elsewhere/job.sh").resolve()
    (tmp_path / "wf").mkdir()
    spec = load(write(tmp_path / "wf", f"jobs: {{a: {{script: '{target}'}}}}"))
    assert spec.jobs["a"].script == target


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("2.5", 2.5),
        ("'90'", 90.0),
        ("30s", 30.0),
        ("10m", 600.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("2d", 172800.0),
        ("1.5h", 5400.0),
        ("1d2h3m4s", 93784.0),
    ],
)
def test_durations(tmp_path: Path, text: str, seconds: float) -> None:
    spec = load(write(tmp_path, f"jobs: {{a: {{run: x, timeout: {text}}}}}"))
    assert spec.jobs["a"].timeout_s == seconds


@pytest.mark.parametrize("text", ["0", "-5", "0s", "soon", "10x", "1h-5m", "h", "'1 h 2'", "[1]"])
def test_bad_durations(tmp_path: Path, text: str) -> None:
    problem = only(problems_of(tmp_path, f"jobs:\n  a:\n    run: x\n    timeout: {text}\n"))
    assert (problem.line, problem.job, problem.field) == (4, "a", "timeout")
    assert "duration" in problem.message


def test_bad_default_timeout_is_reported_in_defaults(tmp_path: Path) -> None:
    problem = only(problems_of(tmp_path, "defaults: {timeout: never}\njobs: {a: {run: x}}\n"))
    assert (problem.line, problem.job, problem.field) == (1, None, "timeout")
    assert "in defaults" in problem.message


@pytest.mark.parametrize("text", ["-1", "1.5", "two", "true", "[1]", "'2'"])
def test_bad_retries(tmp_path: Path, text: str) -> None:
    problem = only(problems_of(tmp_path, f"jobs:\n  a:\n    run: x\n    retries: {text}\n"))
    assert (problem.line, problem.job, problem.field) == (4, "a", "retries")
    assert "non-negative integer" in problem.message


# --- validation problems ---------------------------------------------------------------------


def test_unknown_field_suggests_the_nearest(tmp_path: Path) -> None:
    problem = only(
        problems_of(
            tmp_path,
            """
            jobs:
              a: {run: x}
              b:
                run: y
                neds: [a]
            """,
        )
    )
    assert problem.message == "unknown field 'neds' (did you mean 'needs'?)"
    assert (problem.line, problem.job) == (5, "b")
    assert str(problem).endswith(":5: job 'b': unknown field 'neds' (did you mean 'needs'?)")


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("job: {a: {run: x}}", "unknown field 'job' (did you mean 'jobs'?)", 1),
        (
            "defaults: {retires: 1}\njobs: {a: {run: x}}",
            "unknown field 'retires' (did you mean 'retries'?) (in defaults)",
            1,
        ),
        (
            "hosts:\n  big: {type: local, max_job: 2}\njobs: {a: {run: x}}",
            "unknown field 'max_job' (did you mean 'max_jobs'?) (host 'big')",
            2,
        ),
        ("jobs: {a: {run: x, zzzzzz: 1}}", "unknown field 'zzzzzz'", 1),
    ],
)
def test_unknown_fields_everywhere(tmp_path: Path, text: str, message: str, line: int) -> None:
    found = problems_of(tmp_path, text)
    assert any(p.message == message and p.line == line for p in found), found


def test_duplicate_job_is_reported_at_the_second(tmp_path: Path) -> None:
    problem = only(
        problems_of(
            tmp_path,
            """
            jobs:
              a: {run: x}
              b: {run: y}
              a: {run: z}
            """,
        )
    )
    assert (problem.line, problem.job) == (4, "a")
    assert problem.message == "duplicate job 'a' (first defined on line 2)"


def test_duplicate_field_in_a_job(tmp_path: Path) -> None:
    problem = only(problems_of(tmp_path, "jobs:\n  a:\n    run: x\n    run: y\n"))
    assert (problem.line, problem.job, problem.message) == (4, "a", "duplicate field 'run'")


def test_unknown_parent(tmp_path: Path) -> None:
    problem = only(
        problems_of(
            tmp_path,
            """
            jobs:
              prepare: {run: x}
              train:
                run: y
                needs:
                  - prepare
                  - prepar
            """,
        )
    )
    assert (problem.line, problem.job, problem.field) == (7, "train", "needs")
    assert problem.message == "unknown parent 'prepar' (did you mean 'prepare'?)"


def test_parents_written_as_one_string_get_a_hint(tmp_path: Path) -> None:
    text = "jobs:\n  a: {run: x}\n  b: {run: x}\n  c: {run: x, needs: 'a, b'}\n"
    problem = only(problems_of(tmp_path, text))
    assert problem.message == "unknown parent 'a, b' (several parents are a list: [a, b])"


def test_cycle_is_reported_as_a_path(tmp_path: Path) -> None:
    problem = only(
        problems_of(
            tmp_path,
            """
            jobs:
              start: {run: x}
              a: {run: x, needs: [start, c]}
              b: {run: x, needs: a}
              c: {run: x, needs: b}
            """,
        )
    )
    assert problem.message == "cycle: a -> b -> c -> a"
    assert (problem.line, problem.job, problem.field) == (3, "a", "needs")


def test_every_cycle_that_shares_no_job_is_reported(tmp_path: Path) -> None:
    found = problems_of(
        tmp_path,
        """
        jobs:
          a: {run: x, needs: b}
          b: {run: x, needs: a}
          c: {run: x, needs: [b, d]}
          d: {run: x, needs: c}
          e: {run: x, needs: e}
        """,
    )
    assert [(p.line, p.message) for p in found] == [
        (2, "cycle: a -> b -> a"),
        (4, "cycle: c -> d -> c"),
        (6, "cycle: e -> e"),
    ]


def test_a_job_needing_itself_is_a_cycle(tmp_path: Path) -> None:
    problem = only(problems_of(tmp_path, "jobs:\n  a: {run: x, needs: a}\n"))
    assert problem.message == "cycle: a -> a"


@pytest.mark.parametrize(
    "name",
    ["-rf", ".hidden", "..", "a b", "a/b", "x" * 101, "$(reboot)", "a;b", "ä", "a\\b", "a*"],
)
def test_invalid_job_names(tmp_path: Path, name: str) -> None:
    quoted = name.replace("\\", "\\\\").replace('"', '\\"')
    problem = only(problems_of(tmp_path, f'jobs:\n  "{quoted}": {{run: x}}\n'))
    assert (problem.line, problem.job) == (2, name)
    assert problem.message.startswith(f"invalid job name '{name}'")


@pytest.mark.parametrize("name", ["a", "A.b-c_1", "x" * 100, "1", "fetch-data.py", "a..b"])
def test_valid_names(name: str) -> None:
    assert valid_name(name)


def test_workflow_name_obeys_the_name_rule(tmp_path: Path) -> None:
    problem = only(problems_of(tmp_path, "name: ../up\njobs: {a: {run: x}}\n"))
    assert problem.line == 1
    assert problem.message.startswith("invalid workflow name '../up'")


def test_missing_script_file(tmp_path: Path) -> None:
    problem = only(problems_of(tmp_path, "jobs:\n  a:\n    script: nothere.py\n"))
    assert (problem.line, problem.job, problem.field) == (3, "a", "script")
    assert problem.message == f"script file not found: {(tmp_path / 'nothere.py').resolve()}"


def test_script_suffix_must_be_known(tmp_path: Path) -> None:
    touch(tmp_path, "model.R")
    problem = only(problems_of(tmp_path, "jobs:\n  a: {script: model.R}\n"))
    assert (problem.job, problem.field) == ("a", "script")
    assert "must end in .sh, .py or .ipynb" in problem.message


def test_exactly_one_of_run_and_script(tmp_path: Path) -> None:
    touch(tmp_path, "s.sh")
    found = problems_of(
        tmp_path,
        """
        jobs:
          both: {run: x, script: s.sh}
          neither: {retries: 1}
          empty: {run: ""}
          null: {run: null}
        """,
    )
    assert [(p.line, p.job, p.message) for p in found] == [
        (2, "both", "give either 'run' or 'script', not both"),
        (3, "neither", "missing 'run' or 'script'"),
        (4, "empty", "must not be empty"),
        (5, "null", "must not be empty"),
    ]


def test_unknown_host(tmp_path: Path) -> None:
    found = problems_of(
        tmp_path,
        """
        defaults: {host: gpu}
        hosts: {big: {type: local}}
        jobs:
          a: {run: x, host: bgi}
        """,
    )
    assert [(p.line, p.job, p.field, p.message) for p in found] == [
        (1, None, "host", "unknown host 'gpu' (in defaults)"),
        (4, "a", "host", "unknown host 'bgi' (did you mean 'big'?)"),
    ]


REMOTE_HOSTS = """
    hosts:
      login:
        type: ssh
        hostname: login.example.org
        user: me
        port: 2222
        identity: ~/.ssh/id_ed25519
        max_jobs: 4
      hpc:
        type: slurm
        via: login
        partition: gpu
        poll_interval_s: 60
        resources: {mem: 4G, time: "1:00:00", sbatch_args: [--gres=gpu:1]}
      box: {type: ssh}
    """


def test_ssh_and_slurm_hosts(tmp_path: Path) -> None:
    spec = load(write(tmp_path, REMOTE_HOSTS + "jobs: {a: {run: x, host: hpc}}\n"))
    login, hpc, box = spec.hosts["login"], spec.hosts["hpc"], spec.hosts["box"]
    assert (login.type, login.max_jobs) == ("ssh", 4)
    assert login.options == SshOptions(
        "login.example.org", port=2222, user="me", identity="~/.ssh/id_ed25519"
    )
    assert box.options == SshOptions("box")  # hostname: the host's name, as in ~/.ssh/config
    assert hpc.type == "slurm"
    assert hpc.options == SlurmOptions(
        via="login",
        partition="gpu",
        poll_interval_s=60.0,
        resources=Resources(mem_kib=4 << 20, time_s=3600, sbatch_args=("--gres=gpu:1",)),
    )


def test_null_host_options_mean_the_default(tmp_path: Path) -> None:
    text = "hosts: {h: {type: ssh, user: null, port: ~}}\njobs: {a: {run: x}}\n"
    assert load(write(tmp_path, text)).hosts["h"].options == SshOptions("h")


@pytest.mark.parametrize(
    ("body", "line", "field", "message"),
    [
        (
            "type: ssh\n    hostnme: x",
            5,
            None,
            "unknown field 'hostnme' (did you mean 'hostname'?)",
        ),
        ("type: ssh\n    port: 70000", 5, "port", "expected 1-65535"),
        ("type: ssh\n    port: '22'", 5, "port", "expected an integer, got '22'"),
        (
            "type: ssh\n    hostname: -oProxy",
            5,
            "hostname",
            "'-oProxy' is not a host name or address",
        ),
        (
            "type: ssh\n    insecure_skip_host_key_check: 1",
            5,
            "insecure_skip_host_key_check",
            "expected true or false, got 1",
        ),
        ("type: ssh\n    max_sessions: 0", 5, "max_sessions", "expected an integer >= 1"),
        ("type: ssh\n    keepalive_s: 0", 5, "keepalive_s", "expected a number > 0"),
        (
            "type: slurm\n    partition: 'a;b'",
            5,
            "partition",
            "expected a name of [A-Za-z0-9_@%+=:,./-]",
        ),
        (
            "type: slurm\n    poll_interval_min_s: 90",
            5,
            "poll_interval_min_s",
            "must not exceed poll_interval_s",
        ),
        ("type: slurm\n    resources: [4G]", 5, "resources", "expected a mapping"),
        (
            "type: slurm\n    resources:\n      mem: 4G\n      time: soon",
            7,
            "resources.time",
            "'soon' is not a walltime like 30m, 2h or 1-12:00:00",
        ),
        (
            "type: slurm\n    resources:\n      cpu: 2",
            6,
            "resources",
            "unknown field 'cpu' (did you mean 'cpus'?)",
        ),
        ("type: slurm\n    via: gateway", 5, "via", "unknown ssh host 'gateway'"),
        ("type: slurm\n    via: big", 5, "via", "host 'big' is a local host, not an ssh host"),
        ("type: slurm\n    via: logn", 5, "via", "unknown ssh host 'logn' (did you mean 'login'?)"),
        ("type: kube", 4, "type", "unknown host type 'kube'"),
        ("type: sshh", 4, "type", "unknown host type 'sshh' (did you mean 'ssh'?)"),
    ],
)
def test_bad_remote_host_options(
    tmp_path: Path, body: str, line: int, field: str | None, message: str
) -> None:
    text = f"hosts:\n  big: {{type: local}}\n  h:\n    {body}\n  login: {{type: ssh}}\n"
    problem = only(problems_of(tmp_path, text + "jobs: {a: {run: x}}\n"))
    assert (problem.line, problem.job, problem.field) == (line, None, field)
    assert problem.message == f"{message} (host 'h')"


def test_the_local_host_cannot_change_its_type(tmp_path: Path) -> None:
    problem = only(problems_of(tmp_path, "hosts: {local: {type: ssh}}\njobs: {a: {run: x}}\n"))
    assert (problem.field, problem.message) == (
        "type",
        "the host 'local' is always of type local (host 'local')",
    )


def test_slurm_via_an_extra_ssh_host_brings_it_into_the_spec(tmp_path: Path) -> None:
    extra = {**CONFIG_HOSTS, "gate": HostSpec("gate", "ssh", options=SshOptions("gate.org"))}
    text = "hosts: {hpc: {type: slurm, via: gate}}\njobs: {a: {run: x, host: hpc}}\n"
    spec = load(write(tmp_path, text), extra_hosts=extra)
    assert list(spec.hosts) == ["local", "gate", "hpc"]
    assert spec.hosts["gate"] == extra["gate"]
    extra_slurm = HostSpec("cl", "slurm", options=SlurmOptions(via="gate"))
    text = "jobs: {a: {run: x, host: cl}}\n"
    spec = load(write(tmp_path, text), extra_hosts={**extra, "cl": extra_slurm})
    assert list(spec.hosts) == ["local", "gate", "cl"]


# --- job fields for remote hosts --------------------------------------------------------------


def test_remote_job_fields(tmp_path: Path) -> None:
    touch(tmp_path, "data/in.csv", "model.bin")
    text = (
        REMOTE_HOSTS
        + f"""
    defaults:
      resources: {{cpus: 2, time: 30m}}
      retry_on: [timeout, node_fail]
      on_retry: {{mem: x2}}
    jobs:
      train:
        run: ./train
        host: hpc
        inputs: [data/in.csv, {tmp_path / "model.bin"}, data/in.csv]
        outputs: ["results/*.json", log.txt]
        resources: {{mem: 8G, time: 2h}}
        on_retry: {{mem: 2x, time: 1.5}}
      plain:
        run: x
        host: hpc
        retry_on: []
      here:
        run: x
    """
    )
    spec = load(write(tmp_path, text))
    train, plain, here = spec.jobs.values()
    assert train.inputs == (str(tmp_path / "data/in.csv"), str(tmp_path / "model.bin"))
    assert train.outputs == ("results/*.json", "log.txt")
    assert train.resources == Resources(cpus=2, mem_kib=8 << 20, time_s=7200)
    assert train.retry_on == {"timeout", "node_fail"}
    assert dict(train.on_retry) == {"mem": 2.0, "time": 1.5}
    assert plain.resources == Resources(cpus=2, time_s=1800)  # the defaults'
    assert plain.retry_on == frozenset()
    assert dict(plain.on_retry) == {"mem": 2.0}
    assert here.resources is None  # not on a slurm host: the default does not apply
    assert (here.inputs, here.outputs) == ((), ())


RELATIVE = "must be relative to the run directory"
FACTOR = "expected a factor >= 1 like x2, 2x or 1.5, got"


def test_remote_job_field_defaults(tmp_path: Path) -> None:
    job = load(write(tmp_path, "jobs: {a: {run: x}}\n")).jobs["a"]
    assert (job.inputs, job.outputs, job.resources) == ((), (), None)
    assert job.retry_on == frozenset(FAILURE_CLASSES)
    assert dict(job.on_retry) == {}


@pytest.mark.parametrize(
    ("value", "field", "message"),
    [
        ("inputs: [nope.csv]", "inputs", "input file not found: {tmp}/nope.csv"),
        ("inputs: [sub]", "inputs", "input is not a file: {tmp}/sub"),
        ("inputs: in.csv", "inputs", "expected a list of file paths, got 'in.csv'"),
        (
            "inputs: [in.csv, sub/in.csv]",
            "inputs",
            "inputs {tmp}/in.csv and {tmp}/sub/in.csv would both be 'in.csv' in the run directory",
        ),
        ("outputs: [/etc/passwd]", "outputs", f"output '/etc/passwd' {RELATIVE}"),
        ("outputs: ['~/x']", "outputs", f"output '~/x' {RELATIVE}"),
        (
            "outputs: [a/../../x]",
            "outputs",
            "output 'a/../../x' must not leave the run directory ('..')",
        ),
        ("outputs: ['']", "outputs", "must not be empty"),
        (
            "retry_on: [timeout, oom]",
            "retry_on",
            "unknown failure class 'oom'; the classes are " + ", ".join(FAILURE_CLASSES),
        ),
        (
            "retry_on: preemptd",
            "retry_on",
            "unknown failure class 'preemptd' (did you mean 'preempted'?); the classes are "
            + ", ".join(FAILURE_CLASSES),
        ),
        ("on_retry: {mem: 0.5}", "on_retry", f"'mem': {FACTOR} '0.5'"),
        ("on_retry: {time: x2x}", "on_retry", f"'time': {FACTOR} 'x2x'"),
        ("on_retry: {cpus: 2}", "on_retry", "unknown field 'cpus'"),
        ("on_retry: x2", "on_retry", "expected a mapping like {mem: x2, time: x1.5}, got 'x2'"),
        (
            "resources: {cpus: 2}",
            "resources",
            "only jobs on a slurm host take resources ('local' is local)",
        ),
        ("resources: 4G", "resources", "expected a mapping, got '4G'"),
    ],
)
def test_bad_remote_job_fields(tmp_path: Path, value: str, field: str, message: str) -> None:
    touch(tmp_path, "in.csv", "sub/in.csv")
    found = problems_of(tmp_path, f"jobs:\n  b: {{run: x}}\n  a:\n    run: x\n    {value}\n")
    problem = only(found)
    expected = message.replace("{tmp}", str(tmp_path.resolve()))
    assert (problem.line, problem.job, problem.field, problem.message) == (5, "a", field, expected)


def test_bad_resources_name_the_field_and_its_line(tmp_path: Path) -> None:
    text = (
        REMOTE_HOSTS
        + """
    defaults:
      resources: {gpus: 0}
    jobs:
      a:
        run: x
        host: hpc
        resources:
          mem: lots
          cpu: 2
          sbatch_args: ["--job-name=x", "--x;rm", "-p", "gpu"]
    """
    )
    found = problems_of(tmp_path, text)
    assert [(p.line, p.job, p.field, p.message) for p in found] == [
        (18, None, "resources.gpus", "expected an integer >= 1 (in defaults)"),
        (24, "a", "resources.mem", "'lots' is not a size like 4G or 512M"),
        (25, "a", "resources", "unknown field 'cpu' (did you mean 'cpus'?)"),
        (26, "a", "resources.sbatch_args", "'--job-name=x' is set by ccd itself"),
        (26, "a", "resources.sbatch_args", "'--x;rm' has characters outside [A-Za-z0-9_@%+=:,./-]"),
        (
            26,
            "a",
            "resources.sbatch_args",
            "'gpu' is not an option; give values joined to their option: --partition=gpu, -pgpu",
        ),
    ]


def test_walltime_is_not_read_as_a_base_60_number(tmp_path: Path) -> None:
    """YAML 1.1 reads 1:30:00 as 5400, which sbatch's rule would make 5400 minutes."""
    text = REMOTE_HOSTS + "jobs: {a: {run: x, host: hpc, resources: {time: 1:30:00}}}\n"
    resources = load(write(tmp_path, text)).jobs["a"].resources
    assert resources is not None
    assert resources.time_s == 5400


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{type: kube}", "unknown host type 'kube' (host 'h')"),
        ("{max_jobs: 2}", "missing field 'type' (local, ssh, slurm) (host 'h')"),
        ("{type: local, max_jobs: 0}", "expected a positive integer, got 0 (host 'h')"),
        ("{type: local, max_jobs: many}", "expected a non-negative integer, got 'many' (host 'h')"),
        (
            "{type: local, max_jobs: '2'}",
            "expected a non-negative integer, got the string '2'"
            " (a number is written without quotes) (host 'h')",
        ),
    ],
)
def test_bad_hosts(tmp_path: Path, body: str, message: str) -> None:
    problem = only(problems_of(tmp_path, f"hosts:\n  h: {body}\njobs: {{a: {{run: x}}}}\n"))
    assert (problem.line, problem.message) == (2, message)


def test_the_local_host_always_exists_and_can_be_limited(tmp_path: Path) -> None:
    spec = load(write(tmp_path, "hosts: {local: {type: local, max_jobs: 2}}\njobs: {a: {run: x}}"))
    assert spec.hosts == {"local": HostSpec("local", "local", 2)}


CONFIG_HOSTS = {
    "local": HostSpec("local", "local", 8),
    "gpu": HostSpec("gpu", "local", 2),
    "idle": HostSpec("idle", "local"),
}


def test_jobs_may_name_hosts_known_from_elsewhere(tmp_path: Path) -> None:
    path = write(tmp_path, "jobs:\n  a: {run: x, host: gpu}\n  b: {run: y, needs: a}\n")
    spec = load(path, extra_hosts=CONFIG_HOSTS)
    assert spec.jobs["a"].host == "gpu"
    # the extra hosts that jobs use, and local (the config's, over the built-in one)
    assert spec.hosts == {
        "local": HostSpec("local", "local", 8),
        "gpu": HostSpec("gpu", "local", 2),
    }
    problem = only(problems_of(tmp_path, path.read_text()))  # without them: unknown
    assert (problem.line, problem.job, problem.field) == (2, "a", "host")
    assert problem.message == "unknown host 'gpu'"


def test_extra_hosts_in_defaults_and_in_suggestions(tmp_path: Path) -> None:
    text = "defaults: {host: gpu}\njobs:\n  a: {run: x}\n  b: {run: y, host: idel}\n"
    with pytest.raises(SpecError) as info:
        parse(text, source=tmp_path / "wf.yaml", base_dir=tmp_path, extra_hosts=CONFIG_HOSTS)
    assert only(info.value.problems).message == "unknown host 'idel' (did you mean 'idle'?)"
    spec = parse(
        text.replace("idel", "idle"),
        source=tmp_path / "wf.yaml",
        base_dir=tmp_path,
        extra_hosts=CONFIG_HOSTS,
    )
    assert [job.host for job in spec.jobs.values()] == ["gpu", "idle"]
    assert list(spec.hosts) == ["local", "gpu", "idle"]


def test_the_files_own_host_wins_over_an_extra_one(tmp_path: Path) -> None:
    text = """
        hosts: {gpu: {type: local, max_jobs: 1}, local: {type: local, max_jobs: 3}}
        jobs: {a: {run: x, host: gpu}}
        """
    spec = load(write(tmp_path, text), extra_hosts=CONFIG_HOSTS)
    assert spec.hosts == {
        "local": HostSpec("local", "local", 3),
        "gpu": HostSpec("gpu", "local", 1),
    }


def test_cloudmesh_jobs_run_on_the_configured_local_host() -> None:
    spec = load(DATA / "abc" / "workflow-a-b.yaml", extra_hosts=CONFIG_HOSTS)
    assert spec.hosts == {"local": HostSpec("local", "local", 8)}


@pytest.mark.parametrize(
    ("value", "field", "message"),
    [
        ("needs: 3", "needs", "expected a job name, got 3 (quote it if it is a name)"),
        ("needs: [true]", "needs", "expected a job name, got true (quote it if it is a name)"),
        ("needs: {a: 1}", "needs", "expected a job name or a list of job names, got a mapping"),
        ("args: --fast", "args", "expected a list of strings, got '--fast'"),
        ("args: [[1]]", "args", "expected a string, got a list"),
        ("env: [A]", "env", "expected a mapping of variable names to strings, got a list"),
        ("env: {1A: x}", "env", "invalid variable name '1A': use [A-Za-z_][A-Za-z0-9_]*"),
        ("env: {A-B: x}", "env", "invalid variable name 'A-B': use [A-Za-z_][A-Za-z0-9_]*"),
        ("env: {A: [x]}", "env", "expected a string, got a list"),
        ("python: [x]", "python", "expected a string, got a list"),
        ("host: {a: b}", "host", "expected a string, got a mapping"),
    ],
)
def test_wrong_types(tmp_path: Path, value: str, field: str, message: str) -> None:
    found = problems_of(tmp_path, f"jobs:\n  b: {{run: x}}\n  a:\n    run: x\n    {value}\n")
    problem = only(found)
    assert (problem.line, problem.job, problem.field, problem.message) == (5, "a", field, message)


def test_quoted_number_is_a_job_name(tmp_path: Path) -> None:
    spec = load(write(tmp_path, "jobs:\n  '1': {run: x}\n  a: {run: y, needs: ['1']}\n"))
    assert spec.jobs["a"].needs == ("1",)


def test_all_problems_are_reported_together_in_line_order(tmp_path: Path) -> None:
    found = problems_of(
        tmp_path,
        """
        jobs:
          a:
            run: x
            timeout: forever
          b:
            script: missing.sh
            needs: [a, ghost]
          -bad: {run: x}
          c: {run: x, retries: -2}
        """,
    )
    assert [(p.line, p.job, p.field) for p in found] == [
        (4, "a", "timeout"),
        (6, "b", "script"),
        (7, "b", "needs"),
        (8, "-bad", None),
        (9, "c", "retries"),
    ]
    assert all(p.file == str((tmp_path / "wf.yaml").resolve()) for p in found)
    assert len(str(SpecError(found)).splitlines()) == 5  # one line each


def test_yaml_syntax_error_has_its_line(tmp_path: Path) -> None:
    problem = only(problems_of(tmp_path, "jobs:\n  a: {run: x\n  b: {run: y}\n\n"))
    assert problem.message.startswith("YAML syntax error:")
    assert problem.line is not None and problem.line >= 3


def test_yaml_syntax_error_on_a_bad_indent(tmp_path: Path) -> None:
    problem = only(problems_of(tmp_path, "jobs:\n  a:\n    run: x\n   b: y\n"))
    assert problem.line == 4
    assert "YAML syntax error" in problem.message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the workflow file is empty"),
        ("# only a comment\n", "the workflow file is empty"),
        ("- a\n- b\n", "expected a mapping with 'jobs:' or 'workflow:', got a list"),
        ("name: x\n", "no 'jobs:' (ccd format) or 'workflow:' (cloudmesh-cc format) found"),
        ("workflows: {}\n", "unknown field 'workflows' (did you mean 'workflow'?)"),
        ("jobs:\n  a: [echo, x]\n", "expected a mapping, got a list"),
        ("jobs: {}\n", "the workflow has no jobs"),
        ("jobs: [a, b]\n", "expected a mapping of jobs, got a list"),
        (
            "jobs: {a: {run: x}}\n---\njobs: {b: {run: y}}\n",
            "expected one YAML document, found more",
        ),
        ("jobs: {a: {run: *nothing}}\n", "unknown alias '*nothing'"),
        ("jobs: {a: {run: x}, [b]: {run: y}}\n", "mapping keys must be plain strings"),
        (
            'jobs: {a: {run: "echo a\\0b"}}\n',
            "a NUL character (\\0) is not allowed: no program can be given one",
        ),
        (
            'jobs: {a: {run: x, env: {X: "\\x00"}}}\n',
            "a NUL character (\\0) is not allowed: no program can be given one",
        ),
        (
            "jobs:\n  a: {run: 'echo \x01'}\n",
            "YAML error: control characters are not allowed: character #x0001",
        ),
    ],
)
def test_malformed_documents(tmp_path: Path, text: str, message: str) -> None:
    found = problems_of(tmp_path, text)
    assert message in [p.message for p in found], found


def test_duplicate_top_level_field_and_bad_host_name(tmp_path: Path) -> None:
    found = problems_of(
        tmp_path, "hosts: {'a b': {type: local}}\njobs: {a: {run: x}}\njobs: {b: {run: y}}\n"
    )
    assert [(p.line, p.message.split(":")[0]) for p in found] == [
        (1, "invalid host name 'a b'"),
        (3, "duplicate field 'jobs'"),
    ]


def test_pure_python_yaml_gives_the_same_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = "jobs:\n  a: &t {run: x, retries: 1}\n  b: {<<: *t, needs: a}\n  b: {run: y}\n"
    fast = problems_of(tmp_path, text)
    # as with a PyYAML built without libyaml
    monkeypatch.setattr("ccd.spec.yamltree._Loader", yaml.SafeLoader)
    assert problems_of(tmp_path, text) == fast
    assert load(DATA / "abc" / "workflow-a-b.yaml").edges() == [("a", "b"), ("b", "c")]
    assert only(problems_of(tmp_path, "jobs:\n  a: {run: x\n")).line == 3


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        load(tmp_path / "absent.yaml")
    problem = only(info.value.problems)
    assert problem.line is None
    assert problem.message.startswith("cannot read workflow file")


# --- cloudmesh-cc's format -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("a,b,c", ["a", "b", "c"]),
        (" a , b ", ["a", "b"]),
        ("j[1-3]", ["j1", "j2", "j3"]),
        ("n[01-03]", ["n01", "n02", "n03"]),
        ("n[8-10]", ["n8", "n9", "n10"]),
        ("x[1,3,5-6]", ["x1", "x3", "x5", "x6"]),
        ("a,j[1-2],c", ["a", "j1", "j2", "c"]),
        ("r[1-2]c[1-2]", ["r1c1", "r1c2", "r2c1", "r2c2"]),
        ("pre[2]-post", ["pre2-post"]),
    ],
)
def test_expand_names(text: str, names: list[str]) -> None:
    assert expand_names(text) == names


@pytest.mark.parametrize("text", ["j[3-1]", "j[1-", "j1-2]", "j[a]", "a,,b", "a,", "j[[1]]", "j[]"])
def test_expand_names_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError):
        expand_names(text)


def test_expand_names_refuses_huge_ranges() -> None:
    with pytest.raises(ValueError, match="more than"):
        expand_names("a[1-1000]b[1-1000]c[1-10]")


def cloudmesh(tmp_path: Path, nodes: str, deps: str = "") -> WorkflowSpec:
    text = "workflow:\n  nodes:\n" + textwrap.indent(textwrap.dedent(nodes).lstrip("\n"), "    ")
    if deps:
        text += "  dependencies:\n" + textwrap.indent(textwrap.dedent(deps).lstrip("\n"), "    ")
    return load(write(tmp_path, text))


def test_cloudmesh_chains_ranges_and_isolated_nodes(tmp_path: Path) -> None:
    spec = cloudmesh(
        tmp_path,
        """
        a: {exec: echo a}
        b[1-2]: {exec: echo b}
        c: {exec: echo c}
        lonely: {exec: echo alone}
        """,
        """
        - a,b[1-2],c
        - a,c
        """,
    )
    assert list(spec.jobs) == ["a", "b1", "b2", "c", "lonely"]
    assert sorted(spec.edges()) == [("a", "b1"), ("a", "c"), ("b1", "b2"), ("b2", "c")]
    assert spec.jobs["c"].needs == ("b2", "a")
    assert spec.jobs["lonely"].needs == ()  # nodes without edges still run
    assert spec.jobs["lonely"].line == 6
    assert spec.name == "wf"
    assert spec.hosts == {"local": HostSpec("local", "local")}


def test_cloudmesh_commands(tmp_path: Path) -> None:
    touch(tmp_path, "scripts/x.sh", "fb.py", "fc.ipynb", "fa.sh", "fa.py", "named.py", "lone.py")
    spec = cloudmesh(
        tmp_path,
        """
        inline: {exec: 'echo hello && date'}
        given: {exec: null, script: scripts/x.sh}
        fa: {kind: local}
        fb: {}
        fc:
        named.py: {kind: local}
        lone: {exec: lone.py}
        """,
    )
    got = {name: (job.kind, job.run, job.script) for name, job in spec.jobs.items()}
    base = tmp_path.resolve()
    assert got == {
        "inline": ("shell", "echo hello && date", None),
        "given": ("sh", None, base / "scripts/x.sh"),
        "fa": ("sh", None, base / "fa.sh"),  # NAME.sh is looked for first
        "fb": ("py", None, base / "fb.py"),
        "fc": ("ipynb", None, base / "fc.ipynb"),
        "named.py": ("py", None, base / "named.py"),  # the name itself names the script
        "lone": ("py", None, base / "lone.py"),  # a lone script name in exec, as cloudmesh-cc
    }


def test_cloudmesh_node_without_anything_to_run(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        cloudmesh(tmp_path, "a: {kind: local}\n")
    problem = only(info.value.problems)
    assert (problem.line, problem.job, problem.field) == (3, "a", "script")
    assert "a.sh or a.py or a.ipynb" in problem.message


def test_cloudmesh_bookkeeping_fields_are_ignored_but_typos_are_not(tmp_path: Path) -> None:
    text = """
        workflow:
          nodes:
            a:
              name: a
              user: gregor
              host: rivanna.hpc.virginia.edu
              kind: local
              status: done
              label: '{name}\\nprogress={progress}'
              progress: 100
              parent: [b]
              created: '2022-07-28 02:59:59.121507'
              instance: null
              venv: ~/ENV3
              shape: box
              style: ''
              exec: echo a
            b:
              scirpt: b.sh
        colors: {status: {ready: white}}
        """
    found = problems_of(tmp_path, text)
    assert [(p.line, p.job, p.message) for p in found] == [
        (18, "b", f"no exec or script given, and no b.sh or b.py or b.ipynb in {tmp_path}"),
        (19, "b", "unknown field 'scirpt' (did you mean 'script'?)"),
    ]


@pytest.mark.parametrize("kind", ["slurm", "wsl"])
def test_cloudmesh_remote_kinds_are_not_supported_yet(tmp_path: Path, kind: str) -> None:
    with pytest.raises(SpecError) as info:
        cloudmesh(tmp_path, f"a:\n  exec: x\n  kind: {kind}\n")
    problem = only(info.value.problems)
    assert (problem.line, problem.job, problem.field) == (5, "a", "kind")
    assert problem.message == f"kind '{kind}' is not supported yet"


def test_cloudmesh_ssh_nodes_run_on_a_host_named_by_their_host_field(tmp_path: Path) -> None:
    spec = cloudmesh(
        tmp_path,
        """
        a: {exec: echo a, kind: local, host: local, user: grey}
        b: {exec: echo b, kind: ssh, host: rivanna.hpc.virginia.edu, user: thf2bn}
        c: {exec: echo c, kind: ssh, host: rivanna.hpc.virginia.edu, user: thf2bn}
        d: {exec: echo d, kind: ssh, host: box}
        """,
    )
    assert [job.host for job in spec.jobs.values()] == [
        "local",
        "rivanna.hpc.virginia.edu",
        "rivanna.hpc.virginia.edu",
        "box",
    ]
    assert spec.hosts == {
        "local": HostSpec("local", "local"),
        "rivanna.hpc.virginia.edu": HostSpec(
            "rivanna.hpc.virginia.edu",
            "ssh",
            options=SshOptions("rivanna.hpc.virginia.edu", user="thf2bn"),
        ),
        "box": HostSpec("box", "ssh", options=SshOptions("box")),
    }


@pytest.mark.parametrize(
    ("nodes", "line", "field", "message"),
    [
        ("a: {exec: x, kind: ssh}", 3, "host", "kind 'ssh' needs the host to log in to"),
        ("a: {exec: x, kind: ssh, host: 'a b'}", 3, "host", "'a b' cannot name an ssh host"),
        ("a: {exec: x, kind: ssh, host: local}", 3, "host", "'local' cannot name an ssh host"),
        (
            "a: {exec: x, kind: ssh, host: h, user: '-x'}",
            3,
            "host",
            "field 'user': '-x' is not a user name",
        ),
        (
            "a: {exec: x, kind: ssh, host: h, user: u}\nb: {exec: x, kind: ssh, host: h}",
            4,
            "user",
            "nodes on host 'h' disagree on its user: none here, 'u' before",
        ),
    ],
)
def test_cloudmesh_bad_ssh_nodes(
    tmp_path: Path, nodes: str, line: int, field: str, message: str
) -> None:
    with pytest.raises(SpecError) as info:
        cloudmesh(tmp_path, nodes)
    problem = only(info.value.problems)
    assert (problem.line, problem.field, problem.message) == (line, field, message)


def test_cloudmesh_unknown_job_in_a_dependency(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        cloudmesh(tmp_path, "start: {exec: x}\nend: {exec: y}\n", "- start,middle,end\n")
    problem = only(info.value.problems)
    assert problem.line == 6
    assert problem.field == "dependencies"
    assert problem.message == "unknown job 'middle' in dependency 'start,middle,end'"


def test_cloudmesh_cycle(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        cloudmesh(tmp_path, "a: {exec: x}\nb: {exec: y}\n", "- a,b\n- b,a\n")
    assert only(info.value.problems).message == "cycle: a -> b -> a"


def test_cloudmesh_duplicate_through_a_range(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        cloudmesh(tmp_path, "j[1-2]: {exec: x}\nj2: {exec: y}\n")
    problem = only(info.value.problems)
    assert (problem.line, problem.job) == (4, "j2")
    assert problem.message == "duplicate job 'j2' (first defined on line 3)"


def test_cloudmesh_bad_dependency_entries(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        cloudmesh(tmp_path, "a: {exec: x}\n", "- a,\n- [a]\n- j[2-1]\n")
    assert [(p.line, p.field) for p in info.value.problems] == [
        (5, "dependencies"),
        (6, "dependencies"),
        (7, "dependencies"),
    ]


def test_cloudmesh_saved_edges_form(tmp_path: Path) -> None:
    spec = cloudmesh(
        tmp_path,
        "a: {exec: x}\nb: {exec: y}\n",
        "a-b: {source: a, destination: b, name: a-b}\n",
    )
    assert spec.edges() == [("a", "b")]


def test_real_cloudmesh_abc_workflow_loads_unchanged() -> None:
    spec = load(DATA / "abc" / "workflow-a-b.yaml")
    assert spec.edges() == [("a", "b"), ("b", "c")]
    assert [(job.kind, job.script.name if job.script else None) for job in spec.jobs.values()] == [
        ("sh", "test-a.sh"),
        ("sh", "test-b.sh"),
        ("sh", "test-c.sh"),
    ]


def test_real_abc_workflow_without_its_missing_script(tmp_path: Path) -> None:
    # cloudmesh-cc's repository lacks test-c.sh; without our stand-in, exactly that is reported
    shutil.copytree(DATA / "abc", tmp_path / "abc", ignore=shutil.ignore_patterns("test-c.sh"))
    with pytest.raises(SpecError) as info:
        load(tmp_path / "abc" / "workflow-a-b.yaml")
    problem = only(info.value.problems)
    assert (problem.line, problem.job, problem.field) == (26, "c", "script")


def test_real_cloudmesh_quickstart_loads_unchanged() -> None:
    spec = load(DATA / "quickstart" / "workflow-example.yaml")
    chain = ["start", "fetch-data", "compute", "analyze", "end"]
    assert sorted(spec.edges()) == sorted(itertools.pairwise(chain))
    assert {job.run for job in spec.jobs.values()} == {"echo hello"}


def test_real_cloudmesh_sh_py_ipynb_chain() -> None:
    spec = load(DATA / "quickstart" / "workflow-clean.yaml")
    kinds = {name: job.kind for name, job in spec.jobs.items()}
    assert kinds == {"start": "sh", "end": "sh", "b.sh": "sh", "c.py": "py", "d.ipynb": "ipynb"}
    assert spec.jobs["end"].needs == ("d.ipynb",)
    assert spec.jobs["c.py"].script == (DATA / "quickstart" / "c.py").resolve()


def test_real_cloudmesh_two_branch_workflow() -> None:
    spec = load(DATA / "sh" / "workflow.yaml")
    assert len(spec.jobs) == 8
    assert spec.jobs["end"].needs == ("job-local-2", "job-rivanna.hpc.virginia.edu-5")
    assert all(job.kind == "sh" and job.host == LOCAL_HOST for job in spec.jobs.values())


@pytest.mark.parametrize("name", ["hello.yaml", "diamond.yaml"])
def test_examples_load(name: str) -> None:
    spec = load(EXAMPLES / name)
    assert spec.jobs
    for job in spec.jobs.values():
        assert job.run or (job.script is not None and job.script.is_file())


# --- size ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_100k_job_layered_workflow_loads_fast(tmp_path: Path) -> None:
    width, layers = 100, 1000
    lines = ["jobs:"]
    for layer in range(layers):
        for i in range(width):
            lines += [f"  j{layer}_{i}:", "    run: true"]
            if layer:
                parents = {f"j{layer - 1}_{i}", f"j{layer - 1}_{(i * 7) % width}"}
                lines.append(f"    needs: [{', '.join(sorted(parents))}]")
    path = tmp_path / "big.yaml"
    path.write_text("\n".join(lines) + "\n")
    started = time.process_time()  # CPU time: other processes on the machine do not count
    spec = load(path)
    elapsed = time.process_time() - started
    assert len(spec.jobs) == width * layers
    assert elapsed < 10, f"loading 100k jobs took {elapsed:.1f} s of CPU"


def test_yaml_errors_say_where_and_what(tmp_path: Path) -> None:
    control = only(problems_of(tmp_path, "jobs:\n  a: {run: true}\n  b: {run: 'x\x02'}\n"))
    assert (control.line, control.message) == (
        3,
        "YAML error: control characters are not allowed: character #x0002",
    )
    tab = only(problems_of(tmp_path, "jobs:\n\ta: {run: echo}\n"))
    assert tab.line == 2 and tab.message.endswith("(a tab: YAML indents with spaces)")


def test_an_argument_no_exec_could_take_is_an_error(tmp_path: Path) -> None:
    text = (
        f"jobs:\n  a: {{run: x, env: {{BIG: {'x' * 140_000}}}}}\n"
        f"  b: {{run: 'echo {'é' * 70_000}'}}\n"
        f"  c: {{run: x, args: [{'y' * 131_071}]}}\n"  # at the limit: fine
    )
    found = problems_of(tmp_path, text)
    limit = "more than the 131071 a program can take in one argument or variable"
    assert [(p.line, p.job, p.field, p.message) for p in found] == [
        (2, "a", "env", f"140004 bytes: {limit}"),
        (3, "b", "run", f"140005 bytes: {limit}"),
    ]
