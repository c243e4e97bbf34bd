"""Audio pushed over the network into a stream (`/ingest`, a browser's microphone): source spec `ingest`.

The WebSocket handler (streamer.sinks.ingest) runs on the asyncio loop and hands each frame to
`IngestSource.push`, which only queues it; the capture thread writes it into the ring. One client
feeds a stream at a time. When it goes away, a little silence follows its audio so the voice
activity detector closes the utterance and its final comes out, as it would after a speaker
stopped; the stream then waits for the next client.

That silence stands for time in which nobody sent audio, so it is written at the pace of the wall
clock (never more of it than time has passed) and stops as soon as a client sends again; only a
client that sent audio since the last gap earns a new one. Clients that reconnect over and over
therefore cannot push seconds of silence per reconnect into the ring (faster than the stream can
read, which the stream would report as audio it dropped). The silence is counted on its own,
`streamer_ingest_gap_seconds`, and in `gap_seconds` of the source's status.

`IngestPacer` is the rate limit, free of I/O: a client may run ahead of real time by `burst`
seconds of audio (a browser sends in bursts after a hiccup), not more.
"""

from __future__ import annotations

import queue
import threading
import time

import numpy as np

from streamer import metrics
from streamer.audio.resample import s16le_to_float
from streamer.audio.ring import SAMPLE_RATE, RingBuffer
from streamer.audio.source import Source

#: Silence written after a client leaves: longer than the VAD's end_silence + pad defaults.
TAIL_SECONDS = 1.5
_QUEUE_FRAMES = 256
_STOP_POLL = 0.2
#: While a gap's silence is owed, the capture thread wakes this often to write the time passed.
_GAP_STEP = 0.05


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

    def __init__(self, tail: float = TAIL_SECONDS, *, stream: str = "main") -> None:
        self.tail = tail
        self.stream = stream
        self.gap_seconds = 0.0  # silence written for gaps between clients (not audio lost)
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

    def status(self) -> dict[str, object]:
        return {
            "client": self._client,
            "gap_seconds": round(self.gap_seconds, 3),
            "dropped_frames": self.dropped_frames,
        }

    def _silence(self, ring: RingBuffer, samples: int) -> None:
        if samples <= 0:
            return
        ring.write(np.zeros(samples, dtype=np.float32))
        self.gap_seconds += samples / SAMPLE_RATE
        metrics.INGEST_GAP.labels(self.stream).inc(samples / SAMPLE_RATE)

    def run(self, ring: RingBuffer, stop: threading.Event) -> None:
        if self._client is None:
            self._notify("waiting", "waiting for an /ingest client")
        owed = 0  # samples of silence still due for the gap after a client left
        since = 0.0  # monotonic time up to which the gap's silence has been written
        earned = False  # audio arrived since the last gap: the next departure ends an utterance
        while not stop.is_set() and not ring.closed:
            try:
                block = self._queue.get(timeout=_GAP_STEP if owed else _STOP_POLL)
            except queue.Empty:
                block = np.zeros(0, dtype=np.float32)
            if owed:
                # Only as much silence as wall time has passed: a gap, not a burst.
                now = time.monotonic()
                n = min(owed, int((now - since) * SAMPLE_RATE))
                if n > 0:
                    self._silence(ring, n)
                    owed -= n
                    since += n / SAMPLE_RATE
            if block is None:  # the client left: let the open utterance end
                if earned:
                    owed, since, earned = int(self.tail * SAMPLE_RATE), time.monotonic(), False
                self._notify("quiet", "no ingest client")
            elif block.shape[0]:
                owed = 0  # a client speaks again: the gap is over
                earned = True
                ring.write(block)
