"""RestAvailabilityHealthCheck against the fake Redis Software API: discovery,
matching, outcomes, inconclusive answers, credentials, TLS and configuration."""

from __future__ import annotations

import logging
import socket
import threading
from pathlib import Path

import pytest
import redis
from redis.credentials import UsernamePasswordCredentialProvider

from geofailover_core import ConfigurationError, EndpointConfig, FailoverConfig, HealthStatus, ProbeContext
from geofailover_core.checks import RestAvailabilityHealthCheck, match_databases
from geofailover_core.health import FAILBACK_ONLY, HEALTH, resolve_check
from geofailover_core.testing import CertificateAuthority, FakeRestServer, wait_until

REDIS_PORT = 12000




def probe(check: RestAvailabilityHealthCheck, url: str = f"redis://127.0.0.1:{REDIS_PORT}/0", *, timeout: float = 2.0, interval: float = 1e-9):
    """One probe as the monitor runs it; ``interval`` small so that every call asks the API."""
    return check.check(ProbeContext(EndpointConfig(name="a", url=url), redis.Redis(), timeout, interval))


def make(api: FakeRestServer, **overrides: object) -> RestAvailabilityHealthCheck:
    return RestAvailabilityHealthCheck(**api.check_options(**overrides))


# -- discovery: once, cached, filtered; host AND port -------------------------------------------


def test_discovery_runs_once_filtered_and_the_uid_is_cached(api: FakeRestServer) -> None:
    api.add_bdb(port=REDIS_PORT - 1)  # same address, another port: must not match
    bdb = api.add_bdb(port=REDIS_PORT)
    check = make(api)
    results = [probe(check) for _ in range(5)]
    assert {r.status for r in results} == {HealthStatus.HEALTHY}
    assert f"database {bdb.uid} available, lag within 100 ms" in results[0].detail
    assert api.count("list_bdbs") == 1
    assert [r.fields for r in api.requests("list_bdbs")] == [("uid", "endpoints")]
    assert [r.query for r in api.requests("get_bdb")] == [{"fields": "uid,crdt"}]  # the Active-Active guard, once
    assert api.count("availability", uid=bdb.uid) == 5
    assert all(r.query == {"extend_check": "lag", "availability_lag_tolerance_ms": "100"} for r in api.requests("availability"))
    assert all(r.fields is not None for r in api.requests() if r.kind in ("list_bdbs", "get_bdb")), "never an unfiltered database object"


def test_at_most_one_request_per_interval_extra_probes_reuse_the_answer(api: FakeRestServer) -> None:
    api.add_bdb(port=REDIS_PORT)
    check = make(api)
    first = probe(check, interval=60)
    assert [probe(check, interval=60) for _ in range(4)] == [first] * 4
    assert api.count("availability") == 1


def test_explicit_bdb_uid_skips_discovery(api: FakeRestServer) -> None:
    api.add_bdb(uid=4, port=9999)  # endpoint does not even match: the uid is trusted
    check = make(api, bdb_uid=4)
    assert probe(check).status is HealthStatus.HEALTHY
    assert api.count("list_bdbs") == 0 and api.count("availability", uid=4) == 1


@pytest.mark.parametrize(
    ("host", "entry", "match"),
    [
        ("redis-12000.c1.example.com", {"dns_name": "REDIS-12000.C1.Example.COM.", "addr": ["10.0.0.1"]}, True),
        ("10.0.0.1", {"dns_name": "redis-12000.c1.example.com", "addr": ["10.0.0.1"]}, True),
        ("::1", {"dns_name": "x", "addr": ["0:0:0:0:0:0:0:1"]}, True),
        ("10.0.0.1", {"dns_name": "x", "addr": ["::ffff:10.0.0.1"]}, True),
        ("10.0.0.2", {"dns_name": "x", "addr": ["10.0.0.1"]}, False),
        ("c1.example.com", {"dns_name": "redis-12000.c1.example.com", "addr": []}, False),  # no suffix guessing
    ],
)
def test_matching_is_case_insensitive_and_ip_canonical(host: str, entry: dict[str, object], match: bool) -> None:
    bdbs = [{"uid": 3, "endpoints": [{**entry, "port": 12000}]}, {"uid": 4, "endpoints": [{**entry, "port": 12001}]}]
    assert match_databases(bdbs, host, 12000) == ([3] if match else [])
    assert match_databases(bdbs, host, 12002) == []


