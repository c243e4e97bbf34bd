"""Each hallucination filter on hand-made segments (no model)."""

from __future__ import annotations

from streamer.decode.filters import (
    FilterOptions,
    collapse_repetitions,
    filter_segments,
    is_invented_phrase,
    phrase_key,
    phrase_list,
    trim_invented_tail,
)
from streamer.decode.hypothesis import HypSegment, HypWord


def seg(
    text: str,
    *,
    start: float = 0.0,
    p: float = 0.9,
    avg: float = -0.2,
    nsp: float = 0.05,
    cr: float = 1.2,
    timed: bool = True,
) -> HypSegment:
    words = (
        tuple(
            HypWord(" " + t, start + 0.3 * i, start + 0.3 * i + 0.25, p) for i, t in enumerate(text.split())
        )
        if timed
        else ()
    )
    return HypSegment(
        text=" " + text,
        start=start,
        end=start + 0.3 * len(text.split()),
        words=words,
        avg_logprob=avg,
        no_speech_prob=nsp,
        compression_ratio=cr,
    )


OPTS = FilterOptions()


def test_clean_segment_passes_untouched() -> None:
    kept, counts = filter_segments([seg("the quick brown fox")], OPTS, "en", speech=(0.0, 5.0))
    assert [s.text for s in kept] == [" the quick brown fox"] and not counts


def test_no_speech_needs_both_signals() -> None:
    kept, counts = filter_segments([seg("hello there", nsp=0.9, avg=-1.5)], OPTS)
    assert kept == [] and counts["no_speech"] == 1
    kept, _ = filter_segments([seg("hello there", nsp=0.9, avg=-0.3)], OPTS)
    assert len(kept) == 1  # confident text despite the no-speech score is kept


def test_compression_ratio() -> None:
    kept, counts = filter_segments([seg("la la la", cr=3.1)], OPTS)
    assert kept == [] and counts["compression"] == 1


def test_low_confidence_words() -> None:
    kept, counts = filter_segments([seg("uh huh", p=0.05)], OPTS)
    assert kept == [] and counts["low_confidence"] == 1


def test_repetition_loop_collapses() -> None:
    text = "I said " + "thank you " * 6 + "and left"
    kept, counts = filter_segments([seg(text)], OPTS)
    assert counts["repetition"] == 1
    assert kept[0].text.split() == ["I", "said", "thank", "you", "and", "left"]
    idx, changed = collapse_repetitions(["a", "b", "a", "b"])
    assert not changed and idx == [0, 1, 2, 3]  # twice is speech, not a loop


def test_repetition_without_word_times() -> None:
    kept, counts = filter_segments([seg("no " * 10, timed=False)], OPTS, "en")
    assert counts["repetition"] == 1 and kept[0].text.split() == ["no"]


def test_words_outside_speech_are_dropped() -> None:
    s = seg("alpha beta gamma delta", start=0.0)  # words at 0.0, 0.3, 0.6, 0.9
    kept, counts = filter_segments([s], FilterOptions(edge_tolerance=0.0), speech=(0.35, 0.8))
    assert [w.text.strip() for w in kept[0].words] == ["beta", "gamma"]
    assert counts["outside_speech"] == 2


def test_symbols_only_segment_is_dropped() -> None:
    kept, _ = filter_segments([seg("♪ ♪", timed=False)], OPTS)
    assert kept == []


def test_known_phrases_english_and_korean() -> None:
    assert is_invented_phrase("Thanks for watching!", "en", OPTS, 0.99, 0.0)
    assert is_invented_phrase("Subtitles by the Amara.org community", "en", OPTS, 0.99, 0.0)
    assert is_invented_phrase("시청해주셔서 감사합니다.", "ko", OPTS, 0.99, 0.0)
    assert is_invented_phrase("시청 해 주셔서 감사합니다", "ko", OPTS, 0.99, 0.0)  # spacing variant
    assert not is_invented_phrase("Thanks for watching the kids yesterday", "en", OPTS, 0.9, 0.0)


def test_ambiguous_phrase_kept_only_when_confident() -> None:
    assert is_invented_phrase("Thank you.", "en", OPTS, 0.4, 0.1)
    assert not is_invented_phrase("Thank you.", "en", OPTS, 0.95, 0.05)
    assert not is_invented_phrase("Thank you.", "en", FilterOptions.off(), 0.1, 0.9)


def test_every_filter_can_be_switched_off() -> None:
    bad = [seg("x", nsp=0.9, avg=-2.0), seg("y y y y", cr=5.0), seg("z", p=0.01)]
    kept, counts = filter_segments(bad, FilterOptions.off())
    assert len(kept) == 3 and not counts


def test_phrase_lists_load_as_data() -> None:
    en = phrase_list("en")
    assert phrase_key("thank you for watching") in en.always
    assert phrase_key("thank you") in en.unless_confident
    assert phrase_key("시청해주셔서 감사합니다") in phrase_list("ko").always


