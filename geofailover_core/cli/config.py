"""Where the standalone command finds its configuration: ``--url``, ``--config``,
``-o KEY=VALUE`` and the ``GEOFAILOVER_URL``/``GEOFAILOVER_CONFIG`` environment."""

from __future__ import annotations

import argparse
import os
import tomllib
from pathlib import Path
from typing import Any

from ..config import FailoverConfig
from ..errors import ConfigurationError
from .parser import ENV_CONFIG, ENV_URL


def option_value(text: str) -> Any:
    """``-o key=VALUE``: VALUE as a TOML value when it parses as one (numbers, booleans), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def load_configs(args: argparse.Namespace, environ: dict[str, str] | os._Environ[str] | None = None) -> list[FailoverConfig]:
    """The configuration from ``--config``/``--url``, else ``$GEOFAILOVER_URL``/``$GEOFAILOVER_CONFIG``."""
    env = os.environ if environ is None else environ
    url: str | None = getattr(args, "url", None)
    path: str | None = getattr(args, "config", None)
    if url and path:
        raise ConfigurationError("--url/--config", "both given", "pass one of them")
    if not url and not path:
        url = env.get(ENV_URL) or None
        path = None if url else (env.get(ENV_CONFIG) or None)
    data: dict[str, Any]
    if path:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigurationError("--config", f"no such file: {path}", "check the path") from None
        except OSError as exc:
            raise ConfigurationError("--config", f"cannot read {path}: {exc.strerror}", "check the path and its permissions") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError("--config", f"{path} is not valid TOML ({exc})", "fix the syntax at the position shown") from None
        table = raw.get("geofailover", raw)
        if not isinstance(table, dict):
            raise ConfigurationError("--config", f"{path}: [geofailover] must be a table", "write the options at the top level or under [geofailover]")
        data = dict(table)
    elif url:
        data = {"endpoints": url}
    else:
        raise ConfigurationError(
            "--url", "no configuration given",
            f"pass --url 'redis://host:6379/0?name=us-east;redis://...', set ${ENV_URL}, or pass --config FILE.toml",
        )
    for item in getattr(args, "option", None) or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigurationError("-o", f"{item!r} is not KEY=VALUE", "write e.g. -o control_key_prefix=myapp")
        data[key.strip()] = option_value(value.strip())
    name = getattr(args, "name", None)
    if name:
        data["name"] = name
    return [FailoverConfig.from_dict(data)]



__all__ = ["load_configs", "option_value"]
