"""Properties of the configuration front doors and of masking, over generated input.

Every configuration string or dict either raises a ConfigurationError whose
setting names something the input gave and whose text holds no piece of the
password, or gives a FailoverConfig that survives a round trip and whose
connection parameters build a redis-py connection. No other exception, no
hang. ``mask_text`` does linear work on any text.
"""

from __future__ import annotations

import itertools
from dataclasses import fields
from typing import Any
from urllib.parse import quote, urlencode

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from geofailover_core import ConfigurationError, EndpointConfig, FailoverConfig
from geofailover_core.config import connection_option_names
from geofailover_core.connection import endpoint_params
from geofailover_core.defaults import BOUNDS, DEFAULTS
from geofailover_core.masking import MASK, _password_spans, mask_text, mask_url

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Every two neighbouring characters of a generated password include one of
# these letters, which no message text puts next to a digit or punctuation:
# so any four characters of the password found in a message are a leak, not
# a coincidence.
_MARKS = "QXZqxz"
_FILLERS = "0123456789/;#@?:%+=&"


@st.composite
def passwords(draw: st.DrawFn) -> str:
    fillers = draw(st.lists(st.sampled_from(_FILLERS), min_size=3, max_size=10))
    marks = draw(st.lists(st.sampled_from(_MARKS), min_size=len(fillers), max_size=len(fillers)))
    return "".join(m + f for m, f in zip(marks, fillers, strict=True))


def leaks(text: str, secret: str) -> bool:
    return any(secret[i:i + 4] in text for i in range(len(secret) - 3))


def _valid_values(name: str) -> list[Any]:
    """Values the table of bounds allows for ``name`` (its ends and default)."""
    spec = BOUNDS.get(name)
    if spec is None:
        return ["app"]
    if spec.kind in ("choice",):
        return list(spec.choices)
    if spec.kind == "flag":
        return [True, False]
    if spec.kind in ("seconds", "number", "integer"):
        return [v for v in (spec.minimum, spec.maximum, spec.default) if v is not None]
    return [spec.default] if spec.default else ["utf-8" if spec.kind == "codec" else "strict" if spec.kind == "codec_errors" else "app"]


def _as_text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


# Query values never use the password's marks: a message may quote them.
_VALUE_CHARS = "abcdefghijklmnoprstuvwy0123456789.-+_ "
_QUERY_NAMES = [
    "socket_timeout", "socket_connect_timeout", "db", "max_connections", "health_check_interval", "ssl_cert_reqs",
    "ssl_check_hostname", "decode_responses", "protocol", "encoding", "encoding_errors", "client_name", "username",
    "password", "socket_keepalive", "ssl",
]  # fmt: skip
values = st.one_of(
    st.text(alphabet=_VALUE_CHARS, max_size=8),
    st.sampled_from(["true", "false", "0", "1", "-5", "0.5", "1e308", "nan", "inf", "none", "required", "bogus", "2", "3", "utf-8"]),
)
query_keys = st.one_of(
    st.sampled_from([*_QUERY_NAMES, "name", "weight", "retry", "probe_interval", "sockettimeout"]),
    st.from_regex(r"[a-z_]{1,12}", fullmatch=True),
)
valid_pairs = st.sampled_from(_QUERY_NAMES).flatmap(lambda k: st.sampled_from(_valid_values(k)).map(lambda v: (k, _as_text(v))))
query_pairs = st.one_of(valid_pairs, valid_pairs, st.tuples(query_keys, values))
hosts = st.one_of(st.sampled_from(["h", "127.0.0.1", "[::1]", "Redis-US.example", "eu"]), st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True))
ports = st.one_of(
    st.none(), st.integers(1, 65535).map(str), st.integers(-3, 70000).map(str), st.text(alphabet="0123456789ab", min_size=1, max_size=6)
)
dbs = st.one_of(st.none(), st.integers(0, 15).map(str), st.integers(-2, 2000).map(str), st.text(alphabet="0123456789ab-", min_size=1, max_size=5))


