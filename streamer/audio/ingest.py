"""Audio pushed over the network into a stream (`/ingest`, a browser's microphone): source spec `ingest`.

The WebSocket handler (streamer.sinks.ingest) runs on the asyncio loop and hands each frame to
`IngestSource.push`, which only queues it; the capture thread writes it into the ring. One client
feeds a stream at a time. When it goes away, a little silence follows its audio so the voice
activity detector closes the utterance and its final comes out, as it would after a speaker
stopped; the stream then waits for the next client.

`IngestPacer` is the rate limit, free of I/O: a client may run ahead of real time by `burst`
seconds of audio (a browser sends in bursts after a hiccup), not more.
"""

from __future__ import annotations

import queue
import threading

import numpy as np

from streamer.audio.resample import s16le_to_float
from streamer.audio.ring import SAMPLE_RATE, RingBuffer
from streamer.audio.source import Source

#: Silence written after a client leaves: longer than the VAD's end_silence + pad defaults.
TAIL_SECONDS = 1.5
_QUEUE_FRAMES = 256
_STOP_POLL = 0.2


class IngestPacer:
    """Token bucket over audio time: `allow(samples, now)` is False once a client runs ahead."""

    def __init__(self, burst: float, rate: int = SAMPLE_RATE) -> None:
        self.burst = burst
        self.rate = rate
        self._credit = burst  # seconds of audio that may arrive now
        self._last: float | None = None

    def allow(self, samples: int, now: float) -> bool:
        if self._last is not None:
            self._credit = min(self.burst, self._credit + max(0.0, now - self._last))
        self._last = now
        seconds = samples / self.rate
        if seconds > self._credit:
            return False
        self._credit -= seconds
        return True


class IngestBusy(Exception):
    """Another client already feeds this stream."""


class IngestSource(Source):
    live = True
    listening = True  # ready as soon as the server takes connections

    def __init__(self, tail: float = TAIL_SECONDS) -> None:
        self.tail = tail
        self._queue: queue.Queue[np.ndarray | None] = queue.Queue(_QUEUE_FRAMES)
        self._lock = threading.Lock()
        self._client: str | None = None
        self.dropped_frames = 0

    @property
    def description(self) -> str:
        return "ingest" if self._client is None else f"ingest from {self._client}"

    @property
    def client(self) -> str | None:
        return self._client

    def connect(self, peer: str) -> None:
        with self._lock:
            if self._client is not None:
                raise IngestBusy(f"stream already fed by {self._client}")
            self._client = peer
        self._notify("running", f"ingest from {peer}")

    def push(self, pcm: bytes) -> None:
        """16 kHz mono signed 16-bit little-endian samples (an even number of bytes)."""
        try:
            self._queue.put_nowait(s16le_to_float(pcm))
        except queue.Full:  # the capture thread is stuck; never block the event loop
            self.dropped_frames += 1

    def disconnect(self) -> None:
        with self._lock:
            self._client = None
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            self.dropped_frames += 1

    def _notify(self, state: str, detail: str) -> None:
        if self.on_state is not None:
            self.on_state(state, detail)

    def run(self, ring: RingBuffer, stop: threading.Event) -> None:
        if self._client is None:
            self._notify("waiting", "waiting for an /ingest client")
        while not stop.is_set() and not ring.closed:
            try:
                block = self._queue.get(timeout=_STOP_POLL)
            except queue.Empty:
                continue
            if block is None:  # the client left: let the open utterance end
                ring.write(np.zeros(int(self.tail * SAMPLE_RATE), dtype=np.float32))
                self._notify("quiet", "no ingest client")
            elif block.shape[0]:
                ring.write(block)
