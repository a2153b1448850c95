"""Keep secrets out of everything a person or a log can read.

URLs carry passwords (``redis://:pw@host``, ``?password=``), and error
messages sometimes quote URLs. Everything that leaves the engine as text
(status, logs, reprs, exception messages) goes through :func:`mask_text`.

:func:`mask_text` runs on text of any length and origin (a server's error
reply, a traceback), so it takes time linear in the text: the URL scanner
below looks at every character a bounded number of times, and the one
regular expression left has nothing to backtrack into (a one-character
anchor, a literal, then a run of one character class that ends the match).
A password in a URL is taken to run from the first ``:`` after ``://`` to
the last ``@`` before the URL ends (whitespace or a quote), so a password
with an unencoded ``/``, ``?`` or ``@`` in it is masked whole; masking a
little too much is the safe side.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"

_SECRET_QUERY_KEYS = frozenset({"password", "ssl_password", "token", "pass", "secret"})
# Where a URL quoted in running text ends: one character class, searched
# forward once per URL (no backtracking possible).
_URL_END = re.compile(r"[\s'\"`<>]")
_QUERY_SECRET = re.compile(
    r"(?P<key>(?:^|[?&;\s])(?:password|ssl_password|token|pass|secret)=)(?P<value>[^&;\s]*)",
    re.IGNORECASE,
)


def mask_url(url: str) -> str:
    """Return ``url`` with its password (userinfo or query) replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return mask_text(url)
    netloc = parts.netloc
    after = url.split("://", 1)[-1][len(netloc):]
    if "@" in after:  # an unencoded '/', '?' or '#' in the password cut the URL early
        return mask_text(url)
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, sep, _pw = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{hostport}" if sep else f"{user}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, MASK if k.lower() in _SECRET_QUERY_KEYS else v) for k, v in pairs], safe="*"
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _password_spans(text: str, windows: list[tuple[int, int]] | None = None) -> list[tuple[int, int]]:
    """``(start, end)`` of every URL password in ``text``.

    Each step looks only at ``text[pos:end]`` (recorded in ``windows`` when
    given, so a test can count the work) and the next step starts at ``end``:
    the windows never overlap, so the whole scan is linear.
    """
    spans: list[tuple[int, int]] = []
    pos, size = 0, len(text)
    while True:
        found = text.find("://", pos)
        if found < 0:
            if windows is not None:
                windows.append((pos, size))
            return spans
        start = found + 3
        match = _URL_END.search(text, start)
        end = match.start() if match else size
        if windows is not None:
            windows.append((pos, end))
        at = text.rfind("@", start, end)
        if at >= 0:
            colon = text.find(":", start, at)
            if colon >= 0:
                spans.append((colon + 1, at))
        pos = end


def mask_text(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Mask URL passwords, ``password=`` pairs and any known secret strings in ``text``."""
    spans = _password_spans(text)
    if spans:
        pieces: list[str] = []
        last = 0
        for start, end in spans:
            pieces += [text[last:start], MASK]
            last = end
        pieces.append(text[last:])
        text = "".join(pieces)
    text = _QUERY_SECRET.sub(lambda m: f"{m['key']}{MASK}", text)
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, MASK)
    return text
