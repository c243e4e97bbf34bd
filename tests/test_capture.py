"""CaptureThread: retry policy for live sources, errors for files, the ring always closed."""

from __future__ import annotations

import random
import threading
import time
import wave
from pathlib import Path

import numpy as np

from streamer.audio.capture import CaptureThread, backoff_delay
from streamer.audio.decode import load_audio
from streamer.audio.file import FileSource
from streamer.audio.ring import RingBuffer
from streamer.audio.source import Source
from streamer.errors import SourceError
from streamer.metrics import REGISTRY


def source_errors(stream: str) -> float:
    return REGISTRY.get_sample_value("streamer_source_errors_total", {"stream": stream}) or 0.0


class FlakyMic(Source):
    """A live source whose device fails `failures` times, then delivers `samples` and ends."""

    live = True

    def __init__(self, failures: int, samples: np.ndarray) -> None:
        self.failures = failures
        self.samples = samples
        self.calls = 0
        self.call_times: list[float] = []

    @property
    def description(self) -> str:
        return "mic:flaky"

    def run(self, ring: RingBuffer, stop: threading.Event) -> None:
        self.calls += 1
        self.call_times.append(time.monotonic())
        if self.calls <= self.failures:
            raise SourceError(f"device unplugged (attempt {self.calls})")
        ring.write(self.samples)


class DeadMic(Source):
    live = True
    description = "mic:dead"

    def __init__(self) -> None:
        self.calls = 0

    def run(self, ring: RingBuffer, stop: threading.Event) -> None:
        self.calls += 1
        raise SourceError("no such device")


def test_backoff_grows_exponentially_is_capped_and_jittered() -> None:
    plain = [backoff_delay(a, 0.5, 30.0, 1.0) for a in range(10)]
    assert plain[:6] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0]
    assert plain[6:] == [30.0] * 4
    assert backoff_delay(3, 0.5, 30.0, 0.0) == 2.0  # jitter keeps at least half the delay
    rng = random.Random(7)
    for attempt in range(40):
        d = backoff_delay(attempt, 0.5, 30.0, rng.random())
        capped = min(30.0, 0.5 * 2**attempt)
        assert capped / 2 <= d <= capped
    assert backoff_delay(10_000, 0.5, 30.0, 0.5) == 22.5  # no overflow for huge attempt counts


def test_live_source_that_fails_twice_then_works_is_retried() -> None:
    stream = "test-capture-flaky"
    before = source_errors(stream)
    samples = np.linspace(-0.5, 0.5, 1600, dtype=np.float32)
    source = FlakyMic(failures=2, samples=samples)
    ring = RingBuffer(16000)
    states: list[tuple[str, str]] = []
    cap = CaptureThread(
        source,
        ring,
        stream=stream,
        retry_max=0.2,
        retry_base=0.05,
        on_state=lambda s, d: states.append((s, d)),
    )
    cap.start()
    cap.join(5)
    assert not cap.is_alive()
    assert source.calls == 3 and cap.error is None and cap.failures == 2
    assert source_errors(stream) - before == 2
    assert [s for s, _ in states] == ["running", "retrying", "running", "retrying", "running", "stopped"]
    assert "device unplugged (attempt 1)" in states[1][1] and "retrying in" in states[1][1]
    gaps = np.diff(source.call_times)
    assert gaps[0] >= 0.025 and gaps[1] >= 0.05  # base, then doubled (each at least half after jitter)
    assert ring.closed
    _, got = ring.read()
    np.testing.assert_array_equal(got, samples)


def test_file_source_failure_ends_capture_with_error(tmp_path: Path) -> None:
    stream = "test-capture-file"
    before = source_errors(stream)
    bad = tmp_path / "broken.flac"
    good = tmp_path / "ok.wav"

    with wave.open(str(good), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.zeros(1600, dtype="<i2").tobytes())
    source = FileSource(good, realtime=False)
    # The file disappears between opening the source and running it (a deleted recording).
    good.rename(bad.with_suffix(".gone"))
    states: list[str] = []
    ring = RingBuffer(16000)
    cap = CaptureThread(source, ring, stream=stream, retry_max=1.0, on_state=lambda s, d: states.append(s))
    cap.start()
    cap.join(5)
    assert not cap.is_alive()
    assert cap.error is not None and "cannot read audio from" in cap.error and "No such file" in cap.error
    assert states == ["running", "error"]
    assert source_errors(stream) - before == 1
    assert ring.closed


def test_stop_interrupts_the_backoff_wait() -> None:
    source = DeadMic()
    ring = RingBuffer(100)
    states: list[str] = []
    retrying = threading.Event()
    cap = CaptureThread(
        source,
        ring,
        stream="test-capture-dead",
        retry_max=60.0,
        retry_base=30.0,
        on_state=lambda s, d: (states.append(s), retrying.set() if s == "retrying" else None),
    )
    cap.start()
    assert retrying.wait(20), states  # now inside the 30 s backoff wait
    cap.stop()
    cap.join(10)  # the backoff alone would last 30 s
    assert not cap.is_alive()
    assert source.calls == 1 and cap.error is None
    assert states == ["running", "retrying", "stopped"]
    assert ring.closed


def test_file_replay_through_the_capture_thread(audio_dir: Path) -> None:
    path = audio_dir / "formats" / "emotiontts_pfa00001.wav"
    ring = RingBuffer(4000)
    cap = CaptureThread(FileSource(path, realtime=False), ring, stream="test-capture-replay", retry_max=1.0)
    cap.start()
    got = []
    while not ring.drained:
        got.append(ring.read(timeout=1)[1])
    cap.join(5)
    assert cap.error is None and ring.dropped == 0
    np.testing.assert_array_equal(np.concatenate(got), load_audio(path))


def test_a_failing_state_callback_does_not_kill_capture() -> None:
    def explode(state: str, detail: str) -> None:
        raise RuntimeError("observer bug")

    ring = RingBuffer(100)
    cap = CaptureThread(
        FlakyMic(0, np.ones(10, np.float32)), ring, stream="test-capture-cb", retry_max=1.0, on_state=explode
    )
    cap.start()
    cap.join(5)
    assert cap.error is None and ring.closed and ring.written == 10
