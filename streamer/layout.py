"""Caption layout, decided once: line breaking and display timing (pure, no I/O).

Used by the SRT/WebVTT writers (`streamer.sinks.formats`), the OBS bridge and, through a small
JavaScript port (`clients/web/layout.js`), by the overlay and display pages. The rules follow
common broadcast subtitle guidelines (BBC, EBU, Netflix timed-text style guides):

- at most `max_chars` (42) columns per line, East Asian wide characters (Hangul, Han, kana,
  fullwidth forms: `unicodedata.east_asian_width` W/F) counting as 2 columns, combining marks as 0;
- at most `max_lines` (2) lines per caption; text that fits one line stays on one line;
- breaks fall at clause and phrase boundaries rather than mid-phrase: after sentence and clause
  punctuation, before conjunctions, prepositions, articles and determiners, never right after an
  article or preposition (English); for Korean, at word spaces after connective endings and
  particles; for Chinese and Japanese (no spaces) between characters, never before closing
  punctuation;
- two-line captions are balanced (lines of similar width) unless a much better break is nearby;
- a caption stays up long enough to be read: `width / max_cps` seconds (17 columns/s; wide
  characters count double, so about 8.5 Hangul or Han characters/s), at least `min_duration`,
  at most `max_duration` (longer speech is split into more captions), and never overlapping the
  next caption.

Why our own code: the line-breaking libraries on PyPI (`textwrap`, `uniseg`, `pysbd`) break greedily
or only find break *opportunities*; none choose phrase boundaries with balanced lines and
caption timing, which is the whole point here. The algorithm is a small dynamic programme over
break costs, the approach of Knuth-Plass line breaking, sized for two-line captions.
"""

from __future__ import annotations

import itertools
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

__all__ = [
    "Cue",
    "Layout",
    "cues_from_words",
    "last_lines",
    "roll_lines",
    "text_width",
    "wrap",
]


@dataclass(frozen=True)
class Layout:
    """The layout rules (config section `[layout]`)."""

    max_chars: int = 42
    max_lines: int = 2
    max_cps: float = 17.0
    min_duration: float = 1.0
    max_duration: float = 7.0


DEFAULT = Layout()


@dataclass(frozen=True)
class Cue:
    """One caption on screen from `start` to `end` (seconds, same clock as the words)."""

    start: float
    end: float
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


class TimedWord(Protocol):
    """What `cues_from_words` needs of a word (streamer.events.Word has it)."""

    @property
    def word(self) -> str: ...
    @property
    def start(self) -> float: ...
    @property
    def end(self) -> float: ...


# --- widths -------------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _char_width(ch: str) -> int:
    if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def text_width(s: str) -> int:
    """Columns `s` takes on screen: wide (Korean, Chinese, Japanese) characters count 2."""
    return sum(_char_width(ch) for ch in s)


# --- tokens -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Token:
    text: str
    space: bool  # a space separates it from the previous token
    width: int


def _is_hangul(ch: str) -> bool:
    o = ord(ch)
    return 0xAC00 <= o <= 0xD7A3 or 0x1100 <= o <= 0x11FF or 0x3130 <= o <= 0x318F


def _breakable_wide(ch: str) -> bool:
    """Chinese and Japanese are written without spaces: a line may break between these characters."""
    return unicodedata.east_asian_width(ch) in ("W", "F") and not _is_hangul(ch)


# Kinsoku: characters that must not start a line (closing punctuation, small kana, prolonged sound
# mark) and characters that must not end one (opening brackets).
_NO_LINE_START = set(
    "、。，．！？：；）」』】〕〉》〙〗’”…ー・ぁぃぅぇぉっゃゅょゎァィゥェォッャュョヮヵヶ!?,.:;)]}%"
)
_NO_LINE_END = set("（「『【〔〈《〘〖‘“([{")


def _split_word(word: str) -> list[str]:
    """A space-delimited word, cut where a line may break inside it (between CJK characters)."""
    pieces: list[str] = []
    for ch in word:
        if (
            pieces
            and (_breakable_wide(ch) or _breakable_wide(pieces[-1][-1]))
            and ch not in _NO_LINE_START
            and pieces[-1][-1] not in _NO_LINE_END
        ):
            pieces.append(ch)
        elif pieces:
            pieces[-1] += ch
        else:
            pieces.append(ch)
    return pieces


def _tokens(text: str) -> list[_Token]:
    out: list[_Token] = []
    for word in text.split():
        for i, piece in enumerate(_split_word(word)):
            out.append(_Token(piece, i == 0 and bool(out), text_width(piece)))
    return out


