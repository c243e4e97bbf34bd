"""One stream at its edges: source -> ring -> VAD -> StreamCore -> decoder -> caption events.

Everything this stream decides lives in `streamer.core.StreamCore` (pure). `Stream` is the runner
around it: it reads the ring, runs the injected `Vad` on each 32 ms frame, hands the core's
`Submit`s to the injected `Decoder` (the shared DecodeEngine), gives results back to the core as
they finish, slices decode windows out of the audio history and carries out the rest of the
actions (emit, cancel, count).

Two drivers run the same core. Live sources (and files replayed at 1x) never wait for decoding:
audio keeps flowing and VAD keeps up while the worker decodes, and results are handled the moment
they are done, in whatever order they finish. A file read as fast as possible (`transcribe`,
`--fast`, the file API) runs in lockstep instead: the loop waits for each decode, so the result is
the same as a live run on a machine fast enough to keep up, and does not depend on how busy this
one is.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from pathlib import Path
from typing import Protocol

import numpy as np

from streamer import metrics
from streamer.audio.capture import CaptureThread
from streamer.audio.file import FileSource
from streamer.audio.ring import SAMPLE_RATE, RingBuffer
from streamer.audio.source import Source
from streamer.config import Settings
from streamer.core import (
    Action,
    Cancel,
    CoreOptions,
    Discarded,
    Emit,
    Failed,
    Failure,
    Skipped,
    StreamCore,
    Submit,
    Suppressed,
)
from streamer.decode import trace
from streamer.decode.captioner import DecodeSpec
from streamer.decode.engine import DecodeRequest
from streamer.decode.filters import FilterOptions
from streamer.decode.hypothesis import Hypothesis
from streamer.decode.scheduler import level as level_of
from streamer.errors import SourceError, UserError
from streamer.events import Final, Partial, Status
from streamer.vad.segmenter import FRAME_SAMPLES
from streamer.vad.silero import SileroVad

log = logging.getLogger(__name__)

Emit_ = Callable[[Partial | Final | Status], None]

PREROLL_SAMPLES = 3 * SAMPLE_RATE


class Vad(Protocol):
    def __call__(self, frame: np.ndarray) -> float:
        """Speech probability of one frame of 512 samples."""
        ...


class Decoder(Protocol):
    """What a stream needs of the decode engine (streamer.decode.engine.DecodeEngine)."""

    def submit(self, request: DecodeRequest) -> Future[Hypothesis]: ...

    def cancel(self, request_id: int) -> bool: ...

    @property
    def level(self) -> int: ...


class AudioHistory:
    """Samples from absolute position `base` on, for slicing decode windows."""

    def __init__(self) -> None:
        self.base = 0
        self._chunks: list[np.ndarray] = []
        self._data = np.zeros(0, dtype=np.float32)

    @property
    def end(self) -> int:
        return self.base + len(self._data) + sum(len(c) for c in self._chunks)

    def append(self, samples: np.ndarray) -> None:
        self._chunks.append(samples)

    def _flatten(self) -> None:
        if self._chunks:
            self._data = np.concatenate([self._data, *self._chunks])
            self._chunks = []

    def slice(self, start: int, end: int) -> np.ndarray:
        self._flatten()
        lo = max(start - self.base, 0)
        hi = max(min(end - self.base, len(self._data)), lo)
        return self._data[lo:hi].copy()

    def restart(self, pos: int) -> None:
        """Audio before `pos` was lost (the ring overwrote it): start again from there."""
        self._chunks, self._data = [], np.zeros(0, dtype=np.float32)
        self.base = pos

    def trim_before(self, pos: int) -> None:
        self._flatten()
        cut = pos - self.base
        if cut > 0:
            self._data = self._data[cut:]
            self.base = pos


class Stream:
    def __init__(
        self,
        settings: Settings,
        source: Source,
        engine: Decoder,
        emit: Emit_,
        name: str | None = None,
        filters: FilterOptions | None = None,
        background: bool = False,
        vad: Vad | None = None,
    ) -> None:
        self.name = name or settings.stream
        self.settings = settings
        self.source = source
        self.engine = engine
        self.background = background
        self._emit_cb = emit
        self.ring = RingBuffer(int(settings.source.ring_seconds * SAMPLE_RATE))
        self.lockstep = not source.live and not settings.source.realtime
        self._filters = filters  # a fixed override (transcribe --no-filters), kept across reloads
        self.core = StreamCore(self._options(settings))
        self._next_options: CoreOptions | None = None
        self.vad: Vad = vad or SileroVad()
        self.capture = CaptureThread(
            source,
            self.ring,
            stream=self.name,
            retry_max=settings.source.retry_max,
            on_state=self._on_source_state,
        )
        self._thread = threading.Thread(target=self._run, name=f"stream-{self.name}", daemon=True)
        self._stop = threading.Event()
        self._history = AudioHistory()
        self._consumed = 0  # samples read from the ring and run through VAD
        # Core request id -> (engine request id, future, what was asked): the handles of the
        # core's requests (the core's own table decides; this one only reaches the engine).
        self._handles: dict[int, tuple[int, Future[Hypothesis], DecodeSpec]] = {}
        self._trace = trace.writer_for(settings.trace) if settings.trace else None
        self._speech_counted = 0.0
        self._last_audio_wall: float | None = None
        self._last_progress_wall = time.monotonic()
        self._state = "starting"
        self.error: str | None = None
        self.decode_failures: list[str] = []  # what each failed decode raised
        self.first_event_wall: float | None = None

    def _options(self, settings: Settings) -> CoreOptions:
        options = CoreOptions.from_settings(settings, self.name, self.lockstep)
        if self._filters is not None:
            options = CoreOptions(options.captioner, options.segmenter, self._filters, options.lockstep)
        return options

    # -- public ------------------------------------------------------------------------------

    def start(self) -> None:
        self.capture.start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.capture.stop()

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def reconfigure(self, settings: Settings) -> None:
        """Reloaded settings (SIGHUP): a new immutable snapshot, which the stream thread picks up
        before its next decision (one reference swap; nothing is changed under its feet)."""
        self.settings = settings
        self._next_options = self._options(settings)

    @property
    def options(self) -> CoreOptions:
        return self._next_options or self.core.options

    @property
    def finals_emitted(self) -> int:
        return self.core.finals_emitted

    @property
    def last_progress(self) -> float:
        """Monotonic time when the loop last consumed audio or handled a decode result."""
        return self._last_progress_wall

    def health(self) -> dict[str, object]:
        age = None if self._last_audio_wall is None else time.monotonic() - self._last_audio_wall
        return {
            "state": self._state,
            "source": self.source.description,
            "live": self.source.live or self.settings.source.realtime,
            "audio_seconds": round(self.ring.written / SAMPLE_RATE, 3),
            "dropped_seconds": round(self.ring.dropped / SAMPLE_RATE, 3),
            "speech_seconds": round(self.core.speech_seconds, 3),
            "last_audio_age": None if age is None else round(age, 3),
            "finals": self.finals_emitted,
            "degraded": self.core.level,
            "degraded_reason": level_of(self.core.level).name if self.core.level else "",
            "decodes_pending": len(self._handles),
            "error": self.error,
        }

    def now(self) -> float:
        """The stream's audio clock: what has been run through VAD."""
        return self._consumed / SAMPLE_RATE

    # -- source state --------------------------------------------------------------------------

    def _on_source_state(self, state: str, detail: str) -> None:
        if state == "error":
            self.error = detail
        if state == "stopped":
            return  # the source ended; the stream stops once its last final is out
        self._set_state(state, detail)

    def _set_state(self, state: str, detail: str = "") -> None:
        if state == self._state:
            return
        self._state = state
        if state in ("starting", "running", "retrying", "stopped", "error"):
            self._emit(Status(stream=self.name, state=state, detail=detail, emitted_at=self.now()))

    def _emit(self, event: Partial | Final | Status) -> None:
        if self.first_event_wall is None and not isinstance(event, Status):
            self.first_event_wall = time.monotonic()
        self._emit_cb(event)

    # -- the loop ------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._drive()
            # End of audio: close what is open and wait for the last decodes.
            self._act(self.core.flush(self.now()))
            while self._handles:
                self._collect(block=True)
        except Exception as e:
            log.exception("stream %s failed", self.name)
            self.error = f"{type(e).__name__}: {e}"
            self._set_state("error", self.error)
            return
        finally:
            self.capture.stop()
            for eid, _fut, _spec in self._handles.values():
                self.engine.cancel(eid)
        if self.capture.error and not self.error:
            self.error = self.capture.error
        self._set_state("error" if self.error else "stopped", self.error or "")

    def _drive(self) -> None:
        """Read the ring until the source is drained or the stream is stopped. Live: results are
        handled whenever they are done; lockstep: every decode is waited for before the next frame."""
        remainder = np.zeros(0, dtype=np.float32)
        dropped_seen = 0
        while not self._stop.is_set():
            self._collect(block=self.lockstep and bool(self._handles))
            pos, samples = self.ring.read(timeout=0.05)
            if not len(samples):
                if self.ring.drained:
                    return
                continue
            self._last_audio_wall = self._last_progress_wall = time.monotonic()
            metrics.AUDIO_CAPTURED.labels(self.name).inc(len(samples) / SAMPLE_RATE)
            if self.ring.dropped > dropped_seen:
                lost = self.ring.dropped - dropped_seen
                metrics.AUDIO_DROPPED.labels(self.name).inc(lost / SAMPLE_RATE)
                log.warning(
                    "stream %s: %.2f s of audio dropped (the stream loop fell behind)",
                    self.name,
                    lost / SAMPLE_RATE,
                )
                dropped_seen = self.ring.dropped
            if pos != self._consumed + len(remainder):  # the ring overwrote audio we had not read
                remainder = np.zeros(0, dtype=np.float32)
                self._consumed = pos
                self._history.restart(pos)
            buf = np.concatenate([remainder, samples]) if len(remainder) else samples
            n_frames = len(buf) // FRAME_SAMPLES
            for i in range(n_frames):
                self._frame(buf[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES])
                if self.lockstep:
                    while self._handles:
                        self._collect(block=True)
            remainder = buf[n_frames * FRAME_SAMPLES :]
            if self._state in ("starting", "retrying"):
                self._set_state("running")
            self._trim_history()

    def _frame(self, frame: np.ndarray) -> None:
        if self._next_options is not None:
            self.core.reconfigure(self._next_options)
            self._next_options = None
        self._history.append(frame)
        t = self._consumed / SAMPLE_RATE
        self._consumed += FRAME_SAMPLES
        if not self.lockstep:
            self._act(self.core.load(self.engine.level))
        self._act(self.core.feed(t, self.vad(frame)))
        speech = self.core.speech_seconds
        if speech > self._speech_counted:
            metrics.VAD_SPEECH.labels(self.name).inc(speech - self._speech_counted)
            self._speech_counted = speech

    def _trim_history(self) -> None:
        keep_from = int(self.core.keep_from() * SAMPLE_RATE) - FRAME_SAMPLES
        keep_from = min(keep_from, self._consumed - PREROLL_SAMPLES)
        if keep_from - self._history.base > SAMPLE_RATE:  # trim in 1 s steps, not every frame
            self._history.trim_before(keep_from)

    def _collect(self, block: bool) -> None:
        """Handle every finished decode now, in the order they finished (never behind another)."""
        while self._handles:
            done = [rid for rid, (_e, fut, _s) in self._handles.items() if fut.done()]
            if not done:
                if not block:
                    return
                wait([f for _e, f, _s in self._handles.values()], timeout=0.5, return_when=FIRST_COMPLETED)
                continue
            for rid in done:
                _eid, fut, spec = self._handles.pop(rid)
                if fut.cancelled():
                    continue
                exc = fut.exception()
                outcome: Hypothesis | Failure = (
                    Failure(f"{type(exc).__name__}: {exc}") if exc is not None else fut.result()
                )
                self._last_progress_wall = time.monotonic()
                actions = self.core.result(rid, outcome)
                if self._trace is not None:
                    self._trace_result(spec, outcome, actions)
                self._act(actions)
            block = False

    # -- actions -----------------------------------------------------------------------------

    def _act(self, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, Submit):
                self._submit(a.spec)
            elif isinstance(a, Emit):
                self._emit_event(a.event)
            elif isinstance(a, Cancel):
                handle = self._handles.get(a.request_id)
                if handle is not None and self.engine.cancel(handle[0]):
                    del self._handles[a.request_id]
                    metrics.DECODES_CANCELLED.labels(self.name, a.kind, a.reason).inc()
                    if self._trace is not None:
                        self._trace.write(trace.record(self.name, handle[2], "cancelled"))
                # else: it is running; its result comes back and the core discards it
            elif isinstance(a, Discarded):
                metrics.DECODES_DISCARDED.labels(self.name, a.kind, a.reason).inc()
            elif isinstance(a, Suppressed):
                metrics.SUPPRESSED.labels(self.name, a.filter).inc(a.count)
            elif isinstance(a, Skipped):
                metrics.PARTIALS_SKIPPED.labels(self.name).inc()
            elif isinstance(a, Failed):
                self.decode_failures.append(a.error)
                metrics.DECODE_FAILURES.labels(self.name, a.kind).inc()
                log.warning(
                    "stream %s: %s decode failed (%s); going on without it", self.name, a.kind, a.error
                )

    def _submit(self, spec: DecodeSpec) -> None:
        s0 = max(int(spec.start * SAMPLE_RATE), self._history.base)
        s1 = int(spec.end * SAMPLE_RATE)
        req = DecodeRequest(
            kind=spec.kind,
            audio=self._history.slice(s0, s1),
            offset=s0 / SAMPLE_RATE,
            language=spec.language,
            languages=list(spec.languages) if spec.languages else None,
            prompt=spec.prompt,
            word_timestamps=True,
            beam_size=spec.beam_size,
            stream=self.name,
            context=spec.context,
            fallback=spec.fallback,
            background=self.background,
            task=spec.task,
            hotwords=spec.hotwords,
        )
        fut = self.engine.submit(req)
        self._handles[spec.id] = (req.id, fut, spec)

    def _trace_result(self, spec: DecodeSpec, outcome: Hypothesis | Failure, actions: list[Action]) -> None:
        assert self._trace is not None
        if isinstance(outcome, Failure):
            self._trace.write(trace.record(self.name, spec, "failed", error=outcome.error))
            return
        discarded = any(isinstance(a, Discarded) and a.request_id == spec.id for a in actions)
        self._trace.write(trace.record(self.name, spec, "discarded" if discarded else "used", outcome))

    def _emit_event(self, ev: Partial | Final | Status) -> None:
        if isinstance(ev, Status):
            level = ev.degraded
            # Thinned partials are routine on a busy machine; finals only is not.
            (log.warning if level >= 3 else log.info)(
                "stream %s: decoder load level %d (%s)", self.name, level, level_of(level).name
            )
        elif isinstance(ev, Final):
            metrics.FINALS.labels(self.name).inc()
            metrics.LATENCY.labels(self.name, "final").observe(max(ev.emitted_at - ev.end, 0.0))
        else:
            metrics.PARTIALS.labels(self.name).inc()
            metrics.LATENCY.labels(self.name, "partial").observe(max(ev.emitted_at - ev.end, 0.0))
        self._emit(ev)


