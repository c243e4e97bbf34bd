"""Where the watchdog's evidence comes from: a heartbeat of each stream loop and the age of each
stream's oldest unfinished decode.

Both are taken at the edges the pipeline already uses (the stream loop reads its ring every
iteration; every decode goes through `engine.submit`) by wrapping those two calls, so the
pipeline and the decode engine need no knowledge of the watchdog.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

log = logging.getLogger(__name__)

#: TEST-ONLY. When set to a path, every decode blocks while that file exists, as a hung decoder
#: would (the watchdog test creates the file mid-run). Never set it in production.
HANG_ENV = "STREAMER_TEST_HANG_DECODER"


class LoopHeartbeat:
    """Monotonic time of the stream loop's last ring read (it reads at least every 50 ms)."""

    def __init__(self, ring: Any) -> None:
        self.last: float | None = None
        read = ring.read

        def beating_read(*args: Any, **kwargs: Any) -> Any:
            self.last = time.monotonic()
            return read(*args, **kwargs)

        ring.read = beating_read

    def age(self, now: float) -> float | None:
        return None if self.last is None else now - self.last


class DecodeMonitor:
    """Tracks every decode from submit until its future is done (result, error or cancel)."""

    def __init__(self, engine: Any) -> None:
        self._lock = threading.Lock()
        self._open: dict[int, tuple[str, float]] = {}  # id(future) -> (stream, submitted at)
        submit: Callable[[Any], Future[Any]] = engine.submit

        def monitored_submit(request: Any) -> Future[Any]:
            fut = submit(request)
            key = id(fut)
            with self._lock:
                self._open[key] = (str(getattr(request, "stream", "")), time.monotonic())
            fut.add_done_callback(lambda _f: self._done(key))  # runs at once if already done
            return fut

        engine.submit = monitored_submit

    def _done(self, key: int) -> None:
        with self._lock:
            self._open.pop(key, None)

    def oldest_age(self, stream: str, now: float) -> float | None:
        with self._lock:
            starts = [t for s, t in self._open.values() if s == stream]
        return now - min(starts) if starts else None


def install_test_hang(engine: Any) -> None:
    """TEST-ONLY: make `engine.decode` block while the file named by $STREAMER_TEST_HANG_DECODER exists."""
    flag = os.environ.get(HANG_ENV)
    if not flag:
        return
    log.warning("%s is set: decodes hang while %s exists (a test hook)", HANG_ENV, flag)
    decode = engine.decode

    def hanging_decode(*args: Any, **kwargs: Any) -> Any:
        while os.path.exists(flag):
            time.sleep(0.1)
        return decode(*args, **kwargs)

    engine.decode = hanging_decode
