"""A fixed-size ring of 16 kHz mono float32 audio between a capture thread and a stream loop.

The writer (a capture callback) never waits: when the reader falls behind by more than the
capacity, the oldest unread samples are overwritten and counted in `dropped`. Positions are
absolute sample indices since the stream started, so the ring is also the stream's audio clock:
`written / 16000` is "now".
"""

from __future__ import annotations

import threading

import numpy as np

SAMPLE_RATE = 16_000


class RingBuffer:
    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self._buf = np.zeros(capacity, dtype=np.float32)
        self._cap = capacity
        self._written = 0  # absolute index of the next sample to write
        self._read = 0  # absolute index of the next sample to read
        self._dropped = 0
        self._closed = False
        self._cond = threading.Condition(threading.Lock())

    @property
    def capacity(self) -> int:
        return self._cap

    @property
    def written(self) -> int:
        """Samples captured since the start (the audio clock, in samples)."""
        with self._cond:
            return self._written

    @property
    def dropped(self) -> int:
        """Samples overwritten before they were read."""
        with self._cond:
            return self._dropped

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed

    def free(self) -> int:
        """Samples that can be written now without dropping any unread audio."""
        with self._cond:
            return self._cap - (self._written - self._read)

    def write(self, samples: np.ndarray) -> int:
        """Append samples; never blocks on the reader. Returns how many unread samples were lost."""
        data = np.asarray(samples, dtype=np.float32).reshape(-1)
        n = data.shape[0]
        if n == 0:
            return 0
        with self._cond:
            if self._closed:
                return 0
            if n > self._cap:  # only the newest `capacity` samples can survive
                skipped = n - self._cap
                data = data[skipped:]
                self._written += skipped
                n = self._cap
            start = self._written % self._cap
            first = min(n, self._cap - start)
            self._buf[start : start + first] = data[:first]
            if first < n:
                self._buf[: n - first] = data[first:]
            self._written += n
            lost = 0
            if self._written - self._read > self._cap:
                new_read = self._written - self._cap
                lost = new_read - self._read
                self._read = new_read
                self._dropped += lost
            self._cond.notify_all()
            return lost

    def read(self, max_samples: int | None = None, timeout: float | None = None) -> tuple[int, np.ndarray]:
        """Return (position of first sample, unread samples), waiting up to `timeout` for some.

        An empty array means the timeout passed, or the ring is closed and drained.
        """
        with self._cond:
            if self._written == self._read and not self._closed:
                self._cond.wait(timeout)
            pos = self._read
            avail = self._written - self._read
            if max_samples is not None:
                avail = min(avail, max_samples)
            out = np.empty(avail, dtype=np.float32)
            start = pos % self._cap
            first = min(avail, self._cap - start)
            out[:first] = self._buf[start : start + first]
            if first < avail:
                out[first:] = self._buf[: avail - first]
            self._read = pos + avail
            if avail:
                self._cond.notify_all()  # a source in wait_free() may go on
            return pos, out

    def wait_free(self, n: int, timeout: float | None = None) -> bool:
        """For sources that may wait (file replay as fast as possible): wait until n samples fit."""
        n = min(n, self._cap)
        with self._cond:
            return self._cond.wait_for(
                lambda: self._closed or self._cap - (self._written - self._read) >= n, timeout
            )

    def close(self) -> None:
        """No more audio will come; readers drain what is left and then get empty reads."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def drained(self) -> bool:
        with self._cond:
            return self._closed and self._written == self._read
