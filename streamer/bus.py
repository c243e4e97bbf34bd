"""Fan-out of caption events from stream threads to sinks.

`publish()` is called from a stream's thread. Each subscriber gets the event through its own
callback, which must not block: network sinks hand the event to their asyncio loop with
`call_soon_threadsafe` and queue it there, so one slow sink never delays the pipeline or another
sink. The bus also keeps every final of the session per stream, which is what a reconnecting
WebSocket client (`since`) and the `/transcript` route read.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from streamer.events import Final, Hello, Partial, Status

log = logging.getLogger(__name__)

BusEvent = Partial | Final | Status | Hello
Subscriber = Callable[[BusEvent], None]


class Bus:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[Subscriber] = []
        self._finals: dict[str, list[Final]] = {}
        self._streams: list[str] = []

    def add_stream(self, name: str) -> None:
        with self._lock:
            if name not in self._streams:
                self._streams.append(name)
                self._finals[name] = []

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

    def publish(self, event: BusEvent) -> None:
        with self._lock:
            if isinstance(event, Final):
                finals = self._finals.setdefault(event.stream, [])
                if event.stream not in self._streams:
                    self._streams.append(event.stream)
                finals.append(event)
            subscribers = list(self._subscribers)
        for sub in subscribers:
            try:
                sub(event)
            except Exception:  # a broken sink must not take the pipeline down
                log.exception("subscriber %r failed on %s event", sub, event.type)

    def finals(self, stream: str, since: int = 0) -> list[Final]:
        """Finals of `stream` with seq > since, in order."""
        with self._lock:
            finals = self._finals.get(stream, [])
            # seq is 1..N without gaps, so seq k sits at index k-1.
            return list(finals[max(since, 0) :])

    def last_seq(self, stream: str) -> int:
        with self._lock:
            finals = self._finals.get(stream, [])
            return finals[-1].seq if finals else 0
