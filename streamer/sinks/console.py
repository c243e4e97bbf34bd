"""Terminal output of `streamer run`: finals as lines, the live partial overwritten in place (on a
terminal), or with `--jsonl` every event as one JSON line, flushed at once for pipes."""

from __future__ import annotations

import shutil
import sys
import threading
from typing import TextIO

from streamer.bus import BusEvent
from streamer.events import Final, Partial, Status


class ConsoleSink:
    def __init__(self, jsonl: bool = False, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.jsonl = jsonl
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.tty = self.out.isatty()
        self._partial_shown = False
        self._lock = threading.Lock()  # events of several streams may interleave

    def __call__(self, event: BusEvent) -> None:
        with self._lock:
            if self.jsonl:
                self.out.write(event.to_json() + "\n")
                self.out.flush()
                return
            if isinstance(event, Final):
                self._clear()
                self.out.write(f"{event.text}\n")
                self.out.flush()
            elif isinstance(event, Partial) and self.tty:
                width = shutil.get_terminal_size((100, 20)).columns
                text = event.text[-(width - 2) :] if len(event.text) > width - 2 else event.text
                self.out.write("\r\x1b[2K" + text)
                self.out.flush()
                self._partial_shown = bool(text)
            elif isinstance(event, Status) and event.state in ("error", "retrying"):
                self._clear()
                self.err.write(f"streamer: {event.stream}: {event.state}: {event.detail}\n")
                self.err.flush()

    def _clear(self) -> None:
        if self._partial_shown:
            self.out.write("\r\x1b[2K")
            self._partial_shown = False
