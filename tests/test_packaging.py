"""Packaging: an adapter imported without its extra says which extra to install."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("package", "hidden", "extra"),
    [("geofailover_flask", "blinker", "flask"), ("geofailover_flask", "flask", "flask"),
     ("geofailover_celery", "celery", "celery"), ("geofailover_celery", "kombu", "celery")],
)
def test_an_adapter_without_its_extra_names_the_extra(package: str, hidden: str, extra: str) -> None:
    code = f"import sys; sys.modules[{hidden!r}] = None\nimport {package}"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert f'pip install "geofailover[{extra}]"' in done.stderr and hidden in done.stderr.splitlines()[-1]


def test_the_license_file_ships() -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License")
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'license = "MIT"' in pyproject and 'license-files = ["LICENSE"]' in pyproject
