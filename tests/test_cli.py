"""The ``geofailover`` command line: configuration, output, exit codes, adapters' entry.

Runs ``cli.main`` in-process against real servers (output captured through its
``stdout`` parameter, as the framework adapters do) and the console entry point
as a real subprocess where the process boundary matters.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from geofailover_core import FailoverConfig, cli, registry
from geofailover_core.control import Heartbeat
from geofailover_core.testing import RedisServer, wait_until

from .conftest import CONTROL_DB, FAST, MakeClient, url_list

FAST_OPTS = ["-o", "probe_interval=0.1", "-o", "health_check_timeout=0.2"]


class Tty(io.StringIO):
    """A captured stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def run(*argv: str, engines: Any = None, stdout: io.StringIO | None = None) -> tuple[int, str]:
    out = stdout if stdout is not None else io.StringIO()
    code = cli.main(list(argv), engines=engines, stdout=out)
    return code, out.getvalue()


def run_json(*argv: str, engines: Any = None) -> tuple[int, Any]:
    code, text = run(*argv, "--json", engines=engines)
    return code, json.loads(text.splitlines()[-1])


def url_args(servers: list[Any], name: str = "clitest") -> list[str]:
    return ["--url", url_list(servers), "--name", name, *FAST_OPTS]


# -- parsing and configuration -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("1.5", 1.5), ("30s", 30.0), ("500ms", 0.5), ("5m", 300.0), ("1h30m", 5400.0), ("2d", 172800.0), (" 1H ", 3600.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert cli.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "5 parsecs", "-5", "0", "1h-", "nan", "inf"])
def test_bad_durations_say_how_to_write_one(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="duration"):
        cli.parse_duration(text)


def test_bad_duration_on_the_command_line_is_exit_2(capsys) -> None:
    code, out = run("pin", "a", "--for", "soon", "--url", "redis://127.0.0.1:1/0")
    assert code == 2 and out == ""
    assert "'soon' is not a duration" in capsys.readouterr().err


def configs(*argv: str, environ: dict[str, str] | None = None) -> list[FailoverConfig]:
    parser = cli.build_parser()
    return cli.load_configs(parser.parse_args([*argv, "status"]) if argv and argv[0].startswith("-") else parser.parse_args(["status", *argv]),
                            environ or {})


def test_configuration_from_url_env_and_options() -> None:
    [config] = configs("--url", "redis://h1:6379/0?name=us&weight=2;redis://h2:6379/0?name=eu", "--name", "cache",
                       "-o", "control_key_prefix=myapp", "-o", "probe_interval=0.25", "-o", "auto_failback=false")
    assert [e.name for e in config.endpoints] == ["us", "eu"] and config.name == "cache"
    assert (config.control_key_prefix, config.probe_interval, config.auto_failback) == ("myapp", 0.25, False)
    [config] = configs(environ={"GEOFAILOVER_URL": "redis://h1:6379/0?name=only"})
    assert [e.name for e in config.endpoints] == ["only"] and config.name == "default"


def test_configuration_from_a_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "geofailover.toml"
    path.write_text(
        'name = "cache"\nprobe_interval = 0.5\napp_label = "web"\n'
        '[[endpoints]]\nname = "us-east"\nurl = "redis://h1:6379/0"\nweight = 2\n'
        '[[endpoints]]\nname = "eu-west"\nurl = "redis://h2:6379/0"\n'
    )
    [config] = configs("--config", str(path))
    assert (config.name, config.app_label, config.probe_interval) == ("cache", "web", 0.5)
    assert [(e.name, e.weight) for e in config.endpoints] == [("us-east", 2.0), ("eu-west", 1.0)]
    nested = tmp_path / "pyproject-like.toml"
    nested.write_text('[geofailover]\nendpoints = "redis://h1:6379/0?name=x"\n')
    [config] = configs(environ={"GEOFAILOVER_CONFIG": str(nested)})
    assert config.endpoints[0].name == "x"


