"""RingBuffer: positions, wrap-around, drop-oldest accounting, close/drain, wait_free."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.audio.ring import RingBuffer


def ramp(start: int, n: int) -> np.ndarray:
    # Distinct, exactly representable values make every sample identifiable after a read.
    return np.arange(start, start + n, dtype=np.float32)


def test_write_then_read_returns_samples_and_position() -> None:
    ring = RingBuffer(10)
    assert ring.write(ramp(0, 4)) == 0
    pos, data = ring.read()
    assert pos == 0
    np.testing.assert_array_equal(data, ramp(0, 4))
    assert ring.written == 4
    assert ring.free() == 10


def test_wraps_around_the_end_of_the_buffer() -> None:
    ring = RingBuffer(8)
    ring.write(ramp(0, 6))
    ring.read(max_samples=5)
    ring.write(ramp(6, 6))  # crosses the physical end of the array
    pos, data = ring.read()
    assert pos == 5
    np.testing.assert_array_equal(data, ramp(5, 7))


def test_overflow_drops_oldest_and_counts_them() -> None:
    ring = RingBuffer(5)
    ring.write(ramp(0, 4))
    lost = ring.write(ramp(4, 4))
    assert lost == 3
    assert ring.dropped == 3
    pos, data = ring.read()
    assert pos == 3
    np.testing.assert_array_equal(data, ramp(3, 5))


def test_write_larger_than_capacity_keeps_newest() -> None:
    ring = RingBuffer(4)
    lost = ring.write(ramp(0, 10))
    pos, data = ring.read()
    assert (pos, lost) == (6, 6)
    np.testing.assert_array_equal(data, ramp(6, 4))
    assert ring.written == 10


def test_read_timeout_returns_empty() -> None:
    ring = RingBuffer(4)
    t0 = time.monotonic()
    pos, data = ring.read(timeout=0.05)
    assert data.size == 0 and pos == 0
    assert time.monotonic() - t0 >= 0.04


def wait_for_waiters(ring: RingBuffer, n: int = 1) -> None:
    """Until `n` threads sit inside the ring's Condition.wait (CPython keeps them in `_waiters`)."""
    deadline = time.monotonic() + 20
    while len(ring._cond._waiters) < n:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "no thread ever waited on the ring"
        time.sleep(0.001)


def in_thread(fn) -> threading.Thread:  # type: ignore[no-untyped-def]
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t


def test_close_lets_reader_drain_then_get_empty() -> None:
    ring = RingBuffer(8)
    ring.write(ramp(0, 3))
    ring.close()
    assert ring.closed and not ring.drained
    assert ring.write(ramp(3, 2)) == 0  # ignored after close
    _, data = ring.read(timeout=5)
    np.testing.assert_array_equal(data, ramp(0, 3))
    got: list[int] = []
    reader = in_thread(lambda: got.append(ring.read(timeout=3600)[1].size))  # must not wait once closed
    reader.join(30)
    assert got == [0] and ring.drained


def test_close_wakes_a_waiting_reader() -> None:
    ring = RingBuffer(8)
    result: list[int] = []
    reader = in_thread(lambda: result.append(ring.read(timeout=3600)[1].size))
    wait_for_waiters(ring)  # the reader is waiting: only close() can wake it before an hour
    ring.close()
    reader.join(30)
    assert result == [0]


def test_wait_free_blocks_until_reader_makes_room() -> None:
    ring = RingBuffer(10)
    ring.write(ramp(0, 9))
    assert ring.wait_free(5, timeout=0.02) is False
    result: list[bool] = []
    waiter = in_thread(lambda: result.append(ring.wait_free(5, timeout=3600)))
    wait_for_waiters(ring)
    ring.read(max_samples=6)
    waiter.join(30)
    assert result == [True]
    assert ring.free() >= 5
    assert ring.wait_free(100, timeout=0) is False  # capped at capacity, still full-ish


def test_wait_free_returns_when_closed() -> None:
    ring = RingBuffer(4)
    ring.write(ramp(0, 4))
    result: list[bool] = []
    waiter = in_thread(lambda: result.append(ring.wait_free(4, timeout=3600)))
    wait_for_waiters(ring)
    ring.close()
    waiter.join(30)
    assert result == [True]


def test_writer_does_not_wait_for_a_reader_blocked_in_read() -> None:
    ring = RingBuffer(100)
    reader = in_thread(lambda: ring.read(timeout=3600))
    wait_for_waiters(ring)  # the reader is inside Condition.wait, lock released

    def write() -> None:
        for i in range(200):  # 20x the capacity: overwrites, never waits
            ring.write(ramp(i * 10, 10))

    writer = in_thread(write)
    writer.join(30)  # a writer waiting for the reader would wait for its hour-long read
    assert not writer.is_alive() and ring.written == 2000
    ring.close()
    reader.join(30)


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RingBuffer(0)


ops = st.lists(
    st.one_of(
        st.tuples(st.just("w"), st.integers(0, 40)),
        st.tuples(st.just("r"), st.one_of(st.none(), st.integers(1, 40))),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(capacity=st.integers(1, 32), script=ops)
def test_reads_are_the_written_stream_minus_counted_drops(
    capacity: int, script: list[tuple[str, int | None]]
) -> None:
    ring = RingBuffer(capacity)
    written = 0
    expected_pos = 0
    got: list[np.ndarray] = []
    for op, n in script:
        if op == "w":
            assert n is not None
            before = ring.dropped
            lost = ring.write(ramp(written, n))  # returns at once: there is no reader thread
            written += n
            assert ring.dropped - before == lost
        else:
            pos, data = ring.read(max_samples=n, timeout=0)
            # Reads continue where the last one stopped, skipping exactly the dropped samples.
            assert pos >= expected_pos
            np.testing.assert_array_equal(data, ramp(pos, data.size))
            expected_pos = pos + data.size
            got.append(data)
        assert 0 <= ring.free() <= capacity
        assert ring.written - ring.dropped - sum(g.size for g in got) == capacity - ring.free()
    ring.close()
    _, rest = ring.read()
    got.append(rest)
    total_read = sum(g.size for g in got)
    assert total_read + ring.dropped == written
    assert ring.drained
    everything = np.concatenate(got) if got else np.zeros(0, np.float32)
    # In order, no duplicates, each sample equal to what was written at its index.
    assert np.all(np.diff(everything) > 0)
    assert set(everything.astype(int).tolist()) <= set(range(written))
