"""Transcript files: per stream and session, JSONL + SRT + WebVTT written as finals arrive.

File names: `{stream}-{YYYYmmdd-HHMMSS}.{jsonl,srt,vtt}` (local start time of the part). Each
final is appended and flushed to all three at once, so a crash loses at most the final being
written. With `transcripts.rotate = "day"` a new set starts with the first final of a new local
day; with `"size"` when the JSONL file passes `transcripts.rotate_bytes`. Cue times stay on the
stream's audio clock across parts.

SRT and WebVTT cues follow the caption layout (streamer.layout); an utterance's cues are written
when the next final arrives (they may stretch for reading time only up to where it starts) and at
close, so those two files lag one utterance behind the JSONL file.

Writing happens on one writer thread fed by a queue: the bus callback only enqueues, so a slow
disk never delays the pipeline or the event loop.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from streamer import metrics
from streamer.bus import Bus, BusEvent
from streamer.config import ConfigError, TranscriptConfig
from streamer.events import Final
from streamer.layout import DEFAULT as DEFAULT_LAYOUT
from streamer.layout import Layout
from streamer.sinks import formats

log = logging.getLogger(__name__)

_STOP = object()


def should_rotate(rotate: str, *, opened: dt.datetime, now: dt.datetime, size: int, limit: int) -> bool:
    """Pure rotation rule: a new part on a new local day, or once the JSONL file reached `limit`."""
    if rotate == "day":
        return now.date() != opened.date()
    if rotate == "size":
        return size >= limit
    return False


def part_stem(stream: str, opened: dt.datetime, taken: Callable[[str], bool]) -> str:
    """`{stream}-{YYYYmmdd-HHMMSS}`, with `-2`, `-3` ... when that name is already used."""
    stem = f"{stream}-{opened:%Y%m%d-%H%M%S}"
    n = 1
    candidate = stem
    while taken(candidate):
        n += 1
        candidate = f"{stem}-{n}"
    return candidate


@dataclass
class _Part:
    stem: str
    opened: dt.datetime
    jsonl: IO[str]
    srt: IO[str]
    vtt: IO[str]
    srt_cues: formats.SubtitleWriter
    vtt_cues: formats.SubtitleWriter

    def close(self) -> None:
        # The cues held back for the next final's start are written now, stretched by reading time only.
        for f, w in ((self.srt, self.srt_cues), (self.vtt, self.vtt_cues)):
            if not f.closed:
                f.write(w.flush())
        for f in (self.jsonl, self.srt, self.vtt):
            f.close()


class TranscriptWriter:
    def __init__(
        self,
        cfg: TranscriptConfig,
        bus: Bus,
        *,
        clock: Callable[[], dt.datetime] = dt.datetime.now,
        layout: Layout = DEFAULT_LAYOUT,
    ) -> None:
        if cfg.dir is None:
            raise ConfigError("transcripts.dir is None: transcript files are disabled")
        self.cfg = cfg
        self.layout = layout
        self.dir = Path(cfg.dir)
        self.bus = bus
        self._clock = clock
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._parts: dict[str, _Part] = {}
        self._thread: threading.Thread | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self.files: list[Path] = []
        self._jsonl: dict[str, list[Path]] = {}  # stream -> its JSONL parts, oldest first
        self._remove_archive: Callable[[], None] | None = None
        self.errors = 0

    def start(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"transcripts.dir = '{self.dir}': cannot create the directory ({e})") from None
        self._thread = threading.Thread(target=self._run, name="transcripts", daemon=True)
        self._thread.start()
        self._unsubscribe = self.bus.subscribe(self._on_event)
        self._remove_archive = self.bus.add_archive(self.read_finals)

    def read_finals(self, stream: str, before: int) -> list[Final]:
        """This session's finals of `stream` with seq < before, read back from the JSONL parts.

        The bus keeps only a window of recent finals in memory; `/transcript` asks here for the
        older ones. Called from the event loop while the writer thread appends: a line being
        written is incomplete and skipped (it is in the memory window anyway).
        """
        out: list[Final] = []
        for path in list(self._jsonl.get(stream, ())):
            try:
                with path.open(encoding="utf-8") as f:
                    for line in f:
                        if not line.endswith("\n"):
                            break
                        try:
                            final = Final.model_validate_json(line)
                        except ValueError:
                            continue
                        if final.seq >= before:
                            return out
                        out.append(final)
            except OSError as e:
                log.warning("cannot read transcript %s back: %s", path, e)
        return out

    def _on_event(self, event: BusEvent) -> None:
        if isinstance(event, Final):
            self._queue.put(event)

    def close(self, timeout: float = 10.0) -> None:
        """Write every final received so far, then close the files."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._remove_archive is not None:
            self._remove_archive()
            self._remove_archive = None
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        try:
            while True:
                item = self._queue.get()
                if item is _STOP:
                    return
                assert isinstance(item, Final)
                try:
                    self._write(item)
                except OSError as e:
                    # Keep going: the next final may succeed (disk space freed); the bus still has it.
                    self.errors += 1
                    metrics.TRANSCRIPT_ERRORS.inc()
                    log.error("transcript write failed for %s final %d: %s", item.stream, item.seq, e)
        finally:
            for part in self._parts.values():
                part.close()
            self._parts.clear()

    def _open(self, stream: str, now: dt.datetime) -> _Part:
        def taken(stem: str) -> bool:
            return any((self.dir / f"{stem}.{ext}").exists() for ext in ("jsonl", "srt", "vtt"))

        stem = part_stem(stream, now, taken)
        paths = [self.dir / f"{stem}.{ext}" for ext in ("jsonl", "srt", "vtt")]
        handles = [p.open("x", encoding="utf-8", newline="\n") for p in paths]
        handles[2].write(formats.VTT_HEADER)  # written at once so the file is valid WebVTT from the start
        handles[2].flush()
        self.files.extend(paths)
        self._jsonl.setdefault(stream, []).append(paths[0])
        log.info("writing transcripts to %s.{jsonl,srt,vtt}", self.dir / stem)
        srt_cues = formats.SubtitleWriter("srt", self.layout)
        vtt_cues = formats.SubtitleWriter("vtt", self.layout)
        return _Part(stem, now, handles[0], handles[1], handles[2], srt_cues, vtt_cues)

    def _write(self, final: Final) -> None:
        now = self._clock()
        part = self._parts.get(final.stream)
        if part is not None and should_rotate(
            self.cfg.rotate, opened=part.opened, now=now, size=part.jsonl.tell(), limit=self.cfg.rotate_bytes
        ):
            part.close()
            part = None
        if part is None:
            part = self._parts[final.stream] = self._open(final.stream, now)
        part.jsonl.write(formats.jsonl_line(final))
        part.jsonl.flush()
        for f, w in ((part.srt, part.srt_cues), (part.vtt, part.vtt_cues)):
            cues = w.feed(final)
            if cues:
                f.write(cues)
                f.flush()