@pytest.mark.parametrize(
    ("argv", "environ", "setting", "fix"),
    [
        ([], {}, "--url", "GEOFAILOVER_URL"),
        (["--url", "redis://h/0", "--config", "x.toml"], {}, "--url/--config", "one of them"),
        (["--config", "/nonexistent/g.toml"], {}, "--config", "check the path"),
        (["--url", "redis://h/0", "-o", "novalue"], {}, "-o", "KEY=VALUE"),
        (["--url", "redis://h/0", "-o", "health_check_intervall=1"], {}, "health_check_intervall", "did you mean 'health_check_interval'"),
        (["--url", "http://h/0"], {}, "endpoints['h:6379'].url", "redis://"),
    ],
)
def test_configuration_mistakes_name_the_setting_and_the_fix(argv: list[str], environ: dict[str, str], setting: str, fix: str) -> None:
    from geofailover_core import ConfigurationError

    with pytest.raises(ConfigurationError) as info:
        configs(*argv, environ=environ)
    assert info.value.setting == setting and fix in str(info.value)


def test_bad_toml_is_a_configuration_error(tmp_path: Path) -> None:
    from geofailover_core import ConfigurationError

    path = tmp_path / "bad.toml"
    path.write_text("name = \n")
    with pytest.raises(ConfigurationError, match=r"'--config'.*not valid TOML.*Fix"):
        configs("--config", str(path))


def test_configuration_error_is_exit_2_on_stderr_or_json_on_stdout(capsys, monkeypatch) -> None:
    monkeypatch.delenv("GEOFAILOVER_URL", raising=False)
    monkeypatch.delenv("GEOFAILOVER_CONFIG", raising=False)
    code, out = run("status")
    assert code == 2 and out == ""
    assert "no configuration given" in capsys.readouterr().err
    code, data = run_json("status")
    assert code == 2 and data["code"] == 2 and "GEOFAILOVER_URL" in data["error"]


def test_help_goes_to_the_given_stream() -> None:
    code, out = run("--help")
    assert code == 0 and "failover" in out and "exit codes" in out
    code, out = run("failover", "--help")
    assert code == 0 and "--to NAME" in out and "--for DURATION" in out


# -- status -----------------------------------------------------------------------------------------


def test_status_shows_endpoints_fleet_and_what_to_do(two, make_client: MakeClient) -> None:
    client = make_client(two, name="clitest", app_label="web")
    client.ping()
    wait_until(lambda: client.geofailover.control and client.geofailover.control.fleet(), timeout=3)
    code, out = run("status", *url_args(two))
    assert code == 0, out
    for text in ("ENDPOINT", "URL", "WEIGHT", "HEALTH", "BREAKER", "LATENCY", "ACTIVE", "FLEET (1 process)", "THIS HOST",
                 "PROCESSES  1", "override: none"):
        assert text in out
    assert "1 of 1" in out and " web " in out
    assert "OK  all 2 endpoints healthy; 1 process on a" in out
    assert "\x1b[" not in out  # not a terminal: no colour

    two[1].kill()
    wait_until(lambda: client.geofailover.status()["endpoints"][1]["health"] == "unhealthy", timeout=3)
    code, out = run("status", *url_args(two))
    assert code == 1
    assert "DEGRADED  b is unhealthy" in out and "check that server and the network to it" in out


def test_status_json_lists_processes(two, make_client: MakeClient) -> None:
    client = make_client(two, name="clitest")
    client.ping()
    wait_until(lambda: client.geofailover.control and client.geofailover.control.fleet(), timeout=3)
    code, data = run_json("status", *url_args(two))
    [config] = data["configurations"]
    assert code == 0 and data["code"] == 0
    assert [(p["pid"], p["active"]) for p in config["fleet"]] == [(client.geofailover.status()["pid"], "a")]
    assert {"endpoints", "override", "disagreements", "control_plane", "active"} <= set(config)


