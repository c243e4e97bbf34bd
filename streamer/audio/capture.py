"""The capture thread: runs one source into the ring, retrying live sources when they fail."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

from streamer import metrics
from streamer.audio.ring import RingBuffer
from streamer.audio.source import Source
from streamer.errors import SourceError

log = logging.getLogger(__name__)

#: First retry delay (s); each further failure doubles it up to `retry_max`.
RETRY_BASE = 0.5
#: A source that ran this long before failing counts as having worked: the backoff starts over.
HEALTHY_RUN = 10.0


def backoff_delay(attempt: int, base: float, cap: float, jitter: float) -> float:
    """Delay before retry number `attempt` (0-based): exponential, capped, then jittered.

    `jitter` in [0, 1) scales the delay into [50 %, 100 %) of the capped value, so several
    daemons that lost the same device do not retry in lockstep, while the delay never collapses
    to zero (which would busy-loop against a device that is gone).
    """
    exp = base * (2.0 ** min(attempt, 60))
    capped = min(cap, exp)
    return capped * (0.5 + 0.5 * min(max(jitter, 0.0), 1.0))


class CaptureThread(threading.Thread):
    def __init__(
        self,
        source: Source,
        ring: RingBuffer,
        *,
        stream: str,
        retry_max: float,
        on_state: Callable[[str, str], None] | None = None,
        retry_base: float = RETRY_BASE,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(name=f"capture-{stream}", daemon=True)
        self.source = source
        self.ring = ring
        self.stream = stream
        self.retry_max = retry_max
        self.retry_base = min(retry_base, retry_max)
        self.on_state = on_state
        self.error: str | None = None
        self.failures = 0
        # Not `_stop`: threading.Thread uses that name internally.
        self._stop_requested = threading.Event()
        self._rng = rng or random.Random()
        source.on_state = self._state

    def stop(self) -> None:
        """Ask the source to end; the thread closes the ring and exits soon after."""
        self._stop_requested.set()

    def _state(self, state: str, detail: str) -> None:
        if self.on_state is None:
            return
        try:
            self.on_state(state, detail)
        except Exception:
            log.exception("stream %s: on_state callback failed", self.stream)

    def run(self) -> None:
        attempt = 0
        desc = self.source.description
        try:
            while not self._stop_requested.is_set():
                self._state("running", desc)
                started = time.monotonic()
                try:
                    self.source.run(self.ring, self._stop_requested)
                    break  # the source ended (end of file / stdin) or was stopped
                except Exception as e:
                    message = str(e) if isinstance(e, SourceError) else f"{type(e).__name__}: {e}"
                    self.failures += 1
                    metrics.SOURCE_ERRORS.labels(stream=self.stream).inc()
                    if not isinstance(e, SourceError):
                        log.exception("stream %s: source %s crashed", self.stream, desc)
                    if not self.source.live:
                        self.error = message
                        log.error("stream %s: %s", self.stream, message)
                        self._state("error", message)
                        return
                    if time.monotonic() - started >= HEALTHY_RUN:
                        attempt = 0
                    delay = backoff_delay(attempt, self.retry_base, self.retry_max, self._rng.random())
                    attempt += 1
                    log.warning("stream %s: %s; retrying in %.1f s", self.stream, message, delay)
                    self._state("retrying", f"{message}; retrying in {delay:.1f} s")
                    if self._stop_requested.wait(delay):
                        break
            self._state("stopped", desc)
        finally:
            self.ring.close()
