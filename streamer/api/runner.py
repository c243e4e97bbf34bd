"""One uploaded file through the pipeline `streamer transcribe` uses, and a way to stop it.

This is `pipeline.run_file` (a `Stream` over a `FileSource` in lockstep, as fast as the engine
goes) with a handle kept, so a cancelled job or a client that hung up stops the decoding instead
of finishing work nobody will read. The request's options become the settings the stream reads
(language, prompt); the engine carries the task and temperatures (see engines.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import av

from streamer.api.openai_compat import TranscribeOptions
from streamer.audio.file import FileSource
from streamer.config import Settings
from streamer.decode.engine import DecodeEngine
from streamer.errors import SourceError
from streamer.events import Final, Partial, Status
from streamer.pipeline import Stream


class Cancelled(Exception):
    """The run was stopped before the end of the file."""


class TooLong(Exception):
    """The decoded audio went on past the limit (`api.max_audio_seconds`), whatever the file's
    header said; the run stopped there."""

    def __init__(self, limit: float) -> None:
        super().__init__(f"the audio is longer than {limit:g} s")
        self.limit = limit


def audio_duration(path: Path) -> float:
    """Seconds of audio the container declares (0 if it does not say)."""
    with av.open(str(path)) as c:
        if c.duration:
            return float(c.duration) / 1_000_000
        streams = c.streams.audio
        if streams and streams[0].duration and streams[0].time_base:
            return float(streams[0].duration * streams[0].time_base)
    return 0.0


def file_settings(settings: Settings, opts: TranscribeOptions) -> Settings:
    cfg = settings.model_copy(deep=True)
    cfg.source.realtime = False
    # No language: the daemon's own (decoder.language) for transcription, detection for translation.
    cfg.decoder.language = opts.language or (settings.decoder.language if opts.task == "transcribe" else None)
    cfg.decoder.task = opts.task
    if opts.prompt:
        cfg.decoder.initial_prompt = opts.prompt
    return cfg


class FileRun:
    def __init__(
        self,
        settings: Settings,
        engine: DecodeEngine,
        path: Path,
        opts: TranscribeOptions,
        on_event: Callable[[Partial | Final], None] | None = None,
        max_seconds: float | None = None,
    ) -> None:
        self.settings = file_settings(settings, opts)
        self.max_seconds = max_seconds
        self.engine = engine
        self.path = path
        self.on_event = on_event
        self.done_seconds = 0.0  # audio clock of the newest event: how far the pipeline got
        self._stopped = threading.Event()
        self._stream: object | None = None
        self._lock = threading.Lock()

    def stop(self) -> None:
        with self._lock:
            self._stopped.set()
            stream = self._stream
        if stream is not None:
            stream.stop()  # type: ignore[attr-defined]

    def run(self) -> list[Final]:
        """Blocking: the file's finals in order. Raises Cancelled, TooLong, or SourceError for bad
        audio."""
        finals: list[Final] = []

        def collect(ev: Partial | Final | Status) -> None:
            if isinstance(ev, Status):
                return
            self.done_seconds = max(self.done_seconds, ev.end)
            if isinstance(ev, Final):
                finals.append(ev)
            if self.on_event is not None:
                self.on_event(ev)

        # Probes (SourceError names the problem), and stops at max_seconds of decoded audio.
        source = FileSource(self.path, realtime=False, max_seconds=self.max_seconds)
        with self._lock:
            if self._stopped.is_set():
                raise Cancelled()
            # File work yields to live streams on a shared engine (the scheduler's background tier).
            stream = Stream(self.settings, source, self.engine, collect, name="file", background=True)
            self._stream = stream
        stream.start()
        stream.join()
        if self._stopped.is_set():
            raise Cancelled()
        if source.cut:
            assert self.max_seconds is not None
            raise TooLong(self.max_seconds)
        if stream.error:
            raise SourceError(stream.error)
        return finals
