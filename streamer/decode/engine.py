"""The model edge: one loaded faster-whisper model and one worker thread that runs its decodes.

Streams hand `DecodeRequest`s to `submit()` and get a Future. Finals go before partials in the
queue, since a final is what a viewer waits for and a partial that waits is simply replaced by a
newer one. CTranslate2 releases the GIL, so decoding in this thread does not hold up the stream
loops, the capture threads or the asyncio loop. Several streams can share one engine.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel

from streamer import metrics, options
from streamer.decode import batch, whisper
from streamer.decode.hypothesis import DecodeInfo, Hypothesis, HypSegment, HypWord
from streamer.decode.scheduler import Pending, Scheduler
from streamer.errors import UserError
from streamer.models import compute_type_for, resolve_device, resolve_model
from streamer.options import setting

if TYPE_CHECKING:
    from streamer.config import Settings

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000


FRAMES_PER_SECOND = 100  # Whisper's log-mel frames
# Whisper's decoder holds 448 positions, half of them for the prompt.
MAX_NEW_TOKENS = 220


def _would_fall_back(segments: list[HypSegment], opts: DecodeOptions) -> bool:
    """Whether faster-whisper's fallback rule would have asked for another temperature."""
    return any(
        s.compression_ratio > opts.compression_ratio_threshold or s.avg_logprob < opts.log_prob_threshold
        for s in segments
    )


@dataclass
class DecodeRequest:
    kind: Literal["step", "final"]
    audio: np.ndarray
    offset: float  # audio-clock time of audio[0]
    language: str | None = None
    languages: list[str] | None = None  # allow-list when the language is detected
    prompt: str | None = None
    word_timestamps: bool = True
    beam_size: int = 1
    stream: str = "main"
    context: float = 30.0  # seconds of encoder context at least (30 = Whisper's full window)
    fallback: bool = True  # temperature fallback allowed (only used for long enough windows)
    background: bool = False  # file work: runs only when no live request waits
    id: int = 0  # caller's request id (0: the engine assigns one)
    task: str | None = None  # per-stream override of DecodeOptions.task
    hotwords: str | None = None  # per-stream override of DecodeOptions.hotwords

    @property
    def duration(self) -> float:
        return len(self.audio) / SAMPLE_RATE


@dataclass(frozen=True)
class DecodeOptions:
    """What the engine applies to every decode it runs (per engine; a reload swaps the object)."""

    task: str = setting("decoder.task", "transcribe")
    temperatures: tuple[float, ...] = setting(
        "decoder.temperatures", (0.0, 0.2, 0.4), convert=lambda v: tuple(v) or (0.0,)
    )
    no_speech_threshold: float = setting("decoder.no_speech_threshold", 0.6)
    log_prob_threshold: float = setting("decoder.log_prob_threshold", -1.0)
    compression_ratio_threshold: float = setting("decoder.compression_ratio_threshold", 2.4)
    hotwords: str | None = setting("decoder.hotwords", None)
    # Decode cost bounds: Whisper may loop or run on through a clipped window; a window of d seconds
    # gets at most base + d * per_second new tokens, and temperature fallback (a full re-decode per
    # temperature) only when it holds at least fallback_min_seconds of audio.
    max_tokens_base: int = 12
    max_tokens_per_second: float = setting("decoder.max_tokens_per_second", 12.0)
    fallback_min_seconds: float = setting("decoder.fallback_min_seconds", 2.0)

    @classmethod
    def from_settings(cls, settings: Settings) -> DecodeOptions:
        return options.from_settings(cls, settings)


# A window whose decode ends this much before the window does is decoded once more from where
# the output ended: a final's window ends a VAD pad after the speech, so 1 s is speech; a step's
# ends at the newest audio, where a word may be in progress and Whisper rightly waits (continued
# after 1 s, a step repeated its own last phrase: "He was not. He was not.").
CONTINUE_AFTER = {"final": 1.0, "step": 2.0}


