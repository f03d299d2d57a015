"""The daemon's config: the documented example, defaults, precedence, and one-line errors."""

from __future__ import annotations

import dataclasses
import re
import textwrap
from pathlib import Path

import pytest

from ccd.errors import ConfigError
from ccd.models import Limits as LimitsConfig
from ccd.server import config
from ccd.server.config import Config, HttpConfig
from ccd.spec import HostSpec
from ccd.spec.hosts import Resources, SlurmOptions, SshOptions
from ccd.spec.notify import NotifySpec

EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "ccd.yaml"
LOCAL = HostSpec("local", "local", None)


@pytest.fixture(autouse=True)
def xdg_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No state or runtime dir leaks in from the machine running the tests."""
    for name in ("CCD_STATE_DIR", "XDG_STATE_HOME", "XDG_RUNTIME_DIR"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    return home


def write(tmp_path: Path, text: str, name: str = "ccd.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _default(cls: type, name: str) -> object:
    f = cls.__dataclass_fields__[name]  # type: ignore[attr-defined]
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


# -- the example file ---------------------------------------------------------------------


def test_example_loads_with_the_code_defaults(xdg_env: Path) -> None:
    cfg = config.load(EXAMPLE)
    assert cfg.state_dir == xdg_env / ".local" / "state" / "ccd"
    assert cfg.socket == cfg.state_dir / "ccd.sock"
    assert dict(cfg.hosts) == {"local": LOCAL}
    assert cfg.limits == LimitsConfig()
    assert cfg.limits.max_jobs is None
    assert cfg.limits.retry_backoff_s == 1.0
    assert cfg.limits.retry_backoff_max_s == 300.0
    assert cfg.limits.kill_grace_s == 5.0
    assert cfg.limits.progress_interval_s == 1.0
    assert cfg.max_request_bytes == 16 << 20 == _default(Config, "max_request_bytes")
    assert cfg.shutdown_grace_s == 5.0 == _default(Config, "shutdown_grace_s")
    assert cfg.http == HttpConfig(listen=None, allow_remote=False)
    assert cfg == config.load(None)  # the example changes nothing


# how a dataclass field is spelled in YAML, where that differs
_YAML_NAMES = {"mem_kib": "mem", "time_s": "time"}


@pytest.mark.parametrize(
    ("cls", "prefix"),
    [
        (Config, ""),
        (LimitsConfig, "limits."),
        (HttpConfig, "http."),
        (HostSpec, "hosts.NAME."),
        (SshOptions, "hosts.NAME."),
        (SlurmOptions, "hosts.NAME."),
        (Resources, "hosts.NAME.resources."),
    ],
)
def test_example_documents_every_field(cls: type, prefix: str) -> None:
    """A new option must be added to configs/ccd.yaml (set, or commented out) with its docs."""
    text = EXAMPLE.read_text()
    # a host's name is its key; its options are the fields of SshOptions or SlurmOptions
    skip = {"name", "options"} if cls is HostSpec else set()
    names = [_YAML_NAMES.get(f.name, f.name) for f in dataclasses.fields(cls)]
    missing = [
        prefix + name
        for name in names
        if name not in skip and not re.search(rf"^[ #]*{name}:", text, re.MULTILINE)
    ]
    assert not missing, f"configs/ccd.yaml does not document {missing}"


def _example_hosts_uncommented() -> str:
    """The example's `hosts:` section with its commented-out entries switched on."""
    text = EXAMPLE.read_text()
    start = text.index("\nhosts:\n") + 1
    return text[start : text.index("\n\n", start)].replace("\n  # ", "\n  ") + "\n"


def test_example_hosts_are_valid_when_uncommented(tmp_path: Path) -> None:
    """Each commented-out host (every ssh, slurm and resources option) loads as written."""
    section = _example_hosts_uncommented()
    for cls in (SshOptions, SlurmOptions, Resources):  # each option is set in an example
        for f in dataclasses.fields(cls):
            name = _YAML_NAMES.get(f.name, f.name)
            assert re.search(rf"^ +{name}:", section, re.MULTILINE), f"no example sets {name}"
    hosts = config.load(write(tmp_path, section)).hosts
    assert {name: host.type for name, host in hosts.items()} == {
        "local": "local",
        "bigmem": "local",
        "login": "ssh",
        "hpc": "slurm",
    }
    login, hpc = hosts["login"].options, hosts["hpc"].options
    assert isinstance(login, SshOptions)
    assert isinstance(hpc, SlurmOptions)
    unset = dataclasses.replace(login, hostname="x", user=None, identity=None, known_hosts=None)
    assert unset == SshOptions("x")  # the other values shown are the defaults
    assert hpc.via == "login"
    assert hpc.resources.time_s == 3600


