"""Prometheus metrics, in a registry of its own per server (no global state).

The gauges (queue depth, running jobs, workers) are read from the store at scrape time
(``Engine.cluster``), so every front end reports the whole cluster. The counters and
histograms count what this front end observed: the submissions it accepted, and every
job end the store announced to it (on Redis, the ends of the whole cluster, since it
started).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from genq.loopwatch import Block
from genq.models import Job, WorkerInfo

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120,
                    300, 900, 3600)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.submitted = Counter("genq_jobs_submitted", "Jobs accepted, by function",
                                 ["function"], registry=self.registry)
        self.rejected = Counter("genq_jobs_rejected", "Submissions refused, by reason code",
                                ["function", "code"], registry=self.registry)
        self.finished = Counter("genq_jobs_finished", "Jobs that reached a terminal status",
                                ["function", "status"], registry=self.registry)
        self.queue_wait = Histogram("genq_job_queue_seconds", "Time from submit to start",
                                    ["function"], buckets=_LATENCY_BUCKETS,
                                    registry=self.registry)
        self.run_time = Histogram("genq_job_run_seconds", "Time from start to finish",
                                  ["function"], buckets=_LATENCY_BUCKETS,
                                  registry=self.registry)
        self.streams = Gauge("genq_event_streams", "Connected event-stream clients",
                             registry=self.registry)

        self.queue_depth = Gauge("genq_queue_depth", "Queued jobs, by function",
                                 ["function"], registry=self.registry)
        self.running = Gauge("genq_jobs_running", "Jobs running on any worker, by function",
                             ["function"], registry=self.registry)
        self.workers = Gauge("genq_workers", "Worker processes reporting to the store",
                             registry=self.registry)
        self.function_workers = Gauge(
            "genq_function_workers", "Workers serving a function, by the state of the models "
            "it takes on them (ready, loading, failed)", ["function", "state"],
            registry=self.registry)
        self.models_loaded = Gauge(
            "genq_models_loaded", "Model instances held loaded by the workers, by model",
            ["model"], registry=self.registry)
        self.loop_blocked = Counter(
            "genq_loop_blocked_seconds", "Time this process's event loop was stuck in a "
            "job function's blocking code (function=\"\" when none was on the stack)",
            ["function"], registry=self.registry)

        self.connected_streams = 0

    def stream_opened(self) -> None:
        self.connected_streams += 1
        self.streams.set(self.connected_streams)

    def stream_closed(self) -> None:
        self.connected_streams -= 1
        self.streams.set(self.connected_streams)

    def observe_workers(self, functions: Iterable[str], workers: Iterable[WorkerInfo]) -> None:
        """Set the per-function and per-model gauges from the workers' reports."""
        states: collections.Counter[tuple[str, str]] = collections.Counter()
        models: collections.Counter[str] = collections.Counter()
        for worker in workers:
            for function in worker.functions:
                states[(function, worker.state_of(function))] += 1
            for model in worker.models:
                models[str(model.get("name"))] += 1
        for function in functions:
            for state in ("ready", "loading", "failed"):
                self.function_workers.labels(function, state).set(states[(function, state)])
        self.models_loaded.clear()
        for name, count in models.items():
            self.models_loaded.labels(name).set(count)

    def loop_block(self, block: Block) -> None:
        self.loop_blocked.labels(block.function or "").inc(block.seconds)

    def job_done(self, job: Job) -> None:
        """Count a terminal job and observe its queue wait and run time."""
        self.finished.labels(job.function, job.status.value).inc()
        if job.started_at is not None:
            self.queue_wait.labels(job.function).observe(max(0.0, job.started_at - job.created_at))
            if job.finished_at is not None:
                self.run_time.labels(job.function).observe(
                    max(0.0, job.finished_at - job.started_at))

    def render(self) -> bytes:
        return generate_latest(self.registry)