def test_ambiguous_or_missing_match_is_inconclusive_with_a_fix(api: FakeRestServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    check = make(api)
    missing = probe(check)
    assert missing.status is HealthStatus.INCONCLUSIVE
    assert f"no database on {api.url} has an endpoint 127.0.0.1:{REDIS_PORT}" in missing.detail and "bdb_uid" in missing.detail
    api.add_bdb(port=REDIS_PORT)
    api.add_bdb(port=REDIS_PORT, dns_name="other")
    ambiguous = probe(check)
    assert ambiguous.status is HealthStatus.INCONCLUSIVE and "databases 1, 2 all have an endpoint" in ambiguous.detail
    assert api.count("availability") == 0


def test_404_forgets_the_uid_and_discovery_is_redone(api: FakeRestServer) -> None:
    api.add_bdb(uid=1, port=REDIS_PORT)
    check = make(api)
    assert probe(check).status is HealthStatus.HEALTHY
    api.remove_bdb(1)
    api.add_bdb(uid=2, port=REDIS_PORT)  # the database was re-created under a new uid
    gone = probe(check)
    assert gone.status is HealthStatus.UNHEALTHY and "database 1 not found (db_not_found)" in gone.detail
    again = probe(check)
    assert again.status is HealthStatus.HEALTHY and "database 2" in again.detail
    assert api.count("list_bdbs") == 2


def test_a_database_that_disappeared_is_unhealthy(api: FakeRestServer) -> None:
    api.add_bdb(uid=1, port=REDIS_PORT)
    check = make(api)
    probe(check)
    api.remove_bdb(1)
    assert probe(check).status is HealthStatus.UNHEALTHY  # 404
    result = probe(check)  # re-discovery finds nothing any more
    assert result.status is HealthStatus.UNHEALTHY and "any more" in result.detail


# -- outcomes ----------------------------------------------------------------------------------


def test_lag_tolerance_is_sent_or_left_to_the_cluster(api: FakeRestServer) -> None:
    bdb = api.add_bdb(port=REDIS_PORT, lag_ms=500)
    strict = probe(make(api))
    assert strict.status is HealthStatus.UNHEALTHY and "lagging more than 100 ms (bdb_unavailable)" in strict.detail
    assert probe(make(api, lag_tolerance_ms=1000)).status is HealthStatus.HEALTHY
    api.cluster_lag_tolerance_ms = 1000
    cluster = probe(make(api, lag_tolerance_ms=None))
    assert cluster.status is HealthStatus.HEALTHY and "the cluster's default tolerance" in cluster.detail
    assert api.requests("availability")[-1].query == {"extend_check": "lag"}
    bdb.lag_ms = 0
    assert probe(make(api, lag_aware=False)).status is HealthStatus.HEALTHY
    assert api.requests("availability")[-1].query == {}


@pytest.mark.parametrize(
    ("state", "code"),
    [({"available": False}, "bdb_unavailable"), ({"available": False, "unavailable_code": "bdb_unavailable_port_unbound"}, "bdb_unavailable_port_unbound")],
)
def test_unavailable_is_unhealthy(api: FakeRestServer, state: dict[str, object], code: str) -> None:
    api.add_bdb(port=REDIS_PORT, **state)
    result = probe(make(api, lag_aware=False))
    assert result.status is HealthStatus.UNHEALTHY and code in result.detail


def test_no_quorum_is_unhealthy(api: FakeRestServer) -> None:
    api.add_bdb(port=REDIS_PORT)
    api.set_quorum(False)
    result = probe(make(api))
    assert result.status is HealthStatus.UNHEALTHY and "no quorum" in result.detail


def test_a_non_active_active_database_is_detected_not_failed_forever(api: FakeRestServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="geofailover")
    api.add_bdb(port=REDIS_PORT, crdt=False)
    check = make(api)
    results = [probe(check) for _ in range(3)]
    assert {r.status for r in results} == {HealthStatus.HEALTHY}
    assert "not Active-Active" in results[0].detail and "plain availability checked" in results[0].detail
    assert all(r.query == {} for r in api.requests("availability"))
    assert sum("is not Active-Active" in r.getMessage() for r in caplog.records) == 1


# -- inconclusive answers ----------------------------------------------------------------------------


def _fault_timeout(api: FakeRestServer) -> None:
    api.delay(5000, kinds={"availability"})


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        (_fault_timeout, "no answer from"),
        (lambda api: api.reset(kinds={"availability"}), "reset"),
        (lambda api: api.respond(401), "401"),
        (lambda api: api.respond(403), "403"),
        (lambda api: api.respond(500, "{}"), "HTTP 500"),
        (lambda api: api.respond(502), "HTTP 502"),
        (lambda api: api.respond(503, "<html>proxy</html>", kinds={"availability"}), "HTTP 503 without a database verdict"),
        (lambda api: api.respond(400, '{"error_code": "invalid_schema"}'), "HTTP 400"),
        (lambda api: api.redirect("http://127.0.0.1:1/v1", kinds={"availability"}), "redirect"),
        (lambda api: api.malformed_json(kinds={"list_bdbs"}), "malformed answer to GET /v1/bdbs"),
        (lambda api: api.malformed_json(kinds={"get_bdb"}), "malformed answer to GET /v1/bdbs/1"),
    ],
)
def test_api_problems_are_inconclusive(api: FakeRestServer, fault, words: str) -> None:  # type: ignore[no-untyped-def]
    bdb = api.add_bdb(port=REDIS_PORT)
    fault(api)
    result = probe(make(api), timeout=0.3)
    assert result.status is HealthStatus.INCONCLUSIVE, result
    assert words in result.detail
    assert api.password not in result.detail
    bdb.available = False  # make sure a malformed *503* is not read as a verdict either
    api.heal()
    api.malformed_json(kinds={"availability"})
    assert probe(make(api, lag_aware=False)).status is HealthStatus.INCONCLUSIVE