def test_example_states_each_default_in_its_comments() -> None:
    """Each number's comment says its default, and says the same as the code."""
    text = EXAMPLE.read_text()
    scalars = [
        f
        for cls in (LimitsConfig, Config, HttpConfig)
        for f in dataclasses.fields(cls)
        if f.default is None or isinstance(f.default, int | float)
    ]
    assert len(scalars) == 9
    for f in scalars:
        shown = "null" if f.default is None else str(f.default)
        shown = str(f.default).lower() if isinstance(f.default, bool) else shown
        block = re.search(rf"((?:^ *#.*\n)+) *{f.name}:", text, re.MULTILINE)
        assert block, f"{f.name} has no comment above it"
        assert f"Default: {shown}" in " ".join(block.group(1).split()), f.name


# -- defaults with no file ----------------------------------------------------------------


def test_defaults_without_a_file(xdg_env: Path) -> None:
    cfg = config.load(None)
    assert cfg.state_dir == xdg_env / ".local" / "state" / "ccd"
    assert cfg.socket == cfg.state_dir / "ccd.sock"
    assert dict(cfg.hosts) == {"local": LOCAL}
    assert cfg.limits == LimitsConfig()


def test_state_dir_from_ccd_state_dir_beats_xdg(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("CCD_STATE_DIR", str(tmp_path / "explicit"))
    assert config.load(None).state_dir == tmp_path / "explicit"


def test_state_dir_from_xdg_state_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    cfg = config.load(None)
    assert cfg.state_dir == tmp_path / "xdg" / "ccd"
    assert cfg.socket == tmp_path / "xdg" / "ccd" / "ccd.sock"


def test_socket_in_xdg_runtime_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    assert config.load(None).socket == tmp_path / "run" / "ccd.sock"


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert config.load(write(tmp_path, "# nothing\n")) == config.load(None)


# -- the file's values and the command line -----------------------------------------------


def test_file_values(tmp_path: Path, xdg_env: Path) -> None:
    path = write(
        tmp_path,
        """\
        state_dir: ~/st
        hosts:
          bigmem: {type: local, max_jobs: 2}
          plain:
        limits: {max_jobs: 8, retry_backoff_s: 2, kill_grace_s: 0.5}
        max_request_bytes: 1024
        shutdown_grace_s: 1
        """,
    )
    cfg = config.load(path)
    assert cfg.state_dir == xdg_env / "st"  # ~ expanded
    assert cfg.socket == xdg_env / "st" / "ccd.sock"  # follows the file's state_dir
    assert dict(cfg.hosts) == {
        "local": LOCAL,
        "bigmem": HostSpec("bigmem", "local", 2),
        "plain": HostSpec("plain", "local", None),
    }
    assert cfg.limits == LimitsConfig(max_jobs=8, retry_backoff_s=2, kill_grace_s=0.5)
    assert cfg.max_request_bytes == 1024
    assert cfg.shutdown_grace_s == 1.0


def test_the_local_host_can_be_capped(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, "hosts: {local: {max_jobs: 3}}\n"))
    assert dict(cfg.hosts) == {"local": HostSpec("local", "local", 3)}


def test_command_line_beats_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, f"state_dir: {tmp_path / 'file-st'}\nsocket: {tmp_path / 'f.sock'}\n")
    cfg = config.load(path, state_dir=tmp_path / "cli-st", socket=tmp_path / "cli.sock")
    assert (cfg.state_dir, cfg.socket) == (tmp_path / "cli-st", tmp_path / "cli.sock")
    cfg = config.load(path, state_dir=tmp_path / "cli-st")
    assert (cfg.state_dir, cfg.socket) == (tmp_path / "cli-st", tmp_path / "f.sock")


def test_http_listen_from_the_file_and_the_command_line(tmp_path: Path) -> None:
    path = write(tmp_path, "http: {listen: '127.0.0.1:8787'}\n")
    assert config.load(path).http.address() == ("127.0.0.1", 8787)
    cfg = config.load(path, http_listen="[::1]:0", http_allow_remote=True)
    assert cfg.http.address() == ("::1", 0) and cfg.http.allow_remote
    assert config.load(None, http_listen="localhost:1").http == HttpConfig("localhost:1")
    with pytest.raises(ConfigError, match=r"^--http: expected HOST:PORT such as 127\.0\.0\.1:8787"):
        config.load(None, http_listen="8787")


def test_command_line_state_dir_moves_the_default_socket(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, "{}\n"), state_dir=tmp_path / "cli-st")
    assert cfg.socket == tmp_path / "cli-st" / "ccd.sock"


# -- errors: one line, naming the file and the field --------------------------------------


