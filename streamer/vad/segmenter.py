"""Turns per-frame speech probabilities into utterances. Pure: values in, values out, no I/O.

States::

    SILENCE --p>=on--> ONSET --speech for min_speech--> SPEECH --p<off--> TRAILING
       ^                 |                               ^  |                |
       +----p<off--------+                               |  +--p>=on---------+ (speech resumed)
       +---------------------- silence for end_silence ---------------------+ -> SpeechEnd

Hysteresis: an utterance opens on `threshold` and only counts silence below `neg_threshold`, so a
probability wobbling around one value neither opens nor closes utterances. Reported times include
`pad` seconds of context on both sides (Whisper does worse on audio cut right at the word edge).
An utterance that reaches `max_utterance` is split at the quietest frame of its last few seconds,
so the split lands in a pause rather than inside a word.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum

from streamer.options import setting

FRAME_SAMPLES = 512
SAMPLE_RATE = 16_000
FRAME_SECONDS = FRAME_SAMPLES / SAMPLE_RATE  # 32 ms

# How far back a forced split may look for a pause.
SPLIT_LOOKBACK = 5.0


@dataclass(frozen=True)
class SegmenterOptions:
    threshold: float = setting("vad.threshold", 0.5)
    neg_threshold: float | None = setting("vad.neg_threshold", None)
    min_speech: float = setting("vad.min_speech", 0.25)
    end_silence: float = setting("vad.end_silence", 0.5)
    pad: float = setting("vad.pad", 0.2)
    max_utterance: float = setting("vad.max_utterance", 30.0)
    frame_seconds: float = FRAME_SECONDS

    @property
    def off(self) -> float:
        if self.neg_threshold is not None:
            return self.neg_threshold
        return max(self.threshold - 0.15, 0.01)


@dataclass(frozen=True)
class SpeechStart:
    """An utterance opened; `start` is where its audio begins (padding included)."""

    start: float
    at: float  # audio-clock time at which the decision was made


@dataclass(frozen=True)
class SpeechEnd:
    """The open utterance closed; its audio is [start, end] (padding included)."""

    start: float
    end: float
    at: float
    forced: bool = False  # split because the utterance reached max_utterance


SegmentEvent = SpeechStart | SpeechEnd


class _State(Enum):
    SILENCE = "silence"
    ONSET = "onset"
    SPEECH = "speech"
    TRAILING = "trailing"


class Segmenter:
    def __init__(self, options: SegmenterOptions | None = None) -> None:
        self.opts = options or SegmenterOptions()
        self._state = _State.SILENCE
        self._onset_t = 0.0  # first frame of the candidate speech
        self._utt_start = 0.0  # padded start of the open utterance
        self._silence_t = 0.0  # first frame of the current trailing silence
        self._recent: deque[tuple[float, float]] = deque(
            maxlen=max(1, int(SPLIT_LOOKBACK / self.opts.frame_seconds))
        )
        self._last_end = 0.0  # padded end of the previous utterance (no overlap with it)
        self.speech_seconds = 0.0  # unpadded speech seen, for metrics

    @property
    def in_speech(self) -> bool:
        return self._state in (_State.SPEECH, _State.TRAILING)

    @property
    def pending_end(self) -> float | None:
        """While silence is running after speech: the end the utterance will have if the
        silence lasts (lets the pipeline decode the final before the VAD is sure)."""
        if self._state is _State.TRAILING:
            return self._silence_t + self.opts.pad
        return None

    @property
    def utterance_start(self) -> float | None:
        return self._utt_start if self.in_speech else None

    def feed(self, prob: float, t: float) -> list[SegmentEvent]:
        """One frame: `prob` of speech in the frame starting at audio time `t` (seconds)."""
        o = self.opts
        frame_end = t + o.frame_seconds
        out: list[SegmentEvent] = []
        st = self._state
        if st is _State.SILENCE:
            if prob >= o.threshold:
                self._onset_t = t
                self._state = _State.ONSET
                if o.min_speech <= o.frame_seconds:
                    out.append(self._open(frame_end))
        elif st is _State.ONSET:
            if prob < o.off:
                self._state = _State.SILENCE
            elif frame_end - self._onset_t >= o.min_speech:
                out.append(self._open(frame_end))
        elif st is _State.SPEECH:
            if prob < o.off:
                self._silence_t = t
                self._state = _State.TRAILING
        elif st is _State.TRAILING:
            if prob >= o.threshold:
                self.speech_seconds += t - self._silence_t
                self._state = _State.SPEECH
            elif frame_end - self._silence_t >= o.end_silence:
                out.append(self._close(self._silence_t, frame_end))
                return out
        if self.in_speech:
            self._recent.append((t, prob))
            if self._state is _State.SPEECH:
                self.speech_seconds += o.frame_seconds
            if frame_end - self._utt_start >= o.max_utterance:
                out.extend(self._split(frame_end))
        return out

    def flush(self, t: float) -> list[SegmentEvent]:
        """End of stream at audio time `t`: close an open utterance."""
        if not self.in_speech:
            self._state = _State.SILENCE
            return []
        speech_end = self._silence_t if self._state is _State.TRAILING else t
        return [self._close(speech_end, t, limit=t)]

    def _open(self, at: float) -> SpeechStart:
        self._state = _State.SPEECH
        self._utt_start = max(self._onset_t - self.opts.pad, self._last_end, 0.0)
        self._recent.clear()
        self.speech_seconds += at - self._onset_t - self.opts.frame_seconds
        return SpeechStart(start=self._utt_start, at=at)

    def _close(self, speech_end: float, at: float, limit: float | None = None) -> SpeechEnd:
        end = speech_end + self.opts.pad
        end = min(end, at if limit is None else limit)
        ev = SpeechEnd(start=self._utt_start, end=end, at=at)
        self._last_end = end
        self._state = _State.SILENCE
        self._recent.clear()
        return ev

    def _split(self, at: float) -> list[SegmentEvent]:
        # The quietest frame of the last few seconds; the latest one among equals, so the first
        # part is as long as possible. Skip the newest frames so the split is not at "now".
        candidates = list(self._recent)[:-3] or list(self._recent)
        split_t, _ = min(reversed(candidates), key=lambda tp: tp[1])
        split_t = max(split_t, self._utt_start + self.opts.frame_seconds)
        end = SpeechEnd(start=self._utt_start, end=split_t, at=at, forced=True)
        self._utt_start = split_t
        self._last_end = split_t
        self._recent.clear()
        # Speech goes on: the new utterance continues in the state the old one was in.
        if self._state is _State.TRAILING:
            self._silence_t = max(self._silence_t, split_t)
        return [end, SpeechStart(start=split_t, at=at)]
