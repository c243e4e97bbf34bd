"""The model edge: one loaded faster-whisper model and one worker thread that runs its decodes.

Streams hand `DecodeRequest`s to `submit()` and get a Future. Finals go before partials in the
queue, since a final is what a viewer waits for and a partial that waits is simply replaced by a
newer one. CTranslate2 releases the GIL, so decoding in this thread does not hold up the stream
loops, the capture threads or the asyncio loop. Several streams can share one engine.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from streamer import metrics
from streamer.decode.hypothesis import Hypothesis, HypSegment, HypWord
from streamer.errors import UserError

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

    from streamer.config import Settings

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
_PRIORITY = {"final": 0, "partial": 1}


FRAMES_PER_SECOND = 100  # Whisper's log-mel frames


def _context_model_class() -> type:
    """faster-whisper's model with an encoder that can see less than the usual 30 s.

    Whisper pads every window to 30 s, and the encoder's cost is that of 30 s whatever the
    speech. For partials the engine keeps only max(`partial_context`, speech + 5 s) of it: measured
    on the English set, 15 s of context gives the same WER as 30 s (tiny.en 3.5 % vs 3.8 %) in
    half the time, while 10 s costs accuracy (5.8 %). Finals always get the full 30 s.
    """
    from faster_whisper import WhisperModel

    class ContextWhisperModel(WhisperModel):
        encode_frames: int | None = None

        def encode(self, features: np.ndarray) -> Any:
            n = self.encode_frames
            if n is not None and features.shape[-1] > n:
                features = np.ascontiguousarray(features[..., :n])
            return super().encode(features)

    return ContextWhisperModel


@dataclass
class DecodeRequest:
    kind: Literal["partial", "final"]
    audio: np.ndarray
    offset: float  # audio-clock time of audio[0]
    language: str | None = None
    languages: list[str] | None = None  # allow-list when the language is detected
    prompt: str | None = None
    word_timestamps: bool = True
    beam_size: int = 1
    stream: str = "main"
    context: float = 30.0  # seconds of encoder context at least (30 = Whisper's full window)

    @property
    def duration(self) -> float:
        return len(self.audio) / SAMPLE_RATE


@dataclass(frozen=True)
class DecodeOptions:
    task: str = "transcribe"
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4)
    no_speech_threshold: float = 0.6
    log_prob_threshold: float = -1.0
    compression_ratio_threshold: float = 2.4
    hotwords: str | None = None


class DecodeEngine:
    def __init__(
        self, model: WhisperModel, model_name: str, options: DecodeOptions, load_seconds: float = 0.0
    ):
        self.model = model
        self.model_name = model_name
        self.options = options
        self.load_seconds = load_seconds
        self.multilingual = bool(getattr(model.model, "is_multilingual", True))
        # Temperature fallback samples: a fixed seed makes a file give the same text every run.
        import ctranslate2

        ctranslate2.set_random_seed(0)
        self._queue: queue.PriorityQueue[tuple[int, int, DecodeRequest | None, Future[Hypothesis] | None]] = (
            queue.PriorityQueue()
        )
        self._counter = itertools.count()
        self._thread = threading.Thread(target=self._work, name="decode-worker", daemon=True)
        self._thread.start()

    @classmethod
    def from_settings(cls, settings: Settings) -> DecodeEngine:
        from streamer.models import compute_type_for, resolve_device, resolve_model

        cfg = settings.model
        resolved = resolve_model(cfg.name, cfg.cache_dir)
        device = resolve_device(cfg.device)
        compute_type = compute_type_for(device, cfg.compute_type)
        t0 = time.perf_counter()
        try:
            model = _context_model_class()(
                str(resolved.path), device=device, compute_type=compute_type, cpu_threads=cfg.cpu_threads
            )
        except (RuntimeError, ValueError, OSError) as e:
            raise UserError(f"cannot load model '{cfg.name}' from {resolved.path}: {e}") from None
        load = time.perf_counter() - t0
        log.info(
            "model %s (%s, %s on %s) loaded in %.2f s",
            resolved.name,
            resolved.origin,
            compute_type,
            device,
            load,
        )
        dec = settings.decoder
        opts = DecodeOptions(
            task=dec.task,
            temperatures=tuple(dec.temperatures) or (0.0,),
            no_speech_threshold=dec.no_speech_threshold,
            log_prob_threshold=dec.log_prob_threshold,
            compression_ratio_threshold=dec.compression_ratio_threshold,
            hotwords=dec.hotwords,
        )
        engine = cls(model, resolved.name, opts, load_seconds=load)
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
        fut: Future[Hypothesis] = Future()
        self._queue.put((_PRIORITY[request.kind], next(self._counter), request, fut))
        return fut

    def close(self) -> None:
        self._queue.put((99, next(self._counter), None, None))
        self._thread.join(timeout=30)

    def _work(self) -> None:
        while True:
            _, _, req, fut = self._queue.get()
            if req is None or fut is None:
                return
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(self.decode(req))
            except Exception as e:  # reported to the stream that asked
                log.exception("decode failed")
                fut.set_exception(e)

    # -- decoding ----------------------------------------------------------------------------

    def detect_language(self, audio: np.ndarray, allowed: list[str] | None) -> tuple[str, float]:
        if not self.multilingual:
            return "en", 1.0
        lang, prob, all_probs = self.model.detect_language(audio=audio)
        if allowed:
            ranked = [(code, p) for code, p in all_probs if code in allowed]
            if ranked:
                lang, prob = max(ranked, key=lambda cp: cp[1])
            else:
                lang, prob = allowed[0], 0.0
        return lang, float(prob)

    def decode(self, req: DecodeRequest) -> Hypothesis:
        t0 = time.perf_counter()
        opts = self.options
        if hasattr(self.model, "encode_frames"):
            frames = int(max(req.context, req.duration + 5.0) * FRAMES_PER_SECOND)
            self.model.encode_frames = frames if frames < 30 * FRAMES_PER_SECOND else None
        language = req.language
        lang_prob: float | None = None
        if language is None:
            language, lang_prob = self.detect_language(req.audio, req.languages)
        final = req.kind == "final"
        kwargs: dict[str, Any] = dict(
            language=language,
            task=opts.task if self.multilingual else "transcribe",
            beam_size=req.beam_size,
            best_of=req.beam_size if final else 1,
            # Partials are replaced half a second later: no temperature fallback for them.
            temperature=list(opts.temperatures) if final else [0.0],
            compression_ratio_threshold=opts.compression_ratio_threshold,
            log_prob_threshold=opts.log_prob_threshold,
            no_speech_threshold=opts.no_speech_threshold,
            condition_on_previous_text=False,
            initial_prompt=req.prompt or None,
            hotwords=opts.hotwords,
            word_timestamps=req.word_timestamps,
            without_timestamps=not req.word_timestamps,
            vad_filter=False,
        )
        segments_iter, _info = self.model.transcribe(req.audio, **kwargs)
        segments: list[HypSegment] = []
        off = req.offset
        for seg in segments_iter:
            words = tuple(
                HypWord(w.word, off + w.start, off + w.end, float(w.probability)) for w in (seg.words or [])
            )
            segments.append(
                HypSegment(
                    text=seg.text,
                    start=off + seg.start,
                    end=off + seg.end,
                    words=words,
                    avg_logprob=float(seg.avg_logprob),
                    no_speech_prob=float(seg.no_speech_prob),
                    compression_ratio=float(seg.compression_ratio),
                )
            )
        elapsed = time.perf_counter() - t0
        metrics.DECODES.labels(req.stream, req.kind).inc()
        metrics.DECODE_SECONDS.labels(req.kind).observe(elapsed)
        if req.duration > 0:
            metrics.DECODE_RTF.labels(req.kind).observe(elapsed / req.duration)
        return Hypothesis(
            kind=req.kind,
            window_start=off,
            window_end=off + req.duration,
            segments=tuple(segments),
            language=language,
            language_probability=lang_prob,
            decode_seconds=elapsed,
        )
