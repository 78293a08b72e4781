"""The warm routing rule (genq.store.routing) on its own, without a store: the order of
preference, the window's edge cases, and what the bound does. Both stores are held to
the same rule by the contract suite (routing_contract.py)."""

from __future__ import annotations

from collections.abc import Collection

from genq.store.routing import Candidate, choose, runnable_since

NOW = 1_000.0


def c(job_id: str, affinity: str | None, age: float = 1.0, takes_now: bool = False
      ) -> Candidate:
    return Candidate(job_id, affinity, NOW - age, takes_now)


def pick(candidates: list[Candidate], holds: Collection[str] = (),
         others: Collection[str] = (), bound: float = 30.0) -> str | None:
    return choose(candidates, holds, others.__contains__, bound, NOW)


def test_warm_or_model_free_jobs_first_in_claim_order() -> None:
    jobs = [c("1", "m:b"), c("2", "m:a"), c("3", None)]
    assert pick(jobs, holds={"m:a"}, others={"m:b"}) == "2"
    assert pick(jobs, holds={"m:x"}, others={"m:b"}) == "3"


def test_then_the_first_job_whose_model_no_other_worker_holds() -> None:
    jobs = [c("1", "m:b"), c("2", "m:c"), c("3", "m:d")]
    assert pick(jobs, others={"m:b"}) == "2"
    assert pick(jobs, others={"m:b", "m:c", "m:d"}) is None


def test_a_job_at_the_bound_is_taken_ahead_of_warm_ones() -> None:
    jobs = [c("1", "m:b", age=5.0), c("2", "m:a")]
    assert pick(jobs, holds={"m:a"}, others={"m:b"}, bound=5.0) == "1"
    assert pick(jobs, holds={"m:a"}, others={"m:b"}, bound=5.1) == "2"
    # A bound of 0: every job is overdue, so the first one is taken (plain FIFO).
    assert pick(jobs, holds={"m:a"}, others={"m:b"}, bound=0.0) == "1"


def test_a_job_to_expire_is_taken_whatever_its_model() -> None:
    jobs = [c("1", "m:b", takes_now=True), c("2", "m:a")]
    assert pick(jobs, holds={"m:a"}, others={"m:b"}) == "1"


def test_an_empty_window_takes_nothing_and_retries_wait_from_their_delay() -> None:
    assert pick([]) is None
    assert runnable_since(created_at=10.0, not_before=0.0) == 10.0
    assert runnable_since(created_at=10.0, not_before=25.0) == 25.0