def _join(tokens: Sequence[_Token]) -> str:
    return "".join((" " if t.space and i else "") + t.text for i, t in enumerate(tokens))


class _Widths:
    """Prefix sums so the width of any run of tokens is O(1)."""

    def __init__(self, tokens: Sequence[_Token]) -> None:
        self.tokens = tokens
        self.cum = [0]
        for t in tokens:
            self.cum.append(self.cum[-1] + t.width + (1 if t.space else 0))

    def span(self, i: int, j: int) -> int:
        """Columns of tokens[i:j] on one line (the space before tokens[i] not counted)."""
        return self.cum[j] - self.cum[i] - (1 if self.tokens[i].space else 0)

    def fits(self, i: int, j: int, max_chars: int) -> bool:
        return j - i == 1 or self.span(i, j) <= max_chars


# --- where a break is good -------------------------------------------------------------------------

_SENTENCE_END = set(".!?…。！？")
_CLAUSE_END = set(",;:—–、，；：")
_CLOSERS = "\"'”’)]}」』）»"
_ABBREVIATIONS = {
    "mr.", "mrs.", "ms.", "dr.", "st.", "prof.", "vs.", "etc.", "e.g.", "i.e.", "no.", "jr.", "sr.",
}  # fmt: skip

# A line may start with these (break before them): conjunctions and relative words start a clause,
# prepositions, articles and determiners a phrase.
_EN_CONJUNCTIONS = {
    "and", "but", "or", "nor", "so", "yet", "because", "although", "though", "while", "whereas",
    "if", "unless", "until", "when", "whenever", "where", "wherever", "since", "that", "which",
    "who", "whom", "whose", "what", "then", "than", "how", "why", "whether",
}  # fmt: skip
_EN_PHRASE_STARTS = {
    "of", "in", "on", "at", "to", "for", "with", "from", "by", "about", "into", "onto", "over",
    "under", "between", "through", "during", "without", "within", "against", "among", "across",
    "around", "behind", "beyond", "toward", "towards", "upon", "like", "per", "via", "near", "as",
    "after", "before",
    "a", "an", "the", "this", "these", "those", "my", "your", "his", "her", "its", "our", "their",
    "some", "any", "every", "each", "no", "all", "both",
}  # fmt: skip
# ... but a line should not end with these (they belong to what follows).
_EN_NO_BREAK_AFTER = {
    "a", "an", "the", "this", "these", "those", "my", "your", "his", "her", "its", "our", "their",
    "of", "in", "on", "at", "to", "for", "with", "from", "by", "into", "onto", "and", "but", "or",
    "mr.", "mrs.", "ms.", "dr.", "st.", "prof.", "very", "not", "i", "we", "you", "they", "he", "she",
}  # fmt: skip

# Korean: a word ending in a connective ending closes a clause; one ending in a particle closes a
# phrase. (Without a morphological analyser "는"/"은" can also be an adnominal ending; the cost
# difference is small on purpose.)
_KO_CONNECTIVE = (
    "지만", "는데", "은데", "니까", "면서", "거나", "든지", "아서", "어서", "려고", "도록",
    "다가", "으며", "으면", "라서", "므로", "고", "며", "면", "서", "나", "니", "요", "다",
)  # fmt: skip
_KO_PARTICLE = (
    "에서", "에게", "한테", "께서", "으로", "까지", "부터", "처럼", "보다", "마다", "이나",
    "은", "는", "이", "가", "을", "를", "에", "와", "과", "로", "도", "만", "의",
)  # fmt: skip

_COST_SENTENCE = 0.0
_COST_CLAUSE = 1.0
_COST_CONJUNCTION = 1.5
_COST_PHRASE = 3.0
_COST_KO_PARTICLE = 3.0
_COST_PLAIN = 5.0
_COST_CJK = 4.0
_COST_BAD = 9.0


def _bare(text: str) -> str:
    return text.rstrip(_CLOSERS)


def _break_cost(prev: _Token, nxt: _Token) -> float:
    """How bad it is to end a line (or caption) after `prev`, with `nxt` starting the next one."""
    bare = _bare(prev.text)
    last = bare[-1:] if bare else ""
    if last in _SENTENCE_END and bare.lower() not in _ABBREVIATIONS:
        return _COST_SENTENCE
    if last in _CLAUSE_END:
        return _COST_CLAUSE
    if not nxt.space:  # inside a run of Chinese / Japanese characters
        return _COST_CJK
    low = bare.lower()
    if low in _EN_NO_BREAK_AFTER or low in _ABBREVIATIONS:
        return _COST_BAD
    following = nxt.text.lower().strip("\"'“‘(")
    if following in _EN_CONJUNCTIONS:
        return _COST_CONJUNCTION
    if following in _EN_PHRASE_STARTS:
        return _COST_PHRASE
    if bare and _is_hangul(bare[-1]):
        if bare.endswith(_KO_CONNECTIVE):
            return _COST_CONJUNCTION
        if bare.endswith(_KO_PARTICLE):
            return _COST_KO_PARTICLE
    return _COST_PLAIN