def test_status_flags_a_process_that_disagrees(two, make_client: MakeClient, fault_proxy_factory) -> None:
    proxy = fault_proxy_factory(two[0])
    client = make_client([proxy, two[1]], name="clitest")  # same endpoint names, its own path to a
    client.ping()
    engine = client.geofailover
    proxy.refuse()  # this process loses a; the rest of the fleet (two peers) does not
    wait_until(lambda: engine.active == "b", timeout=3)
    wait_until(lambda: any(p.active == "b" for p in engine.control.fleet()), timeout=3)  # type: ignore[union-attr]
    for pid in (4242, 4243):
        peer = Heartbeat("peer-host", pid, "clitest", "worker", "a", time.time(), None, None, "0.1.0", None, time.time(), 60.0)
        two[0].client(db=CONTROL_DB).hset("geofailover:clitest:fleet", peer.key, peer.to_json())
    code, out = run("status", *url_args(two))
    assert code == 1
    assert "SPLIT" in out and "uses b while most use a" in out and "check its log" in out


def test_status_in_colour_only_on_a_terminal(two) -> None:
    outputs = [
        run("status", *url_args(two, "colour"), stdout=Tty()),
        run("status", "--color", "never", *url_args(two, "colour"), stdout=Tty()),
        run("status", "--color", "always", *url_args(two, "colour")),
    ]
    assert [code for code, _ in outputs] == [3, 3, 3]  # nobody runs under this name
    assert ["\x1b[" in out for _, out in outputs] == [True, False, True]


def test_status_watch_refreshes(two) -> None:
    code, out = run("status", "--watch", "0.1", "--count", "2", *url_args(two, "watch"))
    assert code == 3 and out.count("geofailover status") == 2 and out.count("ENDPOINT") == 2
    code, text = run("status", "--watch", "0.1", "--count", "2", "--json", *url_args(two, "watch"))
    assert [json.loads(line)["code"] for line in text.splitlines()] == [3, 3]


def test_status_says_when_no_process_reports(two) -> None:
    code, out = run("status", *url_args(two, "empty-fleet"))
    assert code == 3
    assert "UNKNOWN  no process reports heartbeats for configuration 'empty-fleet'" in out
    assert "key prefix" in out


def test_status_with_control_plane_off(two) -> None:
    code, out = run("status", *url_args(two, "off"), "-o", "control_plane=false")
    # Fleet tracking is off on purpose: the report, and its exit code, are this host's.
    assert code == 0 and "NOTE  control_plane is off" in out and "PROCESSES" not in out
    assert "OK  all 2 endpoints healthy; this host would use a" in out


def test_status_masks_passwords(redis_server_factory) -> None:
    servers = redis_server_factory(2, password="s3cr3t-pw")
    code, out = run("status", *url_args(servers, "masked"))
    assert code == 3 and "s3cr3t-pw" not in out and ":***@" in out
    code, out = run("check", "--json", *url_args(servers, "masked"))
    assert "s3cr3t-pw" not in out


# -- check ------------------------------------------------------------------------------------------


def test_check_exit_codes(two) -> None:
    code, out = run("check", *url_args(two, "chk"))
    assert code == 0 and out.startswith("OK  configuration 'chk': all 2 endpoints healthy")
    two[1].kill()
    code, out = run("check", *url_args(two, "chk"))
    assert code == 1 and out.startswith("DEGRADED") and "b unhealthy" in out and "traffic can use a" in out
    two[0].kill()
    code, data = run_json("check", *url_args(two, "chk"))
    assert code == 2 and data["configurations"][0]["state"] == "down"
    assert [e["health"] for e in data["configurations"][0]["endpoints"]] == ["unhealthy", "unhealthy"]


# -- actions ----------------------------------------------------------------------------------------


def test_failover_and_failback_report_the_fleet(two, make_client: MakeClient) -> None:
    client = make_client(two, name="clitest")
    client.ping()
    wait_until(lambda: client.geofailover.control and client.geofailover.control.fleet(), timeout=3)
    code, out = run("failover", "--to", "b", "--reason", "drill", *url_args(two))
    assert code == 0, out
    assert 'record: failover to b by ' in out and '("drill"); written to a, b' in out
    assert "OK  all 1 process followed in" in out and "(1 on b)" in out
    assert client.geofailover.active == "b"
    code, out = run("failback", *url_args(two))
    assert code == 0 and "(1 on a)" in out and client.geofailover.active == "a"
    code, out = run("pin", "b", "--for", "1h", *url_args(two))
    assert code == 0 and "pin to b for 1h00m" in out
    code, out = run("unpin", "--wait", "0", *url_args(two))
    assert code == 0 and "not waiting for the fleet" in out


