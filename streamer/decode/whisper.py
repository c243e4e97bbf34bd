"""One decode of one window with faster-whisper's parts, called explicitly: the only module that
knows faster-whisper beyond its public `WhisperModel` constructor.

faster-whisper's `transcribe` is made for files: it pads every 30 s block to a full encoder pass,
detects the language with a second encoder pass, and after a window whose last segment is left
open it seeks and decodes the rest again, usually the silence after the speech, where Whisper
invents sign-offs ("뵙겠습니다.", "Thank you."). A streaming window is already cut to the speech,
so here each window gets exactly one encoder pass (its features truncated to the encoder context
the caller asks for, or a row of a batched pass, passed in as an argument), the language is read
from that same encoder output, and one generate call (with temperature fallback if asked) decodes
it; the text after the last timestamp is kept as the window's last segment instead of being
decoded again. Segmentation into timed segments and word alignment are faster-whisper's own
(`_split_segments_by_timestamps`, `add_word_timestamps`, `generate_with_fallback`,
`get_prompt`), pinned by the version range in pyproject.toml and covered by the tests that decode
real audio.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ctranslate2
import numpy as np
from faster_whisper.audio import pad_or_trim
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import TranscriptionOptions, WhisperModel, get_suppressed_tokens

N_FRAMES = 3000  # Whisper's 30 s window in log-mel frames
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"


@dataclass(frozen=True)
class WordOut:
    word: str
    start: float  # seconds from the window start
    end: float
    probability: float


@dataclass(frozen=True)
class SegmentOut:
    text: str
    start: float
    end: float
    words: tuple[WordOut, ...]
    tokens: int
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float


@dataclass(frozen=True)
class WindowOut:
    segments: tuple[SegmentOut, ...]
    language: str
    language_probability: float
    temperature: float  # the temperature whose result was kept (> 0: fallback was used)
    tokens: int  # tokens generated
    skipped: bool  # Whisper's no-speech rule dropped the window


def features(model: WhisperModel, audio: np.ndarray, frames: int | None) -> np.ndarray:
    """The log-mel block of a window: its content frames (the last one is padding), zero-padded
    to 30 s and cut to `frames` (None: the full 30 s)."""
    mel = model.feature_extractor(audio)
    block = pad_or_trim(mel[:, : min(N_FRAMES, mel.shape[-1] - 1)])
    if frames is not None:
        block = block[:, :frames]
    return np.ascontiguousarray(block)


def encode(model: WhisperModel, blocks: np.ndarray, to_cpu: bool = False) -> Any:
    """Encoder output of one block (n_mels, T) or a batch of them (B, n_mels, T); `to_cpu`: on the
    host (rows of a batch are split there; a no-op on CPU)."""
    if blocks.ndim == 2:
        blocks = blocks[None]
    # Several GPUs: the output must be on the host, since another GPU may run the decode.
    to_cpu = to_cpu or (model.model.device == "cuda" and len(model.model.device_index) > 1)
    return model.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(blocks)), to_cpu=to_cpu)


def language_probabilities(model: WhisperModel, encoder_output: Any) -> list[tuple[str, float]]:
    """Every language's probability for the window, most likely first."""
    results = model.model.detect_language(encoder_output)[0]
    return [(token[2:-2], float(p)) for token, p in results]


def decode(
    model: WhisperModel,
    encoder_output: Any,
    content_frames: int,
    *,
    language: str,
    language_probability: float,
    task: str,
    prompt: str | None,
    hotwords: str | None,
    beam_size: int,
    temperatures: tuple[float, ...],
    compression_ratio_threshold: float,
    log_prob_threshold: float,
    no_speech_threshold: float,
    max_new_tokens: int,
    word_timestamps: bool = True,
) -> WindowOut:
    """Decode one encoded window of `content_frames` log-mel frames of real audio."""
    multilingual = bool(model.model.is_multilingual)
    tokenizer = Tokenizer(
        model.hf_tokenizer, multilingual, task=task if multilingual else "transcribe", language=language
    )
    options = TranscriptionOptions(
        beam_size=beam_size,
        best_of=beam_size,
        patience=1.0,
        length_penalty=1.0,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        log_prob_threshold=log_prob_threshold,
        no_speech_threshold=no_speech_threshold,
        compression_ratio_threshold=compression_ratio_threshold,
        condition_on_previous_text=False,
        prompt_reset_on_temperature=0.5,
        temperatures=list(temperatures),
        initial_prompt=None,
        prefix=None,
        suppress_blank=True,
        suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
        without_timestamps=False,
        max_initial_timestamp=1.0,
        word_timestamps=word_timestamps,
        prepend_punctuations=PREPEND_PUNCTUATIONS,
        append_punctuations=APPEND_PUNCTUATIONS,
        multilingual=False,
        max_new_tokens=max_new_tokens,
        clip_timestamps=[0.0],
        hallucination_silence_threshold=None,
        hotwords=hotwords,
    )
    previous = tokenizer.encode(" " + prompt.strip()) if prompt and prompt.strip() else []
    prompt_tokens = model.get_prompt(tokenizer, previous, without_timestamps=False, hotwords=hotwords)
    result, avg_logprob, temperature, compression_ratio = model.generate_with_fallback(
        encoder_output, prompt_tokens, tokenizer, options
    )
    tokens = list(result.sequences_ids[0])
    out = WindowOut((), language, language_probability, float(temperature), len(tokens), skipped=False)
    # Whisper's own rule for a window with no speech (as in transcribe).
    if result.no_speech_prob > no_speech_threshold and avg_logprob < log_prob_threshold:
        return WindowOut((), language, language_probability, float(temperature), len(tokens), skipped=True)
    frame_seconds = model.feature_extractor.time_per_frame
    duration = content_frames * frame_seconds
    if tokens and tokens[-1] < tokenizer.timestamp_begin:
        # The last segment is open (no closing timestamp): close it at the end of the audio, so
        # it is kept as this window's last segment rather than decoded again.
        end_index = round(duration / model.time_precision)
        tokens.append(tokenizer.timestamp_begin + min(end_index, 1500))
    raw_segments, _seek, _single = model._split_segments_by_timestamps(
        tokenizer=tokenizer,
        tokens=tokens,
        time_offset=0.0,
        segment_size=content_frames,
        segment_duration=duration,
        seek=0,
    )
    if word_timestamps and raw_segments:
        model.add_word_timestamps(
            [raw_segments],
            tokenizer,
            encoder_output,
            content_frames,
            PREPEND_PUNCTUATIONS,
            APPEND_PUNCTUATIONS,
            last_speech_timestamp=0.0,
        )
    segments = []
    for seg in raw_segments:
        text = tokenizer.decode(seg["tokens"])
        if seg["start"] == seg["end"] or not text.strip():
            continue
        words = tuple(
            WordOut(w["word"], float(w["start"]), float(w["end"]), float(w["probability"]))
            for w in seg.get("words") or []
        )
        segments.append(
            SegmentOut(
                text=text,
                start=float(seg["start"]),
                end=float(seg["end"]),
                words=words,
                tokens=len(seg["tokens"]),
                avg_logprob=float(avg_logprob),
                no_speech_prob=float(result.no_speech_prob),
                compression_ratio=float(compression_ratio),
            )
        )
    return WindowOut(tuple(segments), language, language_probability, out.temperature, out.tokens, False)
