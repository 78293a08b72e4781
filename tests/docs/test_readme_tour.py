"""The README's tour runs as written.

The first Python block of README.md is read from the file itself (so the test breaks
when the README drifts from the code), given the names it leaves to the reader
(``png_bytes``, ``Pipeline`` and ``load_pipeline``, ``some_sync_streamer``), and run in
a fresh interpreter in an empty folder, where ``app.local()`` makes its own SQLite file.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"

# What the tour leaves to the reader: an image's bytes, a pipeline that makes them (its
# loads and teardowns printed), and a blocking token streamer.
GIVEN = '''
png_bytes = b"\\x89PNG\\r\\n\\x1a\\n fake image bytes"

class Pipeline:
    def __init__(self, device):
        print("LOADED on", device)

    def __call__(self, prompt):
        return png_bytes

    def close(self):
        print("TORN DOWN")

def load_pipeline(device):
    return Pipeline(device)

def some_sync_streamer():
    import time
    for piece in ["Hel", "lo, ", "fox"]:
        time.sleep(0.01)
        yield piece
'''
# What the test reads back once the tour has run.
REPORT = '''
print()
print("IMAGE", type(image).__name__, image.content_type, image.data == png_bytes)
print("MAP", [type(r).__name__ for r in results])
'''


def tour() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README.md has no python block"
    return blocks[0]


def test_the_readme_tour_runs_as_written(tmp_path: Path) -> None:
    code = tour()
    assert "app.local()" in code and "client.stream(" in code  # the block it should be
    script = tmp_path / "tour.py"
    script.write_text(GIVEN + code + REPORT)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    events = [line.split()[0] for line in lines if line.split()[:1] and line.split()[0]
              in {"queued", "started", "progress", "output", "succeeded"}]
    assert events[0] == "queued" and events[-1] == "succeeded" and "progress" in events
    assert "Hello, fox" in done.stdout  # the chat's tokens, streamed in order
    assert "IMAGE Artifact image/png True" in lines
    assert "MAP ['Artifact', 'Artifact']" in lines
    # The model was loaded once, before the first job, and torn down when the local
    # engine stopped (the end of the `with` block, before the report).
    out = done.stdout
    assert out.count("LOADED on cpu") == 1 and out.count("TORN DOWN") == 1
    assert out.index("LOADED on cpu") < out.index("queued")
    assert out.index("TORN DOWN") < out.index("IMAGE Artifact")
