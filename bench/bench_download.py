"""Download throughput: genq.downloads.download vs a plain httpx stream, same file, loopback.

Both fetch the same file from the same local server in the same run; genq also hashes
(sha256), keeps a resumable part file with its sidecar and reports progress, so the
ratio is the price of those guarantees. Run: .venv/bin/python bench/bench_download.py
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from flaky_http import FlakyFiles, serve_files

from genq.downloads import download

SIZE = 256 * 1024 * 1024
ROUNDS = 3


def plain_httpx(url: str, dest: Path) -> None:
    with httpx.stream("GET", url) as response, dest.open("wb") as f:
        for block in response.iter_bytes(1 << 20):
            f.write(block)


def main() -> None:
    data = bytes(range(256)) * (SIZE // 256)
    expected = hashlib.sha256(data).hexdigest()
    with tempfile.TemporaryDirectory() as tmp, serve_files(FlakyFiles({"f": data})) as url:
        best = {"httpx": float("inf"), "genq": float("inf")}
        for i in range(ROUNDS):
            t = time.perf_counter()
            plain_httpx(f"{url}/f", Path(tmp) / f"plain{i}")
            best["httpx"] = min(best["httpx"], time.perf_counter() - t)
            t = time.perf_counter()
            result = download(f"{url}/f", Path(tmp) / f"genq{i}", sha256=expected)
            best["genq"] = min(best["genq"], time.perf_counter() - t)
            assert result.size == SIZE
    mb = SIZE / 1e6
    for name, seconds in best.items():
        print(f"{name:>6}: {mb / seconds:8.1f} MB/s  (best of {ROUNDS}, {mb:.0f} MB)")
    print(f" ratio: genq runs at {best['httpx'] / best['genq']:.2f}x plain httpx "
          "(with sha256, part file and progress)")


if __name__ == "__main__":
    main()
