"""The SQLite store's in-memory queues (genq.store.sqlite_queues), without a file or a
loop: claim order, positions, removal, delayed retries and queue timeouts."""

from __future__ import annotations

from typing import Any

from genq.models import Job
from genq.store.sqlite_queues import JOB_ID, JobQueues

NOW = 1_000_000.0


def job(job_id: str, function: str = "render", **fields: Any) -> Job:
    return Job(id=job_id, function=function, input={}, **fields)


def queued(*jobs: Job, now: float = NOW) -> JobQueues:
    queues = JobQueues()
    for j in jobs:
        assert queues.add(j, now) is None
    return queues


def drain(queues: JobQueues, *functions: str) -> list[str]:
    """Job ids in the order claims would take them."""
    taken = []
    while (job_id := queues.next_ready(functions or ("render",))) is not None:
        queues.remove(job_id)
        taken.append(job_id)
    return taken


def test_claim_order_is_priority_then_arrival() -> None:
    queues = queued(job("a"), job("b", priority=5), job("c"), job("d", priority=5),
                    job("e", priority=-1))
    assert drain(queues) == ["b", "d", "a", "c", "e"]


def test_claim_order_holds_across_functions() -> None:
    queues = queued(job("a", "one"), job("b", "two", priority=1), job("c", "two"),
                    job("d", "one"))
    assert queues.next_ready(["one"]) == "a"
    assert queues.next_ready(["three"]) is None
    assert drain(queues, "one", "two") == ["b", "a", "c", "d"]


def test_positions_are_ranks_in_claim_order() -> None:
    queues = queued(job("a"), job("b", priority=2), job("c"), job("x", "other"))
    assert [queues.position(i) for i in "bac"] == [1, 2, 3]
    assert queues.position("x") == 1
    assert queues.position("unknown") is None
    # A newcomer of the same owner goes behind every job of its priority or higher.
    for j, where in ((job("n0"), 4), (job("n2", priority=2), 2), (job("n3", priority=3), 1),
                     (job("n", "nothing queued"), 1)):
        queues.add(j, NOW)
        assert queues.position(j.id) == where


def test_removal_closes_the_gap_and_is_idempotent() -> None:
    queues = queued(job("a"), job("b"), job("c"))
    queues.remove("b")
    queues.remove("b")
    assert "b" not in queues and "a" in queues
    assert queues.position("b") is None
    assert [queues.position(i) for i in "ac"] == [1, 2]
    assert queues.depth("render") == 2
    assert drain(queues) == ["a", "c"]
    assert queues.depth("render") == 0


def test_a_requeued_job_goes_behind_its_priority() -> None:
    queues = queued(job("a"), job("b"))
    queues.remove("a")  # claimed...
    assert queues.add(job("a"), NOW) is None  # ...and back (a requeue)
    assert drain(queues) == ["b", "a"]


def test_a_delayed_job_counts_but_waits_for_its_time() -> None:
    queues = queued(job("a"))
    assert queues.add(job("r", not_before=NOW + 30), NOW) == 30
    assert queues.depth("render") == 2
    assert "r" in queues and queues.position("r") is None  # no place while it waits
    queues.promote(NOW + 29)
    assert queues.position("r") is None
    assert queues.next_ready(["render"]) == "a"
    queues.promote(NOW + 30)
    assert queues.position("r") == 2  # behind "a", which arrived first
    queues.promote(NOW + 31)  # promoting again changes nothing
    assert drain(queues) == ["a", "r"]


def test_a_delayed_job_removed_while_waiting_is_never_promoted() -> None:
    queues = JobQueues()
    queues.add(job("r", not_before=NOW + 5), NOW)
    queues.remove("r")  # cancelled during its delay
    assert queues.depth("render") == 0
    queues.promote(NOW + 10)
    assert queues.next_ready(["render"]) is None and queues.position("r") is None