def _unheard_tail(out: whisper.WindowOut, duration: float, after: float) -> float | None:
    """Where the audio a decode left unheard at the end of its window begins (s from the window
    start), or None. From the end of the last word, not its start: audio that begins with the
    phrase Whisper stopped after makes it stop there again."""
    if out.skipped or not out.segments:
        return None
    last = out.segments[-1]
    end = last.words[-1].end if last.words else last.end
    return end if duration - end >= after else None


class DecodeEngine:
    def __init__(
        self,
        model: WhisperModel,
        model_name: str,
        options: DecodeOptions,
        load_seconds: float = 0.0,
        batch_size: int = 1,
    ):
        self.model = model
        # Windows of different streams encoded in one call (streamer.decode.batch).
        self.batch_size = batch_size
        self.model_name = model_name
        self.options = options
        self.load_seconds = load_seconds
        self.multilingual = bool(getattr(model.model, "is_multilingual", True))
        # Temperature fallback samples: a fixed seed makes a file give the same text every run.
        ctranslate2.set_random_seed(0)
        self._cond = threading.Condition()
        self._scheduler: Scheduler[tuple[DecodeRequest, Future[Hypothesis]]] = Scheduler()
        self._ids = itertools.count(1 << 40)  # apart from callers' own ids
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="decode-worker", daemon=True)
        self._thread.start()

    @classmethod
    def from_settings(cls, settings: Settings) -> DecodeEngine:
        cfg = settings.model
        resolved = resolve_model(cfg.name, cfg.cache_dir)
        device = resolve_device(cfg.device)
        compute_type = compute_type_for(device, cfg.compute_type)
        t0 = time.perf_counter()
        try:
            model = WhisperModel(
                str(resolved.path), device=device, compute_type=compute_type, cpu_threads=cfg.cpu_threads
            )
        except (RuntimeError, ValueError, OSError) as e:
            raise UserError(f"cannot load model '{cfg.name}' from {resolved.path}: {e}") from None
        load = time.perf_counter() - t0
        log.info(
            "model %s (%s, %s on %s, batch %s) loaded in %.2f s",
            resolved.name,
            resolved.origin,
            compute_type,
            device,
            cfg.batch_size,
            load,
        )
        dec = settings.decoder
        opts = DecodeOptions.from_settings(settings)
        batch_size = batch.resolve_batch_size(cfg.batch_size, device)
        engine = cls(model, resolved.name, opts, load_seconds=load, batch_size=batch_size)
        if not engine.multilingual:
            if dec.language not in (None, "en"):
                raise UserError(
                    f"model '{resolved.name}' is English-only; it cannot do language '{dec.language}'"
                )
            if dec.task == "translate":
                log.warning("model %s is English-only: task 'translate' has nothing to do", resolved.name)
        return engine

    # -- scheduling -------------------------------------------------------------------------

    def submit(self, request: DecodeRequest) -> Future[Hypothesis]:
        """Queue a decode; its future completes as soon as it is done (never behind another)."""
        fut: Future[Hypothesis] = Future()
        if not request.id:
            request.id = next(self._ids)
        with self._cond:
            self._scheduler.add(
                Pending(
                    id=request.id,
                    stream=request.stream,
                    kind=request.kind,
                    audio_end=request.offset + request.duration,
                    submitted=time.monotonic(),
                    item=(request, fut),
                    background=request.background,
                )
            )
            self._cond.notify()
        return fut

    def cancel(self, request_id: int) -> bool:
        """Remove a request that has not started; False if it is running or done."""
        with self._cond:
            p = self._scheduler.remove(request_id)
        if p is None:
            return False
        p.item[1].cancel()
        return True

    @property
    def level(self) -> int:
        """Degradation level (see scheduler): what streams apply to their next requests."""
        with self._cond:
            level = self._scheduler.tick(time.monotonic())
        metrics.DEGRADED_LEVEL.labels(self.model_name).set(level)
        return level

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=30)

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not len(self._scheduler):
                    self._cond.wait()
                if self._closed:
                    for left in self._scheduler.pending():
                        left.item[1].cancel()
                    return
                ps = self._scheduler.pop_batch(self.batch_size)
            ps = [p for p in ps if p.item[1].set_running_or_notify_cancel()]
            started = time.monotonic()
            rows = self._encode_batch([p.item[0] for p in ps]) if len(ps) > 1 else [None] * len(ps)
            for p, row in zip(ps, rows, strict=True):
                # One interval per request (the shared encode counts in the first), so the busy
                # fraction stays the decoder's real busy time.
                started = self._run(p, started, row)

    def _run(self, p: Pending[tuple[DecodeRequest, Future[Hypothesis]]], started: float, row: Any) -> float:
        req, fut = p.item
        metrics.QUEUE_WAIT.labels(req.kind).observe(started - p.submitted)
        try:
            result = self.decode(req, encoded=row)
            if result.info is not None:
                result = replace(
                    result, info=replace(result.info, queue_wait=round(started - p.submitted, 4))
                )
        except Exception as e:  # reported to the stream that asked
            log.exception("decode failed")
            fut.set_exception(e)
            return time.monotonic()
        finally:
            ended = time.monotonic()
            with self._cond:
                self._scheduler.record(p, started, ended)
        fut.set_result(result)
        return ended

    def _encode_batch(self, reqs: list[DecodeRequest]) -> list[Any]:
        """One encoder call for the batch; on failure each request encodes on its own."""
        frames = batch.batch_frames(
            [batch.window_frames(r.context, r.duration, FRAMES_PER_SECOND) for r in reqs]
        )
        try:
            blocks = np.stack([whisper.features(self.model, r.audio, frames) for r in reqs])
            rows = batch.split_rows(whisper.encode(self.model, blocks, to_cpu=True), len(reqs))
        except Exception:
            log.exception("batched encode failed; decoding one by one")
            return [None] * len(reqs)
        metrics.DECODE_BATCH.observe(len(reqs))
        return rows

    # -- decoding ----------------------------------------------------------------------------

    def _language(self, req: DecodeRequest, encoder_output: Any) -> tuple[str, float | None]:
        if not self.multilingual:
            return "en", None
        if req.language is not None:
            return req.language, None
        probs = whisper.language_probabilities(self.model, encoder_output)
        if req.languages:
            allowed = [(code, p) for code, p in probs if code in req.languages]
            return max(allowed, key=lambda cp: cp[1]) if allowed else (req.languages[0], 0.0)
        return probs[0]

    def decode(self, req: DecodeRequest, encoded: Any = None) -> Hypothesis:
        """Decode one window; `encoded` is its row of a batched encoder pass, if it had one."""
        t0 = time.perf_counter()
        opts = self.options
        content_frames = min(whisper.N_FRAMES, len(req.audio) // self.model.feature_extractor.hop_length)
        frames = batch.window_frames(req.context, req.duration, FRAMES_PER_SECOND)
        if encoded is None:
            encoded = whisper.encode(self.model, whisper.features(self.model, req.audio, frames))
        language, lang_prob = self._language(req, encoded)
        final = req.kind == "final"
        # Temperature fallback re-decodes the whole window once per temperature: only for finals,
        # and only for windows long enough to say something worth it (short clipped windows are
        # where Whisper loops and where fallback cost the most).
        fallback = final and req.fallback and req.duration >= opts.fallback_min_seconds
        max_new = min(int(opts.max_tokens_base + opts.max_tokens_per_second * req.duration), MAX_NEW_TOKENS)
        args: dict[str, Any] = dict(
            language=language,
            language_probability=1.0 if lang_prob is None else lang_prob,
            task=req.task or opts.task,
            prompt=req.prompt,
            hotwords=req.hotwords if req.hotwords is not None else opts.hotwords,
            beam_size=req.beam_size,
            temperatures=opts.temperatures if fallback else (0.0,),
            compression_ratio_threshold=opts.compression_ratio_threshold,
            log_prob_threshold=opts.log_prob_threshold,
            no_speech_threshold=opts.no_speech_threshold,
            max_new_tokens=max_new,
            word_timestamps=req.word_timestamps,
        )
        out = whisper.decode(self.model, encoded, content_frames, **args)
        retried = False
        if req.prompt and req.duration >= 1.0 and not any(seg.text.strip() for seg in out.segments):
            # A prompt sometimes makes Whisper end at once on audio that starts mid-sentence
            # (seen: prompt "Mr. John", audio from "Dashwood had then leisure..."): an empty
            # decode would lose those words, so decode once more without it (same encoder output).
            metrics.DECODE_CUT.labels(req.stream, "empty_with_prompt").inc()
            out = whisper.decode(self.model, encoded, content_frames, **{**args, "prompt": None})
            retried = True
        parts = [(0.0, out)]
        tokens = out.tokens
        rest_at = _unheard_tail(out, req.duration, CONTINUE_AFTER[req.kind])
        if rest_at is not None:
            # Whisper ended its output with audio of the window still unheard: it often stops
            # after a phrase followed by a pause, typically the previous sentence's tail in the
            # window's left context, and the new sentence after it would be lost (seen: a whole
            # Korean sentence, in every step and in the final). faster-whisper's file loop seeks
            # there and decodes again; a window does the same, once, and only when that audio is
            # long enough to hold words (a window ends where the VAD heard speech end or at the
            # newest audio, so it is not trailing silence).
            tail = req.audio[int(rest_at * SAMPLE_RATE) :]
            tail_seconds = len(tail) / SAMPLE_RATE
            tail_frames = batch.window_frames(req.context, tail_seconds, FRAMES_PER_SECOND)
            tail_encoded = whisper.encode(self.model, whisper.features(self.model, tail, tail_frames))
            tail_max = min(
                int(opts.max_tokens_base + opts.max_tokens_per_second * tail_seconds), MAX_NEW_TOKENS
            )
            more = whisper.decode(
                self.model,
                tail_encoded,
                min(whisper.N_FRAMES, len(tail) // self.model.feature_extractor.hop_length),
                **{**args, "max_new_tokens": tail_max, "temperatures": (0.0,)},
            )
            parts.append((rest_at, more))
            tokens += more.tokens
            metrics.DECODE_CONTINUED.labels(req.stream).inc()
        off = req.offset
        segments = tuple(
            HypSegment(
                text=seg.text,
                start=off + at + seg.start,
                end=off + at + seg.end,
                words=tuple(
                    HypWord(w.word, off + at + w.start, off + at + w.end, w.probability) for w in seg.words
                ),
                avg_logprob=seg.avg_logprob,
                no_speech_prob=seg.no_speech_prob,
                compression_ratio=seg.compression_ratio,
            )
            for at, part in parts
            for seg in part.segments
        )
        elapsed = time.perf_counter() - t0
        if out.tokens >= max_new - 1:
            metrics.DECODE_CUT.labels(req.stream, "tokens").inc()
        if final and req.fallback and not fallback and _would_fall_back(list(segments), opts):
            metrics.DECODE_CUT.labels(req.stream, "fallback").inc()
        metrics.DECODES.labels(req.stream, req.kind).inc()
        metrics.DECODE_SECONDS.labels(req.kind).observe(elapsed)
        if req.duration > 0:
            metrics.DECODE_RTF.labels(req.kind).observe(elapsed / req.duration)
        return Hypothesis(
            kind=req.kind,
            window_start=off,
            window_end=off + req.duration,
            segments=segments,
            language=language,
            language_probability=lang_prob,
            decode_seconds=elapsed,
            info=DecodeInfo(
                encoder_seconds=(frames or whisper.N_FRAMES) / FRAMES_PER_SECOND,
                beam_size=req.beam_size,
                temperature=out.temperature,
                tokens=tokens,
                max_tokens=max_new,
                continued=rest_at is not None,
                retried_without_prompt=retried,
                no_speech_skip=out.skipped,
            ),
        )