def test_a_refused_connection_is_inconclusive() -> None:
    api = FakeRestServer()
    options = api.check_options()
    api.close()
    result = probe(RestAvailabilityHealthCheck(**options))
    assert result.status is HealthStatus.INCONCLUSIVE and "refused" in result.detail


def test_a_redirect_is_never_followed(api: FakeRestServer) -> None:
    with FakeRestServer(username=api.username, password=api.password) as elsewhere:
        elsewhere.add_bdb(port=REDIS_PORT)
        api.add_bdb(port=REDIS_PORT)
        api.redirect(f"{elsewhere.url}/v1/bdbs/1/availability", kinds={"availability"})
        assert probe(make(api)).status is HealthStatus.INCONCLUSIVE
        assert elsewhere.count() == 0, "credentials must not follow a redirect"


def test_on_error_decides_what_inconclusive_counts_as(api: FakeRestServer) -> None:
    api.add_bdb(port=REDIS_PORT)
    api.respond(500)
    assert probe(make(api, on_error="unhealthy")).status is HealthStatus.UNHEALTHY
    opened = probe(make(api, on_error="healthy"))
    assert opened.status is HealthStatus.HEALTHY and "on_error" in opened.detail


def test_a_problem_is_logged_once_and_its_end_once(api: FakeRestServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="geofailover")
    api.add_bdb(port=REDIS_PORT)
    check = make(api)
    probe(check)
    api.respond(500)
    for _ in range(5):
        probe(check)
    api.heal()
    probe(check)
    probe(check)
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("geofailover")]
    assert sum("gave no verdict: HTTP 500" in m for m in messages) == 1
    assert sum("answers again" in m for m in messages) == 1


# -- credentials -------------------------------------------------------------------------------------


def test_rotated_credentials_from_a_callable_or_provider(api: FakeRestServer) -> None:
    api.add_bdb(port=REDIS_PORT)
    current = {"password": api.password}
    check = RestAvailabilityHealthCheck(api.url, credentials=lambda: (api.username, current["password"]), allow_http=True)
    assert probe(check).status is HealthStatus.HEALTHY
    api.add_user(api.username, "rotated-secret")
    assert probe(check).status is HealthStatus.INCONCLUSIVE  # 401 until the callable knows
    current["password"] = "rotated-secret"
    assert probe(check).status is HealthStatus.HEALTHY
    provider = UsernamePasswordCredentialProvider(api.username, "rotated-secret")
    assert probe(RestAvailabilityHealthCheck(api.url, credentials=provider, allow_http=True)).status is HealthStatus.HEALTHY

    def broken() -> tuple[str, str]:
        raise RuntimeError("vault says no: rotated-secret")

    failed = probe(RestAvailabilityHealthCheck(api.url, credentials=broken, allow_http=True))
    assert failed.status is HealthStatus.INCONCLUSIVE and "rotated-secret" not in failed.detail


def test_secrets_are_exposed_for_masking_and_never_in_repr(api: FakeRestServer) -> None:
    check = make(api, key_password=None)
    assert api.password in check.secrets
    assert api.password not in repr(check) and api.username not in repr(check)


# -- TLS ------------------------------------------------------------------------------------------------


def test_tls_with_the_right_ca_file_or_data(ca: CertificateAuthority) -> None:
    with FakeRestServer(tls=True, ca=ca) as api:
        api.add_bdb(port=REDIS_PORT)
        assert probe(make(api)).status is HealthStatus.HEALTHY
        data = Path(str(api.ca_file)).read_text()
        assert probe(make(api, ca_file=None, ca_data=data)).status is HealthStatus.HEALTHY


