"""Run the three engine benchmarks one after another (about 2 minutes in all).

    .venv/bin/python bench/run_all.py            # full runs
    .venv/bin/python bench/run_all.py --quick    # smoke test: one small round each

Exits non-zero if a benchmark fails (a crash or a failed check such as the persisted
event count), not if a target is missed: the targets are reported in each table.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

BENCHES = ("bench_jobs.py", "bench_stream.py", "bench_loop_lag.py")


def main() -> int:
    here = Path(__file__).resolve().parent
    extra = sys.argv[1:]
    failed = []
    for name in BENCHES:
        print(f"\n=== {name} {' '.join(extra)}".rstrip(), flush=True)
        t0 = time.perf_counter()
        code = subprocess.call([sys.executable, str(here / name), *extra])
        print(f"=== {name}: {'ok' if code == 0 else f'FAILED (exit {code})'} "
              f"in {time.perf_counter() - t0:.0f} s", flush=True)
        if code != 0:
            failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