def test_action_with_no_running_process_says_what_to_check(two) -> None:
    code, out = run("failover", "--to", "b", "--wait", "0.5", *url_args(two, "nobody"))
    assert code == 3
    assert "no running process reports heartbeats for configuration 'nobody'" in out


def test_stragglers_are_exit_1_with_their_reason(two, make_client: MakeClient, fault_proxy_factory) -> None:
    proxy = fault_proxy_factory(two[1])
    proxy.refuse()
    client = make_client([two[0], proxy], name="clitest")
    client.ping()
    wait_until(lambda: client.geofailover.status()["endpoints"][1]["health"] == "unhealthy", timeout=3)
    wait_until(lambda: client.geofailover.control and client.geofailover.control.fleet(), timeout=3)
    code, out = run("failover", "--to", "b", "--wait", "1", *url_args(two))
    assert code == 1
    assert "STRAGGLERS  1 of 1 processes did not follow within 1s" in out
    assert "on a: not followed: b is unhealthy from here" in out


def test_unknown_and_unhealthy_targets_are_exit_2(two, capsys) -> None:
    code, _ = run("failover", "--to", "nope", *url_args(two, "bad"))
    assert code == 2 and "no configuration has an endpoint named 'nope'; configured endpoints: a, b" in capsys.readouterr().err
    two[1].kill()
    code, _ = run("failover", "--to", "b", *url_args(two, "bad"))
    assert code == 2 and "pass --force" in capsys.readouterr().err
    code, out = run("failover", "--to", "b", "--force", "--wait", "0", *url_args(two, "bad"))
    assert code == 3 and "written to a" in out and "not written to b: ConnectionError" in out


def test_nothing_written_is_exit_2(two) -> None:
    for server in two:
        server.kill()
    code, out = run("unpin", *url_args(two, "down"))
    assert code == 2 and "could not be written to any endpoint" in out


# -- engines from a framework adapter ---------------------------------------------------------------


def test_adapters_pass_their_engines(two, make_client: MakeClient, capsys) -> None:
    client = make_client(two, name="adapted")
    client.ping()
    wait_until(lambda: client.geofailover.control and client.geofailover.control.fleet(), timeout=3)
    idle = registry.build_engine(FailoverConfig.from_string(url_list(two), name="idle", **FAST))
    seen: list[Any] = []
    idle.on("*", seen.append)
    try:
        code, data = run_json("status", engines=[client.geofailover, idle])
        # Nobody runs "idle": beside a configuration with a fleet, that is degraded (1), not "nobody" (3).
        assert code == 1 and [c["name"] for c in data["configurations"]] == ["adapted", "idle"]
        # The serving engine stays a fleet member; the idle one (a management command's) only
        # observed while the command ran: no heartbeat, no events, and it is released afterwards.
        assert client.geofailover.control is not None and not client.geofailover.control.observer
        assert idle.control is not None and not idle.control.observer and not idle.observer
        assert data["configurations"][1]["fleet"] == [] and seen == []
        code, data = run_json("status", "--name", "idle", engines=[client.geofailover, idle])
        assert [c["name"] for c in data["configurations"]] == ["idle"]
        code, _ = run("status", "--name", "nope", engines=[idle])
        assert code == 2 and "no configuration named 'nope' here; available: idle" in capsys.readouterr().err
        code, _ = run("status", "--url", "redis://h/0", engines=[idle])
        assert code == 2 and "unrecognized argument --url" in capsys.readouterr().err
        assert not idle.closed and not client.geofailover.closed  # the CLI never closes engines it was given
    finally:
        idle.close()


# -- the console entry point ----------------------------------------------------------------------------


