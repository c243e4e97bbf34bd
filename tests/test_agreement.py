"""LocalAgreement-2 policy on hand-made hypotheses."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streamer.decode.agreement import Agreement, common_prefix, skip_prefix


def w(text: str) -> list[str]:
    return [" " + x for x in text.split()]


def test_prefix_agreed_by_two_hypotheses_becomes_stable() -> None:
    ag = Agreement()
    assert ag.update(w("the cat")) == ([], w("the cat"))
    stable, unstable = ag.update(w("the cat sat on"))
    assert stable == w("the cat") and unstable == w("sat on")
    stable, unstable = ag.update(w("the cat sat in the"))
    assert stable == w("the cat sat") and unstable == w("in the")


def test_stable_words_never_change_even_if_whisper_changes_its_mind() -> None:
    ag = Agreement()
    ag.update(w("i scream"))
    ag.update(w("i scream for"))
    assert ag.stable == w("i scream")
    stable, _unstable = ag.update(w("ice cream for you"))
    assert stable[: len(w("i scream"))] == w("i scream")


def test_normalisation_punctuation_and_case() -> None:
    ag = Agreement()
    ag.update([" Hello,", " world"])
    stable, _ = ag.update([" hello", " world."])
    assert [s.strip(",. ").lower() for s in stable] == ["hello", "world"]


def test_disabled_agreement_never_marks_stable() -> None:
    ag = Agreement(enabled=False)
    ag.update(w("a b c"))
    assert ag.update(w("a b c d")) == ([], w("a b c d"))


def test_commit_removes_front_words() -> None:
    ag = Agreement()
    ag.update(w("one two three"))
    ag.update(w("one two three four"))
    assert ag.commit(2) == w("one two")
    assert ag.stable == w("three")


def test_skip_prefix_handles_respelling_and_merge() -> None:
    assert skip_prefix(w("the cat sat"), w("the cat sat down")) == 3
    assert skip_prefix(w("the cat sat"), w("the kat sat down")) == 3
    assert skip_prefix(w("new york city"), w("newyork city is big")) == 2
    assert skip_prefix([], w("x y")) == 0


def test_common_prefix() -> None:
    assert common_prefix(w("a b c"), w("a b d")) == 2
    assert common_prefix(w("a"), []) == 0


@given(st.lists(st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), max_size=12), max_size=15))
def test_stable_prefix_only_grows(hyps: list[list[str]]) -> None:
    ag = Agreement()
    previous: list[str] = []
    for h in hyps:
        stable, _ = ag.update([" " + x for x in h])
        assert stable[: len(previous)] == previous
        previous = stable