# --- one caption into lines ----------------------------------------------------------------------

_BALANCE_WEIGHT = 6.0
_CAPTION_COST = 10.0  # each caption costs this much: fewer, fuller captions unless a break is much better
_CAPTION_BREAK_WEIGHT = 3.0  # ending a caption mid-phrase is worse than a line break mid-phrase


def _best_lines(
    ws: _Widths, i: int, j: int, max_chars: int, max_lines: int, costs: Sequence[float]
) -> tuple[float, list[int]] | None:
    """Best split of tokens[i:j] into at most `max_lines` lines: (cost, line start indices)."""
    if ws.fits(i, j, max_chars):
        return 0.0, [i]
    if max_lines < 2:
        return None
    best: tuple[float, list[int]] | None = None

    def search(start: int, starts: list[int], cost: float) -> None:
        nonlocal best
        if len(starts) == max_lines - 1 or ws.fits(start, j, max_chars):
            if not ws.fits(start, j, max_chars):
                return
            all_starts = [*starts, start]
            widths = [ws.span(a, b) for a, b in itertools.pairwise([*all_starts, j])]
            spread = (max(widths) - min(widths)) / max_chars
            total = cost + _BALANCE_WEIGHT * spread * spread
            if best is None or total < best[0]:
                best = (total, all_starts)
            if len(starts) == max_lines - 1:
                return
        for k in range(start + 1, j):
            if not ws.fits(start, k, max_chars):
                break
            search(k, [*starts, start], cost + costs[k - 1])

    search(i, [], 0.0)
    return best


def _layout(
    tokens: Sequence[_Token],
    max_chars: int,
    max_lines: int,
    allowed: Callable[[int, int], bool] | None = None,
) -> list[list[list[_Token]]]:
    """Captions (lists of lines of tokens) covering `tokens` in order, at the least total cost.

    `allowed(i, j)` may forbid a caption of tokens[i:j] (e.g. one that would stay up too long); a
    single token is always allowed.
    """
    n = len(tokens)
    if n == 0:
        return []
    max_chars = max(1, max_chars)
    max_lines = max(1, max_lines)
    costs = [_break_cost(tokens[k], tokens[k + 1]) for k in range(n - 1)]
    ws = _Widths(tokens)
    limit = max_lines * (max_chars + 1)
    inf = float("inf")
    best: list[float] = [inf] * (n + 1)
    back: list[tuple[int, list[int]]] = [(0, [])] * (n + 1)
    best[n] = 0.0
    # best[i]: cheapest layout of tokens[i:]; filled from the end.
    for i in range(n - 1, -1, -1):
        width = 0
        for j in range(i + 1, n + 1):
            width += tokens[j - 1].width + (1 if j - 1 > i else 0)
            if j - i > 1 and width > limit:
                break
            if allowed is not None and j - i > 1 and not allowed(i, j):
                break
            lines = _best_lines(ws, i, j, max_chars, max_lines, costs)
            if lines is None:
                continue
            end_cost = 0.0 if j == n else _CAPTION_BREAK_WEIGHT * costs[j - 1]
            total = _CAPTION_COST + lines[0] + end_cost + best[j]
            if total < best[i]:
                best[i] = total
                back[i] = (j, lines[1])
    captions: list[list[list[_Token]]] = []
    i = 0
    while i < n:
        j, starts = back[i]
        captions.append([list(tokens[a:b]) for a, b in itertools.pairwise([*starts, j])])
        i = j
    return captions


def wrap(text: str, max_chars: int = 42, max_lines: int = 2) -> list[list[str]]:
    """Break `text` into captions, each a list of at most `max_lines` lines.

    No line is wider than `max_chars` columns unless it holds a single word that is. Words keep
    their order and none is lost; runs of whitespace become single spaces.
    """
    return [[_join(line) for line in caption] for caption in _layout(_tokens(text), max_chars, max_lines)]


# --- rolling lines (overlays) --------------------------------------------------------------------

_SHORT_LINE_WEIGHT = 6.0