def run_file(
    settings: Settings,
    path: str | Path,
    engine: Decoder,
    *,
    realtime: bool,
    emit: Emit_ | None = None,
    filters: FilterOptions | None = None,
    background: bool = False,
    vad: Vad | None = None,
    allow_failures: bool = False,
) -> list[Partial | Final]:
    """Run one file through a Stream (blocking) and return its caption events in order. A decode
    that failed makes it raise UserError at the end (`allow_failures`: return what there is)."""
    events: list[Partial | Final] = []

    def collect(ev: Partial | Final | Status) -> None:
        if not isinstance(ev, Status):
            events.append(ev)
        if emit is not None:
            emit(ev)

    cfg = settings.model_copy(deep=True)
    cfg.source.realtime = realtime
    stream = Stream(
        cfg,
        FileSource(Path(path), realtime=realtime),
        engine,
        collect,
        filters=filters,
        background=background,
        vad=vad,
    )
    stream.start()
    stream.join()
    if stream.error:
        raise SourceError(stream.error)
    if stream.decode_failures and not allow_failures:
        # A live stream goes on without a failed decode; a file's transcript would have holes.
        n = len(stream.decode_failures)
        raise UserError(f"{n} decode{'s' if n > 1 else ''} failed ({stream.decode_failures[0]})")
    return events
