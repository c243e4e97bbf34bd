"""One stream: source -> ring -> VAD -> segmenter -> decode requests -> caption events.

The stream loop runs in its own thread. It reads new audio from the ring, runs Silero on each
32 ms frame, lets the Segmenter open and close utterances, and asks the DecodeEngine for a
re-decode of the open window every `step` seconds of audio (never more often than the last decode
took, so a slow machine degrades to fewer partials instead of a growing backlog). It turns the
hypotheses into events through the agreement policy and the hallucination filters.

Live sources (and files replayed at 1x) never wait for decoding: audio keeps flowing and VAD
keeps up while the worker decodes. A file read as fast as possible (`transcribe`, `--fast`) runs
in lockstep instead: the loop waits for each decode, so the result is the same as a live run on
a machine fast enough to keep up, and does not depend on how busy this one is.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamer import metrics
from streamer.audio.ring import SAMPLE_RATE, RingBuffer
from streamer.audio.source import Source
from streamer.config import Settings
from streamer.decode.agreement import Agreement, common_prefix, skip_prefix
from streamer.decode.engine import DecodeEngine, DecodeRequest
from streamer.decode.filters import FilterOptions, filter_segments, is_invented_phrase, trim_invented_tail
from streamer.decode.hypothesis import Hypothesis, HypWord, join_words
from streamer.events import Final, Partial, Status, Word
from streamer.vad.segmenter import FRAME_SAMPLES, Segmenter, SegmenterOptions, SpeechEnd, SpeechStart
from streamer.vad.silero import SileroVad

log = logging.getLogger(__name__)

Emit = Callable[[Partial | Final | Status], None]

# Audio kept before the open utterance: the segmenter backdates a start by min_speech + pad.
PREROLL_SECONDS = 3.0
# A partial decode needs this much audio in the window to say anything useful.
MIN_PARTIAL_AUDIO = 0.4
# Per-utterance language detection stops once a window of 3 s or more is this sure; until then
# every decode (the final included) detects again on all the audio it has.
LOCK_LANGUAGE_PROBABILITY = 0.7
# Finals passed as the prompt are cut to this many characters (Whisper's prompt is 224 tokens).
PROMPT_CHARS = 400


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


@dataclass
class _Utterance:
    number: int
    start: float  # start of the open window (slides forward after a long-form commit)
    speech_start: float
    language: str | None
    language_probability: float | None = None
    agreement: Agreement = field(default_factory=Agreement)
    rev: int = 0
    last_partial_text: str | None = None
    closed_at: float | None = None  # speech end, once the VAD closed it
    # A final decode started when silence began, before the VAD was sure speech had ended:
    # (window end, future). Used if the silence lasts; dropped if speech resumes.
    speculative: tuple[float, Future[Hypothesis]] | None = None


class Stream:
    def __init__(
        self,
        settings: Settings,
        source: Source,
        engine: DecodeEngine,
        emit: Emit,
        name: str | None = None,
        filters: FilterOptions | None = None,
    ) -> None:
        self.name = name or settings.stream
        self.settings = settings
        self.source = source
        self.engine = engine
        self._emit_cb = emit
        self.ring = RingBuffer(int(settings.source.ring_seconds * SAMPLE_RATE))
        self.lockstep = not source.live and not settings.source.realtime
        self.filters = filters or filter_options(settings)
        # VadConfig's keys are the segmenter's option names.
        self.segmenter = Segmenter(SegmenterOptions(**settings.vad.model_dump()))
        self.vad = SileroVad()
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
        self._pending: list[tuple[Future[Hypothesis], int, float]] = []  # (future, utterance, t0)
        self._utt: _Utterance | None = None
        self._closing: dict[int, _Utterance] = {}
        self._utt_count = 0
        self._seq = 0
        self._context: list[str] = []
        self._committed_until = 0.0  # end of the last word that went into a final
        self._last_partial_request = -1e9
        self._last_decode_seconds = 0.0
        self._last_audio_wall: float | None = None
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

    @property
    def finals_emitted(self) -> int:
        return self._seq

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
            "finals": self._seq,
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
                    self._last_audio_wall = time.monotonic()
                    metrics.AUDIO_CAPTURED.labels(self.name).inc(len(samples) / SAMPLE_RATE)
                    dropped = self.ring.dropped
                    if dropped > dropped_seen:
                        lost = dropped - dropped_seen
                        metrics.AUDIO_DROPPED.labels(self.name).inc(lost / SAMPLE_RATE)
                        log.warning(
                            "stream %s: %.2f s of audio dropped (decoding fell behind)",
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
                        self._maybe_partial()
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
        if self.capture.error and not self.error:
            self.error = self.capture.error
        self._set_state("error" if self.error else "stopped", self.error or "")

    def _trim_history(self) -> None:
        if self._utt is not None or self._closing:
            starts = [u.start for u in ([self._utt] if self._utt else []) + list(self._closing.values())]
            keep_from = int(min(starts) * SAMPLE_RATE) - FRAME_SAMPLES
        else:
            keep_from = self._consumed - int(PREROLL_SECONDS * SAMPLE_RATE)
        if keep_from - self._history.base > SAMPLE_RATE:  # trim in 1 s steps, not every frame
            self._history.trim_before(keep_from)

    # -- segments ----------------------------------------------------------------------------

    def _on_segment(self, ev: SpeechStart | SpeechEnd) -> None:
        if isinstance(ev, SpeechStart):
            self._utt_count += 1
            # After a forced split, the previous utterance may already have committed words
            # past the split point: never decode (and caption) them twice.
            start = max(ev.start, self._committed_until)
            self._utt = _Utterance(
                number=self._utt_count,
                start=start,
                speech_start=start,
                language=self.settings.decoder.language,
                agreement=Agreement(self.settings.decoder.agreement, self.settings.decoder.holdback),
            )
            self._last_partial_request = -1e9
            return
        utt = self._utt
        if utt is None:
            return
        speech_s = ev.end - ev.start
        metrics.VAD_SPEECH.labels(self.name).inc(max(speech_s, 0.0))
        utt.closed_at = ev.end
        self._utt = None
        self._closing[utt.number] = utt
        spec, utt.speculative = utt.speculative, None
        if spec is not None and abs(spec[0] - ev.end) < 1e-6:
            self._pending.append((spec[1], utt.number, time.monotonic()))
            return
        if spec is not None:
            spec[1].cancel()
        self._request(utt, "final", ev.end)

    # -- decoding ----------------------------------------------------------------------------

    def _prompt(self) -> str | None:
        parts = []
        if self.settings.decoder.initial_prompt:
            parts.append(self.settings.decoder.initial_prompt)
        n = self.settings.decoder.context_finals
        if n:
            context = " ".join(self._context[-n:])[-PROMPT_CHARS:]
            if context:
                parts.append(context)
        return " ".join(parts) or None

    def _request(
        self,
        utt: _Utterance,
        kind: str,
        end: float,
        word_timestamps: bool = True,
        speculative: bool = False,
        final_quality: bool = False,
    ) -> None:
        dec = self.settings.decoder
        s0 = int(utt.start * SAMPLE_RATE)
        s1 = int(end * SAMPLE_RATE)
        audio = self._history.slice(s0, s1)
        req = DecodeRequest(
            kind="final" if kind == "final" else "partial",
            audio=audio,
            offset=utt.start,
            language=utt.language,
            languages=dec.languages,
            prompt=self._prompt(),
            word_timestamps=word_timestamps,
            # A long window's partial may become a final (commit), so it is decoded as one.
            beam_size=dec.beam_size if kind == "final" or final_quality else dec.partial_beam_size,
            stream=self.name,
            context=30.0 if kind == "final" or final_quality else dec.partial_context,
        )
        fut = self.engine.submit(req)
        if speculative:
            utt.speculative = (end, fut)
        else:
            self._pending.append((fut, utt.number, time.monotonic()))

    def _maybe_speculate(self) -> bool:
        """During the end-of-speech silence, start the final decode early (live sources only).

        The final's window is [start, speech end + pad] whether or not the silence lasts, so it
        can be decoded as soon as that audio is in; if the VAD then closes the utterance, the
        final is out one decode sooner. Returns True while the utterance is in that silence.
        """
        utt = self._utt
        pending_end = self.segmenter.pending_end
        if utt is None or pending_end is None:
            if utt is not None and utt.speculative is not None:  # speech resumed
                utt.speculative[1].cancel()
                utt.speculative = None
            return False
        if self.lockstep or self._consumed / SAMPLE_RATE < pending_end:
            return True
        if utt.speculative is not None and abs(utt.speculative[0] - pending_end) < 1e-6:
            return True
        if utt.speculative is not None:
            utt.speculative[1].cancel()
        self._request(utt, "final", pending_end, speculative=True)
        return True

    def _maybe_partial(self) -> None:
        if self._maybe_speculate():
            return  # nothing new to show while the speaker is silent
        utt = self._utt
        dec = self.settings.decoder
        if utt is None or not dec.partials:
            return
        now = self._consumed / SAMPLE_RATE
        if any(u == utt.number for _, u, _ in self._pending):
            return  # one decode of this utterance at a time
        if now - utt.start < MIN_PARTIAL_AUDIO:
            return
        interval = dec.step if self.lockstep else max(dec.step, self._last_decode_seconds)
        if now - self._last_partial_request < interval:
            return
        self._last_partial_request = now
        # Long monologue: past max_window, ask for word times so the agreed prefix can be
        # committed as a final and the window can slide past it.
        long_window = now - utt.start > dec.max_window - 2 * dec.step
        self._request(utt, "partial", now, word_timestamps=long_window, final_quality=long_window)

    def _collect(self, block: bool) -> None:
        while self._pending:
            fut, number, _t0 = self._pending[0]
            if not fut.done() and not block:
                return
            hyp = fut.result()  # re-raises a decode failure: the stream stops with the error
            self._pending.pop(0)
            self._last_decode_seconds = hyp.decode_seconds
            if hyp.kind == "final":
                utt = self._closing.pop(number, None)
                if utt is not None:
                    self._on_final(utt, hyp)
            elif self._utt is not None and self._utt.number == number:
                self._on_partial(self._utt, hyp)
            block = False

    def _clean(self, utt: _Utterance, hyp: Hypothesis, speech_end: float) -> tuple[Hypothesis, list[str]]:
        segments, counts = filter_segments(
            hyp.segments, self.filters, hyp.language, speech=(utt.speech_start, speech_end)
        )
        for name, n in counts.items():
            metrics.SUPPRESSED.labels(self.name, name).inc(n)
        cleaned = Hypothesis(
            kind=hyp.kind,
            window_start=hyp.window_start,
            window_end=hyp.window_end,
            segments=tuple(segments),
            language=hyp.language,
            language_probability=hyp.language_probability,
            decode_seconds=hyp.decode_seconds,
            suppressed=dict(counts),
        )
        return cleaned, cleaned.word_texts

    def _invented(self, text: str, hyp: Hypothesis) -> bool:
        words = hyp.words
        mean_p = sum(w.probability for w in words) / len(words) if words else None
        no_speech = max((s.no_speech_prob for s in hyp.segments), default=0.0)
        if is_invented_phrase(text, hyp.language, self.filters, mean_p, no_speech):
            metrics.SUPPRESSED.labels(self.name, "phrases").inc()
            return True
        return False

    def _on_partial(self, utt: _Utterance, raw: Hypothesis) -> None:
        if (
            utt.language is None
            and raw.language is not None
            and raw.window_end - raw.window_start >= 3.0
            and (raw.language_probability or 0.0) >= LOCK_LANGUAGE_PROBABILITY
        ):
            # Enough audio and a clear winner: keep it for the rest of the utterance.
            utt.language, utt.language_probability = raw.language, raw.language_probability
        hyp, words = self._clean(utt, raw, raw.window_end)
        if not words or (not utt.agreement.stable and self._invented(join_words(words), hyp)):
            return
        stable, unstable = utt.agreement.update(words)
        if hyp.words and raw.window_end - utt.start > self.settings.decoder.max_window:
            shown = stable + unstable
            taken = self._commit_long(utt, hyp)
            stable = list(utt.agreement.stable)
            unstable = shown[taken + len(stable) :]
        text = join_words(stable + unstable)
        if text == utt.last_partial_text:
            return
        utt.last_partial_text = text
        utt.rev += 1
        ev = Partial(
            stream=self.name,
            utterance=utt.number,
            rev=utt.rev,
            seq=self._seq + 1,
            text=text,
            stable=join_words(stable),
            start=round(utt.start, 3),
            end=round(raw.window_end, 3),
            lang=hyp.language,
            emitted_at=round(self.now(), 3),
        )
        metrics.PARTIALS.labels(self.name).inc()
        metrics.LATENCY.labels(self.name, "partial").observe(max(ev.emitted_at - ev.end, 0.0))
        self._emit(ev)

    def _commit_long(self, utt: _Utterance, hyp: Hypothesis) -> int:
        """Emit the agreed prefix of a long window as a final and slide the window past it.

        Returns how many words (from the front of what was shown) became the final.
        """
        words = hyp.words
        texts = [w.text for w in words]
        stable = list(utt.agreement.stable)
        if stable:
            idx = skip_prefix(stable, texts)
            timed = words[:idx]
        else:
            # No agreement over a whole window: commit all but the last few words anyway, so
            # the window stays bounded.
            if len(words) <= 4:
                return 0
            idx = len(words) - 3
            stable, timed = texts[:idx], words[:idx]
            utt.agreement.stable = list(stable)
            utt.agreement.forget_previous()
        if not timed:
            return 0
        cut = timed[-1].end
        # The words as this (final-quality) decode wrote them; the agreement only chose where.
        self._final_event(utt, [w.text for w in timed], timed, hyp, end=cut)
        utt.agreement.commit(len(stable))
        utt.start = max(cut, utt.start)
        utt.last_partial_text = None
        return len(stable)

    def _on_final(self, utt: _Utterance, raw: Hypothesis) -> None:
        """The utterance's final: a fresh decode of its whole window with the final settings.

        It is not forced to begin with the stable prefix of the partials: partials see audio
        cut at "now" and are decoded greedily with less encoder context, and on the English set
        locking their agreed words into finals cost 1.7x the offline WER (6.5 % vs 3.8 % with
        tiny.en). How often the final revised stable words is counted (stable_revised).
        """
        speech_end = utt.closed_at if utt.closed_at is not None else raw.window_end
        if utt.language is None:
            utt.language, utt.language_probability = raw.language, raw.language_probability
        hyp, words = self._clean(utt, raw, speech_end)
        invented = not words or self._invented(join_words(words), hyp)
        if not invented and hyp.words:
            # Only after the whole-utterance check: trimming first could leave half a phrase.
            kept, dropped = trim_invented_tail(hyp.words, hyp.language, self.filters)
            if dropped:
                metrics.SUPPRESSED.labels(self.name, "tail").inc(dropped)
                hyp = _with_words(hyp, kept)
                words = hyp.word_texts
        if invented:
            if utt.rev > 0:  # take back what partials showed
                self._emit(
                    Partial(
                        stream=self.name,
                        utterance=utt.number,
                        rev=utt.rev + 1,
                        seq=self._seq + 1,
                        text="",
                        stable="",
                        start=round(utt.start, 3),
                        end=round(speech_end, 3),
                        lang=hyp.language,
                        emitted_at=round(self.now(), 3),
                    )
                )
            return
        stable = utt.agreement.stable
        if stable and common_prefix(stable, words) < len(stable):
            metrics.STABLE_REVISED.labels(self.name).inc()
        self._final_event(utt, words, hyp.words, hyp, end=speech_end)

    def _final_event(
        self, utt: _Utterance, texts: list[str], hyp_words: list[HypWord], hyp: Hypothesis, end: float
    ) -> None:
        words = _timed_words(texts, hyp_words, utt.start, end)
        self._seq += 1
        utt.rev += 1
        start = words[0].start if words else utt.start
        last_end = words[-1].end if words else end
        text = join_words(texts)
        ev = Final(
            stream=self.name,
            utterance=utt.number,
            rev=utt.rev,
            seq=self._seq,
            text=text,
            stable=text,
            start=round(start, 3),
            end=round(min(max(last_end, start), end), 3),
            lang=hyp.language or utt.language,
            emitted_at=round(self.now(), 3),
            words=words,
            lang_probability=utt.language_probability
            if utt.language_probability is not None
            else hyp.language_probability,
        )
        self._committed_until = max(self._committed_until, ev.end)
        self._context.append(text)
        del self._context[: -max(self.settings.decoder.context_finals, 1)]
        metrics.FINALS.labels(self.name).inc()
        metrics.LATENCY.labels(self.name, "final").observe(max(ev.emitted_at - ev.end, 0.0))
        self._emit(ev)


def _with_words(hyp: Hypothesis, words: list[HypWord]) -> Hypothesis:
    """The hypothesis cut down to its first len(words) words (segments emptied past them)."""
    keep = len(words)
    segments = []
    for seg in hyp.segments:
        take = min(keep, len(seg.words))
        keep -= take
        if take:
            segments.append(seg.with_words(seg.words[:take]))
    return dataclasses.replace(hyp, segments=tuple(segments))


def _timed_words(texts: list[str], hyp_words: list[HypWord], start: float, end: float) -> list[Word]:
    """Attach times to the final's words: those of the matching decoded word, else interpolated."""
    import difflib

    from streamer.decode.agreement import norm_word

    a = [norm_word(t) for t in texts]
    b = [norm_word(w.text) for w in hyp_words]
    times: list[tuple[float, float, float] | None] = [None] * len(texts)
    for blk in difflib.SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks():
        for k in range(blk.size):
            w = hyp_words[blk.b + k]
            times[blk.a + k] = (w.start, w.end, w.probability)
    out: list[Word] = []
    prev_end = start
    for i, text in enumerate(texts):
        t = times[i]
        if t is None:
            nxt = next((x for x in times[i + 1 :] if x is not None), None)
            hi = nxt[0] if nxt else end
            t = (prev_end, max(prev_end, min(hi, end)), 0.0)
        s, e, p = t
        out.append(
            Word(
                word=text,
                start=round(s, 3),
                end=round(max(e, s), 3),
                probability=round(min(max(p, 0.0), 1.0), 4),
            )
        )
        prev_end = max(e, s)
    return out


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
    emit: Emit | None = None,
    filters: FilterOptions | None = None,
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
    stream = Stream(cfg, FileSource(Path(path), realtime=realtime), engine, collect, filters=filters)
    stream.start()
    stream.join()
    if stream.error:
        from streamer.errors import SourceError

        raise SourceError(stream.error)
    return events
