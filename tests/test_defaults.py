"""The README's table of defaults is generated from the code and must match it."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from geofailover_core import DEFAULTS, FailoverConfig
from geofailover_core.defaults import markdown_table

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_table_matches_code() -> None:
    text = README.read_text()
    assert markdown_table() in text, "README defaults table is stale: paste `python -m geofailover_core.defaults` output"


def test_config_dataclass_defaults_come_from_defaults_module() -> None:
    cfg_defaults = {f.name: f.default for f in fields(FailoverConfig) if f.name in DEFAULTS}
    assert cfg_defaults == DEFAULTS
