"""What one decode of a window produced, as plain values (times on the stream's audio clock)."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field, replace

# Languages written without spaces between words: a "word" is a character, as in Whisper's own
# word timestamps for them.
NO_SPACE_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "my", "km", "yue", "bo"})


_PUNCT = re.compile(r"[^\w']+", re.UNICODE)


def norm_word(word: str) -> str:
    """A word for comparison: case, width and punctuation removed ("Hello," == "hello")."""
    w = unicodedata.normalize("NFKC", word).lower().strip()
    return _PUNCT.sub("", w)


def split_words(text: str, lang: str | None) -> list[str]:
    """Words with Whisper's convention of a leading space, so that "".join(words) is the text."""
    if lang in NO_SPACE_LANGUAGES:
        return [ch for ch in text.strip() if not ch.isspace()]
    return [" " + w for w in text.split()]


def join_words(words: list[str]) -> str:
    return "".join(words).strip()


@dataclass(frozen=True)
class HypWord:
    text: str
    start: float
    end: float
    probability: float


@dataclass(frozen=True)
class HypSegment:
    text: str
    start: float
    end: float
    words: tuple[HypWord, ...] = ()
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    compression_ratio: float = 1.0

    def with_words(self, words: tuple[HypWord, ...]) -> HypSegment:
        text = "".join(w.text for w in words)
        if not words:
            return replace(self, words=(), text="")
        return replace(self, words=words, text=text, start=words[0].start, end=words[-1].end)

    def word_texts(self, lang: str | None) -> list[str]:
        if self.words:
            return [w.text for w in self.words]
        return split_words(self.text, lang)


@dataclass(frozen=True)
class DecodeInfo:
    """How a decode was run (for the decode trace and its summary)."""

    encoder_seconds: float  # encoder context (s of log-mel frames, padding included)
    beam_size: int
    temperature: float  # > 0: temperature fallback was used
    tokens: int
    max_tokens: int
    retried_without_prompt: bool = False
    no_speech_skip: bool = False
    continued: bool = False  # decoded once more from where the first output ended
    queue_wait: float = 0.0  # seconds between submit and start


@dataclass(frozen=True)
class Hypothesis:
    kind: str  # "partial" | "final"
    window_start: float
    window_end: float
    segments: tuple[HypSegment, ...]
    language: str | None = None
    language_probability: float | None = None
    decode_seconds: float = 0.0
    suppressed: dict[str, int] = field(default_factory=dict)
    info: DecodeInfo | None = None

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.segments).strip()

    @property
    def words(self) -> list[HypWord]:
        return [w for s in self.segments for w in s.words]

    @property
    def word_texts(self) -> list[str]:
        return [w for s in self.segments for w in s.word_texts(self.language)]
