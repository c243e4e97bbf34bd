"""One stream: source -> ring -> VAD -> segmenter -> captioner -> decode requests -> caption events.

The stream loop runs in its own thread. It reads new audio from the ring, runs Silero on each
32 ms frame and lets the Segmenter open and close utterances. Every decision about text lives in
the Captioner (streamer/decode/captioner.py), a state machine free of threads and of the model:
the loop feeds it segmenter events, the audio clock and decode results, and carries out what it
returns (submit a decode of a window, cancel one, emit an event).

Decode results are handled the moment they are done, in whatever order they finish; a result
whose request became obsolete is discarded and counted. Live sources (and files replayed at 1x)
never wait for decoding: audio keeps flowing and VAD keeps up while the worker decodes. A file
read as fast as possible (`transcribe`, `--fast`) runs in lockstep instead: the loop waits for
each decode, so the result is the same as a live run on a machine fast enough to keep up, and
does not depend on how busy this one is.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from pathlib import Path

import numpy as np

from streamer import metrics
from streamer.audio.ring import SAMPLE_RATE, RingBuffer
from streamer.audio.source import Source
from streamer.config import Settings
from streamer.decode.captioner import (
    Action,
    Cancel,
    Captioner,
    CaptionerOptions,
    DecodeSpec,
    Discarded,
    Emit,
    Skipped,
    Submit,
    Suppressed,
)
from streamer.decode.engine import DecodeEngine, DecodeRequest
from streamer.decode.filters import FilterOptions
from streamer.decode.hypothesis import Hypothesis
from streamer.events import Final, Partial, Status
from streamer.vad.segmenter import FRAME_SAMPLES, Segmenter, SegmenterOptions, SpeechEnd, SpeechStart
from streamer.vad.silero import SileroVad

log = logging.getLogger(__name__)

Emit_ = Callable[[Partial | Final | Status], None]

# Audio kept before the open utterance: the segmenter backdates a start by min_speech + pad.
PREROLL_SECONDS = 3.0
_LEVELS = {0: "normal", 1: "partials thinned", 2: "cheaper finals", 3: "finals only"}


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

    def trim_before(self, pos: int) -> None:
        self._flatten()
        cut = pos - self.base
        if cut > 0:
            self._data = self._data[cut:]
            self.base = pos


def captioner_options(settings: Settings, stream: str, lockstep: bool) -> CaptionerOptions:
    d = settings.decoder
    return CaptionerOptions(
        stream=stream,
        step=d.step,
        partials=d.partials,
        agreement=d.agreement,
        holdback=d.holdback,
        commit_margin=d.commit_margin,
        min_commit_audio=d.min_commit_audio,
        left_context=d.left_context,
        max_window=d.max_window,
        beam_size=d.beam_size,
        step_beam_size=d.partial_beam_size,
        step_context=d.partial_context,
        language=d.language,
        languages=tuple(d.languages) if d.languages else None,
        initial_prompt=d.initial_prompt,
        context_prompt=d.context_finals > 0,
        # In lockstep the final is asked for at the end of speech anyway: nothing to win.
        speculative=not lockstep,
    )


class Stream:
    def __init__(
        self,
        settings: Settings,
        source: Source,
        engine: DecodeEngine,
        emit: Emit_,
        name: str | None = None,
        filters: FilterOptions | None = None,
        background: bool = False,
    ) -> None:
        self.name = name or settings.stream
        self.settings = settings
        self.source = source
        self.engine = engine
        self.background = background
        self._emit_cb = emit
        self.ring = RingBuffer(int(settings.source.ring_seconds * SAMPLE_RATE))
        self.lockstep = not source.live and not settings.source.realtime
        self.filters = filters or filter_options(settings)
        # VadConfig's keys are the segmenter's option names.
        self.segmenter = Segmenter(SegmenterOptions(**settings.vad.model_dump()))
        self.vad = SileroVad()
        self.captioner = Captioner(captioner_options(settings, self.name, self.lockstep), self.filters)
        from streamer.audio.capture import CaptureThread

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
        # Captioner request id -> (engine request id, future, spec)
        self._pending: dict[int, tuple[int, Future[Hypothesis], DecodeSpec]] = {}
        self._pending_end: float | None = None
        self._last_decode_seconds = 0.0
        self._level = 0
        self._last_audio_wall: float | None = None
        self._last_progress_wall = time.monotonic()
        self._state = "starting"
        self.error: str | None = None
        self.first_event_wall: float | None = None

    # -- public ------------------------------------------------------------------------------

    def start(self) -> None:
        self._started_wall = time.monotonic()
        self.capture.start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.capture.stop()

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def reconfigure(self) -> None:
        """Apply reloaded decoder and filter settings (SIGHUP) from the next decision on; what is
        already settled stays settled."""
        self.filters = filter_options(self.settings)
        self.captioner.filters = self.filters
        self.captioner.o = captioner_options(self.settings, self.name, self.lockstep)

    @property
    def finals_emitted(self) -> int:
        return self.captioner.finals_emitted

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
            "speech_seconds": round(self.segmenter.speech_seconds, 3),
            "last_audio_age": None if age is None else round(age, 3),
            "finals": self.finals_emitted,
            "degraded": self._level,
            "degraded_reason": _LEVELS.get(self._level, ""),
            "decodes_pending": len(self._pending),
            "error": self.error,
        }

    # -- clock -------------------------------------------------------------------------------

    def now(self) -> float:
        """The stream's audio clock: what has been captured (consumed, in lockstep)."""
        if self.lockstep:
            return self._consumed / SAMPLE_RATE
        return max(self.ring.written, self._consumed) / SAMPLE_RATE

    # -- loop --------------------------------------------------------------------------------

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

    def _run(self) -> None:
        remainder = np.zeros(0, dtype=np.float32)
        dropped_seen = 0
        try:
            while not self._stop.is_set():
                self._collect(block=self.lockstep and bool(self._pending))
                pos, samples = self.ring.read(timeout=0.05)
                if len(samples):
                    self._last_audio_wall = self._last_progress_wall = time.monotonic()
                    metrics.AUDIO_CAPTURED.labels(self.name).inc(len(samples) / SAMPLE_RATE)
                    dropped = self.ring.dropped
                    if dropped > dropped_seen:
                        lost = dropped - dropped_seen
                        metrics.AUDIO_DROPPED.labels(self.name).inc(lost / SAMPLE_RATE)
                        log.warning(
                            "stream %s: %.2f s of audio dropped (the stream loop fell behind)",
                            self.name,
                            lost / SAMPLE_RATE,
                        )
                        dropped_seen = dropped
                    expected = self._consumed + len(remainder)
                    if pos != expected:  # the ring overwrote audio we had not read: a gap
                        remainder = np.zeros(0, dtype=np.float32)
                        self._consumed = pos
                        self._history.trim_before(self._history.end)
                        self._history.base = pos
                    buf = np.concatenate([remainder, samples]) if len(remainder) else samples
                    n_frames = len(buf) // FRAME_SAMPLES
                    for i in range(n_frames):
                        frame = buf[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]
                        self._history.append(frame)
                        t = self._consumed / SAMPLE_RATE
                        self._consumed += FRAME_SAMPLES
                        for ev in self.segmenter.feed(self.vad(frame), t):
                            self._on_segment(ev)
                        self._tick()
                        if self.lockstep and self._pending:
                            self._collect(block=True)
                    remainder = buf[n_frames * FRAME_SAMPLES :]
                    if self._state in ("starting", "retrying"):
                        self._set_state("running")
                elif self.ring.drained:
                    break
                self._trim_history()
            # End of audio: close what is open and wait for the last decodes.
            for ev in self.segmenter.flush(self._consumed / SAMPLE_RATE):
                self._on_segment(ev)
            while self._pending:
                self._collect(block=True)
        except Exception as e:
            log.exception("stream %s failed", self.name)
            self.error = f"{type(e).__name__}: {e}"
            self._set_state("error", self.error)
            return
        finally:
            self.capture.stop()
            for _rid, (eid, _fut, _spec) in list(self._pending.items()):
                self.engine.cancel(eid)
        if self.capture.error and not self.error:
            self.error = self.capture.error
        self._set_state("error" if self.error else "stopped", self.error or "")

    def _trim_history(self) -> None:
        keep_from = int(self.captioner.keep_from(self.now(), PREROLL_SECONDS) * SAMPLE_RATE) - FRAME_SAMPLES
        keep_from = min(keep_from, self._consumed - int(PREROLL_SECONDS * SAMPLE_RATE))
        if keep_from - self._history.base > SAMPLE_RATE:  # trim in 1 s steps, not every frame
            self._history.trim_before(keep_from)

    # -- segments and ticks ------------------------------------------------------------------

    def _on_segment(self, ev: SpeechStart | SpeechEnd) -> None:
        now = self._consumed / SAMPLE_RATE
        if isinstance(ev, SpeechStart):
            self._pending_end = None
            self._act(self.captioner.on_speech_start(ev.start, now))
            return
        metrics.VAD_SPEECH.labels(self.name).inc(max(ev.end - ev.start, 0.0))
        self._pending_end = None
        self._act(self.captioner.on_speech_end(ev.end, now, self._level))

    def _tick(self) -> None:
        now = self._consumed / SAMPLE_RATE
        level = 0 if self.lockstep else self.engine.level
        if level != self._level:
            self._on_level(level)
        pending_end = self.segmenter.pending_end
        if pending_end is not None or self._pending_end is not None:
            self._act(self.captioner.on_silence(pending_end, now))
            self._pending_end = pending_end
        last = 0.0 if self.lockstep else self._last_decode_seconds
        self._act(self.captioner.on_tick(now, level, last))

    def _on_level(self, level: int) -> None:
        old, self._level = self._level, level
        # Thinned partials are routine on a busy machine; cheaper or missing partial steps are not.
        (log.warning if level > old and level >= 2 else log.info)(
            "stream %s: decoder load level %d (%s)", self.name, level, _LEVELS.get(level, "")
        )
        self._emit(
            Status(
                stream=self.name,
                state="running",
                detail=f"decoder degraded: level {level} ({_LEVELS.get(level, '')})" if level else "",
                degraded=level,
                emitted_at=self.now(),
            )
        )

    # -- actions -----------------------------------------------------------------------------

    def _act(self, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, Submit):
                self._submit(a.spec)
            elif isinstance(a, Emit):
                self._emit_caption(a.event)
            elif isinstance(a, Cancel):
                entry = self._pending.get(a.request_id)
                if entry is not None and self.engine.cancel(entry[0]):
                    del self._pending[a.request_id]
                    metrics.DECODES_CANCELLED.labels(self.name, entry[2].kind, a.reason).inc()
                # else: it is running; its result will come back as Discarded
            elif isinstance(a, Discarded):
                metrics.DECODES_DISCARDED.labels(self.name, "any", a.reason).inc()
            elif isinstance(a, Suppressed):
                metrics.SUPPRESSED.labels(self.name, a.filter).inc(a.count)
            elif isinstance(a, Skipped):
                metrics.PARTIALS_SKIPPED.labels(self.name).inc()

    def _submit(self, spec: DecodeSpec) -> None:
        s0 = int(spec.start * SAMPLE_RATE)
        s1 = int(spec.end * SAMPLE_RATE)
        s0 = max(s0, self._history.base)
        audio = self._history.slice(s0, s1)
        dec = self.settings.decoder
        req = DecodeRequest(
            kind=spec.kind,
            audio=audio,
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
            task=dec.task,
            hotwords=dec.hotwords,
        )
        fut = self.engine.submit(req)
        self._pending[spec.id] = (req.id, fut, spec)

    def _collect(self, block: bool) -> None:
        """Handle every finished decode now, in the order they finished (never behind another)."""
        while self._pending:
            done = [rid for rid, (_e, fut, _s) in self._pending.items() if fut.done()]
            if not done:
                if not block:
                    return
                wait([f for _e, f, _s in self._pending.values()], timeout=0.5, return_when=FIRST_COMPLETED)
                continue
            for rid in done:
                _eid, fut, spec = self._pending.pop(rid)
                if fut.cancelled():
                    continue
                hyp = fut.result()  # re-raises a decode failure: the stream stops with the error
                self._last_progress_wall = time.monotonic()
                self._last_decode_seconds = hyp.decode_seconds
                actions = self.captioner.on_result(rid, hyp, self.now())
                for a in actions:
                    if isinstance(a, Discarded):
                        metrics.DECODES_DISCARDED.labels(self.name, spec.kind, a.reason).inc()
                self._act([a for a in actions if not isinstance(a, Discarded)])
            block = False

    def _emit_caption(self, ev: Partial | Final) -> None:
        if isinstance(ev, Final):
            metrics.FINALS.labels(self.name).inc()
            metrics.LATENCY.labels(self.name, "final").observe(max(ev.emitted_at - ev.end, 0.0))
        else:
            metrics.PARTIALS.labels(self.name).inc()
            metrics.LATENCY.labels(self.name, "partial").observe(max(ev.emitted_at - ev.end, 0.0))
        self._emit(ev)


def filter_options(settings: Settings) -> FilterOptions:
    """FilterConfig's switches plus the decoder's thresholds, which the filters reuse."""
    d = settings.decoder
    return FilterOptions(
        **settings.filters.model_dump(),
        no_speech_threshold=d.no_speech_threshold,
        log_prob_threshold=d.log_prob_threshold,
        compression_ratio_threshold=d.compression_ratio_threshold,
    )


def run_file(
    settings: Settings,
    path: str | Path,
    engine: DecodeEngine,
    *,
    realtime: bool,
    emit: Emit_ | None = None,
    filters: FilterOptions | None = None,
    background: bool = False,
) -> list[Partial | Final]:
    """Run one file through a Stream (blocking) and return its caption events in order."""
    from streamer.audio.file import FileSource

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
    )
    stream.start()
    stream.join()
    if stream.error:
        from streamer.errors import SourceError

        raise SourceError(stream.error)
    return events
