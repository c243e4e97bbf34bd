"""Text normalisation and error rates, shared by the tests and `streamer bench`.

English uses Whisper's own English normaliser (spelling, numbers, contractions); every other
language uses Whisper's basic normaliser (lower case, no punctuation or symbols). Languages written
without spaces between words are scored by character error rate (CER) instead of WER.
"""

from __future__ import annotations

from functools import cache

import jiwer
from whisper_normalizer.basic import BasicTextNormalizer
from whisper_normalizer.english import EnglishTextNormalizer

CER_LANGUAGES = frozenset({"ko", "ja", "zh", "th", "lo", "my", "km", "yue"})


@cache
def _english():  # type: ignore[no-untyped-def]
    return EnglishTextNormalizer()


@cache
def _basic():  # type: ignore[no-untyped-def]
    return BasicTextNormalizer()


def normalize(text: str, lang: str | None = "en") -> str:
    norm = _english() if (lang or "en").split("-")[0] == "en" else _basic()
    # Whisper's English normaliser turns "book..." into "book ."; a token with no letter or digit
    # is not a word and must not count as an error.
    return " ".join(t for t in str(norm(text)).split() if any(c.isalnum() for c in t))


def uses_cer(lang: str | None) -> bool:
    return (lang or "en").split("-")[0] in CER_LANGUAGES


def error_rate(reference: str, hypothesis: str, lang: str | None = "en") -> float:
    """WER (or CER for languages without word spaces) after normalisation of both texts."""
    ref = normalize(reference, lang)
    hyp = normalize(hypothesis, lang)
    if uses_cer(lang):
        ref, hyp = ref.replace(" ", ""), hyp.replace(" ", "")
        if not ref:
            return 0.0 if not hyp else 1.0
        return float(jiwer.cer(ref, hyp))
    if not ref:
        return 0.0 if not hyp else 1.0
    return float(jiwer.wer(ref, hyp))
