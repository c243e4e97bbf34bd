"""Per-client outgoing queue policy for the WebSocket server (sans-I/O: no sockets, no asyncio).

Each connected client gets one `ClientQueue` of serialised events. The server pushes every event
for the client's stream into it and a sender task pops from it as fast as the socket drains.
The policy when a client cannot keep up:

- a partial replaces any pending partial that previews the same final (only the newest revision
  of an utterance matters), and a final removes the pending partials it supersedes;
- when the queue is full, pending partials are dropped, oldest first, to make room;
- if a final (or status) still does not fit, nothing is dropped silently: `push` returns
  `Overflow` and the server closes the client with close code 4008 and a reason telling it which
  `since` to reconnect with, so it can catch up from the session's finals without a gap.

Finals are deduplicated by `seq`: a final whose seq the client already has (for example from the
replay that runs while live events are being queued) is ignored.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum

CLOSE_TOO_SLOW = 4008


class Kind(str, Enum):
    PARTIAL = "partial"
    FINAL = "final"
    OTHER = "other"  # status and control replies: never dropped


@dataclass(frozen=True)
class Item:
    kind: Kind
    payload: bytes | str  # UTF-8 JSON, sent as a text frame
    seq: int = 0
    rev: int = 0


class Push(Enum):
    QUEUED = "queued"
    REPLACED = "replaced"  # a pending partial of the same utterance was replaced
    SKIPPED = "skipped"  # duplicate or out-of-date event, nothing queued
    OVERFLOW = "overflow"  # a must-deliver event does not fit: close the client


@dataclass
class PushResult:
    outcome: Push
    dropped_partials: int = 0


def too_slow_reason(last_final_seq: int) -> str:
    return f"too slow: reconnect with since={last_final_seq}"


class ClientQueue:
    """Bounded queue of outgoing messages with the drop/close policy described above."""

    def __init__(self, capacity: int, *, last_final_seq: int = 0) -> None:
        if capacity < 1:
            raise ValueError(f"client queue capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._items: deque[Item] = deque()
        # Highest final seq queued or already delivered to this client (replay included).
        self.last_final_seq = last_final_seq
        self.dropped_partials = 0

    def __len__(self) -> int:
        return len(self._items)

    def _remove_partials(self, seq_max: int | None = None, *, oldest: int | None = None) -> int:
        kept: deque[Item] = deque()
        removed = 0
        for it in self._items:
            is_target = it.kind is Kind.PARTIAL and (seq_max is None or it.seq <= seq_max)
            if is_target and (oldest is None or removed < oldest):
                removed += 1
                continue
            kept.append(it)
        self._items = kept
        return removed

    def mark_delivered(self, seq: int) -> None:
        """Record that finals up to `seq` reached the client by another path (the replay)."""
        if seq > self.last_final_seq:
            self.last_final_seq = seq
            self._remove_partials(seq)

    def push(self, item: Item) -> PushResult:
        if item.kind is Kind.PARTIAL:
            return self._push_partial(item)
        if item.kind is Kind.FINAL:
            if item.seq <= self.last_final_seq:
                return PushResult(Push.SKIPPED)
            # The partials previewing this final (and older ones) are obsolete now, not lost.
            self._remove_partials(item.seq)
            result = self._push_required(item)
            if result.outcome is not Push.OVERFLOW:
                self.last_final_seq = item.seq
            return result
        return self._push_required(item)

    def _push_partial(self, item: Item) -> PushResult:
        if item.seq <= self.last_final_seq:
            return PushResult(Push.SKIPPED)  # its final is already queued or delivered
        for i, it in enumerate(self._items):
            if it.kind is Kind.PARTIAL and it.seq == item.seq:
                if item.rev < it.rev:
                    return PushResult(Push.SKIPPED)
                self._items[i] = item
                return PushResult(Push.REPLACED)
        dropped = 0
        if len(self._items) >= self.capacity:
            dropped = self._remove_partials(oldest=1)
            if not dropped:
                # Queue full of finals: this partial is the one to go.
                self.dropped_partials += 1
                return PushResult(Push.SKIPPED, dropped_partials=1)
        self._items.append(item)
        self.dropped_partials += dropped
        return PushResult(Push.QUEUED, dropped_partials=dropped)

    def _push_required(self, item: Item) -> PushResult:
        dropped = 0
        if len(self._items) >= self.capacity:
            dropped = self._remove_partials(oldest=len(self._items) - self.capacity + 1)
            self.dropped_partials += dropped
            if len(self._items) >= self.capacity:
                return PushResult(Push.OVERFLOW, dropped_partials=dropped)
        self._items.append(item)
        return PushResult(Push.QUEUED, dropped_partials=dropped)

    def pop(self) -> Item | None:
        return self._items.popleft() if self._items else None

    def clear(self) -> None:
        self._items.clear()
