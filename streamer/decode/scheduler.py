"""Which decode runs next, and how loaded the decoder is. Pure: no threads, no clock of its own.

The scheduler is the one place that knows every pending request: its kind, its stream, the audio
time it is about and when it was asked. Rules:

- Tiers: a final (what a viewer waits for) before a step decode (partials and mid-sentence
  commits), and live work before background work (file transcription jobs).
- Within a tier, streams take turns (the stream served longest ago first), so one busy stream
  never starves another; within a stream, the oldest request first.
- A request the caller cancelled is simply removed (the caller counts why).

Load is measured as how long live finals waited in the queue (and, for recovery, the busy fraction
of the decoder over a sliding window of wall time). It maps to a degradation level, defined once in
`LEVELS`, that streams apply in a fixed order: finals get cheaper first (greedy, no fallback), then
partial steps thin out, and only as a last resort step decodes stop (finals only). A busy decoder
alone degrades nothing: step decodes already space themselves by the time the last one took.
Levels fall back with hysteresis once the load is gone.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

TIERS = {"final": 0, "step": 1, "partial": 1}


@dataclass(frozen=True)
class Level:
    """What a degradation level changes in a stream's requests."""

    number: int
    name: str
    full_finals: bool  # finals with beam search and temperature fallback
    step_factor: float | None  # step interval multiplier; None = no step decodes (finals only)


LEVELS: tuple[Level, ...] = (
    Level(0, "normal", full_finals=True, step_factor=1.0),
    Level(1, "cheaper finals", full_finals=False, step_factor=1.0),
    Level(2, "partials thinned", full_finals=False, step_factor=2.0),
    Level(3, "finals only", full_finals=False, step_factor=None),
)


def level(number: int) -> Level:
    return LEVELS[min(max(number, 0), len(LEVELS) - 1)]


BACKGROUND_TIER = 2


@dataclass
class Pending(Generic[T]):
    id: int
    stream: str
    kind: str
    audio_end: float
    submitted: float  # caller's clock (wall seconds)
    item: T
    background: bool = False

    @property
    def tier(self) -> int:
        return BACKGROUND_TIER if self.background else TIERS.get(self.kind, 1)


@dataclass
class Scheduler(Generic[T]):
    # Sliding window over which the busy fraction is measured (s).
    window: float = 10.0
    _pending: dict[int, Pending[T]] = field(default_factory=dict)
    _served: dict[str, int] = field(default_factory=dict)
    _turn: int = 0
    _busy: deque[tuple[float, float]] = field(default_factory=deque)  # (start, end) of decodes
    _final_waits: deque[tuple[float, float]] = field(default_factory=deque)  # (when, wait)
    level: int = 0
    dwell: float = 5.0  # seconds a level holds before it may fall
    _changed: float = -1e9

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, p: Pending[T]) -> None:
        self._pending[p.id] = p

    def remove(self, request_id: int) -> Pending[T] | None:
        return self._pending.pop(request_id, None)

    def pending(self) -> list[Pending[T]]:
        return list(self._pending.values())

    def _order(self, p: Pending[T]) -> tuple[int, int, float, int]:
        return (p.tier, self._served.get(p.stream, -1), p.submitted, p.id)

    def _take(self, p: Pending[T]) -> Pending[T]:
        del self._pending[p.id]
        self._turn += 1
        self._served[p.stream] = self._turn
        return p

    def pop_next(self) -> Pending[T] | None:
        if not self._pending:
            return None
        return self._take(min(self._pending.values(), key=self._order))

    def pop_batch(self, limit: int) -> list[Pending[T]]:
        """Up to `limit` requests to encode together: the one `pop_next` would give, then more of
        its tier from other streams, in the same order. Never a lower tier (a step does not ride
        with a final: it would delay the final for work a viewer waits for less), and one request
        per stream (a stream's later window makes its earlier one moot or must wait for it)."""
        first = self.pop_next()
        if first is None:
            return []
        batch = [first]
        streams = {first.stream}
        while len(batch) < limit:
            more = [p for p in self._pending.values() if p.tier == first.tier and p.stream not in streams]
            if not more:
                break
            nxt = self._take(min(more, key=self._order))
            batch.append(nxt)
            streams.add(nxt.stream)
        return batch

    # -- load -------------------------------------------------------------------------------

    def record(self, p: Pending[T], started: float, ended: float) -> None:
        """A decode ran from `started` to `ended` (wall clock of the caller)."""
        if p.background:
            return  # background work yields to live work: it is not load that live streams feel
        self._busy.append((started, ended))
        if p.tier == 0:
            self._final_waits.append((ended, started - p.submitted))
        self._update(ended)

    def busy_fraction(self, now: float) -> float:
        lo = now - self.window
        while self._busy and self._busy[0][1] < lo:
            self._busy.popleft()
        busy = sum(min(e, now) - max(s, lo) for s, e in self._busy if e > lo)
        return min(max(busy / self.window, 0.0), 1.0)

    def final_wait(self, now: float) -> float:
        lo = now - self.window
        while self._final_waits and self._final_waits[0][0] < lo:
            self._final_waits.popleft()
        return max((w for _, w in self._final_waits), default=0.0)

    def _update(self, now: float) -> None:
        busy = self.busy_fraction(now)
        wait = self.final_wait(now)
        # What the load asks for now; the level rises at once and falls one step at a time.
        # Only finals that wait degrade anything (see the module docstring).
        want = 0
        if wait >= 0.75:
            want = 1
        if wait >= 1.5:
            want = 2
        if wait >= 3.0:
            want = 3
        if want > self.level:
            self.level, self._changed = want, now
        elif want < self.level and busy < 0.6 and wait < 0.5 and now - self._changed >= self.dwell:
            # Down one step at a time, and only after `dwell` seconds at this level: a decoder
            # hovering around the threshold must not flap (each change is a status event).
            self.level, self._changed = self.level - 1, now

    def tick(self, now: float) -> int:
        """Re-evaluate the level when nothing ran for a while (idle decoder => recover)."""
        self._update(now)
        return self.level
