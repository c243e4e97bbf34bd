"""Hallucination suppression. Pure: segments in, segments out, with a count per filter.

Whisper invents text when it hears no speech ("Thank you for watching", "시청해주셔서 감사합니다",
a word repeated forty times). The first layer is upstream: only VAD speech is decoded. These are
the layers after it, each switchable (FilterConfig) and each counted under its name:

- ``no_speech``: Whisper's own no-speech probability is high *and* the text is improbable (the
  rule faster-whisper uses to skip silent windows).
- ``compression``: the text compresses too well (gzip ratio above the threshold): a loop.
- ``low_confidence``: the words' mean probability is very low: noise read as words.
- ``repetition``: a phrase repeated three or more times in a row is collapsed to one.
- ``outside_speech``: words whose timestamps lie outside the VAD speech region.
- ``phrases``: an utterance made only of a known invented phrase (per-language lists kept as data
  in streamer/data/hallucinations/; "?"-lines only when the decode was not confident).
- ``tail``: a known phrase tacked onto the end of real speech ("... than he was. Thank you very
  much."), recognisable by its words having no duration or a first word Whisper barely believed.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources

from streamer.decode.hypothesis import HypSegment, HypWord, split_words
from streamer.options import setting

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)

# A tail phrase is invented when its words take (almost) no time, or its first word is this unlikely.
_TAIL_MAX_MEAN_DURATION = 0.08
_TAIL_MAX_FIRST_PROBABILITY = 0.2
# A detected language this unlikely is a guess (no speech, or speech too short to tell).
_UNSURE_LANGUAGE = 0.5


@dataclass(frozen=True)
class FilterOptions:
    no_speech: bool = setting("filters.no_speech", True)
    compression: bool = setting("filters.compression", True)
    repetition: bool = setting("filters.repetition", True)
    phrases: bool = setting("filters.phrases", True)
    outside_speech: bool = setting("filters.outside_speech", True)
    low_confidence: bool = setting("filters.low_confidence", True)
    # The decoder's thresholds, which the filters reuse.
    no_speech_threshold: float = setting("decoder.no_speech_threshold", 0.6)
    log_prob_threshold: float = setting("decoder.log_prob_threshold", -1.0)
    compression_ratio_threshold: float = setting("decoder.compression_ratio_threshold", 2.4)
    min_word_probability: float = setting("filters.min_word_probability", 0.15)
    # A "?" phrase is kept when the decode was at least this sure of its words.
    confident_word_probability: float = 0.75
    # Tolerance for word timestamps at the edges of the speech region (Whisper's are coarse).
    edge_tolerance: float = 0.3

    @classmethod
    def off(cls) -> FilterOptions:
        return cls(False, False, False, False, False, False)


def phrase_key(text: str) -> str:
    """Case, punctuation, symbols and spaces removed: 'Thank you!' == 'thankyou'."""
    return _NON_WORD.sub("", unicodedata.normalize("NFKC", text).casefold())


@dataclass(frozen=True)
class PhraseList:
    always: frozenset[str]
    unless_confident: frozenset[str]
    # "~" lines: a pattern over the phrase key, for phrases with a varying part (a newsreader's
    # name in "MBC 뉴스 김혜입니다"); always invented.
    patterns: tuple[re.Pattern[str], ...] = ()

    def is_always(self, key: str) -> bool:
        return key in self.always or any(p.fullmatch(key) for p in self.patterns)

    def is_known(self, key: str) -> bool:
        return self.is_always(key) or key in self.unless_confident


@cache
def phrase_list(lang: str | None) -> PhraseList:
    always: set[str] = set()
    maybe: set[str] = set()
    patterns: list[re.Pattern[str]] = []
    names = ["multi.txt", "en.txt"]  # English ones are what every model falls back to
    if lang and lang != "en":
        names.append(f"{lang}.txt")
    root = resources.files("streamer") / "data" / "hallucinations"
    for name in names:
        res = root / name
        if not res.is_file():
            continue
        for raw in res.read_text(encoding="utf-8").splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("?"):
                maybe.add(phrase_key(line[1:]))
            elif line.startswith("~"):
                patterns.append(re.compile(line[1:].strip()))
            else:
                always.add(phrase_key(line))
    always.discard("")
    maybe.discard("")
    return PhraseList(frozenset(always), frozenset(maybe), tuple(patterns))


def collapse_repetitions(
    words: list[str], min_repeats: int = 3, max_ngram: int = 8
) -> tuple[list[int], bool]:
    """Indices of the words to keep after collapsing runs of a repeated n-gram to one copy."""
    keys = [phrase_key(w) for w in words]
    keep = list(range(len(words)))
    changed = False
    n = 1
    while n <= max_ngram:
        i = 0
        out: list[int] = []
        cur = [keys[k] for k in keep]
        found = False
        while i < len(keep):
            gram = cur[i : i + n]
            reps = 1
            if len(gram) == n and any(gram):
                while cur[i + reps * n : i + (reps + 1) * n] == gram:
                    reps += 1
            if reps >= min_repeats:
                out.extend(keep[i : i + n])
                i += reps * n
                found = True
            else:
                out.append(keep[i])
                i += 1
        if found:
            keep = out
            changed = True
        n += 1
    return keep, changed


def _mean_duration(words: tuple[HypWord, ...] | list[HypWord]) -> float:
    return sum(w.end - w.start for w in words) / len(words) if words else 0.0


def _mean_probability(words: Iterable[HypWord]) -> float | None:
    probs = [w.probability for w in words]
    return sum(probs) / len(probs) if probs else None


def filter_segments(
    segments: Iterable[HypSegment],
    opts: FilterOptions,
    lang: str | None = None,
    speech: tuple[float, float] | None = None,
    lang_probability: float | None = None,
) -> tuple[list[HypSegment], Counter[str]]:
    """Apply the per-segment layers; returns the kept (possibly trimmed) segments and counts.

    `lang_probability`: how sure the language detection of this decode was (None: the language
    was given). Whisper's no-speech rule also holds when the text is confident but the language
    was a guess: on music it writes "1-2-3-4-4-4" sure of itself, in a language it gave 26 %.
    """
    counts: Counter[str] = Counter()
    kept: list[HypSegment] = []
    unsure_language = lang_probability is not None and lang_probability < _UNSURE_LANGUAGE
    for seg in segments:
        if opts.no_speech and (
            seg.no_speech_prob > opts.no_speech_threshold
            and (seg.avg_logprob < opts.log_prob_threshold or unsure_language)
        ):
            counts["no_speech"] += 1
            continue
        if opts.compression and seg.compression_ratio > opts.compression_ratio_threshold:
            counts["compression"] += 1
            continue
        if opts.low_confidence:
            mean = _mean_probability(seg.words)
            if mean is not None and mean < opts.min_word_probability:
                counts["low_confidence"] += 1
                continue
        if opts.phrases and len(seg.words) >= 2 and _mean_duration(seg.words) <= _TAIL_MAX_MEAN_DURATION:
            # Words that take no time are not in the audio: Whisper went on writing after the
            # speech ("We'll see you in the next one." squeezed into the last frame).
            counts["tail"] += len(seg.words)
            continue
        if opts.outside_speech and speech is not None and seg.words:
            lo, hi = speech[0] - opts.edge_tolerance, speech[1] + opts.edge_tolerance
            inside = tuple(w for w in seg.words if w.end > lo and w.start < hi)
            if len(inside) != len(seg.words):
                counts["outside_speech"] += len(seg.words) - len(inside)
                seg = seg.with_words(inside)
                if not inside:
                    continue
        if opts.repetition:
            texts = [w.text for w in seg.words] if seg.words else split_words(seg.text, lang)
            idx, changed = collapse_repetitions(texts)
            if changed:
                counts["repetition"] += 1
                if seg.words:
                    seg = seg.with_words(tuple(seg.words[i] for i in idx))
                else:
                    seg = HypSegment(
                        text="".join(texts[i] for i in idx),
                        start=seg.start,
                        end=seg.end,
                        avg_logprob=seg.avg_logprob,
                        no_speech_prob=seg.no_speech_prob,
                        compression_ratio=seg.compression_ratio,
                    )
        if not phrase_key(seg.text):
            continue  # nothing but symbols ("♪", "...")
        kept.append(seg)
    return kept, counts


def is_invented_phrase(
    text: str,
    lang: str | None,
    opts: FilterOptions,
    mean_word_probability: float | None,
    no_speech_prob: float,
) -> bool:
    """Whether a whole utterance is nothing but a known invented phrase."""
    if not opts.phrases:
        return False
    key = phrase_key(text)
    if not key:
        return True
    phrases = phrase_list(lang)
    if phrases.is_always(key):
        return True
    if key in phrases.unless_confident:
        confident = (
            mean_word_probability is not None
            and mean_word_probability >= opts.confident_word_probability
            and no_speech_prob < 0.3
        )
        return not confident
    return False


def trim_invented_tail(
    words: list[HypWord], lang: str | None, opts: FilterOptions
) -> tuple[list[HypWord], int]:
    """Drop a known invented phrase from the end of an utterance; returns (words, dropped)."""
    if not opts.phrases or len(words) < 2:
        return words, 0
    # Any run of two or more words at the end that takes no time was written, not heard.
    squeezed_run = 0
    while (
        squeezed_run < len(words) - 1 and words[-1 - squeezed_run].end - words[-1 - squeezed_run].start < 0.02
    ):
        squeezed_run += 1
    if squeezed_run >= 2:
        kept, more = trim_invented_tail(words[:-squeezed_run], lang, opts)
        return kept, squeezed_run + more
    # A tail made mostly of words that take no time ("... himself. See you in the next video.
    # Bye.", where only "Bye." got a tenth of a second) was written, not heard, either.
    for i in range(max(len(words) - 12, 1), len(words) - 2):
        tail = words[i:]
        squeezed_n = sum(1 for w in tail if w.end - w.start < 0.02)
        if squeezed_n >= 3 and squeezed_n >= 0.6 * len(tail) and tail[0].end - tail[0].start < 0.02:
            return words[:i], len(tail)
    phrases = phrase_list(lang)
    for n in range(min(8, len(words) - 1), 0, -1):
        tail = words[-n:]
        key = phrase_key("".join(w.text for w in tail))
        if not phrases.is_known(key):
            continue
        if any(p.fullmatch(key) for p in phrases.patterns):
            return words[:-n], n  # a news sign-off with a name is never real speech in a caption
        mean_duration = sum(w.end - w.start for w in tail) / n
        mean_probability = sum(w.probability for w in tail) / n
        squeezed = (
            mean_duration <= _TAIL_MAX_MEAN_DURATION or tail[0].probability <= _TAIL_MAX_FIRST_PROBABILITY
        )
        # A phrase that is also said for real ("thank you") needs Whisper to have been sure of
        # it, unless it is a single word, where that would catch too much ("... tell you").
        unsure = n > 1 and mean_probability < opts.confident_word_probability
        if squeezed or unsure:
            return words[:-n], n
    return words, 0
