"""Where genq stands: every benchmark of docs/benchmarks.md in one go, ratios, and a plot.

    .venv/bin/pip install -e '.[bench]'                # arq, SAQ, huey, matplotlib
    .venv/bin/python bench/run_benchmarks.py           # the full run (see docs/benchmarks.md)
    .venv/bin/python bench/run_benchmarks.py --quick   # smoke run of the whole pipeline
    .venv/bin/python bench/run_benchmarks.py --replot docs/benchmarks.json  # plot again

Runs, one after another, each bench script in its own process (each interleaves its own
systems round by round, as it does alone), each writing its results with ``--json``:

1. ``bench_scale.py`` — C = 1, 25, 100, 250 clients streaming 200 tokens at 100 tokens/s:
   genq async/sync generators, Gradio 6 (gradio_client and raw SSE), the sse-starlette
   floor; SSE followed with httpx.
2. ``bench_scale.py --client raw`` — genq's two generators and the floor again, followed
   with a raw HTTP/1.1 client that costs tens of us per request, so that at C=250 the
   server is measured rather than httpx (which alone adds ~0.4 s to the first token).
3. ``bench_http_jobs.py`` — no-op jobs/s over HTTP with a raw client: genq, the in-memory
   Starlette pair, Gradio's queue.
4. ``bench_http_stream.py`` — 100 streams x 100 chunks/s: p99 yield -> client, genq
   against the sse-starlette + Queue peer.
5. ``bench_redis_jobs.py --preload`` — genq's Redis store against arq and SAQ.
6. ``bench_jobs.py`` — genq (SQLite, in process) against huey.

Then prints the goals of issue 10 with the figures, writes every result and the summary
to ``--out`` (default docs/benchmarks.json) and draws ``--plot`` (default
docs/benchmarks.png). Exits 1 if a benchmark failed (a crash, or a check such as "every
client got every token once, in order"), not when a goal is missed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
FLOOR = "sse-starlette floor"
GENQ_GENS = ("genq async-gen", "genq sync-gen")
STREAM_GENQ = "genq async-gen / httpx-sse"
STREAM_PEER = "sse-starlette+Queue / httpx-sse"

# name -> (script, arguments of the full run, arguments of --quick)
STEPS: dict[str, tuple[str, list[str], list[str]]] = {
    "scale": ("bench_scale.py", [], ["--quick"]),
    "scale_raw": ("bench_scale.py",
                  ["--client", "raw", "--systems", ",".join([*GENQ_GENS, FLOOR])],
                  ["--client", "raw", "--systems", ",".join([*GENQ_GENS, FLOOR]), "--quick"]),
    "http_jobs": ("bench_http_jobs.py", ["--runs", "genq/raw,starlette/raw,gradio/raw"],
                  ["--runs", "genq/raw,starlette/raw,gradio/raw", "--quick"]),
    "http_stream": ("bench_http_stream.py",
                    ["--systems", f"{STREAM_GENQ},genq sync-gen / httpx-sse,{STREAM_PEER}"],
                    ["--systems", f"{STREAM_GENQ},genq sync-gen / httpx-sse,{STREAM_PEER}",
                     "--quick"]),
    "redis_jobs": ("bench_redis_jobs.py", ["--preload", "--rounds", "2"],
                   ["--preload", "--quick"]),
    "jobs": ("bench_jobs.py", [], ["--quick"]),
}


def run_step(name: str, quick: bool, tmp: Path) -> tuple[dict[str, Any] | None, float, int]:
    script, full, smoke = STEPS[name]
    out = tmp / f"{name}.json"
    cmd = [sys.executable, str(BENCH / script), *(smoke if quick else full), "--json", str(out)]
    print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    code = subprocess.call(cmd, cwd=ROOT)
    seconds = time.perf_counter() - t0
    print(f"=== {name}: {'ok' if code == 0 else f'FAILED (exit {code})'} in {seconds:.0f} s",
          flush=True)
    data = json.loads(out.read_text()) if out.exists() else None
    return data, seconds, code


# -- goals and ratios ------------------------------------------------------------------
def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The goals of issue 10 (and the queue comparisons) with the figures found."""
    rows: list[dict[str, Any]] = []

    def add(goal: str, figure: str, met: bool | None) -> None:
        rows.append({"goal": goal, "figure": figure, "met": met})

    for step, client in (("scale", "httpx"), ("scale_raw", "raw client")):
        scale = results.get(step)
        if not scale:
            continue
        top = str(max(scale["clients"]))
        for name in GENQ_GENS:
            row = scale["summary"].get(name, {}).get(top)
            if row and row.get("mean_vs_floor"):
                m, p = row["mean_vs_floor"], row["p95_vs_floor"]
                add(f"C={top}: {name} within 1.3x of the SSE floor, mean and p95 ({client})",
                    f"{m:.2f}x / {p:.2f}x ({row['mean_s']:.2f} s / {row['p95_s']:.2f} s)",
                    m <= 1.3 and p <= 1.3 and row["ok"])
        row = scale["summary"].get("genq sync-gen", {}).get(top)
        if row:
            add(f"C={top}: sync generator first token p95 < 100 ms ({client})",
                f"{row['first_p95_s'] * 1000:.0f} ms (floor "
                f"{scale['summary'][FLOOR][top]['first_p95_s'] * 1000:.0f} ms)"
                if FLOOR in scale["summary"] else f"{row['first_p95_s'] * 1000:.0f} ms",
                row["first_p95_s"] < 0.1)
        for name in ("gradio / gradio_client", "gradio / raw SSE"):
            row = scale["summary"].get(name, {}).get(top)
            if row and row.get("mean_vs_floor"):
                add(f"C={top}: {name} vs the floor (reference)",
                    f"{row['mean_vs_floor']:.2f}x / {row['p95_vs_floor']:.2f}x", None)
    jobs = results.get("http_jobs")
    if jobs:
        med = jobs["median_jobs_per_s"]
        genq = med.get("genq / raw", 0.0)
        peers = ", ".join(f"{genq / v:.2f}x {k.split(' / ')[0]}"
                          for k, v in med.items() if k != "genq / raw" and v)
        add("HTTP no-op jobs >= 2,000/s with a raw client",
            f"{genq:,.0f} jobs/s ({peers})", genq >= 2000)
    stream = results.get("http_stream")
    if stream and STREAM_GENQ in stream["medians"] and STREAM_PEER in stream["medians"]:
        g, p = stream["medians"][STREAM_GENQ], stream["medians"][STREAM_PEER]
        ratio = g["p99_ms"] / p["p99_ms"]
        add("100 streams: p99 yield -> client within 2x of sse-starlette",
            f"{ratio:.2f}x ({g['p99_ms']:.1f} ms vs {p['p99_ms']:.1f} ms)",
            ratio <= 2.0 and g["ok"])
    redis = results.get("redis_jobs")
    if redis:
        med = redis["median_jobs_per_s"]
        for k in redis["processes"]:
            genq = med.get(f"genq K={k}", 0.0)
            add(f"Redis, {k} worker process(es): genq vs arq, SAQ",
                f"{genq:,.0f} jobs/s; {genq / med[f'arq K={k}']:.2f}x arq, "
                f"{genq / med[f'saq K={k}']:.2f}x SAQ", None)
    local = results.get("jobs")
    if local:
        med = local["median_jobs_per_s"]
        for name in ("genq async def", "genq def"):
            add(f"SQLite in process: {name} vs huey",
                f"{med[name]:,.0f} jobs/s; {med[name] / med['huey']:.2f}x huey", None)
    return rows


