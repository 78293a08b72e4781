#!/usr/bin/env bash
# The whole test suite, as CI runs it: set-up, lint, type check, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check src tests bench examples
.venv/bin/mypy
.venv/bin/pytest -q "$@"
