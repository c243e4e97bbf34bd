"""Caption layout rules (streamer/layout.py): line breaking, widths, timing. Pure, no I/O."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from streamer import layout
from streamer.layout import cues_from_words, last_lines, roll_lines, text_width, wrap


@dataclass(frozen=True)
class W:
    word: str
    start: float
    end: float


def timed(text: str, t0: float = 0.0, step: float = 0.3) -> list[W]:
    return [W(" " + w, t0 + i * step, t0 + i * step + step * 0.8) for i, w in enumerate(text.split())]


def test_width_counts_wide_characters_twice() -> None:
    assert text_width("hello") == 5
    assert text_width("안녕하세요") == 10
    assert text_width("你好, world") == 11
    assert text_width("ｆｕｌｌ") == 8  # fullwidth forms
    assert text_width("e\u0301") == 1  # a combining accent takes no column


def test_short_text_stays_on_one_line() -> None:
    assert wrap("Good morning, everyone.") == [["Good morning, everyone."]]
    assert wrap("") == []
    assert wrap("  spaced   out  ") == [["spaced out"]]


def test_english_breaks_before_conjunction_not_after_article() -> None:
    assert wrap("I went to the store yesterday and bought some apples and pears for dinner.") == [
        ["I went to the store yesterday and bought", "some apples and pears for dinner."]
    ]
    # A greedy fill would end line 1 with "the"; the phrase stays together.
    text = "We will meet again next week to discuss the budget for the new community centre."
    assert wrap(text) == [
        ["We will meet again next week to discuss", "the budget for the new community centre."]
    ]


def test_captions_end_at_sentences() -> None:
    text = (
        "Hello everyone, and welcome to the show. Today we are going to talk about the history "
        "of the printing press in Europe and how it changed the world."
    )
    assert wrap(text) == [
        ["Hello everyone, and welcome to the show.", "Today we are going to talk about"],
        ["the history of the printing press", "in Europe and how it changed the world."],
    ]


def test_abbreviation_is_not_a_sentence_end() -> None:
    assert layout._break_cost(layout._Token("Mr.", True, 3), layout._Token("Smith", True, 5)) > 5


def test_korean_breaks_at_word_spaces_after_endings() -> None:
    text = "오늘은 날씨가 정말 좋아서 친구들과 함께 공원에 가서 산책을 하고 맛있는 점심을 먹었습니다."
    captions = wrap(text)
    assert captions == [
        ["오늘은 날씨가 정말 좋아서", "친구들과 함께 공원에 가서"],
        ["산책을 하고 맛있는 점심을 먹었습니다."],
    ]
    assert all(text_width(line) <= 42 for c in captions for line in c)


def test_chinese_breaks_between_characters_after_punctuation() -> None:
    text = "我们今天要讨论的是印刷术在欧洲的历史，以及它如何改变了世界。这是一个非常有趣的话题。"
    captions = wrap(text)
    lines = [line for c in captions for line in c]
    assert "".join(lines) == text
    assert all(text_width(line) <= 42 for line in lines)
    assert lines[0].endswith("，")  # broken after the comma, not mid-phrase
    assert not any(line.startswith(("，", "。")) for line in lines)


def test_overlong_word_gets_its_own_line() -> None:
    word = "x" * 60
    assert wrap(f"a {word} b") == [["a", word], ["b"]]


def test_max_lines_and_chars_are_configurable() -> None:
    captions = wrap("one two three four five six seven eight nine ten", max_chars=10, max_lines=1)
    assert all(len(c) == 1 and len(c[0]) <= 10 for c in captions)
    captions = wrap("one two three four five six seven eight nine ten", max_chars=20, max_lines=3)
    assert len(captions) == 1 and len(captions[0]) == 3


def test_roll_lines_do_not_reflow_as_text_grows() -> None:
    text = (
        "So the committee has decided, after a long discussion that went on for hours, to postpone the vote"
    )
    words = text.split()
    full = roll_lines(text)
    for k in range(1, len(words)):
        prefix_lines = roll_lines(" ".join(words[:k]))
        # Every line but the one still being filled (and the one before it, whose break may move
        # by the next word) is final.
        assert prefix_lines[:-2] == full[: max(0, len(prefix_lines) - 2)]
    assert last_lines(text, 42, 2) == full[-2:]
    assert last_lines(text, 42, 0) == []


def test_cue_timing_follows_reading_rate() -> None:
    cues = cues_from_words(timed("Yes.", 3.0))
    assert len(cues) == 1 and cues[0].start == 3.0 and cues[0].end == 4.0  # minimum 1 s
    long = "This is a sentence that is long enough to need more than its spoken time."
    cues = cues_from_words(timed(long, 0.0, 0.1))  # spoken in 1.5 s, read in 73/17 = 4.29 s
    assert len(cues) == 1 and abs(cues[0].end - text_width(long) / 17) < 1e-9
    cues = cues_from_words(timed(long, 0.0, 0.1), next_start=2.0)
    assert cues[0].end == 2.0  # never overlaps what follows


def test_cues_split_speech_longer_than_max_duration() -> None:
    words = timed("one two three four five six seven eight nine ten", 0.0, 1.0)  # 10 s of speech
    cues = cues_from_words(words, max_duration=7.0)
    assert len(cues) >= 2
    for a, b in itertools.pairwise(cues):
        assert a.end <= b.start
    assert all(c.end - c.start <= 7.0 for c in cues)
    assert " ".join(" ".join(c.lines) for c in cues) == "one two three four five six seven eight nine ten"


def test_cues_keep_whisper_spacing_for_cjk() -> None:
    words = [W("我", 0.0, 0.2), W("们", 0.2, 0.4), W("好", 0.4, 0.6), W(" OK", 0.6, 0.8)]
    assert cues_from_words(words)[0].lines == ("我们好 OK",)


# --- properties ---------------------------------------------------------------------------------

_alphabet = st.sampled_from(
    list("abcdefghijklmnopqrstuvwxyz") + list("가나다라마바사아자차카타") + list("中文字") + list(",.!?")
)
_word = st.text(_alphabet, min_size=1, max_size=25)
_text = st.lists(_word, min_size=0, max_size=60).map(" ".join)


@settings(max_examples=200, deadline=None)
@given(_text, st.integers(min_value=10, max_value=60), st.integers(min_value=1, max_value=3))
def test_wrap_never_overflows_loses_or_reorders(text: str, max_chars: int, max_lines: int) -> None:
    captions = wrap(text, max_chars, max_lines)
    lines = [line for c in captions for line in c]
    for c in captions:
        assert 1 <= len(c) <= max_lines
    for line in lines:
        # Too wide only when the line is one unbreakable piece (a single word).
        assert text_width(line) <= max_chars or len(layout._tokens(line)) == 1
        assert line == line.strip() and line
    # Nothing lost or reordered (Chinese may break between characters, so compare characters).
    assert "".join("".join(lines).split()) == "".join(text.split())


_spaced_word = st.text(
    st.sampled_from(list("abcdefghijklmnopqrstuvwxyz,.?") + list("가나다라마바사")), min_size=1
)


@settings(max_examples=100, deadline=None)
@given(st.lists(_spaced_word, max_size=60), st.integers(min_value=10, max_value=60))
def test_wrap_keeps_space_separated_words_whole_and_in_order(words: list[str], max_chars: int) -> None:
    captions = wrap(" ".join(words), max_chars)
    assert [w for c in captions for line in c for w in line.split(" ")] == words


@settings(max_examples=100, deadline=None)
@given(_text, st.integers(min_value=10, max_value=60))
def test_roll_lines_never_overflow(text: str, max_chars: int) -> None:
    lines = roll_lines(text, max_chars)
    assert "".join("".join(lines).split()) == "".join(text.split())
    for line in lines:
        assert text_width(line) <= max_chars or len(layout._tokens(line)) == 1


@settings(max_examples=100, deadline=None)
@given(st.lists(_word, min_size=1, max_size=40), st.floats(min_value=0.05, max_value=2.0))
def test_cues_cover_every_word_in_order_without_overlap(words: list[str], step: float) -> None:
    timed_words = [W(" " + w, i * step, i * step + step * 0.9) for i, w in enumerate(words)]
    cues = cues_from_words(timed_words)
    assert "".join("".join(" ".join(c.lines) for c in cues).split()) == "".join(words)
    for c in cues:
        assert c.end > c.start
    for a, b in itertools.pairwise(cues):
        assert a.end <= b.start