def test_python_dash_m_entry_point(two: list[RedisServer]) -> None:
    proc = subprocess.run([sys.executable, "-m", "geofailover_core", "--version"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and proc.stdout.startswith("geofailover ")
    proc = subprocess.run(
        [sys.executable, "-m", "geofailover_core", "check", *url_args(two, "entry")], capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no stray log lines without -v
    two[1].kill()
    proc = subprocess.run(
        [sys.executable, "-m", "geofailover_core", "check", *url_args(two, "entry")], capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 1 and proc.stderr == ""


# -- a command process only observes ----------------------------------------------------------------


def test_a_command_fires_no_events_on_the_engines_it_is_given(two, capsys) -> None:
    idle = registry.build_engine(FailoverConfig.from_string(url_list(two), name="quiet", **FAST))
    seen: list[Any] = []
    idle.on("*", seen.append)
    two[0].kill()  # the first endpoint is down: the engine's own probes would fail over
    try:
        assert run("status", engines=[idle])[0] != 0
        assert run("check", engines=[idle])[0] == 1
        code, out = run("failover", "--to", "b", "--wait", "0.5", engines=[idle])
        assert code == 3, out  # nobody runs under this name: nobody acknowledged
        assert idle.events.flush(2.0) and seen == []
    finally:
        idle.close()


def test_the_standalone_command_writes_no_heartbeat_and_leaves_no_hold(two) -> None:
    code, out = run("failover", "--to", "b", "--wait", "0.3", *url_args(two, "lonely"))
    assert code == 3, out
    assert two[0].client(db=CONTROL_DB).hlen("geofailover:lonely:fleet") == 0 and two[1].client(db=CONTROL_DB).hlen("geofailover:lonely:fleet") == 0


# -- status: the fleet is the subject -------------------------------------------------------------------


def test_status_top_level_active_is_the_fleets_under_an_override(two, make_client: MakeClient) -> None:
    client = make_client(two, name="clitest")
    client.ping()
    wait_until(lambda: client.geofailover.control and client.geofailover.control.fleet(), timeout=3)
    assert run("failover", "--to", "b", *url_args(two))[0] == 0
    code, data = run_json("status", *url_args(two))
    [config] = data["configurations"]
    assert config["active"] == "b" and config["fleet_state"] == "agrees"
    assert config["here"]["active"] == "a"  # this command's own probes: a is healthy and ranks first
    code, out = run("status", *url_args(two))
    assert code == 0 and "1 process on b" in out


def test_status_shows_what_the_fleet_sees_beside_what_this_host_sees(two, make_client: MakeClient, fault_proxy_factory) -> None:
    proxy = fault_proxy_factory(two[0])
    client = make_client([proxy, two[1]], name="clitest")
    client.ping()
    engine = client.geofailover
    proxy.refuse()  # the serving process loses a; this host does not
    wait_until(lambda: engine.active == "b", timeout=3)
    wait_until(lambda: any(p.view and p.view["a"][0] == "unhealthy" for p in engine.control.fleet()), timeout=3)  # type: ignore[union-attr]
    code, data = run_json("status", *url_args(two))
    [config] = data["configurations"]
    a = next(e for e in config["endpoints"] if e["name"] == "a")
    assert a["fleet"]["health"] == {"unhealthy": 1} and a["here"]["health"] == "healthy"
    assert a["fleet"]["breaker"] == {engine.endpoint("a").breaker_state: 1}
    assert config["active"] == "b" and code == 1
    code, out = run("status", *url_args(two))
    assert "THIS HOST" in out and "FLEET" in out
    assert "a is unhealthy in 1 of 1 processes (healthy from here)" in out


def test_status_without_a_fleet_is_unknown_and_says_whose_view_it_shows(two) -> None:
    code, data = run_json("status", *url_args(two, "nobody-here"))
    [config] = data["configurations"]
    assert code == 3 and config["active"] is None and config["fleet_state"] == "no fleet" and config["here"]["active"] == "a"
    code, out = run("status", *url_args(two, "nobody-here"))
    assert code == 3 and "UNKNOWN" in out and "OK" not in out and "this host's view" in out


# -- exit codes ---------------------------------------------------------------------------------------------


def test_an_action_nobody_acknowledges_is_exit_3(two) -> None:
    code, out = run("failover", "--to", "b", "--wait", "0.5", *url_args(two, "wrong-name"))
    assert code == 3 and "nobody acknowledged" in out
    code, data = run_json("failback", "--wait", "0", *url_args(two, "wrong-name"))
    assert code == 3 and data["code"] == 3


def test_every_status_verdict_has_its_exit_code(two, make_client: MakeClient) -> None:
    client = make_client(two, name="codes")
    client.ping()
    wait_until(lambda: client.geofailover.control and client.geofailover.control.fleet(), timeout=3)
    assert run("status", *url_args(two, "codes"))[0] == 0
    assert run("status", *url_args(two, "other"))[0] == 3
    two[1].kill()
    wait_until(lambda: client.geofailover.endpoint("b").health == "unhealthy", timeout=3)
    assert run("status", *url_args(two, "codes"))[0] == 1
    two[0].kill()
    assert run("status", *url_args(two, "other"))[0] == 2  # down dominates unknown
    assert run("--help")[1].count("3 ") >= 1 and "nobody acknowledged" in run("--help")[1]


# -- hints and help ------------------------------------------------------------------------------------------


def test_hints_name_the_command_as_typed(two, make_client: MakeClient) -> None:
    client = make_client(two, name="hinted")
    client.ping()
    engine = client.geofailover
    wait_until(lambda: engine.control and engine.control.fleet(), timeout=3)
    out = io.StringIO()
    assert cli.main(["pin", "b"], engines=[engine], stdout=out, prog="manage.py geofailover") == 0, out.getvalue()
    out = io.StringIO()
    cli.main(["status"], engines=[engine], stdout=out, prog="manage.py geofailover")
    assert "end it with `manage.py geofailover unpin`" in out.getvalue()
    code, text = run("status", *url_args(two, "hinted"))
    assert code == 0 and "end it with `geofailover --url … --name hinted -o probe_interval=0.1 -o health_check_timeout=0.2 unpin`" in text


def test_a_forced_failover_does_not_suggest_force(two, make_client: MakeClient, fault_proxy_factory) -> None:
    proxy = fault_proxy_factory(two[1])
    proxy.refuse()
    client = make_client([two[0], proxy], name="clitest")
    client.ping()
    wait_until(lambda: client.geofailover.endpoint("b").health == "unhealthy", timeout=3)
    wait_until(lambda: client.geofailover.control and client.geofailover.control.fleet(), timeout=3)
    two[1].kill()
    code, out = run("failover", "--to", "b", "--force", "--wait", "1", *url_args(two))
    assert code == 1 and "STRAGGLERS" in out and "--force" not in out.split("STRAGGLERS", 1)[1]


def test_the_refusal_tells_a_cli_user_to_pass_force(two, capsys) -> None:
    two[1].kill()
    code, _ = run("failover", "--to", "b", *url_args(two, "refused"))
    err = capsys.readouterr().err
    assert code == 2 and "pass --force" in err and "force=True" not in err


def test_a_mistyped_option_is_reported_at_its_level_with_a_suggestion(capsys) -> None:
    code, _ = run("--urll", "redis://h:6379/0", "status")
    err = capsys.readouterr().err
    assert code == 2 and "unrecognized argument --urll; did you mean --url?" in err and "invalid choice" not in err
    assert err.startswith("usage: geofailover [")
    code, _ = run("failover", "--to", "b", "--reasn", "x", "--url", "redis://h:6379/0")
    err = capsys.readouterr().err
    assert code == 2 and "unrecognized argument --reasn; did you mean --reason?" in err
    assert err.startswith("usage: geofailover failover")
    code, _ = run("status", "--jsn", "--url", "redis://h:6379/0")
    err = capsys.readouterr().err
    assert code == 2 and "did you mean --json?" in err and err.startswith("usage: geofailover status")
    code, _ = run("status", "--url", "redis://h/0", engines=[])
    err = capsys.readouterr().err
    assert code == 2 and "unrecognized argument --url" in err and "the application's configuration" in err
