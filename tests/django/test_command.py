"""``manage.py geofailover``: selection of caches, forwarding to the core CLI, exit codes."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from typing import Any

import pytest

from geofailover_core.testing import RedisServer, wait_until

from .conftest import BACKEND, GeoSettings, cache_entry

SECRET = "command-Secret-pw"


class Recorder:
    """Stands in for geofailover_core.cli.main to observe what the command forwards."""

    def __init__(self, code: int = 0, output: str = "") -> None:
        self.code = code
        self.output = output
        self.calls: list[tuple[list[str], list[Any]]] = []

    def __call__(self, argv: Sequence[str] | None = None, *, engines: Sequence[Any] | None = None, stdout: Any = None, prog: str = "") -> int:
        self.calls.append((list(argv or []), list(engines or [])))
        if stdout is not None and self.output:
            stdout.write(self.output)
        return self.code


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    from geofailover_core import cli

    rec = Recorder()
    monkeypatch.setattr(cli, "main", rec)
    return rec


def run(*argv: str) -> tuple[int, str]:
    """``call_command('geofailover', *argv)`` -> (exit code, stdout)."""
    from django.core.management import call_command
    from django.core.management.base import CommandError

    out = io.StringIO()
    try:
        call_command("geofailover", *argv, stdout=out)
    except CommandError as exc:  # found before the CLI ran
        return exc.returncode, out.getvalue() + str(exc)
    except SystemExit as exc:  # the CLI's own non-zero verdict
        assert isinstance(exc.code, int)
        return exc.code, out.getvalue()
    return 0, out.getvalue()


def three_caches(two: list[RedisServer]) -> dict[str, Any]:
    return {
        "default": cache_entry(two),
        "sessions": cache_entry(two, geo={"name": "sessions-engine"}),
        "local": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    }


# -- argument handling (no Redis I/O: the CLI is replaced by a recorder) ---------------------


@pytest.mark.parametrize(
    ("argv", "ours", "forwarded"),
    [
        (["status"], [], ["status"]),
        (["--cache", "default", "status", "--json"], ["--cache", "default"], ["status", "--json"]),
        (["status", "--cache=default", "--json"], ["--cache=default"], ["status", "--json"]),
        (["failover", "--to", "b", "--force", "--reason", "maintenance window"], [], ["failover", "--to", "b", "--force", "--reason", "maintenance window"]),
        (["--settings", "x.settings", "-v", "2", "pin", "b", "--for", "10m", "--traceback"], ["--settings", "x.settings", "-v", "2", "--traceback"], ["pin", "b", "--for", "10m"]),
        (["--help"], ["--help"], []),
        (["status", "--help"], [], ["status", "--help"]),
        (["status", "-v", "--json"], [], ["status", "-v", "--json"]),  # the CLI's --verbose
    ],
)
def test_split_argv(argv: list[str], ours: list[str], forwarded: list[str]) -> None:
    from geofailover_django.management.commands.geofailover import split_argv

    assert split_argv(argv) == (ours, forwarded)


def test_forwards_the_subcommand_and_every_geofailover_engine(geo_settings: GeoSettings, two: list[RedisServer], recorder: Recorder) -> None:
    from django.core.cache import caches

    geo_settings(CACHES=three_caches(two))
    recorder.output = "table\n"
    code, out = run("status", "--json")
    assert code == 0 and out == "table\n"  # written as is, no newline added by Django
    argv, engines = recorder.calls[-1]
    assert argv == ["status", "--json"]
    run("status", "--no-color")
    assert recorder.calls[-1][0] == ["status", "--color=never"]
    assert engines == [caches["default"].geofailover, caches["sessions"].geofailover]


def test_cache_option_selects_engines(geo_settings: GeoSettings, two: list[RedisServer], recorder: Recorder) -> None:
    from django.core.cache import caches

    geo_settings(CACHES=three_caches(two))
    assert run("failover", "--to", "b", "--cache", "sessions")[0] == 0
    argv, engines = recorder.calls[-1]
    assert argv == ["failover", "--to", "b"]
    assert engines == [caches["sessions"].geofailover]
    assert run("--cache", "sessions", "--cache", "default", "--cache", "sessions", "check")[0] == 0
    assert [e.name for e in recorder.calls[-1][1]] == ["sessions-engine", "django.default"]


def test_aliases_sharing_an_engine_pass_it_once(geo_settings: GeoSettings, two: list[RedisServer], recorder: Recorder) -> None:
    geo_settings(CACHES={"default": cache_entry(two, geo={"name": "one"}), "other": cache_entry(two, geo={"name": "one"})})
    run("status")
    assert [e.name for e in recorder.calls[-1][1]] == ["one"]


@pytest.mark.parametrize("code", [1, 2])
def test_a_non_zero_verdict_is_the_exit_status_with_nothing_added(
    geo_settings: GeoSettings, two: list[RedisServer], recorder: Recorder, capsys: pytest.CaptureFixture[str], code: int
) -> None:
    """The CLI printed its verdict: manage.py exits with its code and adds no
    "CommandError: ..." line; call_command raises SystemExit(code)."""
    from django.core.management import ManagementUtility, call_command

    geo_settings(CACHES=three_caches(two))
    recorder.code, recorder.output = code, "the verdict\n"
    with pytest.raises(SystemExit) as info:
        call_command("geofailover", "check", stdout=io.StringIO())
    assert info.value.code == code
    with pytest.raises(SystemExit) as info:
        ManagementUtility(["manage.py", "geofailover", "check"]).execute()
    assert info.value.code == code
    out, err = capsys.readouterr()
    assert out == "the verdict\n" and err == ""


def test_errors_before_forwarding(geo_settings: GeoSettings, two: list[RedisServer], recorder: Recorder) -> None:
    geo_settings(CACHES=three_caches(two))
    code, text = run("--cache", "local", "status")
    assert code == 2 and "not a geofailover cache" in text and "default, sessions" in text
    code, text = run()
    assert code == 2 and "missing subcommand" in text
    geo_settings(CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}})
    code, text = run("status")
    assert code == 2 and "no cache uses geofailover" in text
    geo_settings(CACHES={"default": {"BACKEND": BACKEND, "LOCATION": f"redis://:{SECRET}@h:nope/0", "OPTIONS": {}}})
    code, text = run("status")
    assert code == 2 and "misconfigured" in text and "geofailover.E003" in text and SECRET not in text
    assert recorder.calls == []


def test_command_runs_even_when_system_checks_fail(geo_settings: GeoSettings, two: list[RedisServer], recorder: Recorder) -> None:
    entry = cache_entry(two)
    entry["OPTIONS"]["CLOSE_CONNECTION"] = True  # a warning
    entry["OPTIONS"]["SOME_TYPO_OPTIONZ"] = 1
    geo_settings(CACHES={"default": entry, "broken": {"BACKEND": BACKEND, "LOCATION": ""}})
    from django.core.management import get_commands, load_command_class

    command = load_command_class(get_commands()["geofailover"], "geofailover")
    assert command.requires_system_checks == []
    assert run("--cache", "default", "status")[0] == 0


# -- against the real core CLI ----------------------------------------------------------------


def test_status_and_check_with_the_core_cli(core_cli: None, geo_settings: GeoSettings, redis_server_factory: Any) -> None:
    servers = redis_server_factory(2, password=SECRET)
    entry = cache_entry(servers)
    entry["OPTIONS"]["PASSWORD"] = SECRET
    geo_settings(CACHES={"default": entry})
    code, out = run("status")
    assert code == 0, out
    assert "a" in out and "b" in out and SECRET not in out
    code, out = run("status", "--json")
    assert code == 0, out
    assert SECRET not in out
    json.loads(out)
    code, out = run("check")
    assert code == 0, out
    servers[1].kill()
    code, out = run("check")
    assert code == 1, out  # degraded: one endpoint down, one serves
    servers[0].kill()
    code, out = run("check", "--json")
    assert code == 2, out


def test_failover_failback_pin_unpin_in_process(core_cli: None, geo_settings: GeoSettings, two: list[RedisServer]) -> None:
    from django.core.cache import caches

    geo_settings(CACHES={"default": cache_entry(two, geo={"control_plane": True})})
    engine = caches["default"].geofailover
    caches["default"].set("k", 1)
    code, out = run("failover", "--to", "b", "--reason", "test")
    assert code in (0, 1), out  # 1 would mean other (dead) fleet members did not follow
    wait_until(lambda: engine.active == "b", timeout=5)
    code, out = run("failover", "--to", "nowhere")
    assert code == 2, out
    assert run("failback")[0] in (0, 1)
    wait_until(lambda: engine.active == "a", timeout=5)
    assert run("pin", "b", "--for", "1h")[0] in (0, 1)
    wait_until(lambda: engine.active == "b", timeout=5)
    assert run("unpin")[0] in (0, 1)


def test_the_commands_own_probes_never_fire_the_projects_receivers(core_cli: None, geo_settings: GeoSettings, two: list[RedisServer]) -> None:
    """manage.py geofailover is not part of the serving fleet: what its probes
    see is not a switch of traffic, and must not page anyone."""
    from django.core.cache import caches

    from geofailover_django import signals

    got: list[str] = []

    def receiver(sender: Any, event: Any, **kwargs: Any) -> None:
        got.append(event.kind)

    for signal in signals.BY_KIND.values():
        signal.connect(receiver)
    try:
        geo_settings(CACHES={"default": cache_entry(two)})
        two[0].kill()
        code, out = run("status")  # its probes find a down and switch this process's view to b
        assert code == 1, out
        engine = caches["default"].geofailover
        assert engine.active == "b"
        assert engine.events.flush(5)
        assert got == []
        assert engine.observer is False  # restored afterwards
    finally:
        for signal in signals.BY_KIND.values():
            signal.disconnect(receiver)