def roll_lines(text: str, max_chars: int = 42) -> list[str]:
    """`text` as a roll-up of lines (for live overlays): each line filled, then broken at the best
    phrase boundary in its last part.

    Unlike `wrap`, a line depends only on the text up to the word after it, so lines already shown
    do not re-flow as live text grows.
    """
    tokens = _tokens(text)
    ws = _Widths(tokens)
    lines: list[str] = []
    start = 0
    n = len(tokens)
    while start < n:
        end = start + 1
        while end < n and ws.fits(start, end + 1, max_chars):
            end += 1
        if end < n:
            # The line is full: break at the boundary that is cheapest, counting the room left unused.
            best_k, best_cost = end, float("inf")
            for k in range(end, start, -1):
                room = (max_chars - ws.span(start, k)) / max_chars
                cost = _break_cost(tokens[k - 1], tokens[k]) + _SHORT_LINE_WEIGHT * room
                if cost < best_cost:
                    best_k, best_cost = k, cost
            end = best_k
        lines.append(_join(tokens[start:end]))
        start = end
    return lines


def last_lines(text: str, max_chars: int = 42, n: int = 2) -> list[str]:
    """The last `n` lines of `text` laid out by `roll_lines` (what an overlay shows)."""
    if n <= 0:
        return []
    return roll_lines(text, max_chars)[-n:]


# --- timing -------------------------------------------------------------------------------------


def display_time(text: str, layout: Layout = DEFAULT) -> float:
    """Seconds a caption needs on screen to be read at `layout.max_cps`, within the min/max."""
    need = text_width(" ".join(text.split())) / layout.max_cps  # spaces count, as in subtitle guides
    return min(layout.max_duration, max(layout.min_duration, need))


def _timed(
    cues: list[tuple[float, float, tuple[str, ...]]], layout: Layout, next_start: float | None
) -> list[Cue]:
    """Stretch each cue (start, speech end, lines) to its reading time without overlapping the next."""
    out: list[Cue] = []
    for k, (start, speech_end, lines) in enumerate(cues):
        end = max(speech_end, start + display_time(" ".join(lines), layout))
        end = min(end, max(speech_end, start + layout.max_duration))
        following = cues[k + 1][0] if k + 1 < len(cues) else next_start
        if following is not None and following > start:
            end = min(end, following)
        if end <= start:
            end = start + min(layout.min_duration, 0.5) if following is None else max(start, following)
        out.append(Cue(start, end, lines))
    return out


def cues_from_words(
    words: Sequence[TimedWord],
    max_chars: int = 42,
    max_lines: int = 2,
    max_cps: float = 17.0,
    min_duration: float = 1.0,
    max_duration: float = 7.0,
    *,
    next_start: float | None = None,
) -> list[Cue]:
    """Timed words (Whisper style: leading space = word boundary) into caption cues.

    Each cue starts at its first word, lasts at least until its last word ends and long enough to
    be read (`max_cps`, `min_duration`), at most `max_duration` unless its speech is longer (a
    caption never holds more than `max_duration` of speech unless it is a single word), and ends
    no later than the next cue starts (or `next_start`, the start of whatever follows).
    """
    layout = Layout(max_chars, max_lines, max_cps, min_duration, max_duration)
    tokens: list[_Token] = []
    times: list[tuple[float, float]] = []
    for w in words:
        text = w.word.strip()
        if not text:
            continue
        tokens.append(_Token(text, bool(tokens) and w.word[:1].isspace(), text_width(text)))
        times.append((w.start, max(w.start, w.end)))
    if not tokens:
        return []

    def allowed(i: int, j: int) -> bool:
        return times[j - 1][1] - times[i][0] <= max_duration

    raw: list[tuple[float, float, tuple[str, ...]]] = []
    k = 0
    for caption in _layout(tokens, max_chars, max_lines, allowed):
        count = sum(len(line) for line in caption)
        raw.append((times[k][0], times[k + count - 1][1], tuple(_join(line) for line in caption)))
        k += count
    return _timed(raw, layout, next_start)


def cues_from_text(
    text: str, start: float, end: float, layout: Layout = DEFAULT, *, next_start: float | None = None
) -> list[Cue]:
    """Untimed text spoken from `start` to `end`: captions share the time in proportion to width."""
    captions = wrap(text, layout.max_chars, layout.max_lines)
    widths = [max(1, sum(text_width(line) for line in c)) for c in captions]
    total = sum(widths)
    span = max(0.0, end - start)
    raw: list[tuple[float, float, tuple[str, ...]]] = []
    t = start
    for caption, w in zip(captions, widths, strict=True):
        t_end = t + span * w / total
        raw.append((t, t_end, tuple(caption)))
        t = t_end
    return _timed(raw, layout, next_start)
