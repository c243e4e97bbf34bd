"""The per-client queue policy (sans-I/O): partial coalescing and dropping, slow-client decision."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamer.sinks.clients import ClientQueue, Item, Kind, Push, too_slow_reason


def F(seq: int) -> Item:
    return Item(Kind.FINAL, f"F{seq}", seq)


def P(seq: int, rev: int) -> Item:
    return Item(Kind.PARTIAL, f"P{seq}.{rev}", seq, rev)


def drain(q: ClientQueue) -> list[str]:
    out: list[str] = []
    while (it := q.pop()) is not None:
        out.append(it.payload if isinstance(it.payload, str) else it.payload.decode())
    return out


def test_newer_partial_replaces_pending_one_of_same_utterance() -> None:
    q = ClientQueue(8)
    assert q.push(P(1, 0)).outcome is Push.QUEUED
    assert q.push(P(1, 1)).outcome is Push.REPLACED
    assert q.push(P(1, 0)).outcome is Push.SKIPPED  # an older revision never overwrites a newer one
    assert drain(q) == ["P1.1"]


def test_final_removes_the_partials_it_supersedes_and_later_ones_for_it_are_skipped() -> None:
    q = ClientQueue(8)
    q.push(P(1, 0))
    q.push(F(1))
    assert q.push(P(1, 5)).outcome is Push.SKIPPED
    q.push(P(2, 0))
    assert drain(q) == ["F1", "P2.0"]
    assert q.dropped_partials == 0  # superseded partials are not losses


def test_duplicate_and_old_finals_are_skipped() -> None:
    q = ClientQueue(8, last_final_seq=3)
    assert q.push(F(2)).outcome is Push.SKIPPED
    assert q.push(F(3)).outcome is Push.SKIPPED
    assert q.push(F(4)).outcome is Push.QUEUED
    assert q.push(F(4)).outcome is Push.SKIPPED
    assert drain(q) == ["F4"]


def test_full_queue_drops_partials_before_finals() -> None:
    q = ClientQueue(3)
    q.push(F(1))
    q.push(P(2, 0))
    q.push(Item(Kind.OTHER, "status"))
    r = q.push(F(2))  # removes P2 as superseded: room without dropping anything
    assert r.outcome is Push.QUEUED and r.dropped_partials == 0
    q2 = ClientQueue(3)
    q2.push(P(5, 0))
    q2.push(F(1))
    q2.push(F(2))
    r = q2.push(F(3))
    assert r.outcome is Push.QUEUED and r.dropped_partials == 1
    assert drain(q2) == ["F1", "F2", "F3"]


def test_partial_into_queue_full_of_finals_is_dropped_not_queued() -> None:
    q = ClientQueue(2)
    q.push(F(1))
    q.push(F(2))
    r = q.push(P(3, 0))
    assert r.outcome is Push.SKIPPED and r.dropped_partials == 1
    assert len(q) == 2


def test_final_that_does_not_fit_is_overflow_and_not_recorded() -> None:
    q = ClientQueue(2)
    q.push(F(1))
    q.push(F(2))
    assert q.push(F(3)).outcome is Push.OVERFLOW
    assert q.last_final_seq == 2  # so the close reason tells the client what it has
    assert too_slow_reason(2) == "too slow: reconnect with since=2"


def test_mark_delivered_moves_the_baseline() -> None:
    q = ClientQueue(4)
    q.push(P(3, 0))
    q.mark_delivered(3)
    assert len(q) == 0
    assert q.push(F(3)).outcome is Push.SKIPPED


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        ClientQueue(0)


events = st.lists(
    st.one_of(
        st.tuples(st.just("F"), st.integers(1, 30), st.just(0)),
        st.tuples(st.just("P"), st.integers(1, 30), st.integers(0, 5)),
    ),
    max_size=120,
)


@given(events, st.integers(1, 10))
def test_never_exceeds_capacity_and_finals_stay_ordered_and_unique(
    evs: list[tuple[str, int, int]], cap: int
) -> None:
    q = ClientQueue(cap)
    overflowed = False
    accepted: list[int] = []
    for kind, seq, rev in evs:
        r = q.push(F(seq) if kind == "F" else P(seq, rev))
        assert len(q) <= cap
        if r.outcome is Push.OVERFLOW:
            overflowed = True
            break
        if kind == "F" and r.outcome is Push.QUEUED:
            accepted.append(seq)
    out = drain(q)
    finals = [int(p[1:]) for p in out if p.startswith("F")]
    assert finals == accepted  # every accepted final is delivered, in order
    assert finals == sorted(set(finals))
    # No partial is delivered after (or for) a final it previews.
    seen_final = 0
    for p in out:
        if p.startswith("F"):
            seen_final = int(p[1:])
        else:
            assert int(p[1:].split(".")[0]) > seen_final
    if not overflowed:
        assert q.last_final_seq == (max(accepted) if accepted else 0)