@st.composite
def urls(draw: st.DrawFn) -> tuple[str, str | None]:
    """A URL, and the password it holds (None: none)."""
    scheme = draw(st.sampled_from(["redis", "rediss", "unix", "redis", "redis", "http"]))
    password = draw(st.one_of(st.none(), passwords()))
    encoded = draw(st.sampled_from([True, True, False]))
    user = draw(st.sampled_from(["", "default", "app"]))
    auth = ""
    if password is not None:
        auth = f"{user}:{quote(password, safe='') if encoded else password}@"
    if scheme == "unix":
        base = f"unix://{auth}/tmp/redis-{draw(st.integers(0, 9))}.sock"
    else:
        port, db = draw(ports), draw(dbs)
        base = f"{scheme}://{auth}{draw(hosts)}" + (f":{port}" if port is not None else "") + (f"/{db}" if db is not None else "")
    pairs = draw(st.lists(query_pairs, max_size=3))
    query = "&".join(f"{k}={v}" for k, v in pairs)
    return (f"{base}?{query}" if query else base), password


option_values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet=_VALUE_CHARS, max_size=8), st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
)
_OPTION_NAMES = [
    *DEFAULTS, "name", "decode_responses", "db", "max_connections", "client_name", "ssl_cert_reqs", "protocol",
    "encoding", "socket_keepalive", "ssl",
]  # fmt: skip
option_keys = st.sampled_from([*_OPTION_NAMES, "health_check_interval", "retry", "probe_intervall", "client_options", "health_checks"])
valid_options = st.sampled_from(_OPTION_NAMES).flatmap(lambda k: st.sampled_from(_valid_values(k)).map(lambda v: (k, v)))
option_dicts = st.one_of(
    st.dictionaries(option_keys, option_values, max_size=3),
    st.lists(valid_options, max_size=4).map(dict),
    st.lists(valid_options, max_size=4).map(dict),
)


def _given_names(options: dict[str, Any]) -> set[str]:
    return {"endpoints", "client_options", "name", "health_checks", *options}


def check_outcome(build: Any, secrets: list[str], given: set[str]) -> FailoverConfig | None:
    try:
        cfg = build()
    except ConfigurationError as exc:
        event("refused")
        text = str(exc)
        head = exc.setting.split("[")[0].split(".")[0].split("?")[0].split(" ")[0]
        assert head in given or head in BOUNDS, (exc.setting, given)
        assert f"{exc.setting!r}" in text or exc.setting in text
        for secret in secrets:
            for form in (secret, quote(secret, safe="")):
                assert not leaks(text, form), (form, text)
        return None
    assert isinstance(cfg, FailoverConfig)
    event("accepted")
    round_trip(cfg)
    for ep in cfg.endpoints:
        cls, kwargs = endpoint_params(cfg, ep)
        cls(**kwargs)  # builds, does not connect
        for secret in secrets:
            assert not leaks(repr(ep), secret) and not leaks(ep.masked_url, secret)
    return cfg


def round_trip(cfg: FailoverConfig) -> None:
    engine = {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name not in ("endpoints", "client_options")}
    as_dicts = [
        {"url": ep.url, "name": ep.name, "weight": ep.weight, "options": dict(ep.options), "health_checks": ep.health_checks}
        for ep in cfg.endpoints
    ]
    assert FailoverConfig.from_dict({"endpoints": as_dicts, "client_options": dict(cfg.client_options), **engine}) == cfg
    if not any(";" in ep.url for ep in cfg.endpoints) and not any(ep.options for ep in cfg.endpoints):
        text = ";".join(f"{ep.url}{'&' if '?' in ep.url else '?'}{urlencode({'name': ep.name, 'weight': repr(ep.weight)})}" for ep in cfg.endpoints)
        assert FailoverConfig.from_string(text, client_options=dict(cfg.client_options), **engine) == cfg


@FAST
@given(st.lists(urls(), min_size=1, max_size=3), st.sampled_from([";", " ; "]))
def test_endpoint_strings(items: list[tuple[str, str | None]], separator: str) -> None:
    text = separator.join(url for url, _ in items)
    secrets = [pw for _, pw in items if pw]
    check_outcome(lambda: FailoverConfig.from_string(text), secrets, {"endpoints"})


endpoint_items = st.tuples(
    urls(), st.one_of(st.none(), st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True)), st.one_of(st.none(), option_values), option_dicts
)