def queue_ratios(results: dict[str, Any]) -> list[tuple[str, float, str]]:
    """(label, genq / peer jobs/s, note) for the bar panel."""
    bars: list[tuple[str, float, str]] = []
    jobs = results.get("http_jobs")
    if jobs:
        med = jobs["median_jobs_per_s"]
        genq = med.get("genq / raw", 0.0)
        for key, label in (("starlette / raw", "HTTP: in-memory Starlette pair"),
                           ("gradio / raw", "HTTP: Gradio 6 queue")):
            if med.get(key):
                bars.append((label, genq / med[key], f"{genq:,.0f} vs {med[key]:,.0f}/s"))
    redis = results.get("redis_jobs")
    if redis:
        med = redis["median_jobs_per_s"]
        for k in redis["processes"]:
            genq = med[f"genq K={k}"]
            for peer, label in (("arq", "arq"), ("saq", "SAQ")):
                other = med[f"{peer} K={k}"]
                bars.append((f"Redis K={k}: {label}", genq / other,
                             f"{genq:,.0f} vs {other:,.0f}/s"))
    local = results.get("jobs")
    if local:
        med = local["median_jobs_per_s"]
        for name, label in (("genq async def", "SQLite: huey (async def)"),
                            ("genq def", "SQLite: huey (def)")):
            bars.append((label, med[name] / med["huey"], f"{med[name]:,.0f} vs "
                                                          f"{med['huey']:,.0f}/s"))
    return bars


