"""The OpenAI examples of README.md and docs/openai.md run as written against the demo.

Each Python example is read from the file itself (so the test breaks when the docs
drift), pointed at a live demo server on a free port instead of 127.0.0.1:7860 /
localhost:7860, given ``KEY`` (the server has no keys, so any key works), and run in a
fresh interpreter. One demo server serves the module: it loads SmolLM2 and MiniLM once.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from genq.demo import app
from tests.support.http_fixtures import FAST, LiveServer

ROOT = Path(__file__).resolve().parents[2]
GIVEN = 'KEY = "any-key-works-without-keys"\n'
REPORT = '''
print()
print("REPLY", bool(reply.choices[0].message.content))
print("VECTORS", len(vectors.data), len(vectors.data[0].embedding))
print("IMAGE", image.data[0].b64_json is not None)
'''
RESUMED = '''
print()
print("RESUMED", last, response_id.startswith("resp_"))
'''


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(app, tmp_path_factory.mktemp("openai-docs") / "jobs.sqlite3",
                      FAST).start()
    yield live
    live.stop()


def run(code: str, live: LiveServer, tmp_path: Path) -> str:
    code = re.sub(r"http://(localhost|127\.0\.0\.1):7860", live.url, code)
    script = tmp_path / "example.py"
    script.write_text(code)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_sdk_examples_of_docs_openai_run(demo: LiveServer, tmp_path: Path) -> None:
    blocks = [b for b in python_blocks(ROOT / "docs/openai.md") if "client" in b]
    assert len(blocks) == 2, "docs/openai.md: the chat/embeddings/images and resume examples"
    calls, resume = blocks
    lines = run(GIVEN + calls + REPORT, demo, tmp_path).splitlines()
    assert "REPLY True" in lines
    assert "VECTORS 2 384" in lines
    assert "IMAGE True" in lines
    resumed = run(GIVEN + "from openai import OpenAI\nclient = OpenAI(base_url="
                  f'"{demo.url}/v1", api_key=KEY)\n' + resume + RESUMED, demo, tmp_path)
    assert "RESUMED 20 True" in resumed.splitlines()


def test_the_readme_openai_snippet_runs(demo: LiveServer, tmp_path: Path) -> None:
    block = next(b for b in python_blocks(ROOT / "README.md") if "OpenAI(" in b)
    run(block, demo, tmp_path)
