"""MQTT outbox and reconnect backoff (sans-I/O)."""

from __future__ import annotations

import pytest

from streamer.sinks.outbox import Backoff, Outbox

from .sink_events import final


def test_entry_leaves_only_when_both_parts_are_acked_in_order() -> None:
    ob = Outbox(10)
    ob.push(final(1))
    ob.push(final(2))
    head = ob.head()
    assert head is not None and head.final.seq == 1 and head.pending_parts() == ["final", "text"]
    ob.ack(head, "final")
    assert ob.head() is head and head.pending_parts() == ["text"]  # the acked part is not re-published
    ob.ack(head, "text")
    nxt = ob.head()
    assert nxt is not None and nxt.final.seq == 2
    assert len(ob) == 1


def test_duplicate_or_old_final_is_ignored() -> None:
    ob = Outbox(10)
    ob.push(final(1))
    assert ob.push(final(1)) == 0
    ob.push(final(2))
    ob.push(final(1, stream="other"))  # seq is per stream
    assert [(f.stream, f.seq) for f in ob.pending()] == [("main", 1), ("main", 2), ("other", 1)]


def test_overflow_drops_oldest_and_counts() -> None:
    ob = Outbox(3)
    dropped = sum(ob.push(final(i)) for i in range(1, 6))
    assert dropped == 2 and ob.overflow == 2
    assert [f.seq for f in ob.pending()] == [3, 4, 5]


def test_ack_of_an_entry_dropped_meanwhile_is_harmless() -> None:
    ob = Outbox(1)
    ob.push(final(1))
    e = ob.head()
    assert e is not None
    ob.push(final(2))  # drops 1 while its publish is in flight
    ob.ack(e, "final")
    ob.ack(e, "text")
    assert [f.seq for f in ob.pending()] == [2]


def test_bad_values() -> None:
    with pytest.raises(ValueError, match=r"mqtt\.outbox"):
        Outbox(0)
    ob = Outbox(1)
    ob.push(final(1))
    e = ob.head()
    assert e is not None
    with pytest.raises(ValueError, match="part"):
        ob.ack(e, "partial")
    with pytest.raises(ValueError):
        Backoff(initial=0)


def test_backoff_grows_caps_jitters_and_resets() -> None:
    b = Backoff(initial=0.5, maximum=4.0, rand=lambda: 1.0)
    assert [b.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    b.reset()
    assert b.next() == 0.5
    low = Backoff(initial=1.0, maximum=8.0, rand=lambda: 0.0)
    assert [low.next() for _ in range(3)] == [0.5, 1.0, 2.0]  # jitter: between half and full delay