BAD = {
    "unknown top field": ("colour: red\n", "'colour'"),
    "unknown limit": ("limits: {max_job: 3}\n", "'limits.max_job'"),
    "limit not a number": ("limits: {kill_grace_s: soon}\n", "'limits.kill_grace_s'"),
    "limit negative": ("limits: {retry_backoff_s: -1}\n", "'limits.retry_backoff_s'"),
    "limit a boolean": ("limits: {progress_interval_s: true}\n", "'limits.progress_interval_s'"),
    "limit null": ("limits: {retry_backoff_max_s: null}\n", "'limits.retry_backoff_max_s'"),
    "limits not a mapping": ("limits: [1, 2]\n", "'limits'"),
    "request bytes not a number": ("max_request_bytes: 16M\n", "'max_request_bytes'"),
    "grace negative": ("shutdown_grace_s: -2\n", "'shutdown_grace_s'"),
    "bad host type": ("hosts: {gpu: {type: slurmm}}\n", "'hosts.gpu.type'"),
    "local of another type": ("hosts: {local: {type: ssh}}\n", "'hosts.local.type'"),
    "unknown ssh option": ("hosts: {l: {type: ssh, prot: 1}}\n", "'hosts.l.prot'"),
    "slurm option on ssh": ("hosts: {l: {type: ssh, via: x}}\n", "'hosts.l.via'"),
    "ssh option on local": ("hosts: {l: {type: local, port: 22}}\n", "'hosts.l.port'"),
    "bad ssh port": ("hosts: {l: {type: ssh, port: 0}}\n", "'hosts.l.port'"),
    "bad ssh user": ("hosts: {l: {type: ssh, user: [a]}}\n", "'hosts.l.user'"),
    "bad slurm poll": (
        "hosts: {c: {type: slurm, poll_interval_s: -1}}\n",
        "'hosts.c.poll_interval_s'",
    ),
    "bad slurm resources": ("hosts: {c: {type: slurm, resources: [1]}}\n", "'hosts.c.resources'"),
    "bad slurm mem": (
        "hosts: {c: {type: slurm, resources: {mem: 4X}}}\n",
        "'hosts.c.resources.mem'",
    ),
    "unknown resource": (
        "hosts: {c: {type: slurm, resources: {cpu: 1}}}\n",
        "'hosts.c.resources.cpu'",
    ),
    "reserved sbatch arg": (
        "hosts: {c: {type: slurm, resources: {sbatch_args: [-Jx]}}}\n",
        "'hosts.c.resources.sbatch_args'",
    ),
    "via nowhere": ("hosts: {c: {type: slurm, via: login}}\n", "'hosts.c.via'"),
    "via a local host": ("hosts: {c: {type: slurm, via: b}, b: {type: local}}\n", "'hosts.c.via'"),
    "host max_jobs zero": ("hosts: {gpu: {max_jobs: 0}}\n", "'hosts.gpu.max_jobs'"),
    "host max_jobs text": ("hosts: {gpu: {max_jobs: many}}\n", "'hosts.gpu.max_jobs'"),
    "unknown host field": ("hosts: {gpu: {type: local, cores: 4}}\n", "'hosts.gpu.cores'"),
    "host not a mapping": ("hosts: {gpu: [local]}\n", "'gpu'"),
    "hosts not a mapping": ("hosts: [gpu, cpu]\n", "'hosts'"),
    "http not a mapping": ("http: 127.0.0.1:8787\n", "'http'"),
    "unknown http field": ("http: {port: 8787}\n", "'http.port'"),
    "http listen no port": ("http: {listen: localhost}\n", "'http.listen'"),
    "http listen bad port": ("http: {listen: 'localhost:99999'}\n", "'http.listen'"),
    "http listen a number": ("http: {listen: 8787}\n", "'http.listen'"),
    "http allow_remote text": ("http: {allow_remote: 'yes please'}\n", "'http.allow_remote'"),
    "top level a list": ("- state_dir: /x\n", "mapping"),
    "top level a string": ("just words\n", "mapping"),
}


@pytest.mark.parametrize(("text", "names"), list(BAD.values()), ids=list(BAD))
def test_bad_config_is_one_line_naming_file_and_field(
    tmp_path: Path, text: str, names: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert names in message, message
    assert "\n" not in message, message


def test_host_type_error_names_the_field_and_the_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"field 'hosts\.gpu\.type': unknown type 'slurmm'"):
        config.load(write(tmp_path, "hosts: {gpu: {type: slurmm}}\n"))


def test_host_option_errors_say_what_is_wrong(tmp_path: Path) -> None:
    text = "hosts: {c: {type: slurm, resources: {mem: 4X}}}\n"
    with pytest.raises(ConfigError) as info:
        config.load(write(tmp_path, text))
    assert str(info.value) == (
        f"{tmp_path / 'ccd.yaml'}: field 'hosts.c.resources.mem': '4X' is not a size like 4G "
        "or 512M"
    )


# -- remote hosts -------------------------------------------------------------------------