@FAST
@given(st.lists(endpoint_items, min_size=1, max_size=3), option_dicts)
def test_settings_dicts(endpoints: list[Any], options: dict[str, Any]) -> None:
    items: list[Any] = []
    secrets = []
    for (url, password), name, weight, extra in endpoints:
        item: dict[str, Any] = {"url": url, **{k: v for k, v in extra.items() if k in connection_option_names()}}
        if name is not None:
            item["name"] = name
        if weight is not None:
            item["weight"] = weight
        items.append(item)
        if password:
            secrets.append(password)
    check_outcome(lambda: FailoverConfig.from_dict({"endpoints": items, **options}), secrets, _given_names(options))


@FAST
@given(st.lists(urls(), min_size=1, max_size=2), option_dicts)
def test_url_lists_with_options(items: list[tuple[str, str | None]], options: dict[str, Any]) -> None:
    secrets = [pw for _, pw in items if pw]
    check_outcome(lambda: FailoverConfig.from_dict({"endpoints": [u for u, _ in items], **options}), secrets, _given_names(options))


@FAST
@given(passwords(), st.sampled_from(["", "default", "app"]), hosts)
def test_a_valid_encoded_password_round_trips_and_is_masked(password: str, user: str, host: str) -> None:
    url = f"redis://{user}:{quote(password, safe='')}@{host}:6379/0"
    cfg = FailoverConfig.from_string(f"{url}?name=a")
    _, kwargs = endpoint_params(cfg, "a")
    assert kwargs["password"] == password
    assert not leaks(repr(cfg), password) and not leaks(mask_url(url), quote(password, safe=""))


# -- masking ---------------------------------------------------------------------------

_TEXT_CHARS = "ab:/@?&=; \t'\"<>#%"
pieces = st.sampled_from(["://", ":", "@", "a", "redis", " ", "/", "password=", "?", "&", "rediss://u:", "@h:1/0", "'", "\n"])


@settings(max_examples=200, deadline=None)
@given(st.lists(pieces, max_size=400), st.integers(1, 200))
def test_masking_does_linear_work_on_adversarial_text(parts: list[str], repeat: int) -> None:
    text = "".join(parts) * repeat
    windows: list[tuple[int, int]] = []
    _password_spans(text, windows)
    assert sum(end - start for start, end in windows) <= len(text)  # every character looked at once
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(windows))
    assert mask_text(mask_text(text)) == mask_text(text)


@FAST
@given(
    st.text(alphabet="abc ,.()", max_size=30),
    st.sampled_from(["redis", "rediss", "unix", "http"]),
    st.sampled_from(["", "default", "app"]),
    st.text(alphabet="QXZqxz0123456789/;#@?:%+=&", min_size=3, max_size=20),
    st.text(alphabet="abc ,.()", max_size=30),
)
def test_a_password_quoted_in_any_text_is_masked(before: str, scheme: str, user: str, password: str, after: str) -> None:
    text = f"{before} {scheme}://{user}:{password}@host:6379/0 {after}"
    assert mask_text(text) == f"{before} {scheme}://{user}:{MASK}@host:6379/0 {after}"


def test_masking_two_megabytes_of_adversarial_text() -> None:
    """The old pattern took minutes on these (quadratic in runs of letters)."""
    n = 2 * 1024 * 1024
    assert mask_text("a" * n) == "a" * n
    assert mask_text("redis://" + "a" * n) == "redis://" + "a" * n
    assert mask_text("redis://u:" + "p" * n + "@h/0") == "redis://u:" + MASK + "@h/0"
    assert mask_text("://" * (n // 3)) == "://" * (n // 3)
    assert mask_text("x://a:b@" * (n // 8)) == "x://a:" + MASK + "@"
    assert mask_text("password=" * (n // 9)) == "password=" + MASK
    assert mask_text(" password" * (n // 9)) == " password" * (n // 9)
    assert mask_text("?pass" * (n // 5)) == "?pass" * (n // 5)
    assert mask_text("a:" * (n // 2) + "@") == "a:" * (n // 2) + "@"
    spaced = "redis://u:pw@h " * (n // 15)
    assert mask_text(spaced) == f"redis://u:{MASK}@h " * (n // 15)


def test_mask_url_of_a_url_cut_inside_its_password() -> None:
    assert mask_url("redis://default:k9ZxQwe7Rt/3Fa+Lm0=@host/0") == f"redis://default:{MASK}@host/0"
    assert EndpointConfig("a", "redis://default:k9ZxQwe7Rt%2F3Fa@host/0").masked_url == f"redis://default:{MASK}@host/0"
