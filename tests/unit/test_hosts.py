"""ccd.spec.hosts: sizes, walltimes, batch resources and the ssh/slurm host options, as values."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from ccd.spec.hosts import (
    RESOURCE_FIELDS,
    Resources,
    SlurmOptions,
    SshOptions,
    format_walltime,
    parse_mem_kib,
    parse_walltime_s,
    split_problem,
)

GIB = 1024 * 1024  # in KiB


def mem(value: Any) -> int | None:
    problems: list[str] = []
    kib = parse_mem_kib(value, problems)
    assert (kib is None) == bool(problems), problems
    return kib


def walltime(value: Any) -> int | None:
    problems: list[str] = []
    seconds = parse_walltime_s(value, problems)
    assert (seconds is None) == bool(problems), problems
    return seconds


# --- sizes and walltimes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kib"),
    [
        ("4G", 4 * GIB),
        ("4g", 4 * GIB),
        ("4GB", 4 * GIB),
        ("4GiB", 4 * GIB),
        ("4 G", 4 * GIB),
        ("1.5G", 3 * GIB // 2),
        ("512M", 512 * 1024),
        ("100K", 100),
        ("1T", 1024 * GIB),
        ("2048", 2 * GIB),  # a bare number is MiB, as sbatch reads it
        (2048, 2 * GIB),
        (0.5, 512),
        ("1.5K", 2),  # rounded up to whole KiB
    ],
)
def test_mem_sizes(value: Any, kib: int) -> None:
    assert mem(value) == kib


@pytest.mark.parametrize(
    "value", ["", "G", "4X", "4B", "-1G", "4 GB B", "0", "0K", "0.5K", True, [4]]
)
def test_bad_mem_sizes(value: Any) -> None:
    problems: list[str] = []
    assert parse_mem_kib(value, problems) is None
    assert problems == [f"field 'mem': '{value}' is not a size like 4G or 512M"] or problems == [
        f"field 'mem': '{value}' is too small"
    ]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (30, 1800),  # a bare number is minutes, as sbatch reads it
        ("30", 1800),
        ("5:30", 330),  # MM:SS
        ("1:30:00", 5400),  # HH:MM:SS
        ("1-12", 129600),  # D-HH
        ("1-12:30", 131400),  # D-HH:MM
        ("2-00:00:01", 172801),  # D-HH:MM:SS
        ("90s", 90),
        ("30m", 1800),
        ("2h", 7200),
        ("1.5h", 5400),
        ("1d", 86400),
        ("1h30m", 5400),
        ("1.5s", 2),  # rounded up
    ],
)
def test_walltimes(value: Any, seconds: int) -> None:
    assert walltime(value) == seconds


@pytest.mark.parametrize(
    "value", [0, -5, "0", "00:00", "0s", "0.5s", "soon", "1:2:3:4", "1-", "h", "30 m", 1.5, True]
)
def test_bad_walltimes(value: Any) -> None:
    problems: list[str] = []
    assert parse_walltime_s(value, problems) is None
    assert problems == [f"field 'time': '{value}' is not a walltime like 30m, 2h or 1-12:00:00"]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (1, "00:01:00"),  # whole minutes, at least one
        (60, "00:01:00"),
        (61, "00:02:00"),
        (5400, "01:30:00"),
        (86399, "1-00:00:00"),
        (86400, "1-00:00:00"),
        (129600, "1-12:00:00"),
        (10 * 86400 + 3660, "10-01:01:00"),
    ],
)
def test_format_walltime(seconds: int, text: str) -> None:
    assert format_walltime(seconds) == text
    assert walltime(text) == max(60, -(-seconds // 60) * 60)  # what sbatch reads back


# --- batch resources ---------------------------------------------------------------------------


def resources(data: dict[str, Any]) -> Resources:
    result = Resources.from_mapping(data)
    assert isinstance(result, Resources), result
    return result


def resource_problems(data: dict[str, Any]) -> list[str]:
    result = Resources.from_mapping(data)
    assert isinstance(result, list), result
    return result


def test_resources_from_every_field() -> None:
    data = {
        "cpus": 4,
        "mem": "8G",
        "time": "2h",
        "gpus": 1,
        "nodes": 2,
        "ntasks": 8,
        "partition": "gpu",
        "account": "proj-1",
        "qos": "normal",
        "constraint": "a100",
        "sbatch_args": ["--exclusive", "--gres=gpu:a100:1", "-pdebug"],
    }
    assert set(data) == set(RESOURCE_FIELDS)
    assert resources(data) == Resources(
        4,
        8 * GIB,
        7200,
        1,
        2,
        8,
        "gpu",
        "proj-1",
        "normal",
        "a100",
        ("--exclusive", "--gres=gpu:a100:1", "-pdebug"),
    )
    assert resources({}) == Resources()
    assert resources({"cpus": None, "mem": None}) == Resources()


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"cpu": 2}, "unknown field 'cpu'"),
        ({"cpus": 0}, "field 'cpus': expected an integer >= 1"),
        ({"gpus": True}, "field 'gpus': expected an integer >= 1"),
        ({"nodes": "2"}, "field 'nodes': expected an integer >= 1"),
        ({"ntasks": 1.5}, "field 'ntasks': expected an integer >= 1"),
        ({"partition": "gpu debug"}, "field 'partition': expected a name of [A-Za-z0-9_@%+=:,./-]"),
        ({"account": "a;b"}, "field 'account': expected a name of [A-Za-z0-9_@%+=:,./-]"),
        ({"qos": "x\n"}, "field 'qos': expected a name of [A-Za-z0-9_@%+=:,./-]"),
        ({"constraint": True}, "field 'constraint': expected a name of [A-Za-z0-9_@%+=:,./-]"),
        ({"sbatch_args": "--exclusive"}, "field 'sbatch_args': expected a list of strings"),
        ({"sbatch_args": [1]}, "field 'sbatch_args': expected a list of strings"),
    ],
)
def test_bad_resources(data: dict[str, Any], problem: str) -> None:
    assert resource_problems(data) == [problem]


def test_all_resource_problems_are_reported() -> None:
    assert len(resource_problems({"cpus": 0, "mem": "x", "time": "y", "bogus": 1})) == 4


SHELL_TEXT = ["--x;rm", "--comment=$(id)", "--mail-user=a b", "--x`id`", "--x\n", "--a'b", "--x|y"]


@pytest.mark.parametrize("arg", SHELL_TEXT)
def test_sbatch_args_reject_shell_text(arg: str) -> None:
    assert resource_problems({"sbatch_args": [arg]}) == [
        f"field 'sbatch_args': '{arg}' has characters outside [A-Za-z0-9_@%+=:,./-]"
    ]


RESERVED = [
    "--job-name=x",
    "--job-name",
    "-J",
    "-Jx",
    "--job=x",
    "--output=o.txt",
    "--out=o",
    "-o",
    "--error=e",
    "-e",
    "--chdir=/",
    "-D/tmp",
    "--wrap=ls",
    "--parsable",
    "--array=1-3",
    "-a1",
    "--clusters=other",
    "-Mother",
    "--wait",
    "-W",
    "--test-only",
    "-vJx",
    "-vvo",
    "--",
    "--requeue",
    "--requ",
]


@pytest.mark.parametrize("arg", RESERVED)
def test_sbatch_args_reject_what_ccd_sets(arg: str) -> None:
    assert resource_problems({"sbatch_args": [arg]}) == [
        f"field 'sbatch_args': '{arg}' is set by ccd itself"
    ]


@pytest.mark.parametrize("arg", ["gpu", "-", "4G"])
def test_sbatch_args_are_options_only(arg: str) -> None:
    """A bare word would be sbatch's script argument (or an option's value, which must be
    joined to it): both would change what runs."""
    assert resource_problems({"sbatch_args": [arg]}) == [
        f"field 'sbatch_args': '{arg}' is not an option; give values joined to their option: "
        "--partition=gpu, -pgpu"
    ]


@pytest.mark.parametrize(
    "arg",
    [
        "--exclusive",
        "--gres=gpu:1",
        "-pdebug",
        "-N2",
        "-c4",
        "--mail-type=END,FAIL",
        "--export=ALL",
        "-vv",
        "--exclude=n01,n02",
        "--begin=now+60",
        "--nice=10",
    ],
)
def test_sbatch_args_allowed(arg: str) -> None:
    assert resources({"sbatch_args": [arg]}).sbatch_args == (arg,)


def test_merged_over_fills_only_what_is_unset() -> None:
    defaults = Resources(cpus=2, mem_kib=GIB, time_s=600, partition="cpu", sbatch_args=("-N1",))
    own = Resources(mem_kib=4 * GIB, gpus=1)
    assert own.merged_over(defaults) == Resources(
        cpus=2, mem_kib=4 * GIB, time_s=600, gpus=1, partition="cpu", sbatch_args=("-N1",)
    )
    with_args = Resources(sbatch_args=("--exclusive",))
    assert with_args.merged_over(defaults).sbatch_args == ("--exclusive",)  # replaced, not joined
    assert Resources().merged_over(defaults) == defaults
    assert defaults.merged_over(Resources()) == defaults


def test_scaled_multiplies_mem_and_time_rounding_up() -> None:
    base = Resources(cpus=2, mem_kib=1000, time_s=601, partition="gpu", sbatch_args=("-N1",))
    assert base.scaled({"mem": 2.0, "time": 1.5}) == dataclasses.replace(
        base, mem_kib=2000, time_s=902
    )
    assert base.scaled({"mem": 1.5}) == dataclasses.replace(base, mem_kib=1500)
    assert base.scaled({}) == base
    assert Resources(cpus=1).scaled({"mem": 2.0, "time": 2.0}) == Resources(cpus=1)  # unset stays


# --- host options ------------------------------------------------------------------------------


def test_ssh_defaults() -> None:
    opts = SshOptions.from_mapping("login", {})
    assert opts == SshOptions("login")
    assert isinstance(opts, SshOptions)
    assert (opts.port, opts.user, opts.identity, opts.known_hosts) == (22, None, None, None)
    assert opts.insecure_skip_host_key_check is False
    assert (opts.root, opts.max_sessions) == ("~/.ccd/runs", 8)
    assert (opts.keepalive_s, opts.connect_timeout_s, opts.commands_per_s) == (30.0, 10.0, 50.0)


def test_ssh_options_are_typed() -> None:
    data = {
        "type": "ssh",
        "max_jobs": 3,
        "hostname": "10.0.0.1",
        "port": 2222,
        "user": "me",
        "keepalive_s": 5,
        "insecure_skip_host_key_check": True,
        "known_hosts": None,
    }
    opts = SshOptions.from_mapping("x", data)
    assert opts == SshOptions(
        "10.0.0.1", port=2222, user="me", keepalive_s=5.0, insecure_skip_host_key_check=True
    )
    assert isinstance(opts, SshOptions)
    assert type(opts.keepalive_s) is float


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"hostnme": "x"}, "unknown field 'hostnme'"),
        ({"port": 0}, "field 'port': expected 1-65535"),
        ({"port": 65536}, "field 'port': expected 1-65535"),
        ({"port": "22"}, "field 'port': expected an integer, got '22'"),
        ({"port": 22.0}, "field 'port': expected an integer, got 22.0"),
        ({"user": ""}, "field 'user': expected a non-empty string, got ''"),
        ({"user": "-oX"}, "field 'user': '-oX' is not a user name"),
        ({"user": "a b"}, "field 'user': 'a b' is not a user name"),
        (
            {"hostname": "-oProxyCommand=x"},
            "field 'hostname': '-oProxyCommand=x' is not a host name or address",
        ),
        ({"hostname": "a b"}, "field 'hostname': 'a b' is not a host name or address"),
        ({"identity": [3]}, "field 'identity': expected a non-empty string, got [3]"),
        (
            {"insecure_skip_host_key_check": "yes"},
            "field 'insecure_skip_host_key_check': expected true or false, got 'yes'",
        ),
        ({"keepalive_s": 0}, "field 'keepalive_s': expected a number > 0"),
        (
            {"connect_timeout_s": float("inf")},
            "field 'connect_timeout_s': expected a number, got inf",
        ),
        ({"commands_per_s": True}, "field 'commands_per_s': expected a number, got True"),
        ({"max_sessions": 0}, "field 'max_sessions': expected an integer >= 1"),
    ],
)
def test_bad_ssh_options(data: dict[str, Any], problem: str) -> None:
    assert SshOptions.from_mapping("h", data) == [problem]


def test_numbers_are_read_as_text_where_text_is_expected() -> None:
    """YAML reads `account: 12345` as a number; it is the account named 12345."""
    assert resources({"account": 12345, "qos": 7}) == Resources(account="12345", qos="7")
    assert SlurmOptions.from_mapping({"account": 12345}) == SlurmOptions(account="12345")
    assert SshOptions.from_mapping("h", {"user": 1000}) == SshOptions("h", user="1000")


def test_ssh_hostname_accepts_names_and_addresses() -> None:
    for hostname in ("login1.cluster.example.org", "192.168.0.1", "::1", "fe80::1%eth0", "h_2"):
        assert isinstance(SshOptions.from_mapping("h", {"hostname": hostname}), SshOptions)


def test_slurm_defaults_and_values() -> None:
    assert SlurmOptions.from_mapping({}) == SlurmOptions()
    assert SlurmOptions() == SlurmOptions(
        "local", None, None, None, 30.0, 2.0, "~/.ccd/runs", Resources()
    )
    data = {
        "via": "login",
        "partition": "gpu",
        "account": "p1",
        "qos": "high",
        "poll_interval_s": 10,
        "poll_interval_min_s": 1,
        "root": "/scratch/me/ccd",
        "resources": {"mem": "2G", "time": 30},
    }
    assert SlurmOptions.from_mapping(data) == SlurmOptions(
        "login",
        "gpu",
        "p1",
        "high",
        10.0,
        1.0,
        "/scratch/me/ccd",
        Resources(mem_kib=2 * GIB, time_s=1800),
    )


@pytest.mark.parametrize(
    ("data", "problems"),
    [
        (
            {"resources": {"mem": "lots", "cpus": 0}},
            [
                "resources: field 'cpus': expected an integer >= 1",
                "resources: field 'mem': 'lots' is not a size like 4G or 512M",
            ],
        ),
        (
            {"resources": {"sbatch_args": ["--job-name=x"]}},
            ["resources: field 'sbatch_args': '--job-name=x' is set by ccd itself"],
        ),
        ({"resources": {"gpu": 1}}, ["resources: unknown field 'gpu'"]),
        ({"resources": ["4G"]}, ["field 'resources': expected a mapping"]),
        ({"poll_interval_s": 0}, ["field 'poll_interval_s': expected a number > 0"]),
        (
            {"poll_interval_s": 5, "poll_interval_min_s": 10},
            ["field 'poll_interval_min_s': must not exceed poll_interval_s"],
        ),
        ({"partition": "a b"}, ["field 'partition': expected a name of [A-Za-z0-9_@%+=:,./-]"]),
        ({"via": "x;y"}, ["field 'via': expected a name of [A-Za-z0-9_@%+=:,./-]"]),
        ({"root": ""}, ["field 'root': expected a non-empty string, got ''"]),
        ({"queue": "x"}, ["unknown field 'queue'"]),
    ],
)
def test_bad_slurm_options(data: dict[str, Any], problems: list[str]) -> None:
    assert SlurmOptions.from_mapping(data) == problems


@pytest.mark.parametrize(
    ("problem", "split"),
    [
        ("field 'port': expected 1-65535", ("port", "expected 1-65535")),
        ("resources: field 'mem': 'x' is bad", ("resources.mem", "'x' is bad")),
        ("resources: unknown field 'gpu'", ("resources", "unknown field 'gpu'")),
        ("unknown field 'x'", (None, "unknown field 'x'")),
        ("field 'hostname' is required", ("hostname", "required")),
        ("field 'resources': expected a mapping", ("resources", "expected a mapping")),
    ],
)
def test_split_problem(problem: str, split: tuple[str | None, str]) -> None:
    assert split_problem(problem) == split