def test_tls_verification_fails_closed_with_a_clear_error(ca: CertificateAuthority, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="geofailover")
    with FakeRestServer(tls=True, ca=ca) as api, CertificateAuthority(common_name="some other CA") as other:
        api.add_bdb(port=REDIS_PORT)
        check = make(api, ca_file=str(other.cert_file))
        result = probe(check)
        assert result.status is HealthStatus.INCONCLUSIVE
        assert f"TLS certificate verification of {api.url} failed (unable to get local issuer certificate)" in result.detail
        assert "no request was sent" in result.detail and "ca_file" in result.detail
        wait_until(lambda: api.tls_failures >= 1, timeout=2, message="the server saw the aborted handshake")
        assert api.count() == 0, "credentials never reached a server that failed verification"
        assert any("TLS certificate verification" in r.getMessage() for r in caplog.records)
        # the system trust store does not know the test CA either
        assert probe(make(api, ca_file=None)).status is HealthStatus.INCONCLUSIVE


def test_verify_false_is_possible_but_warned_about(ca: CertificateAuthority, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="geofailover")
    with FakeRestServer(tls=True, ca=ca) as api:
        api.add_bdb(port=REDIS_PORT)
        assert probe(make(api, ca_file=None, verify=False)).status is HealthStatus.HEALTHY
        assert any("verify=False" in r.getMessage() for r in caplog.records)


def test_mutual_tls_with_an_encrypted_client_key(ca: CertificateAuthority) -> None:
    with FakeRestServer(tls=True, ca=ca, require_client_cert=True) as api:
        api.add_bdb(port=REDIS_PORT)
        assert probe(make(api)).status is HealthStatus.INCONCLUSIVE
        cert, key = api.issue_client_cert(key_password="client-key-pw")
        check = make(api, cert_file=str(cert), key_file=str(key), key_password="client-key-pw")
        assert probe(check).status is HealthStatus.HEALTHY
        assert "client-key-pw" in check.secrets and "client-key-pw" not in repr(check)
        with pytest.raises(ConfigurationError, match="cert_file") as info:
            make(api, cert_file=str(cert), key_file=str(key), key_password="wrong-key-pw")
        assert "wrong-key-pw" not in str(info.value)


# -- configuration -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "setting", "words"),
    [
        ({"url": "http://c:9443", "username": "u", "password": "p"}, "url", "unencrypted"),
        ({"url": "https://u:p@c:9443", "username": "u", "password": "p"}, "url", "credentials inside the URL"),
        ({"url": "https://c:9443/v1", "username": "u", "password": "p"}, "url", "path"),
        ({"url": "redis://c:9443", "username": "u", "password": "p"}, "url", "scheme"),
        ({"url": "https://c"}, "username", "credentials missing"),
        ({"url": "https://c", "username": "u", "password": "p", "credentials": lambda: ("u", "p")}, "credentials", "together"),
        ({"url": "https://c", "username": "u", "password": "p", "lag_tolerance_ms": 1.5}, "lag_tolerance_ms", "milliseconds"),
        ({"url": "https://c", "username": "u", "password": "p", "on_error": "ignore"}, "on_error", "not a choice"),
        ({"url": "https://c", "username": "u", "password": "p", "bdb_uid": "1"}, "bdb_uid", "uid"),
        ({"url": "https://c", "username": "u", "password": "p", "ca_file": "/nonexistent/ca.pem"}, "ca_file", "does not exist"),
        ({"url": "https://c", "username": "u", "password": "p", "timeout": 0}, "timeout", "positive"),
        ({"url": "https://c", "username": "u", "password": "p", "mode": "evict"}, "mode", "check mode"),
    ],
)
def test_configuration_errors_name_the_setting(kwargs: dict[str, object], setting: str, words: str) -> None:
    with pytest.raises(ConfigurationError, match=words) as info:
        RestAvailabilityHealthCheck(**kwargs)  # type: ignore[arg-type]
    assert info.value.setting.endswith(setting)
    assert "Fix:" in str(info.value)


def test_defaults_port_mode_and_name() -> None:
    lag = RestAvailabilityHealthCheck("https://Cluster.Example.com", username="u", password="p")
    assert (lag.host, lag.port, lag.mode, lag.name, lag.lag_tolerance_ms) == ("cluster.example.com", 9443, FAILBACK_ONLY, "rest-lag", 100)
    plain = RestAvailabilityHealthCheck("https://[::1]:19443", username="u", password="p", lag_aware=False)
    assert (plain.base_url, plain.mode, plain.name) == ("https://[::1]:19443", HEALTH, "rest-availability")