# -- the plot --------------------------------------------------------------------------
COLOURS = {"genq async-gen": "tab:blue", "genq sync-gen": "tab:green",
           "gradio / gradio_client": "tab:red", "gradio / raw SSE": "tab:orange",
           FLOOR: "black", "gradio sync-gen / raw SSE": "tab:purple"}


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    def plain_log_y(ax: Any) -> None:  # 0.5, 1, 2, 5 ... rather than 5 x 10^-1
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())

    results = summary["results"]
    fig, axes = plt.subplots(2, 2, figsize=(15, 10.5))
    (ax_req, ax_first), (ax_ratio, ax_bars) = axes
    scale, scale_raw = results.get("scale"), results.get("scale_raw")

    def series(data: dict[str, Any], name: str, key: str) -> tuple[list[int], list[float]]:
        by_c = data["summary"].get(name, {})
        cs = [c for c in data["clients"] if str(c) in by_c]
        return cs, [by_c[str(c)][key] for c in cs]

    if scale:
        ideal = scale["tokens"] * scale["interval_s"]
        for name in scale["systems"]:
            colour = COLOURS.get(name)
            cs, mean = series(scale, name, "mean_s")
            ax_req.plot(cs, mean, "o-", color=colour, label=f"{name}: mean")
            cs, p95 = series(scale, name, "p95_s")
            ax_req.plot(cs, p95, "s--", color=colour, alpha=0.7, label=f"{name}: p95")
            cs, first = series(scale, name, "first_p95_s")
            ax_first.plot(cs, [x * 1000 for x in first], "o-", color=colour,
                          label=f"{name} (httpx)")
        ax_req.axhline(ideal, color="grey", lw=0.8, ls=":")
        ax_req.annotate(f"{scale['tokens']} tokens x {scale['interval_s'] * 1000:g} ms",
                        (scale["clients"][-1], ideal), textcoords="offset points",
                        xytext=(-90, -12), fontsize=8, color="grey")
    if scale_raw:
        for name in scale_raw["systems"]:
            cs, first = series(scale_raw, name, "first_p95_s")
            ax_first.plot(cs, [x * 1000 for x in first], "^:", color=COLOURS.get(name),
                          label=f"{name} (raw client)")
    ax_first.axhline(100, color="grey", lw=0.8, ls=":")
    ax_first.annotate("goal: sync generator < 100 ms at C=250", (1, 100),
                      textcoords="offset points", xytext=(0, 4), fontsize=8, color="grey")
    for ax, title, ylabel in (
            (ax_req, "Seconds per request (start -> last token)", "seconds"),
            (ax_first, "First token, p95", "milliseconds")):
        ax.set_xscale("log")
        plain_log_y(ax)
        ax.set_xlabel("concurrent clients C")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=2 if ax is ax_req else 1,
                  loc="upper left" if ax is ax_req else "lower right")

    for data, marker, client in ((scale, "o", "httpx"), (scale_raw, "^", "raw client")):
        if not data:
            continue
        for name in GENQ_GENS:
            colour = COLOURS[name]
            cs, mean = series(data, name, "mean_vs_floor")
            ax_ratio.plot(cs, mean, marker + "-", color=colour, label=f"{name} mean ({client})",
                          alpha=1.0 if client == "httpx" else 0.6)
            cs, p95 = series(data, name, "p95_vs_floor")
            ax_ratio.plot(cs, p95, marker + "--", color=colour, label=f"{name} p95 ({client})",
                          alpha=1.0 if client == "httpx" else 0.6)
    ax_ratio.axhline(1.3, color="tab:blue", lw=0.8, ls=":")
    ax_ratio.annotate("goal 1.3x (streaming at scale)", (1, 1.3), textcoords="offset points",
                      xytext=(0, 4), fontsize=8, color="tab:blue")
    stream = results.get("http_stream")
    if stream and STREAM_GENQ in stream["medians"] and STREAM_PEER in stream["medians"]:
        ratio = stream["medians"][STREAM_GENQ]["p99_ms"] / stream["medians"][STREAM_PEER]["p99_ms"]
        ax_ratio.plot([stream["streams"]], [ratio], "D", color="tab:purple", ms=9,
                      label="genq async-gen, 100 streams: p99 yield -> client vs sse-starlette")
        ax_ratio.axhline(2.0, color="tab:purple", lw=0.8, ls=":")
        ax_ratio.annotate("goal 2x (100-stream p99)", (1, 2.0), textcoords="offset points",
                          xytext=(0, 4), fontsize=8, color="tab:purple")
    ax_ratio.axhline(1.0, color="black", lw=0.8)
    ax_ratio.set_xscale("log")
    plain_log_y(ax_ratio)
    ax_ratio.set_xlabel("concurrent clients C")
    ax_ratio.set_ylabel("genq / floor (lower is better; 1 = the floor)")
    ax_ratio.set_title("genq against the bare sse-starlette floor")
    ax_ratio.grid(True, which="both", alpha=0.3)
    ax_ratio.legend(fontsize=7)

    bars = queue_ratios(results)
    if bars:
        labels = [b[0] for b in bars]
        values = [b[1] for b in bars]
        colours = ["tab:green" if v >= 1 else "tab:red" for v in values]
        ys = range(len(bars))
        ax_bars.barh(list(ys), values, color=colours, alpha=0.8)
        ax_bars.set_yticks(list(ys), labels, fontsize=8)
        ax_bars.invert_yaxis()
        ax_bars.axvline(1.0, color="black", lw=0.8)
        if max(values) / max(min(values), 1e-9) > 20:
            ax_bars.set_xscale("log")
        for y, (_, v, note) in zip(ys, bars, strict=True):
            ax_bars.annotate(f"{v:.2f}x  ({note})", (v, y), textcoords="offset points",
                             xytext=(4, -3), fontsize=7)
        ax_bars.set_xlim(right=max(values) * (3 if ax_bars.get_xscale() == "log" else 1.5))
    ax_bars.set_xlabel("genq jobs/s / peer jobs/s (> 1: genq faster; log scale if wide)")
    ax_bars.set_title("No-op jobs per second: genq against each peer")
    ax_bars.grid(True, axis="x", alpha=0.3)

    kind = "smoke run (--quick)" if summary["quick"] else "full run"
    fig.suptitle(f"genq benchmarks, {kind}: {summary['date']} on {summary['machine']}",
                 fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def machine() -> str:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{platform.node()}, {os.cpu_count()} CPUs, {mem:.0f} GiB, "
            f"{platform.processor() or platform.machine()}, Python "
            f"{platform.python_version()}")


