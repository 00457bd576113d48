#!/usr/bin/env bash
# Set up everything on a fresh clone and run the whole test suite:
# lint (ruff), types (mypy --strict) and the tests (pytest), in a virtualenv, with
# the servers the tests start (redis-server, nginx) installed where missing.
#
#   bash scripts/test.sh              # Python 3.11+ from PATH (python3), venv in .venv
#   PYTHON=python3.12 VENV=.venv-3.12 bash scripts/test.sh
#   bash scripts/test.sh -k ordered   # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/_venv.sh
ensure_system_tools  # redis-server and nginx, for the tests that start them
ensure_venv test
if [ "${SETUP_ONLY:-}" = 1 ]; then  # .ci/run: the machine set up, before the suites
    exit 0
fi

echo "== $("$venv/bin/python" --version): ruff, mypy --strict, pytest"
"$venv/bin/python" -m ruff check src tests benchmarks examples
"$venv/bin/python" -m ruff format --check src tests benchmarks examples
"$venv/bin/python" -m mypy
"$venv/bin/python" -m pytest "$@"