def test_startup_validation_against_the_engine_settings() -> None:
    from geofailover_core.engine import FailoverEngine

    check = {"class": "geofailover_core.checks.RestAvailabilityHealthCheck", "url": "https://c", "username": "u", "password": "s3cr3t-pw"}
    with pytest.raises(ConfigurationError) as unix:
        FailoverEngine(FailoverConfig.from_dict({"endpoints": [{"url": "unix:///tmp/r.sock", "name": "a", "health_checks": [check]}]}))
    assert unix.value.setting == "endpoints['a'].health_checks[0].bdb_uid"
    with pytest.raises(ConfigurationError) as slow:
        FailoverEngine(FailoverConfig.from_dict({"endpoints": ["redis://h:1/0?name=a"], "health_checks": [{**check, "timeout": 2}]}))
    assert slow.value.setting == "health_checks[0].timeout" and "health_check_timeout" in str(slow.value)
    with pytest.raises(ConfigurationError) as typo:
        resolve_check({**check, "pasword": "s3cr3t-pw"}, "endpoints['a'].health_checks[0]")
    assert typo.value.setting == "endpoints['a'].health_checks[0].pasword" and "did you mean 'password'" in str(typo.value)
    assert "s3cr3t-pw" not in str(typo.value)


# -- the remaining failure paths ------------------------------------------------------------------------


def test_an_oversized_answer_is_inconclusive(api: FakeRestServer) -> None:
    api.add_bdb(port=REDIS_PORT)
    api.respond(200, b"x" * 70_000, kinds={"availability"})
    result = probe(make(api, bdb_uid=1, lag_aware=False))
    assert result.status is HealthStatus.INCONCLUSIVE and "larger than 65536 bytes" in result.detail


def test_a_garbled_http_answer_is_inconclusive() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        def answer() -> None:
            conn, _ = server.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"SMTP ready\r\n\r\n")

        worker = threading.Thread(target=answer)
        worker.start()
        check = RestAvailabilityHealthCheck(f"http://127.0.0.1:{server.getsockname()[1]}", username="u", password="p", bdb_uid=1, allow_http=True)
        result = probe(check)
        worker.join(5)
    assert result.status is HealthStatus.INCONCLUSIVE and "malformed HTTP answer" in result.detail


def test_unresolvable_host_and_tls_against_plain_http_are_inconclusive(api: FakeRestServer) -> None:
    unresolvable = probe(RestAvailabilityHealthCheck("https://no-such-host.invalid", username="u", password="p", bdb_uid=1))
    assert unresolvable.status is HealthStatus.INCONCLUSIVE and "cannot reach https://no-such-host.invalid:9443" in unresolvable.detail
    https_to_http = probe(RestAvailabilityHealthCheck(f"https://127.0.0.1:{api.port}", username="u", password="p", bdb_uid=1))
    assert https_to_http.status is HealthStatus.INCONCLUSIVE and "TLS error" in https_to_http.detail


def test_the_active_active_guard_failure_paths(api: FakeRestServer) -> None:
    missing = probe(make(api, bdb_uid=9))  # a configured uid that does not exist
    assert missing.status is HealthStatus.UNHEALTHY and "database 9 not found" in missing.detail and "configured bdb_uid" in missing.detail
    assert api.count("list_bdbs") == 0 and api.count("availability") == 0
    api.add_bdb(uid=9, port=REDIS_PORT)
    api.respond(500, kinds={"get_bdb"})
    failed = probe(make(api, bdb_uid=9))
    assert failed.status is HealthStatus.INCONCLUSIVE and "HTTP 500 for the database" in failed.detail
    assert api.count("availability") == 0, "no lag-aware request before knowing whether lag applies"


def test_credentials_callable_returning_the_wrong_shape(api: FakeRestServer) -> None:
    api.add_bdb(port=REDIS_PORT)
    result = probe(RestAvailabilityHealthCheck(api.url, credentials=lambda: ("only-a-password",), allow_http=True))
    assert result.status is HealthStatus.INCONCLUSIVE and "must return (username, password)" in result.detail
    assert api.count() == 0


def test_a_forked_child_starts_with_fresh_locks(api: FakeRestServer) -> None:
    api.add_bdb(port=REDIS_PORT)
    check = make(api)
    probe(check)
    check._members["a"].lock.acquire()  # as if another thread held it at fork() time
    check.after_fork()
    assert probe(check).status is HealthStatus.HEALTHY