def test_host_types() -> None:
    assert config.HOST_TYPES == ("local", "ssh", "slurm")


def test_ssh_and_slurm_hosts(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        hosts:
          hpc:
            type: slurm
            via: login
            max_jobs: 50
            resources: {mem: 2G, time: 1:30:00, sbatch_args: [--exclusive]}
          login: {type: ssh, hostname: login.example.org, user: me, keepalive_s: 5}
          box: {type: ssh}
          queue: {type: slurm}
        """,
    )
    hosts = config.load(path).hosts
    assert hosts["login"] == HostSpec(
        "login", "ssh", None, SshOptions("login.example.org", user="me", keepalive_s=5.0)
    )
    assert hosts["box"] == HostSpec("box", "ssh", None, SshOptions("box"))
    assert hosts["queue"] == HostSpec("queue", "slurm", None, SlurmOptions())
    # 1:30:00 is a walltime here, not YAML 1.1's base-60 number 5400 (5400 minutes to sbatch)
    resources = Resources(mem_kib=2 << 20, time_s=5400, sbatch_args=("--exclusive",))
    assert hosts["hpc"] == HostSpec("hpc", "slurm", 50, SlurmOptions("login", resources=resources))


def test_base_60_numbers_stay_text_only_for_colons(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, "limits: {max_jobs: 12, kill_grace_s: 1.5}\n"))
    assert (cfg.limits.max_jobs, cfg.limits.kill_grace_s) == (12, 1.5)
    with pytest.raises(ConfigError, match=r"'limits\.kill_grace_s'"):
        config.load(write(tmp_path, "limits: {kill_grace_s: 1:30}\n"))  # text, not 90


def test_missing_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=re.escape(f"{path}: ")) as info:
        config.load(path)
    assert "\n" not in str(info.value)


def test_config_error_is_a_ccd_error() -> None:
    from ccd.errors import CcdError

    assert issubclass(ConfigError, CcdError)


# -- known bugs in ccd/server/config.py (strict: each turns into a failure once fixed) ----


def test_yaml_syntax_error_is_one_line_with_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "limits: {max_jobs: 3\nhosts: x\n")
    with pytest.raises(ConfigError) as info:
        config.load(path)
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith(f"{path}:2:"), message


@pytest.mark.parametrize("text", ["limits: []\n", "limits: 0\n", "hosts: ''\n", "hosts: {a: 0}\n"])
def test_falsy_non_mapping_is_an_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError):
        config.load(write(tmp_path, text))


@pytest.mark.parametrize("value", ["0", "2.5"])
def test_global_max_jobs_must_be_a_positive_integer(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match=re.escape("'limits.max_jobs'")):
        config.load(write(tmp_path, f"limits: {{max_jobs: {value}}}\n"))


def test_host_max_jobs_rejects_a_boolean(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'hosts\.a\.max_jobs'"):
        config.load(write(tmp_path, "hosts: {a: {max_jobs: true}}\n"))


@pytest.mark.parametrize("value", [".nan", ".inf"])
def test_limits_must_be_finite(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match=re.escape("'limits.retry_backoff_s'")):
        config.load(write(tmp_path, f"limits: {{retry_backoff_s: {value}}}\n"))


def test_max_request_bytes_must_be_an_integer(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'max_request_bytes'"):
        config.load(write(tmp_path, "max_request_bytes: 1.5\n"))


@pytest.mark.parametrize("name", ["'a b/..'", "'-x'", "null"])
def test_host_names_follow_the_name_rule(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError):
        config.load(write(tmp_path, f"hosts: {{{name}: {{type: local}}}}\n"))


def test_notify_takes_one_notifier_or_a_list(tmp_path: Path) -> None:
    one = config.load(write(tmp_path, "notify: {command: 'echo done', events: [failed]}\n"))
    assert one.notify == (
        NotifySpec(command=("sh", "-c", "echo done"), events=frozenset({"failed"})),
    )
    two = config.load(
        write(
            tmp_path,
            "notify:\n  - {url: 'https://h.example/x'}\n  - {command: [a, b], timeout: 3}\n",
        )
    )
    assert two.notify == (
        NotifySpec(url="https://h.example/x"),
        NotifySpec(command=("a", "b"), timeout_s=3.0),
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "notify: {url: 'ftp://x'}",
            "field 'notify': field 'url': expected an http:// or https:// URL",
        ),
        (
            "notify: [{command: x}, {command: y, on: [failed]}]",
            "field 'notify': item 2: unknown field",
        ),
        ("notify: {}", "field 'notify': give a 'command', a 'url', or both"),
        ("notify: 3", "field 'notify': expected a mapping"),
    ],
)
def test_a_bad_notifier_is_one_line_naming_the_field(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        config.load(write(tmp_path, text + "\n"))
