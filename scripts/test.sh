#!/usr/bin/env bash
# The whole test suite, as CI runs it: set-up, lint, type check, tests. With
# GENQ_UNLOCKED=1, against the newest versions pyproject.toml allows (in .venv-newest)
# rather than the locked ones of constraints.txt (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$([ -n "${GENQ_UNLOCKED:-}" ] && echo .venv-newest || echo .venv)
scripts/setup.sh
"$venv/bin/ruff" check src tests bench examples
"$venv/bin/mypy"
"$venv/bin/pytest" -q "$@"
