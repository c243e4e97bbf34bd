"""Benchmark metrics: pure functions over values, no I/O, no model, no clock.

Everything here is a function of (reference text, timestamped words, caption events) so that the
numbers `streamer bench` reports can be checked by hand on small, made-up sequences
(tests/test_bench_metrics.py).

Tokens. Texts are compared after the shared normalisation (streamer_bench/textnorm.py), applied word by
word so that every token keeps the time of the word it came from. Languages written without
spaces (textnorm.uses_cer) are compared character by character.

Alignment. `align` is a Levenshtein alignment whose back-trace, on ties, deletes trailing reference
tokens first. That pushes matches towards the *earliest* reference position, which is what a
prefix of the speech (a partial) should match: "the" shown after one second must not be credited to
a "the" spoken ten seconds later. Caption events are further aligned only against the reference
words that could have been heard by then (see `word_latencies`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal, Protocol

from rapidfuzz.distance import Levenshtein

from streamer_bench.textnorm import normalize, uses_cer

OpKind = Literal["equal", "substitute", "delete", "insert"]

# Seconds of slack around an event's audio span when choosing the reference words it may match.
# Word times from the offline pass are good to roughly a word; these only bound the search.
WINDOW_BEFORE = 1.0
WINDOW_AFTER = 0.3
# Seconds per reference token assumed when a run of unmatched tokens has no anchor on one side.
_FALLBACK_TOKEN_SECONDS = 0.3


class CaptionLike(Protocol):
    """What the metrics read from a Partial or Final (streamer/events.py)."""

    @property
    def type(self) -> str: ...
    @property
    def utterance(self) -> int: ...
    @property
    def text(self) -> str: ...
    @property
    def start(self) -> float: ...
    @property
    def end(self) -> float: ...
    @property
    def emitted_at(self) -> float: ...


@dataclass(frozen=True)
class TimedToken:
    text: str
    start: float
    end: float


@dataclass(frozen=True)
class RefWord:
    """One normalised reference token with its time on the audio clock.

    `source` says where the time came from: "match" (an identical hypothesis token), "substitute"
    (a different hypothesis token in the same place) or "interpolated" (no hypothesis token: spread
    evenly between the nearest timed neighbours).
    """

    text: str
    start: float
    end: float
    source: Literal["match", "substitute", "interpolated"]


# --------------------------------------------------------------------------- tokens


@lru_cache(maxsize=65536)
def _word_tokens(word: str, lang: str | None) -> tuple[str, ...]:
    norm = normalize(word, lang)
    if uses_cer(lang):
        return tuple(c for c in norm if c.isalnum())
    # The English normaliser leaves a lone "." from "books..."; a token without a letter or digit
    # is not a word anyone reads.
    return tuple(t for t in norm.split() if any(c.isalnum() for c in t))


def tokenize(text: str, lang: str | None = "en") -> list[str]:
    """Normalised tokens of `text`: words, or characters for languages without word spaces."""
    out: list[str] = []
    for word in text.split():
        out.extend(_word_tokens(word, lang))
    return out


def timed_tokens(words: Iterable[tuple[str, float, float]], lang: str | None = "en") -> list[TimedToken]:
    """Normalised tokens of timestamped words; a word that yields several tokens shares its span."""
    out: list[TimedToken] = []
    for text, start, end in words:
        toks = _word_tokens(text.strip(), lang)
        n = len(toks)
        for i, tok in enumerate(toks):
            # Characters of one CJK "word" (or "do" "not" of "don't") split the word's span evenly.
            t0 = start + (end - start) * i / n
            t1 = start + (end - start) * (i + 1) / n
            out.append(TimedToken(tok, t0, t1))
    return out


# --------------------------------------------------------------------------- alignment


def align(ref: Sequence[str], hyp: Sequence[str]) -> list[tuple[OpKind, int | None, int | None]]:
    """Minimal-edit alignment of two token lists as (op, ref index, hyp index), in order.

    Ties are broken towards matching the earliest reference tokens (see the module docstring).
    """
    n, m = len(ref), len(hyp)
    # dist[i][j]: edits to turn ref[:i] into hyp[:j].
    dist = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        dist[i][0] = i
    for j in range(1, m + 1):
        dist[0][j] = j
    for i in range(1, n + 1):
        row, prev = dist[i], dist[i - 1]
        r = ref[i - 1]
        for j in range(1, m + 1):
            diag = prev[j - 1] + (0 if r == hyp[j - 1] else 1)
            up = prev[j] + 1
            left = row[j - 1] + 1
            row[j] = min(diag, up, left)
    ops: list[tuple[OpKind, int | None, int | None]] = []
    i, j = n, m
    while i > 0 or j > 0:
        cur = dist[i][j]
        # Deleting trailing reference tokens first keeps matches as early as possible.
        if i > 0 and dist[i - 1][j] + 1 == cur:
            ops.append(("delete", i - 1, None))
            i -= 1
        elif i > 0 and j > 0 and ref[i - 1] == hyp[j - 1] and dist[i - 1][j - 1] == cur:
            ops.append(("equal", i - 1, j - 1))
            i, j = i - 1, j - 1
        elif i > 0 and j > 0 and dist[i - 1][j - 1] + 1 == cur:
            ops.append(("substitute", i - 1, j - 1))
            i, j = i - 1, j - 1
        else:
            ops.append(("insert", None, j - 1))
            j -= 1
    ops.reverse()
    return ops


def edit_counts(ops: Iterable[tuple[OpKind, int | None, int | None]]) -> dict[str, int]:
    counts = {"equal": 0, "substitute": 0, "delete": 0, "insert": 0}
    for op, _, _ in ops:
        counts[op] += 1
    return counts


def align_reference(
    reference_text: str,
    hyp_words: Sequence[tuple[str, float, float]],
    lang: str | None = "en",
    duration: float | None = None,
) -> list[RefWord]:
    """Give every reference token a time, taken from the aligned timestamped hypothesis words.

    Reference tokens aligned to a hypothesis token (same or substituted) take its span; the others
    are spread evenly between their timed neighbours (or over `duration` if nothing aligned).
    """
    ref = tokenize(reference_text, lang)
    hyp = timed_tokens(hyp_words, lang)
    ops = align(ref, [t.text for t in hyp])
    spans: list[tuple[float, float, str] | None] = [None] * len(ref)
    for op, i, j in ops:
        if i is not None and j is not None:
            spans[i] = (hyp[j].start, hyp[j].end, "match" if op == "equal" else "substitute")
    total = duration if duration is not None else (hyp[-1].end if hyp else len(ref) * _FALLBACK_TOKEN_SECONDS)
    out: list[RefWord] = []
    k = 0
    while k < len(ref):
        span = spans[k]
        if span is not None:
            out.append(RefWord(ref[k], span[0], span[1], span[2]))  # type: ignore[arg-type]
            k += 1
            continue
        run_end = k
        while run_end < len(ref) and spans[run_end] is None:
            run_end += 1
        count = run_end - k
        prev_span = spans[k - 1] if k > 0 else None
        next_span = spans[run_end] if run_end < len(ref) else None
        if prev_span is None and next_span is None:
            lo, hi = 0.0, total
        elif prev_span is None:
            assert next_span is not None
            hi = next_span[0]
            lo = max(0.0, hi - count * _FALLBACK_TOKEN_SECONDS)
        elif next_span is None:
            lo = prev_span[1]
            hi = max(lo, min(total, lo + count * _FALLBACK_TOKEN_SECONDS))
        else:
            lo, hi = prev_span[1], max(prev_span[1], next_span[0])
        for q in range(count):
            t0 = lo + (hi - lo) * q / count
            t1 = lo + (hi - lo) * (q + 1) / count
            out.append(RefWord(ref[k + q], t0, t1, "interpolated"))
        k = run_end
    return out


# --------------------------------------------------------------------------- latency


@dataclass
class WordTiming:
    """When one reference token was first shown correctly and when it became part of a final."""

    ref: RefWord
    first_at: float | None = None
    final_at: float | None = None

    @property
    def first_latency(self) -> float | None:
        return None if self.first_at is None else self.first_at - self.ref.end

    @property
    def final_latency(self) -> float | None:
        return None if self.final_at is None else self.final_at - self.ref.end


@dataclass(frozen=True)
class SpeechEndDelay:
    """One closed utterance: its end of speech on the audio clock and how late its last final was."""

    utterance: int
    speech_end: float
    delay: float


@dataclass
class LatencyResult:
    words: list[WordTiming]
    # Per utterance closed by a last final: emitted_at of that final minus the utterance's end of
    # speech (the end of the last reference word any of its finals got right).
    end_of_speech_points: list[SpeechEndDelay] = field(default_factory=list)
    # Hypothesis tokens in finals after the one aligned to the last reference token (invented tails).
    tail_insertions: int = 0

    @property
    def first_latencies(self) -> list[float]:
        return [w.first_latency for w in self.words if w.first_latency is not None]

    @property
    def final_latencies(self) -> list[float]:
        return [w.final_latency for w in self.words if w.final_latency is not None]

    @property
    def end_of_speech(self) -> list[float]:
        return [p.delay for p in self.end_of_speech_points]

    @property
    def missed_final(self) -> int:
        """Reference tokens that never appeared correctly in any final."""
        return sum(1 for w in self.words if w.final_at is None)


def _window(ref: Sequence[RefWord], start: float, until: float) -> tuple[int, int]:
    """Index range of reference tokens that may appear in an event covering [start, until]."""
    lo = 0
    while lo < len(ref) and ref[lo].end < start - WINDOW_BEFORE:
        lo += 1
    hi = lo
    while hi < len(ref) and ref[hi].start <= until + WINDOW_AFTER:
        hi += 1
    return lo, hi


def _is_last(ev: CaptionLike) -> bool:
    # Protocol 1 had one final per utterance and no `last`: every final closed its utterance.
    return bool(getattr(ev, "last", True))


def global_matches(ref: Sequence[str], hyp: Sequence[str]) -> tuple[list[tuple[int, int]], int]:
    """(reference index, hypothesis index) of the identical tokens of a minimal-edit alignment of
    the whole texts, and the number of hypothesis tokens after the last one aligned to a reference
    token (matched or substituted): insertions after the last reference word.

    Uses rapidfuzz (C++) rather than `align`: a 10-minute Korean stream is thousands of characters
    each way, too many for the pure-Python table; tie-breaking does not matter for whole texts.
    """
    pairs: list[tuple[int, int]] = []
    last_aligned = -1
    for op in Levenshtein.opcodes(list(ref), list(hyp)):
        if op.tag == "equal":
            pairs.extend(zip(range(op.src_start, op.src_end), range(op.dest_start, op.dest_end), strict=True))
        if op.tag in ("equal", "replace") and op.dest_end > op.dest_start:
            last_aligned = op.dest_end - 1
    return pairs, len(hyp) - 1 - last_aligned


def tail_insertions(reference_text: str, hyp_text: str, lang: str | None = "en") -> int:
    """Tokens of `hyp_text` after the last one aligned to a reference token ("See you later." after
    the last real words): what an invented farewell adds to the error count."""
    return global_matches(tokenize(reference_text, lang), tokenize(hyp_text, lang))[1]


def word_latencies(
    ref: Sequence[RefWord], events: Sequence[CaptionLike], lang: str | None = "en"
) -> LatencyResult:
    """First-appearance and final latency of each reference token, from caption events.

    Works for protocol 2 (several finals per utterance, partials carry only the unsettled tail)
    and protocol 1 (one final per utterance with its whole text) alike: every word a viewer sees
    for the first time is in the text of the event that introduced it (a partial's tail or a
    final's run), and every settled word is in exactly one final.

    First appearance: a token "appears correctly" in an event when the Levenshtein alignment of
    the event's text against the reference tokens that could have been heard by then (those
    overlapping [event.start - 1 s, event.emitted_at + 0.3 s]) pairs it with an identical token.

    Final: the texts of all finals, in emission order, are aligned with the whole reference (as
    WER aligns them); a token matched by an identical hypothesis token is final at the `emitted_at`
    of the final that holds that token. A match in a final emitted before the word was even spoken
    (impossible; a coincidence of repeated words) is not credited.

    Latency is `emitted_at` (audio clock) minus the token's reference end time, so decode time is
    included when the file is replayed at 1x. End of speech: per utterance that a last final
    closes, that final's `emitted_at` minus the end of the last reference token matched in any of
    the utterance's finals (the final's own `end` if none matched).
    """
    timings = [WordTiming(r) for r in ref]
    final_toks: list[str] = []
    final_of_tok: list[int] = []  # index into `finals` per hypothesis token
    finals: list[CaptionLike] = []
    for ev in events:
        if ev.type not in ("partial", "final"):
            continue
        toks = tokenize(ev.text, lang)
        if ev.type == "final":
            finals.append(ev)
            final_toks.extend(toks)
            final_of_tok.extend([len(finals) - 1] * len(toks))
        if not toks:
            continue
        lo, hi = _window(ref, ev.start, ev.emitted_at)
        if hi <= lo:
            continue
        ops = align([r.text for r in ref[lo:hi]], toks)
        for op, i, _ in ops:
            if op == "equal" and i is not None:
                t = timings[lo + i]
                if t.first_at is None or ev.emitted_at < t.first_at:
                    t.first_at = ev.emitted_at
    pairs, tail = global_matches([r.text for r in ref], final_toks)
    speech_end: dict[int, float] = {}  # utterance -> end of its last matched reference token
    for i, j in pairs:
        fin = finals[final_of_tok[j]]
        if fin.emitted_at + WINDOW_AFTER < ref[i].start:
            continue
        t = timings[i]
        t.final_at = fin.emitted_at
        # A word in a final has been shown, whether or not a partial showed it first.
        if t.first_at is None or fin.emitted_at < t.first_at:
            t.first_at = fin.emitted_at
        speech_end[fin.utterance] = max(speech_end.get(fin.utterance, -math.inf), ref[i].end)
    points = [
        SpeechEndDelay(
            f.utterance, speech_end.get(f.utterance, f.end), f.emitted_at - speech_end.get(f.utterance, f.end)
        )
        for f in finals
        if _is_last(f)
    ]
    return LatencyResult(timings, points, tail)


def lag_trend(
    points: Sequence[SpeechEndDelay], duration: float, span: float = 120.0
) -> dict[str, float | int | None]:
    """Does the delay of last finals grow over a long stream? Median delay of the utterances that
    ended in the first `span` seconds against those that ended in the last `span` seconds."""
    head = [p.delay for p in points if p.speech_end <= span]
    tail = [p.delay for p in points if p.speech_end >= duration - span]
    first, last = percentile(head, 50), percentile(tail, 50)
    return {
        "span_seconds": span,
        "first_n": len(head),
        "first_median": first,
        "last_n": len(tail),
        "last_median": last,
        "growth": None if first is None or last is None else last - first,
    }


# --------------------------------------------------------------------------- settling and flicker


@dataclass(frozen=True)
class Flicker:
    """Words revised after being shown, over words shown (a word shown again after a revision
    counts again)."""

    revised: int
    shown: int

    @property
    def rate(self) -> float | None:
        return self.revised / self.shown if self.shown else None


@dataclass(frozen=True)
class Settling:
    """What happened to displayed words.

    `revisions`: settled words (in a final, or in a partial's `stable` prefix) that later changed
    or disappeared from their utterance's display; must be 0. `tail`: flicker of the unsettled
    tail (unsettled words later changed / unsettled words shown). `display`: the same over every
    displayed word, settled or not.
    """

    revisions: int
    tail: Flicker
    display: Flicker


def _words(text: str, normalized: str | None) -> list[str]:
    return text.split() if normalized is None else tokenize(text, normalized)


@dataclass
class _Display:
    finals: list[str] = field(default_factory=list)  # words of the utterance's finals so far
    tail: list[str] = field(default_factory=list)  # words of its latest partial (after the finals)
    stable: int = 0  # how many words of `tail` the latest partial called settled
    shown: list[str] = field(default_factory=list)  # the display at the last display point
    settled: int = 0  # how many leading words of `shown` are settled


@dataclass(frozen=True)
class _Changes:
    old: list[int]  # indices of old words substituted or deleted, ascending
    new: list[int]  # indices of new words substituted or inserted
    inserted_before: list[int]  # per inserted word: the index of the old word it precedes


def _changes(old: Sequence[str], new: Sequence[str]) -> _Changes:
    out = _Changes([], [], [])
    pos = 0  # old words consumed so far
    for op, i, j in align(old, new):
        if op in ("substitute", "delete") and i is not None:
            out.old.append(i)
        if op in ("substitute", "insert") and j is not None:
            out.new.append(j)
        if op == "insert":
            out.inserted_before.append(pos)
        else:
            pos += 1
    return out


def settling(events: Sequence[CaptionLike], normalized: str | None = None) -> Settling:
    """Revisions of settled words and flicker, from the displays a client reconstructs.

    A client shows, per utterance, the concatenation of its finals so far followed by the text of
    its latest partial (protocol 2: the partial is the unsettled tail after the last final;
    protocol 1, one final per utterance, is the special case with no final before the last).
    Displays are compared at each partial and at each last final; a non-last final is always
    followed by a partial with the remaining tail, and comparing in between would count words
    that merely moved from the tail into a final.

    Between two consecutive displays, a minimal-edit alignment (after their common prefix) says
    which words of the old display were substituted or deleted: those within its settled prefix
    (its finals, plus the stable prefix of its partial, or more if settled earlier and unchanged)
    are revisions, as is a word inserted among them; the others are tail flicker. Substituted or
    inserted words of the new display beyond its settled prefix count as unsettled words shown.
    A word that only moved (because a word was inserted before it) has not changed.

    Words are as displayed (whitespace-split, punctuation and case included: "modern" becoming
    "modern." is a visible change); with `normalized` set to a language, normalised tokens are
    compared instead, which counts only changes of the words themselves.
    """
    state: dict[int, _Display] = {}
    revisions = tail_revised = tail_shown = revised = shown = 0
    for ev in events:
        if ev.type not in ("partial", "final"):
            continue
        d = state.setdefault(ev.utterance, _Display())
        words = _words(ev.text, normalized)
        if ev.type == "final":
            d.finals.extend(words)
            d.tail, d.stable = [], 0
            if not _is_last(ev):
                continue
        else:
            d.tail = words
            stable_words = _words(getattr(ev, "stable", "") or "", normalized)
            d.stable = min(len(stable_words), len(words))
        new = d.finals + d.tail
        old = d.shown
        settled_now = len(new) if ev.type == "final" else len(d.finals) + d.stable
        p = 0
        while p < len(old) and p < len(new) and old[p] == new[p]:
            p += 1
        # Past the common prefix (in a valid stream: only the unsettled tail), a minimal-edit
        # alignment says which words changed, went or came; a word that merely moved is not
        # counted, and the comparison stays short however long the utterance gets.
        changed = _changes(old[p:], new[p:])
        carried = d.settled if not changed.old else min(d.settled, p + changed.old[0])
        settled = max(settled_now, carried)
        for i in changed.old:
            revised += 1
            if p + i < d.settled:
                revisions += 1
            else:
                tail_revised += 1
        # A word inserted among settled words changes settled text too.
        revisions += sum(1 for i in changed.inserted_before if p + i < d.settled)
        for j in changed.new:
            shown += 1
            if p + j >= settled:
                tail_shown += 1
        d.shown, d.settled = new, min(settled, len(new))
    return Settling(revisions, Flicker(tail_revised, tail_shown), Flicker(revised, shown))


def flicker(events: Sequence[CaptionLike], normalized: str | None = None) -> Flicker:
    """Displayed words later revised / words shown, settled or not (see `settling`)."""
    return settling(events, normalized).display


# --------------------------------------------------------------------------- summaries


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default method); None for no values."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(values: Sequence[float]) -> dict[str, float | int | None]:
    """n, mean, median, p90, p99, max of `values` (None where there are no values)."""
    vals = [float(v) for v in values]
    return {
        "n": len(vals),
        "mean": sum(vals) / len(vals) if vals else None,
        "median": percentile(vals, 50),
        "p90": percentile(vals, 90),
        "p99": percentile(vals, 99),
        "max": max(vals) if vals else None,
    }


def reference_units(reference_text: str, lang: str | None) -> int:
    """Number of reference units (words, or characters for CER languages) an error rate divides by."""
    norm = normalize(reference_text, lang)
    return len(norm.replace(" ", "")) if uses_cer(lang) else len(norm.split())


def corpus_rate(rates: Iterable[tuple[float, int]]) -> float | None:
    """Corpus-level error rate from per-file (rate, reference units): total errors / total units."""
    errors = units = 0.0
    for rate, n in rates:
        errors += rate * n
        units += n
    return errors / units if units else None


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is zero (a ratio to a perfect baseline is undefined)."""
    if a is None or b is None or b == 0:
        return None
    return a / b


def count_words(texts: Iterable[str], lang: str | None = "en") -> int:
    """Normalised words (or characters) in `texts`: what a hallucination count counts."""
    return sum(len(tokenize(t, lang)) for t in texts)
