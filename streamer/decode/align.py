"""Where the new words of a decode begin. Pure: words in, an index out.

Every decode window starts a little before the first unsettled word, so a decode restates the
settled words it heard before saying anything new. Deciding where the restatement ends by time
alone loses and doubles words, because Whisper's word times are coarse: the first word of a
sentence after a pause is often placed a few hundred milliseconds early (before the speech start
and sometimes before the boundary), and a settled word may reappear just after the boundary.
Deciding by text alone fails on repeated phrases ("… for your country. Ask what you can do for
your country").

So the cut is chosen by both: an edit-distance alignment of the decode's first words with the
settled words inside the window, where a restated word costs by how far its time is from the
settled one (repeats are told apart by when), similar spellings are nearly free ("beaches"
restated as "breaches"), other spellings cost less the more their times overlap, and a settled
word at the very edge of the window may be left out; plus a time cost for a new word placed
well before the boundary, or well before the speech the VAD heard (what lies there is the
window's left context). The cheapest cut wins. Property-tested in tests/test_core_properties.py
against Whisper-like jitter (±0.3 s, first words early, zero-length words).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from functools import lru_cache

from streamer.decode.hypothesis import HypWord, norm_word

# Whisper's word times move by up to ~0.3 s between decodes of the same audio: a word that far on
# the wrong side of the boundary costs nothing; past that, one that far again costs as much as a
# wrong word (TIME_SCALE per unit of cost).
TIME_SLACK = 0.3
TIME_SCALE = 0.3
# Settled words starting this close to the window start may be cut by it: a decode need not restate them.
CUT_MARGIN = 0.1
# ... and leaving such a word out costs this much (it may also just be heard whole).
CUT_COST = 0.4
# How early Whisper places a first word, at most, before the speech the VAD heard (padding included).
EARLY_SLACK = 0.5


# A restatement this far in time from the settled word costs as much as a wrong word (1); twice
# as far, as much as no restatement at all.
DISTANCE_SCALE = 1.0
# Spellings at least this similar count as the same word respelled ("beaches" / "breaches").
SIMILAR = 0.8


@lru_cache(maxsize=4096)
def _spelling(a: str, b: str) -> float:
    if a == b:
        return 0.0
    if not a or not b:
        return 1.0
    ratio = difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()
    return 1.0 - ratio if ratio >= SIMILAR else 1.0


def _overlap(a: HypWord, b: HypWord) -> float:
    """Intersection over union of two words' times (0 when apart; zero-length words count 0.1 s)."""
    a0, a1 = a.start, max(a.end, a.start + 0.1)
    b0, b1 = b.start, max(b.end, b.start + 0.1)
    inter = min(a1, b1) - max(a0, b0)
    return max(inter, 0.0) / (max(a1, b1) - min(a0, b0))


def _substitution(d: HypWord, d_norm: str, s: HypWord, s_norm: str) -> float:
    """Cost of taking decoded word `d` as the restatement of settled word `s`: free when spelled
    alike; otherwise cheaper the more their times overlap (Whisper heard the same sound and
    wrote it differently)."""
    spelling = _spelling(d_norm, s_norm)
    # Among equal words, the one nearer in time: repeats ("we ... we") are told apart by when.
    apart = min(2.0, abs((d.start + d.end) / 2 - (s.start + s.end) / 2) / DISTANCE_SCALE)
    if spelling == 0.0:
        return apart
    # Different words at different times are no restatement at all: as dear as a word left out
    # plus a word put in (2), which keeps a garbled fragment from standing in for a settled word.
    return min(2.0, min(spelling, 0.5 + 1.5 * (1.0 - _overlap(d, s))) + apart)


def _respaced(a: HypWord, b: HypWord, one: HypWord, one_norm: str) -> float:
    """Cost of words `a` `b` being `one` written with a space; not a move at all (infinite) unless
    spelled alike, so that it never stands in for a substitution plus an insertion."""
    a_norm, b_norm = norm_word(a.text), norm_word(b.text)
    if not (a_norm and b_norm and one_norm) or a_norm + b_norm != one_norm:
        return math.inf
    mid = (a.start + max(a.end, b.end)) / 2
    return min(2.0, abs(mid - (one.start + one.end) / 2) / DISTANCE_SCALE)


def new_words_start(
    decoded: Sequence[HypWord],
    settled: Sequence[HypWord],
    boundary: float,
    window_start: float,
    speech_start: float | None = None,
) -> int:
    """Index of the first word of `decoded` that is not a restatement of `settled`.

    `settled`: the stream's settled words, oldest first (only those inside the window matter);
    `boundary`: audio time up to which words are settled; `window_start`: where the decode began;
    `speech_start`: where the VAD heard the open utterance begin. A new word lies after the
    boundary and no more than EARLY_SLACK before that speech: what lies earlier is the window's
    left context (a settled word cut by the window start, heard as a fragment).
    """
    # Settled times are as uncertain as decoded ones: a word settled as ending just before the
    # window start may well be heard in it (restated or cut), so it takes part, as optional.
    s = [w for w in settled if w.end > window_start - TIME_SLACK]
    d = [norm_word(w.text) for w in decoded]
    t = [norm_word(w.text) for w in s]
    n, m = len(d), len(s)
    # Leaving a settled word out (the decode did not restate it) costs 1, except for the words at
    # the very start of the window, which the decode may not have heard whole.
    optional = sum(1 for w in s if w.start < window_start + CUT_MARGIN)
    # rows[i][j]: cost of aligning decoded[:i] with settled[:j].
    dp = [CUT_COST * min(j, optional) + max(0, j - optional) for j in range(m + 1)]
    rows = [dp]
    text_cost = [dp[m]]
    for i in range(1, n + 1):
        row = [dp[0] + 1.0] + [0.0] * m
        for j in range(1, m + 1):
            row[j] = min(
                dp[j - 1] + _substitution(decoded[i - 1], d[i - 1], s[j - 1], t[j - 1]),
                dp[j] + 1.0,  # a decoded word with no settled counterpart
                row[j - 1] + 1.0,  # a settled word the decode did not restate
            )
            # Word spacing differs between decodes (Korean above all: "엉덩부위가" settled, then
            # "엉덩 부위가"): two words spelled as one, or one as two, are a restatement.
            if i >= 2:
                row[j] = min(
                    row[j], rows[i - 2][j - 1] + _respaced(decoded[i - 2], decoded[i - 1], s[j - 1], t[j - 1])
                )
            if j >= 2:
                row[j] = min(row[j], dp[j - 2] + _respaced(s[j - 2], s[j - 1], decoded[i - 1], d[i - 1]))
        dp = row
        rows.append(dp)
        text_cost.append(dp[m])
    mids = [(w.start + w.end) / 2 for w in decoded]
    # Time cost of putting the cut at k: words before it lying after the boundary, words after it
    # lying before the boundary.
    # A word before the cut is a restatement: its distance in time from the settled word it
    # restates is in the text cost; one with no counterpart costs a whole word there.
    late = [0.0 for _mid in mids]
    first_new = boundary if speech_start is None else max(boundary, speech_start - EARLY_SLACK)
    early = [max(0.0, first_new - mid - TIME_SLACK) / TIME_SCALE for mid in mids]
    before = [0.0]
    for x in late:
        before.append(before[-1] + x)
    after = [0.0] * (n + 1)
    for k in range(n - 1, -1, -1):
        after[k] = after[k + 1] + early[k]
    best, best_cost = 0, float("inf")
    for k in range(n + 1):
        cost = text_cost[k] + before[k] + after[k]
        if cost < best_cost - 1e-9:
            best, best_cost = k, cost
    return best
