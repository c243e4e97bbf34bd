"""The bus keeps a bounded window of finals (count and age) and reads older ones back from an archive."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from streamer.bus import Bus, FinalsWindow
from streamer.config import TranscriptConfig
from streamer.sinks.files import TranscriptWriter

from .sink_events import final
from .sink_harness import publish_in_thread


@given(
    max_count=st.integers(1, 20),
    max_age=st.floats(0.5, 50.0),
    gaps=st.lists(st.floats(0.0, 10.0), min_size=0, max_size=60),
    since=st.integers(0, 70),
)
def test_window_is_bounded_contiguous_and_answers_since(
    max_count: int, max_age: float, gaps: list[float], since: int
) -> None:
    w = FinalsWindow(max_count, max_age)
    now = 0.0
    times = {}
    for i, gap in enumerate(gaps, start=1):
        now += gap
        times[i] = now
        w.add(final(i), now)
        assert 1 <= len(w) <= max_count
        assert w.last_seq == i
    n = len(gaps)
    kept = w.since(0)
    assert [f.seq for f in kept] == list(range(w.oldest_seq, n + 1))
    assert w.evicted == n - len(kept)
    # Only the newest final may outlive max_age; nothing younger than max_age was dropped
    # unless the count bound forced it.
    assert all(now - times[f.seq] <= max_age for f in kept[:-1])
    if n and len(kept) < max_count and w.oldest_seq > 1:
        assert now - times[w.oldest_seq - 1] > max_age
    assert [f.seq for f in w.since(since)] == list(range(max(since + 1, w.oldest_seq), n + 1))


def test_window_drops_by_age_on_query() -> None:
    clock = [0.0]
    bus = Bus(max_finals=100, max_age=10.0, clock=lambda: clock[0])
    for i in range(1, 6):
        bus.publish(final(i))
        clock[0] += 4.0  # finals at t = 0, 4, 8, 12, 16
    clock[0] = 20.0  # 1, 2 and 3 (t = 0, 4, 8) are older than 10 s
    assert bus.oldest_seq("main") == 4
    assert [f.seq for f in bus.finals("main")] == [4, 5]
    clock[0] = 1000.0
    assert [f.seq for f in bus.finals("main")] == [5]  # the newest stays
    assert bus.last_seq("main") == 5


def test_window_by_count_and_transcript_without_archive() -> None:
    bus = Bus(max_finals=3)
    for i in range(1, 8):
        bus.publish(final(i))
    assert [f.seq for f in bus.finals("main")] == [5, 6, 7]
    assert bus.oldest_seq("main") == 5
    finals, missing = bus.transcript("main")
    assert [f.seq for f in finals] == [5, 6, 7] and missing == 1


def test_transcript_reads_evicted_finals_back_from_the_files(tmp_path: Path) -> None:
    bus = Bus(max_finals=4)
    w = TranscriptWriter(TranscriptConfig(dir=tmp_path, rotate="size", rotate_bytes=1024), bus)
    w.start()
    try:
        sent = [final(i, f"sentence {i} " + "x" * 200) for i in range(1, 21)]
        publish_in_thread(bus, sent).join()
    finally:
        w.close()  # every final is on disk (several parts: rotate_bytes)
    assert len([p for p in w.files if p.suffix == ".jsonl"]) > 1
    bus2 = Bus(max_finals=4)
    for f in sent:
        bus2.publish(f)
    bus2.add_archive(w.read_finals)
    finals, missing = bus2.transcript("main")
    assert finals == sent and missing == 0
