"""Stable-prefix policy for re-decoded windows (LocalAgreement-2). Pure: words in, words out.

Every step the whole open window is decoded again, so each hypothesis restates the words already
marked stable. `update()` finds where the stable words end in the new hypothesis, then marks as
stable the words that this hypothesis and the previous one agree on right after that point. Two
decodes of different amounts of audio agreeing on a word is strong evidence the word will not
change; stable words are never changed or taken back afterwards.

Words are compared after normalisation (case, punctuation), so "Hello," then "hello" agree; the
newest spelling of an agreed word is the one kept.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Sequence

_PUNCT = re.compile(r"[^\w']+", re.UNICODE)


def norm_word(word: str) -> str:
    w = unicodedata.normalize("NFKC", word).lower().strip()
    return _PUNCT.sub("", w)


def skip_prefix(prefix: Sequence[str], words: Sequence[str]) -> int:
    """Index in `words` just after the part that restates `prefix` (0 if nothing matches).

    Whisper may restate the prefix with a word merged, split or respelled, so this aligns rather
    than compares position by position; when the alignment is poor it falls back to the prefix
    length, which is right whenever the words merely changed spelling.
    """
    if not prefix:
        return 0
    a = [norm_word(w) for w in prefix]
    b = [norm_word(w) for w in words[: len(prefix) + 4]]
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    blocks = [blk for blk in matcher.get_matching_blocks() if blk.size]
    if not blocks:
        return min(len(prefix), len(words))
    last = blocks[-1]
    matched = sum(blk.size for blk in blocks)
    if last.a + last.size >= len(a) - 1 and matched >= max(1, len(a) // 2):
        # The end of the prefix was found: continue after it (plus a trailing unmatched word
        # of the prefix, if the last one was respelled).
        return min(last.b + last.size + (len(a) - (last.a + last.size)), len(words))
    return min(len(prefix), len(words))


def common_prefix(a: Sequence[str], b: Sequence[str]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if norm_word(x) != norm_word(y) or not norm_word(x):
            break
        n += 1
    return n


class Agreement:
    """Tracks the stable words of one window (one utterance, or the rest of it after a commit)."""

    def __init__(self, enabled: bool = True, holdback: int = 0) -> None:
        self.enabled = enabled
        # The last words of a window are often cut mid-word; they may not become stable until
        # more audio follows them.
        self.holdback = holdback
        self.stable: list[str] = []
        self._previous_tail: list[str] = []

    def reset(self) -> None:
        self.stable = []
        self._previous_tail = []

    def tail(self, words: Sequence[str]) -> list[str]:
        """The words of a hypothesis that come after the stable prefix."""
        return list(words[skip_prefix(self.stable, words) :])

    def update(self, words: Sequence[str]) -> tuple[list[str], list[str]]:
        """Feed one hypothesis of the whole window; returns (stable, unstable) words."""
        tail = self.tail(words)
        if not self.enabled:
            return list(self.stable), tail
        n = common_prefix(self._previous_tail, tail)
        n = max(0, min(n, len(tail) - self.holdback, len(self._previous_tail) - self.holdback))
        if n:
            self.stable.extend(tail[:n])
        self._previous_tail = tail[n:]
        return list(self.stable), tail[n:]

    def forget_previous(self) -> None:
        """Drop the previous hypothesis (after the stable words were set from outside)."""
        self._previous_tail = []

    def commit(self, count: int) -> list[str]:
        """Remove the first `count` stable words (they became a final); returns them."""
        done, self.stable = self.stable[:count], self.stable[count:]
        return done