def test_expiry_comes_in_deadline_order_and_only_when_due() -> None:
    queues = queued(job("late", expires_at=NOW + 20), job("none"),
                    job("soon", expires_at=NOW + 10),
                    job("started", expires_at=NOW + 5, started_at=NOW - 1))
    assert queues.pop_expired(NOW + 9) is None
    assert queues.pop_expired(NOW + 25) == "soon"
    assert queues.pop_expired(NOW + 25) == "late"
    # A job that ran once (a retry, a requeue) never expires; one without a timeout
    # neither.
    assert queues.pop_expired(NOW + 10_000) is None
    # Popping does not dequeue: the store decides (the entry may be stale).
    assert queues.depth("render") == 4


def test_expiry_entries_of_removed_jobs_still_come_up_for_the_caller_to_skip() -> None:
    queues = queued(job("a", expires_at=NOW + 1))
    queues.remove("a")
    assert queues.pop_expired(NOW + 2) == "a"
    assert "a" not in queues


def test_head_level_is_the_first_jobs_of_the_highest_priority_in_claim_order() -> None:
    queues = queued(job("a"), job("b", priority=5), job("c", priority=5), job("d"),
                    job("e", priority=5), job("x", "upscale"))
    assert [e[JOB_ID] for e in queues.head_level("render", 10)] == ["b", "c", "e"]
    assert [e[JOB_ID] for e in queues.head_level("render", 2)] == ["b", "c"]
    head = queues.head("render")
    assert head is not None and head[JOB_ID] == "b"
    queues.remove("b")
    queues.remove("c")
    queues.remove("e")
    assert [e[JOB_ID] for e in queues.head_level("render", 10)] == ["a", "d"]
    assert queues.head_level("caption", 10) == [] and queues.head("caption") is None


def test_owners_take_turns_among_jobs_of_one_priority() -> None:
    queues = queued(*(job(f"a{i}", owner="alice") for i in range(4)),
                    job("b0", owner="bob"), job("b1", owner="bob"), job("c0", owner="carol"))
    # each owner's first job, then each one's second...; an owner's own jobs stay FIFO
    assert [queues.position(i) for i in ("a0", "b0", "c0", "a1", "b1")] == [1, 2, 3, 4, 5]
    taken = []
    while (job_id := queues.next_ready(["render"])) is not None:
        queues.take(job_id)
        taken.append(job_id)
    assert taken == ["a0", "b0", "c0", "a1", "b1", "a2", "a3"]


def test_a_newcomer_goes_next_after_claims_and_priority_still_wins() -> None:
    queues = queued(*(job(f"a{i}", owner="alice") for i in range(10)))
    for _ in range(5):
        queues.take(queues.next_ready(["render"]) or "")
    queues.add(job("b0", owner="bob"), NOW)
    assert queues.position("b0") == 1  # ahead of alice's five left
    queues.add(job("urgent", owner="alice", priority=1), NOW)
    assert queues.position("urgent") == 1 and queues.position("b0") == 2


def test_an_owner_whose_jobs_left_starts_afresh() -> None:
    queues = queued(*(job(f"a{i}", owner="alice") for i in range(5)), job("b0", owner="bob"))
    for i in range(5):
        queues.remove(f"a{i}")  # cancelled: no debt left behind
    queues.add(job("a5", owner="alice"), NOW)
    queues.add(job("b1", owner="bob"), NOW)
    assert [queues.position(i) for i in ("b0", "a5", "b1")] == [1, 2, 3]
    assert queues.owner_depth("alice") == 1 and queues.owner_depth("bob") == 2


def test_without_fair_share_the_order_is_arrival() -> None:
    queues = JobQueues(fair=False)
    for j in (*(job(f"a{i}", owner="alice") for i in range(3)), job("b0", owner="bob")):
        queues.add(j, NOW)
    assert queues.position("b0") == 4


def test_skipped_owners_are_passed_over_within_the_window() -> None:
    queues = queued(*(job(f"a{i}", owner="alice") for i in range(3)), job("b0", owner="bob"),
                    job("h", owner="alice", priority=1))
    def alice(job_id: str) -> bool:
        return job_id.startswith(("a", "h"))

    assert queues.next_ready(["render"], skip=alice) == "b0"
    assert [e[JOB_ID] for e in queues.head_level("render", 10, skip=alice)] == ["b0"]
    assert queues.next_ready(["render"], skip=lambda _: True) is None
