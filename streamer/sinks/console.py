"""Terminal output of `streamer run`: finals as lines, the live partial overwritten in place (on a
terminal), or with `--jsonl` every event as one JSON line, flushed at once for pipes.

Writing happens on a thread of its own, fed by a bounded queue (`ConsoleQueue`): a stdout that
does not drain (a paused pipe, a stopped terminal) blocks that thread only, never the stream
that publishes captions. When the queue is full, partials go first (only the newest one matters
on a screen); if finals alone overflow it, the oldest are dropped and counted, and that is logged.
Lines go straight to the file descriptor, so the interpreter's exit flush never waits on a stuck
pipe either.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TextIO

from streamer import metrics
from streamer.bus import BusEvent
from streamer.events import Final, Partial, Status

log = logging.getLogger(__name__)

DEFAULT_CAPACITY = 1000


@dataclass
class Dropped:
    partials: int = 0
    finals: int = 0
    other: int = 0


class ConsoleQueue:
    """Bounded FIFO of pending console events (sans-I/O): `push` says what it had to drop."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._items: deque[BusEvent] = deque()
        self.dropped = Dropped()

    def __len__(self) -> int:
        return len(self._items)

    def push(self, event: BusEvent) -> Dropped:
        out = Dropped()
        if len(self._items) >= self.capacity:
            victim = next((e for e in self._items if isinstance(e, Partial)), None)
            if victim is not None:
                self._items.remove(victim)
                out.partials += 1
            elif isinstance(event, Partial):
                out.partials += 1  # nothing but finals and status queued: the new partial goes
                self._count(out)
                return out
            elif isinstance(self._items.popleft(), Final):
                out.finals += 1
            else:
                out.other += 1
        self._items.append(event)
        self._count(out)
        return out

    def _count(self, d: Dropped) -> None:
        self.dropped.partials += d.partials
        self.dropped.finals += d.finals
        self.dropped.other += d.other

    def pop(self) -> BusEvent | None:
        return self._items.popleft() if self._items else None


def _fd(stream: TextIO) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return None


class ConsoleSink:
    def __init__(
        self,
        jsonl: bool = False,
        out: TextIO | None = None,
        err: TextIO | None = None,
        *,
        capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        self.jsonl = jsonl
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.tty = self.out.isatty()
        self._out_fd = _fd(self.out)
        self._partial_shown = False
        self._queue = ConsoleQueue(capacity)
        self._cond = threading.Condition()
        self._closed = False
        self._broken = False
        self._last_warning = 0.0
        self._thread = threading.Thread(target=self._run, name="console", daemon=True)
        self._thread.start()

    @property
    def dropped(self) -> Dropped:
        with self._cond:
            return Dropped(**vars(self._queue.dropped))

    def __call__(self, event: BusEvent) -> None:
        # On the stream's thread: enqueue and return, whatever stdout is doing.
        if not self.jsonl and isinstance(event, Partial) and not self.tty:
            return  # partials are shown only on a terminal
        with self._cond:
            if self._closed:
                return
            d = self._queue.push(event)
            total_finals = self._queue.dropped.finals
            self._cond.notify()
        if d.partials:
            metrics.CONSOLE_DROPPED.labels("partial").inc(d.partials)
        if d.finals or d.other:
            metrics.CONSOLE_DROPPED.labels("final").inc(d.finals + d.other)
            now = time.monotonic()
            if now - self._last_warning > 10.0:
                self._last_warning = now
                log.warning(
                    "console output is not being read: %d final(s) dropped from its queue so far "
                    "(the transcript files and network sinks still have them)",
                    total_finals,
                )

    def close(self, timeout: float = 2.0) -> None:
        """Write what is queued, waiting at most `timeout` for a slow stdout; report what was lost."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)
        with self._cond:
            pending = len(self._queue)
            dropped = self._queue.dropped
        if pending or dropped.finals or dropped.partials:
            log.warning(
                "console output was blocked: %d event(s) not written at exit, %d final(s) and %d "
                "partial(s) dropped",
                pending,
                dropped.finals,
                dropped.partials,
            )

    # --- writer thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not len(self._queue) and not self._closed:
                    self._cond.wait()
                event = self._queue.pop()
                if event is None:
                    return  # closed and drained
            for text, to_err in self._render(event):
                if text and not self._broken:
                    self._write(text, to_err)

    def _render(self, event: BusEvent) -> list[tuple[str, bool]]:
        """(text, goes to stderr) pieces for one event."""
        if self.jsonl:
            return [(event.to_json() + "\n", False)]
        if isinstance(event, Final):
            return [(self._clear() + f"{event.text}\n", False)]
        if isinstance(event, Partial):
            width = shutil.get_terminal_size((100, 20)).columns
            text = event.text[-(width - 2) :] if len(event.text) > width - 2 else event.text
            self._partial_shown = bool(text)
            return [("\r\x1b[2K" + text, False)]
        if isinstance(event, Status) and event.state in ("error", "retrying"):
            line = f"streamer: {event.stream}: {event.state}: {event.detail}\n"
            return [(self._clear(), False), (line, True)]
        return []

    def _clear(self) -> str:
        if self._partial_shown:
            self._partial_shown = False
            return "\r\x1b[2K"
        return ""

    def _write(self, text: str, to_err: bool) -> None:
        try:
            if to_err:
                self.err.write(text)
                self.err.flush()
            elif self._out_fd is not None:
                self.out.flush()  # anything printed through sys.stdout first keeps its order
                data = text.encode("utf-8")
                while data:
                    n = os.write(self._out_fd, data)
                    data = data[n:]
            else:
                self.out.write(text)
                self.out.flush()
        except OSError as e:  # BrokenPipeError: nobody reads any more; stop trying
            self._broken = True
            log.warning("console output stopped: %s", e)
