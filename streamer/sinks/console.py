"""Terminal output of `streamer run`: a transcript, one line per utterance, or with `--jsonl` every
event as one JSON line, flushed at once for pipes.

What the transcript looks like is decided by `TranscriptFormatter` (pure: events in, strings out):
the finals of one utterance continue one line, separated by spaces, and the line ends with the
utterance (the final with `last`). On a terminal the partial tail is shown after the settled words
and redrawn in place as it changes; into a pipe or a file only finals are written, so every line is
a whole utterance.

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
from typing import NamedTuple, TextIO

from streamer import metrics
from streamer.bus import BusEvent
from streamer.events import Final, Partial, Status
from streamer.layout import text_width

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


class Piece(NamedTuple):
    """Text to write as it is, and where: stdout, or stderr for the daemon's own messages."""

    text: str
    stderr: bool = False


#: Erase from the cursor to the end of the row (ANSI EL 0).
_CLEAR_EOL = "\x1b[K"


class TranscriptFormatter:
    """Caption events -> the text of a readable transcript (sans-I/O: no terminal, no clock).

    `tty=False` (a pipe, a file): finals only. A final's words follow the previous final of the same
    utterance after one space; the final with `last` ends the line. A reader of the pipe therefore
    gets exactly one line per utterance.

    `tty=True`: the same lines, and while an utterance is open its partial tail is shown after the
    settled words, replaced by the next partial or final. The tail is kept within the screen row
    the settled words end on (its newest words, after "…", when it does not fit), so erasing it is
    "back to the start of that row, forward to where the settled words end, clear to the end of the
    row": no cursor state is needed in the terminal, and a tail never wraps or scrolls. The row
    position is counted in columns (`layout.text_width`: Korean/Chinese/Japanese count 2); a wide
    character the terminal wraps early can put it one column off, which costs one blank column.
    """

    def __init__(self, tty: bool) -> None:
        self.tty = tty
        self._line: tuple[str, int] | None = None  # (stream, utterance) whose line is open
        self._cols = 0  # columns written on the open line (all of its screen rows)
        self._tail_at: int | None = None  # tty: the column of the current row where a shown tail starts

    @property
    def line_open(self) -> bool:
        return self._line is not None

    def feed(self, event: BusEvent, width: int = 80) -> list[Piece]:
        """What to write for one event; `width` is the terminal's width in columns (tty only)."""
        if isinstance(event, Final):
            return self._final(event)
        if isinstance(event, Partial):
            return self._partial(event, max(width, 1)) if self.tty else []
        if isinstance(event, Status) and event.state in ("error", "retrying"):
            message = Piece(f"streamer: {event.stream}: {event.state}: {event.detail}\n", stderr=True)
            # On a terminal stdout and stderr share the screen: end the open line so the message
            # stands on its own (the utterance continues on a fresh line). Into a pipe, stdout's
            # line stays open: stderr goes elsewhere, and a line must stay one whole utterance.
            return [*self._pieces(self._erase() + self._end() if self.tty else ""), message]
        return []

    def close(self) -> list[Piece]:
        """The last text when output ends: an utterance still open (its last final never came,
        say it was dropped by a slow stdout) gets its newline."""
        return self._pieces(self._erase() + self._end())

    # --- internals -------------------------------------------------------------------------------
    @staticmethod
    def _pieces(text: str) -> list[Piece]:
        return [Piece(text)] if text else []

    def _end(self) -> str:
        if self._line is None:
            return ""
        self._line, self._cols = None, 0
        return "\n"

    def _erase(self) -> str:
        """Remove the shown tail, leaving the cursor right after the settled words."""
        if self._tail_at is None:
            return ""
        col, self._tail_at = self._tail_at, None
        return "\r" + (f"\x1b[{col}C" if col else "") + _CLEAR_EOL

    def _switch(self, key: tuple[str, int]) -> str:
        # A caption of another utterance while a line is open: that utterance's closing final was
        # lost (a full console queue drops the oldest), so end its line rather than mix two.
        return self._end() if self._line is not None and self._line != key else ""

    def _final(self, event: Final) -> list[Piece]:
        key = (event.stream, event.utterance)
        out = self._erase() + self._switch(key)
        text = event.text.strip()
        if text:
            piece = (" " if self._line is not None else "") + text
            out += piece
            self._cols += text_width(piece)
            self._line = key
        if event.last:
            out += self._end()
        return self._pieces(out)

    def _partial(self, event: Partial, width: int) -> list[Piece]:
        key = (event.stream, event.utterance)
        if self._line is not None and self._line != key and self._line[0] != event.stream:
            return []  # another stream's tail would land inside this stream's line
        out = self._erase() + self._switch(key)
        text = event.text.strip()
        # Columns left on the row the settled words end on; the last one stays free, since writing
        # into it makes some terminals wrap at once.
        col = self._cols % width
        sep = " " if self._line is not None else ""
        fit = _fit(text, width - col - 1 - len(sep))
        if fit:
            out += sep + fit
            self._tail_at = col
        return self._pieces(out)


def _fit(text: str, cols: int) -> str:
    """`text`, or its newest words after "…" when it is wider than `cols` ("" when none fit)."""
    if text_width(text) <= cols:
        return text
    kept: list[str] = []
    used = 1  # the ellipsis
    for ch in reversed(text):
        used += text_width(ch)
        if used > cols:
            break
        kept.append(ch)
    end = "".join(reversed(kept))
    if " " in end and not text[-len(end) - 1].isspace():
        end = end.split(" ", 1)[1]  # cut mid-word: start at the next whole word
    end = end.lstrip()
    return "…" + end if end else ""


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
        self._format = TranscriptFormatter(self.tty)
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
            pieces = self._render(event) if event is not None else self._format.close()
            for text, to_err in pieces:
                if text and not self._broken:
                    self._write(text, to_err)
            if event is None:
                return  # closed and drained

    def _render(self, event: BusEvent) -> list[Piece]:
        if self.jsonl:
            return [Piece(event.to_json() + "\n")]
        width = shutil.get_terminal_size((100, 20)).columns if self.tty else 80
        return self._format.feed(event, width)

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
