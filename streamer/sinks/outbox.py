"""MQTT delivery bookkeeping (sans-I/O): the bounded outbox of finals, and reconnect backoff.

A final has two QoS-1 messages: the JSON event on `{prefix}/{stream}/final` and its plain text on
`{prefix}/{stream}/text`. The outbox remembers which of the two the broker has acknowledged, so
after a reconnect only the missing ones are published again: an acknowledged message is never
re-published (that would duplicate it at every subscriber). What remains ambiguous is a publish
that was written to a broker that died before its PUBACK came back; MQTT QoS 1 re-sends it
(at-least-once), which is why every payload carries `stream` and `seq` for deduplication.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from streamer.events import Final

PARTS = ("final", "text")


@dataclass
class Entry:
    final: Final
    done: set[str] = field(default_factory=set)

    @property
    def key(self) -> tuple[str, int]:
        return (self.final.stream, self.final.seq)

    def pending_parts(self) -> list[str]:
        return [p for p in PARTS if p not in self.done]


class Outbox:
    """Finals waiting for their QoS-1 acknowledgement, in the order they were produced.

    When full, the oldest final is dropped (and counted): after a long outage the recent captions
    are the ones worth delivering, and the gap is visible to subscribers through `seq`.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"mqtt.outbox must be >= 1, got {capacity}")
        self.capacity = capacity
        self._entries: deque[Entry] = deque()
        self._last_seq: dict[str, int] = {}
        self.overflow = 0

    def __len__(self) -> int:
        return len(self._entries)

    def push(self, final: Final) -> int:
        """Queue a final; returns how many old finals were dropped to make room (0 or 1).

        A final whose seq is not newer than the last one queued for its stream is ignored, so
        the same final delivered twice by the bus is published once.
        """
        if final.seq <= self._last_seq.get(final.stream, 0):
            return 0
        self._last_seq[final.stream] = final.seq
        dropped = 0
        while len(self._entries) >= self.capacity:
            self._entries.popleft()
            dropped += 1
        self._entries.append(Entry(final))
        self.overflow += dropped
        return dropped

    def head(self) -> Entry | None:
        return self._entries[0] if self._entries else None

    def ack(self, entry: Entry, part: str) -> None:
        """The broker acknowledged `part` of `entry`; the entry leaves once every part is acked."""
        if part not in PARTS:
            raise ValueError(f"unknown outbox part {part!r}")
        entry.done.add(part)
        if not entry.pending_parts() and self._entries and self._entries[0] is entry:
            self._entries.popleft()

    def pending(self) -> list[Final]:
        return [e.final for e in self._entries]


class Backoff:
    """Exponential reconnect delay with jitter: initial * factor**n, capped, times U(0.5, 1).

    The jitter keeps many daemons that lost the same broker from reconnecting in lockstep.
    """

    def __init__(
        self,
        initial: float = 0.5,
        maximum: float = 30.0,
        factor: float = 2.0,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if initial <= 0 or maximum < initial or factor < 1:
            raise ValueError("backoff needs 0 < initial <= maximum and factor >= 1")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self._rand = rand
        self.attempts = 0

    def next(self) -> float:
        base = min(self.maximum, self.initial * self.factor**self.attempts)
        self.attempts += 1
        return base * (0.5 + 0.5 * self._rand())

    def reset(self) -> None:
        self.attempts = 0