def print_goals(rows: list[dict[str, Any]]) -> None:
    width = max((len(r["goal"]) for r in rows), default=10)
    print()
    print(f"{'goal / comparison':<{width}}  {'met':<4}  figure")
    for r in rows:
        met = "-" if r["met"] is None else ("yes" if r["met"] else "NO")
        print(f"{r['goal']:<{width}}  {met:<4}  {r['figure']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: small N, C = 1, 25, one round of each")
    parser.add_argument("--only", default=",".join(STEPS),
                        help="comma-separated steps, from: " + ", ".join(STEPS))
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.json",
                        help="the results and summary (JSON)")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "benchmarks.png")
    parser.add_argument("--replot", type=Path, metavar="JSON",
                        help="only draw the plot (and print the goals) from a results file")
    args = parser.parse_args()
    if args.replot:
        summary = json.loads(args.replot.read_text())
        print_goals(summary["goals"])
        plot(summary, args.plot)
        print(f"plot: {args.plot}")
        return 0
    steps = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        parser.error(f"unknown step(s) {unknown}; choose from {list(STEPS)}")
    started = dt.datetime.now().astimezone()
    load = os.getloadavg()
    results: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    failed: list[str] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="genq-benchmarks-") as tmp:
        for step in steps:
            data, took, code = run_step(step, args.quick, Path(tmp))
            seconds[step] = round(took, 1)
            if data is not None:
                results[step] = data
            if code != 0:
                failed.append(step)
    summary = {
        "date": f"{started:%Y-%m-%d %H:%M %Z}", "machine": machine(),
        "load_avg_at_start": load, "quick": args.quick, "seconds": seconds,
        "total_seconds": round(time.perf_counter() - t0, 1), "failed": failed,
        "results": results, "goals": goals(results),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1))
    print_goals(summary["goals"])
    plot(summary, args.plot)
    print(f"\nresults: {args.out}\nplot: {args.plot}\n"
          f"took {summary['total_seconds']:.0f} s: " +
          ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()))
    if failed:
        print(f"FAILED: {failed}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
