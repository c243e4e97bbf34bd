"""Replay an audio file as a source: at 1x like a live input, or as fast as the reader keeps up.

`max_seconds` bounds the decoded audio (the file API's `api.max_audio_seconds`): a container's
header may understate its length, so the limit is counted on the samples as they are decoded and
the source ends at it, with `cut` set, however long the file really is.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from streamer.audio.decode import iter_audio, probe
from streamer.audio.ring import SAMPLE_RATE, RingBuffer
from streamer.audio.source import Source

#: Samples per write when paced at 1x: 20 ms, about what a sound card delivers per callback.
REALTIME_CHUNK = SAMPLE_RATE // 50
#: Samples per write when replaying fast: larger writes, less locking, still far below any ring size.
FAST_CHUNK = SAMPLE_RATE // 10
_STOP_POLL = 0.2


class FileSource(Source):
    live = False

    def __init__(self, path: str | Path, *, realtime: bool = True, max_seconds: float | None = None) -> None:
        self.path = Path(path)
        self.realtime = realtime
        self.max_samples = None if max_seconds is None else int(max_seconds * SAMPLE_RATE)
        self.cut = False  # the file went on past max_seconds; only that much was written
        # Fail before the daemon loads a model or opens ports, not minutes later in a thread.
        probe(self.path)

    @property
    def description(self) -> str:
        return f"file:{self.path.name}"

    def run(self, ring: RingBuffer, stop: threading.Event) -> None:
        if self.realtime:
            self._run_realtime(ring, stop)
        else:
            self._run_fast(ring, stop)

    def _chunks(self, size: int) -> Iterator[np.ndarray]:
        """The decoded audio, ending at max_samples (and setting `cut` if there was more)."""
        left = self.max_samples
        for chunk in iter_audio(self.path, size):
            if left is not None:
                if chunk.shape[0] > left:
                    self.cut = True
                    if left:
                        yield chunk[:left]
                    return
                left -= chunk.shape[0]
            yield chunk

    def _run_realtime(self, ring: RingBuffer, stop: threading.Event) -> None:
        # Every chunk's due time is computed from one anchor, so scheduling jitter never accumulates.
        # A chunk is written once its last sample would have been captured, as a sound card does.
        anchor = time.monotonic()
        sent = 0
        for chunk in self._chunks(REALTIME_CHUNK):
            sent += chunk.shape[0]
            delay = anchor + sent / SAMPLE_RATE - time.monotonic()
            if delay > 0 and stop.wait(delay):
                return
            if stop.is_set() or ring.closed:
                return
            ring.write(chunk)

    def _run_fast(self, ring: RingBuffer, stop: threading.Event) -> None:
        size = max(1, min(FAST_CHUNK, ring.capacity // 2))
        for chunk in self._chunks(size):
            while not ring.wait_free(chunk.shape[0], timeout=_STOP_POLL):
                if stop.is_set():
                    return
            if stop.is_set() or ring.closed:
                return
            ring.write(chunk)
