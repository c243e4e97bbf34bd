"""Where a decode's new words begin when it writes settled words with other spacing.

Seen on the held-out Korean set (base): "엉덩부위가" settled mid-sentence, then the final decoded
"엉덩 부위가 선택되었어요" and the final read "엉덩부위가 부위가 선택되었어요".
"""

from __future__ import annotations

from streamer.decode.align import new_words_start
from streamer.decode.hypothesis import HypWord


def words(*spec: tuple[str, float, float]) -> list[HypWord]:
    return [HypWord(" " + text, start, end, 0.9) for text, start, end in spec]


def test_two_decoded_words_restating_one_settled_word() -> None:
    settled = words(("짧은", 16.3, 16.8), ("쪽인", 16.8, 17.2), ("엉덩부위가", 17.2, 18.0))
    decoded = words(
        ("쪽인", 16.8, 17.2), ("엉덩", 17.2, 17.5), ("부위가", 17.5, 18.0), ("선택되었어요", 18.0, 18.8)
    )
    assert new_words_start(decoded, settled, boundary=18.0, window_start=16.7, speech_start=13.8) == 3


def test_one_decoded_word_restating_two_settled_words() -> None:
    settled = words(("널리할려진", 25.3, 26.2), ("아리", 26.2, 26.6), ("엔티나의", 26.6, 27.3))
    decoded = words(("널리할려진", 25.3, 26.2), ("아리엔티나의", 26.2, 27.3), ("미니오", 27.3, 27.8))
    assert new_words_start(decoded, settled, boundary=27.3, window_start=25.2, speech_start=24.6) == 2


def test_new_words_that_happen_to_join_into_a_settled_word_are_new_when_later() -> None:
    # "a" "cross" spoken after "across": spelled alike when joined, but a second later.
    settled = words(("walked", 1.0, 1.4), ("across", 1.4, 1.9))
    decoded = words(("across", 1.4, 1.9), ("a", 2.9, 3.0), ("cross", 3.0, 3.4))
    assert new_words_start(decoded, settled, boundary=1.9, window_start=1.3, speech_start=0.9) == 1