def test_invented_tail_after_real_speech_is_trimmed() -> None:
    real = [
        HypWord(" than", 21.5, 21.8, 0.99),
        HypWord(" he", 21.8, 22.0, 0.99),
        HypWord(" was.", 22.0, 22.3, 0.99),
    ]
    tail = [
        HypWord(" Thank", 22.3, 22.3, 0.001),
        HypWord(" you", 22.3, 22.3, 0.98),
        HypWord(" very", 22.3, 22.3, 0.1),
        HypWord(" much.", 22.3, 22.38, 0.99),
    ]
    kept, dropped = trim_invented_tail(real + tail, "en", OPTS)
    assert kept == real and dropped == 4
    bye = [HypWord(" Bye.", 26.03, 26.09, 0.37)]
    assert trim_invented_tail(real + bye, "en", OPTS) == (real, 1)
    # Said for real: it takes time and Whisper was sure of it.
    spoken = [HypWord(" thank", 22.4, 22.7, 0.9), HypWord(" you.", 22.7, 23.0, 0.95)]
    assert trim_invented_tail(real + spoken, "en", OPTS) == (real + spoken, 0)
    you = [HypWord(" you.", 22.4, 22.6, 0.5)]  # "... I will tell you."
    assert trim_invented_tail(real + you, "en", OPTS) == (real + you, 0)
    assert trim_invented_tail(real + tail, "en", FilterOptions.off())[1] == 0


def test_words_that_take_no_time_are_not_speech() -> None:
    squeezed = HypSegment(
        text=" We'll see you in the next one.",
        start=11.08,
        end=11.08,
        words=tuple(
            HypWord(" " + t, 11.08, 11.08, 0.5) for t in ["We'll", "see", "you", "in", "the", "next", "one."]
        ),
        avg_logprob=-1.28,
    )
    kept, counts = filter_segments([seg("the narrative would be tedious"), squeezed], OPTS)
    assert [s.text for s in kept] == [" the narrative would be tedious"] and counts["tail"] == 7
    real = [HypWord(" to", 10.4, 10.6, 0.99), HypWord(" myself.", 10.6, 10.88, 0.99)]
    tail = [
        HypWord(" be", 11.0, 11.0, 0.4),
        HypWord(" back", 11.0, 11.01, 0.4),
        HypWord(" soon.", 11.01, 11.02, 0.4),
    ]
    assert trim_invented_tail(real + tail, "en", OPTS) == (real, 3)


def test_korean_news_sign_offs_with_any_name_are_cut_from_the_tail() -> None:
    from streamer.decode.filters import trim_invented_tail

    said = [
        HypWord(" 어떻게", 0.0, 0.4, 0.9),
        HypWord(" 하면", 0.4, 0.7, 0.9),
        HypWord(" 좋을까요?", 0.7, 1.2, 0.9),
    ]
    invented = [
        HypWord(" 당신은", 1.3, 1.6, 0.9),
        HypWord(" MBC", 1.6, 1.9, 0.9),
        HypWord(" 뉴스", 1.9, 2.1, 0.9),
    ]
    invented.append(HypWord(" 김혜입니다.", 2.1, 2.6, 0.9))
    kept, dropped = trim_invented_tail(said + invented, "ko", FilterOptions())
    assert kept == said and dropped == 4
    # A sign-off that is also said for real stays when Whisper was sure of it and heard it.
    real = [*said, HypWord(" 다음에", 1.3, 1.6, 0.95), HypWord(" 뵙겠습니다.", 1.6, 2.2, 0.95)]
    assert trim_invented_tail(real, "ko", FilterOptions())[1] == 0
    unsure = [*said, HypWord(" 뵙겠습니다.", 1.3, 1.9, 0.1)]  # a word Whisper barely believed
    assert trim_invented_tail(unsure, "ko", FilterOptions()) == (said, 1)


def test_no_speech_also_when_the_text_is_confident_but_the_language_a_guess() -> None:
    """Music, base: "1-2-3-4-4-4" with avg log-prob -0.62, no-speech 0.80, language jw at 26 %."""
    words = (HypWord(" 1-2-3-4-4-4", 7.4, 9.9, 0.6),)
    seg = HypSegment(" 1-2-3-4-4-4", 7.4, 9.9, words, avg_logprob=-0.62, no_speech_prob=0.8)
    kept, counts = filter_segments([seg], FilterOptions(), "jw", lang_probability=0.26)
    assert kept == [] and counts["no_speech"] == 1
    # The same decode with the language given (or detected with confidence) stays.
    assert filter_segments([seg], FilterOptions(), "jw", lang_probability=None)[0] == [seg]
    assert filter_segments([seg], FilterOptions(), "jw", lang_probability=0.9)[0] == [seg]
