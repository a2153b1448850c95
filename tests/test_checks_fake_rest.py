"""The fake Redis Software REST API behaves as the reference says real clusters do.

Every row of the server-semantics table in rest-availability-api.md (§5) and
the route/status/body rules of §2-§3 is asserted here with a plain HTTP
client, so that tests which use the fake test clients against real
behaviour, not against the fake's opinion.
"""

from __future__ import annotations

import base64
import http.client
import json
import shutil
import socket
import ssl
import threading
from typing import Any

import pytest

from geofailover_core.testing import CertificateAuthority, FakeRestServer, wait_until

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl binary for test certificates")




def call(
    api: FakeRestServer,
    path: str,
    *,
    method: str = "GET",
    auth: tuple[str, str] | bool | None = True,
    body: Any = None,
    timeout: float = 3.0,
    context: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, str], bytes]:
    if api.tls:
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(api.host, api.port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(api.host, api.port, timeout=timeout)
    headers = {"Accept": "application/json"}
    if auth is True:
        auth = (api.username, api.password)
    if isinstance(auth, tuple):
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def availability(api: FakeRestServer, uid: int, query: str = "") -> tuple[int, Any]:
    status, _, body = call(api, f"/v1/bdbs/{uid}/availability{query}")
    return status, json.loads(body) if body else None


# -- §5 server semantics ------------------------------------------------------------------------

LAG = "?extend_check=lag"


@pytest.mark.parametrize(
    ("state", "query", "expected"),
    [
        # Active-Active member, synced
        ({}, "", 200),
        ({}, LAG, 200),
        # lag beyond the tolerance: only the lag-aware answer flips
        ({"lag_ms": 500}, "", 200),
        ({"lag_ms": 500}, LAG, 503),
        ({"lag_ms": 500}, LAG + "&availability_lag_tolerance_ms=100", 503),
        ({"lag_ms": 500}, LAG + "&availability_lag_tolerance_ms=1000", 200),
        ({"lag_ms": 100}, LAG, 200),  # within the default 100 ms, inclusive
        # crdt_sync paused: 503 with lag, whatever the tolerance
        ({"crdt_sync": "paused"}, "", 200),
        ({"crdt_sync": "paused"}, LAG + "&availability_lag_tolerance_ms=600000", 503),
        # not Active-Active: plain 200, lag-aware always 503
        ({"crdt": False}, "", 200),
        ({"crdt": False}, LAG + "&availability_lag_tolerance_ms=600000", 503),
        # database status
        ({"status": "recovery"}, "", 503),
        ({"status": "creation-failed"}, LAG, 503),
        ({"status": "pending"}, "", 200),
        ({"status": "active-change-pending"}, LAG, 200),
        ({"available": False}, "", 503),
        # the tolerance is honoured only together with extend_check=lag
        ({"lag_ms": 500}, "?availability_lag_tolerance_ms=0", 200),
    ],
)
def test_availability_follows_the_reference_table(api: FakeRestServer, state: dict[str, Any], query: str, expected: int) -> None:
    bdb = api.add_bdb(port=12000)
    for key, value in state.items():
        setattr(bdb, key, value)
    status, body = availability(api, bdb.uid, query)
    assert status == expected
    if expected == 200:
        assert body is None  # healthy answers have an empty body
    else:
        assert body == {"error_code": "bdb_unavailable", "description": f"BDB {bdb.uid} is not available"}


def test_a_composed_unavailable_code_can_be_emitted(api: FakeRestServer) -> None:
    bdb = api.add_bdb(port=12000, available=False, unavailable_code="bdb_unavailable_shard_unreachable")
    assert availability(api, bdb.uid) == (503, {"error_code": "bdb_unavailable_shard_unreachable", "description": "BDB 1 is not available"})


def test_no_quorum_is_503_no_quorum(api: FakeRestServer) -> None:
    bdb = api.add_bdb(port=12000)
    api.set_quorum(False)
    status, body = availability(api, bdb.uid, LAG)
    assert (status, body["error_code"]) == (503, "no_quorum")
    assert "no quorum" in body["description"]


def test_unknown_database_is_404_db_not_found(api: FakeRestServer) -> None:
    assert availability(api, 7)[0] == 404
    assert availability(api, 7)[1]["error_code"] == "db_not_found"
    status, _, body = call(api, "/v1/bdbs/7?fields=uid,crdt")
    assert (status, json.loads(body)["error_code"]) == (404, "db_not_found")


def test_unknown_uri_is_404(api: FakeRestServer) -> None:
    assert call(api, "/v1/nope")[0] == 404
    assert call(api, "/v1/bdbs/abc/availability")[0] == 404  # uid is an integer


@pytest.mark.parametrize("query", ["?extend_check=lagg", "?extend_check=lag&availability_lag_tolerance_ms=abc", "?extend_check=lag&availability_lag_tolerance_ms=-1"])
def test_malformed_parameters_are_400(api: FakeRestServer, query: str) -> None:
    bdb = api.add_bdb(port=12000)
    assert availability(api, bdb.uid, query)[0] == 400


def test_cluster_default_tolerance_is_100ms_and_settable(api: FakeRestServer) -> None:
    api.add_user("admin@example.com", "admin-pw", "admin")
    bdb = api.add_bdb(port=12000, lag_ms=500)
    assert api.cluster_lag_tolerance_ms == 100
    assert availability(api, bdb.uid, LAG)[0] == 503
    assert call(api, "/v1/cluster", method="PUT", body={"availability_lag_tolerance_ms": 1000})[0] == 403  # db_viewer
    status, _, _ = call(api, "/v1/cluster", method="PUT", body={"availability_lag_tolerance_ms": 1000}, auth=("admin@example.com", "admin-pw"))
    assert status == 200
    assert availability(api, bdb.uid, LAG)[0] == 200
    assert availability(api, bdb.uid, LAG + "&availability_lag_tolerance_ms=100")[0] == 503  # the query overrides it


def test_crdt_sync_can_be_paused_and_resumed(api: FakeRestServer) -> None:
    admin = ("admin@example.com", "admin-pw")
    api.add_user(*admin, "admin")
    bdb = api.add_bdb(port=12000)
    assert call(api, f"/v1/bdbs/{bdb.uid}", method="PUT", body={"crdt_sync": "paused"}, auth=admin)[0] == 200
    assert availability(api, bdb.uid, LAG)[0] == 503
    assert availability(api, bdb.uid)[0] == 200
    call(api, f"/v1/bdbs/{bdb.uid}", method="PUT", body={"crdt_sync": "enabled"}, auth=admin)
    assert availability(api, bdb.uid, LAG)[0] == 200


def test_local_endpoint_availability(api: FakeRestServer) -> None:
    bdb = api.add_bdb(port=12000, lag_ms=500)
    assert call(api, f"/v1/local/bdbs/{bdb.uid}/endpoint/availability")[0] == 200
    status, _, body = call(api, f"/v1/local/bdbs/{bdb.uid}/endpoint/availability{LAG}")
    assert status == 503
    assert json.loads(body) == {"error_code": "bdb_endpoint_unavailable", "description": f"Local endpoint of BDB {bdb.uid} on node 1 is not available"}


# -- §3 discovery and fields filtering ----------------------------------------------------------


def test_fields_filter_lists_and_objects_and_unfiltered_answers_carry_passwords(api: FakeRestServer) -> None:
    bdb = api.add_bdb(port=12000, dns_name="redis-12000.c1.example.com", addr=["10.0.0.5"])
    api.add_bdb(port=12001)
    status, headers, body = call(api, "/v1/bdbs?fields=uid,endpoints")
    assert status == 200 and headers["content-type"] == "application/json"
    listed = json.loads(body)
    assert [sorted(b) for b in listed] == [["endpoints", "uid"], ["endpoints", "uid"]]
    endpoint = listed[0]["endpoints"][0]
    assert endpoint["uid"] == "1:1" and endpoint["dns_name"] == "redis-12000.c1.example.com"
    assert endpoint["addr"] == ["10.0.0.5"] and endpoint["port"] == 12000
    unfiltered = call(api, "/v1/bdbs")[2].decode()
    assert all(secret in unfiltered for secret in bdb.passwords)
    assert json.loads(call(api, f"/v1/bdbs/{bdb.uid}?fields=uid,crdt")[2]) == {"uid": 1, "crdt": True}


# -- §1 auth --------------------------------------------------------------------------------------


def test_basic_auth_401_and_403_and_the_log_never_holds_the_password(api: FakeRestServer) -> None:
    bdb = api.add_bdb(port=12000)
    api.add_user("nobody@example.com", "pw-nobody", "none")
    status, headers, _ = call(api, "/v1/bdbs?fields=uid", auth=None)
    assert status == 401 and headers["www-authenticate"].startswith("Basic")
    assert call(api, "/v1/bdbs?fields=uid", auth=(api.username, "wrong"))[0] == 401
    assert call(api, f"/v1/bdbs/{bdb.uid}/availability", auth=("nobody@example.com", "pw-nobody"))[0] == 403
    for role in ("admin", "cluster_member", "cluster_viewer", "db_member", "db_viewer", "user_manager"):
        api.add_user(f"{role}@example.com", "pw", role)
        assert call(api, f"/v1/bdbs/{bdb.uid}/availability", auth=(f"{role}@example.com", "pw"))[0] == 200
    log = api.requests()
    assert [(r.status, r.authenticated) for r in log[:3]] == [(401, False), (401, False), (403, True)]
    assert log[1].user == api.username
    assert api.password not in repr(log)


# -- fault hooks ---------------------------------------------------------------------------------


def test_delay_and_hang_and_heal(api: FakeRestServer) -> None:
    bdb = api.add_bdb(port=12000)
    api.hang(kinds={"availability"})
    with pytest.raises(TimeoutError):
        call(api, f"/v1/bdbs/{bdb.uid}/availability", timeout=0.2)
    assert call(api, "/v1/bdbs?fields=uid")[0] == 200  # other kinds unaffected
    result: list[int] = []
    waiter = threading.Thread(target=lambda: result.append(call(api, f"/v1/bdbs/{bdb.uid}/availability", timeout=5)[0]))
    waiter.start()
    # the first (timed-out) request is still held too: both hang until heal()
    wait_until(lambda: api.in_flight == 2, timeout=2, message="request held by hang()")
    api.heal()  # releases the hung request
    waiter.join(5)
    assert result == [200]
    api.delay(5000, times=1)
    with pytest.raises(TimeoutError):
        call(api, "/v1/bdbs?fields=uid", timeout=0.2)
    api.heal()
    assert call(api, "/v1/bdbs?fields=uid")[0] == 200


def test_reset_malformed_respond_redirect(api: FakeRestServer) -> None:
    bdb = api.add_bdb(port=12000)
    api.reset(times=1)
    with pytest.raises((ConnectionResetError, http.client.RemoteDisconnected)):
        call(api, "/v1/bdbs?fields=uid")
    assert api.requests()[-1].status is None and api.requests()[-1].fault == "reset"
    api.malformed_json(kinds={"list_bdbs"}, times=1)
    with pytest.raises(json.JSONDecodeError):
        json.loads(call(api, "/v1/bdbs?fields=uid")[2])
    bdb.available = False
    api.malformed_json(times=1)
    status, _, body = call(api, f"/v1/bdbs/{bdb.uid}/availability")
    assert status == 503 and body and not body.endswith(b"}")
    api.respond(500, '{"oops": 1}', times=1)
    assert call(api, f"/v1/bdbs/{bdb.uid}/availability")[0] == 500
    api.redirect("https://elsewhere.example:9443/v1/bdbs", kinds={"availability"}, times=1)
    status, headers, _ = call(api, f"/v1/bdbs/{bdb.uid}/availability")
    assert status == 302 and headers["location"] == "https://elsewhere.example:9443/v1/bdbs"
    assert call(api, f"/v1/bdbs/{bdb.uid}/availability")[0] == 503  # every times=1 fault is used up
    assert [r.fault for r in api.requests()] == ["reset", "malformed", "malformed", "respond", "redirect", None]
    with pytest.raises(ValueError, match="unknown request kinds"):
        api.reset(kinds={"availabilty"})


def test_request_log_counts_by_kind_and_uid(api: FakeRestServer) -> None:
    a = api.add_bdb(port=12000)
    b = api.add_bdb(port=12001)
    for _ in range(3):
        availability(api, a.uid)
    availability(api, b.uid)
    call(api, "/v1/bdbs?fields=uid,endpoints")
    assert api.count("availability") == 4 and api.count("availability", uid=a.uid) == 3
    assert api.count("list_bdbs") == 1 and api.requests("list_bdbs")[0].fields == ("uid", "endpoints")
    api.clear_log()
    assert api.count() == 0


# -- TLS ------------------------------------------------------------------------------------------


@needs_openssl
def test_https_with_the_test_ca_and_verification_failing_closed(ca: CertificateAuthority) -> None:
    with FakeRestServer(tls=True, ca=ca) as api:
        api.add_bdb(port=12000)
        trusted = ssl.create_default_context(cafile=str(api.ca_file))
        assert call(api, "/v1/bdbs/1/availability", context=trusted)[0] == 200
        with pytest.raises(ssl.SSLCertVerificationError):
            call(api, "/v1/bdbs/1/availability", context=ssl.create_default_context())
        wait_until(lambda: api.tls_failures == 1, timeout=2, message="server saw the failed handshake")
        assert api.count() == 1  # the rejected connection never carried a request


@needs_openssl
def test_client_certificates_can_be_required(ca: CertificateAuthority) -> None:
    with FakeRestServer(tls=True, ca=ca, require_client_cert=True) as api:
        api.add_bdb(port=12000)
        context = ssl.create_default_context(cafile=str(api.ca_file))
        with pytest.raises((ssl.SSLError, ConnectionResetError, http.client.RemoteDisconnected, BrokenPipeError)):
            call(api, "/v1/bdbs/1/availability", context=context)
        cert, key = api.issue_client_cert(key_password="k3y-pw")
        context.load_cert_chain(cert, key, password="k3y-pw")
        assert call(api, "/v1/bdbs/1/availability", context=context)[0] == 200


def test_close_releases_hung_requests_and_the_port() -> None:
    api = FakeRestServer()
    api.add_bdb(port=12000)
    api.hang()
    errors: list[BaseException] = []

    def hung() -> None:
        try:
            call(api, "/v1/bdbs/1/availability", timeout=5)
        except Exception as exc:
            errors.append(exc)

    worker = threading.Thread(target=hung)
    worker.start()
    wait_until(lambda: api.in_flight == 1, timeout=2, message="request held by hang()")
    api.close()
    worker.join(5)
    assert not worker.is_alive()
    with pytest.raises(ConnectionRefusedError), socket.create_connection((api.host, api.port), timeout=1):
        pass
