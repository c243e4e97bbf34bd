"""Fan-out of caption events from stream threads to sinks.

`publish()` is called from a stream's thread. Each subscriber gets the event through its own
callback, which must not block: network sinks hand the event to their asyncio loop with
`call_soon_threadsafe` and queue it there, so one slow sink never delays the pipeline or another
sink.

The bus also keeps the recent finals of each stream, which is what a reconnecting WebSocket client
(`since`) and the `/transcript` route read. That memory is a bounded window (`FinalsWindow`: at
most `server.history_finals` finals and none older than `server.history_seconds`), so a daemon
running for weeks does not grow. Finals that left the window are still in the transcript files;
an archive reader (the transcript writer registers one) gives them back for `/transcript`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from streamer.events import Final, Hello, Partial, Status

log = logging.getLogger(__name__)

BusEvent = Partial | Final | Status | Hello
Subscriber = Callable[[BusEvent], None]
# (stream, before_seq) -> that stream's finals with seq < before_seq, in order, from durable storage.
ArchiveReader = Callable[[str, int], list[Final]]

DEFAULT_MAX_FINALS = 10_000
DEFAULT_MAX_AGE = 3600.0


class FinalsWindow:
    """The newest finals of one stream, bounded by count and age (sans-I/O: the caller passes `now`).

    Finals arrive with seq 1, 2, 3 ... without gaps, so the window is always a contiguous run
    `oldest_seq .. last_seq` and a seq's position is `seq - oldest_seq`.
    """

    def __init__(self, max_count: int = DEFAULT_MAX_FINALS, max_age: float = DEFAULT_MAX_AGE) -> None:
        if max_count < 1 or max_age <= 0:
            raise ValueError("max_count must be >= 1 and max_age > 0")
        self.max_count = max_count
        self.max_age = max_age
        self._items: deque[tuple[float, Final]] = deque()
        self._last_seq = 0
        self.evicted = 0

    def add(self, final: Final, now: float) -> int:
        """Keep `final`; returns how many old finals left the window."""
        if self._items and final.seq != self._last_seq + 1:
            # Not expected from the pipeline; keep the window contiguous rather than lie about gaps.
            log.warning("final seq %d after %d: window restarted", final.seq, self._last_seq)
            self.evicted += len(self._items)
            self._items.clear()
        self._items.append((now, final))
        self._last_seq = final.seq
        n = 0
        while len(self._items) > self.max_count:
            self._items.popleft()
            n += 1
        n += self._expire(now)
        self.evicted += n
        return n

    def expire(self, now: float) -> int:
        n = self._expire(now)
        self.evicted += n
        return n

    def _expire(self, now: float) -> int:
        n = 0
        # The newest final always stays: `last_seq` and the pong's answer need no window.
        while len(self._items) > 1 and now - self._items[0][0] > self.max_age:
            self._items.popleft()
            n += 1
        return n

    @property
    def last_seq(self) -> int:
        return self._last_seq

    @property
    def oldest_seq(self) -> int:
        """Seq of the oldest final kept (last_seq + 1 when none is kept; 1 before any final)."""
        return self._items[0][1].seq if self._items else self._last_seq + 1

    def __len__(self) -> int:
        return len(self._items)

    def since(self, since: int) -> list[Final]:
        """Kept finals with seq > since, in order."""
        if not self._items:
            return []
        first = self._items[0][1].seq
        start = max(since + 1 - first, 0)
        return [f for _, f in list(self._items)[start:]]


class Bus:
    def __init__(
        self,
        *,
        max_finals: int = DEFAULT_MAX_FINALS,
        max_age: float = DEFAULT_MAX_AGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[Subscriber] = []
        self._windows: dict[str, FinalsWindow] = {}
        self._streams: list[str] = []
        self._max_finals = max_finals
        self._max_age = max_age
        self._clock = clock
        self._archives: list[ArchiveReader] = []

    def _window(self, name: str) -> FinalsWindow:
        w = self._windows.get(name)
        if w is None:
            w = self._windows[name] = FinalsWindow(self._max_finals, self._max_age)
        return w

    def add_stream(self, name: str) -> None:
        with self._lock:
            if name not in self._streams:
                self._streams.append(name)
                self._window(name)

    @property
    def streams(self) -> list[str]:
        with self._lock:
            return list(self._streams)

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Register a callback; returns a function that unsubscribes it."""
        with self._lock:
            self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            with self._lock:
                if subscriber in self._subscribers:
                    self._subscribers.remove(subscriber)

        return unsubscribe

    def add_archive(self, reader: ArchiveReader) -> Callable[[], None]:
        """Register where finals that left the window can be read back; returns its removal."""
        with self._lock:
            self._archives.append(reader)

        def remove() -> None:
            with self._lock:
                if reader in self._archives:
                    self._archives.remove(reader)

        return remove

    def publish(self, event: BusEvent) -> None:
        with self._lock:
            if isinstance(event, Final):
                if event.stream not in self._streams:
                    self._streams.append(event.stream)
                self._window(event.stream).add(event, self._clock())
            subscribers = list(self._subscribers)
        for sub in subscribers:
            try:
                sub(event)
            except Exception:  # a broken sink must not take the pipeline down
                log.exception("subscriber %r failed on %s event", sub, event.type)

    def finals(self, stream: str, since: int = 0) -> list[Final]:
        """Finals of `stream` with seq > since still in the memory window, in order."""
        with self._lock:
            w = self._windows.get(stream)
            if w is None:
                return []
            w.expire(self._clock())
            return w.since(since)

    def last_seq(self, stream: str) -> int:
        with self._lock:
            w = self._windows.get(stream)
            return w.last_seq if w is not None else 0

    def oldest_seq(self, stream: str) -> int:
        """Seq of the oldest final still in memory; a `since` below oldest_seq - 1 has a gap."""
        with self._lock:
            w = self._windows.get(stream)
            if w is None:
                return 1
            w.expire(self._clock())
            return w.oldest_seq

    def transcript(self, stream: str) -> tuple[list[Final], int]:
        """All finals of the session that can still be had: (finals, first seq missing before them).

        The memory window, preceded by what an archive reader returns for the older ones. The
        second value is 0 when the list is complete from seq 1, else the seq of the first final
        the list lacks (history_finals/history_seconds dropped it and no archive has it).
        """
        with self._lock:
            w = self._windows.get(stream)
            if w is None:
                return [], 0
            w.expire(self._clock())
            kept = w.since(0)
            oldest = w.oldest_seq
            archives = list(self._archives)
        if oldest <= 1:
            return kept, 0
        older: list[Final] = []
        for reader in archives:
            try:
                older = [f for f in reader(stream, oldest) if f.seq < oldest]
            except Exception:  # an unreadable archive must not break the route
                log.exception("reading archived finals of %s failed", stream)
                continue
            if older:
                break
        # Complete when the archive covers 1 .. oldest-1 without gaps.
        expected = 1
        for f in older:
            if f.seq != expected:
                break
            expected += 1
        missing = 0 if expected == oldest else expected
        return older + kept, missing
