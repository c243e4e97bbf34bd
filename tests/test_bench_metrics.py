"""The benchmark's metric code on hand-made event sequences with known answers."""

from __future__ import annotations

import jiwer
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.events import Final, Partial
from streamer_bench import metrics as m
from streamer_bench.textnorm import error_rate


def partial(text: str, utt: int, emitted_at: float, start: float = 0.0, rev: int = 0) -> Partial:
    return Partial(
        stream="s",
        utterance=utt,
        rev=rev,
        seq=utt + 1,
        text=text,
        stable="",
        start=start,
        end=emitted_at,
        emitted_at=emitted_at,
    )


def final(text: str, utt: int, emitted_at: float, start: float = 0.0, end: float | None = None) -> Final:
    return Final(
        stream="s",
        utterance=utt,
        rev=0,
        seq=utt + 1,
        text=text,
        stable=text,
        start=start,
        end=end if end is not None else emitted_at,
        emitted_at=emitted_at,
    )


def ref_words(spec: list[tuple[str, float, float]]) -> list[m.RefWord]:
    return [m.RefWord(w, s, e, "match") for w, s, e in spec]


# --------------------------------------------------------------------------- tokens and alignment


def test_tokenize_uses_shared_normalisation() -> None:
    assert m.tokenize("Mr. Smith doesn't, colour!") == ["mister", "smith", "does", "not", "color"]
    assert m.tokenize("안녕 하세요.", "ko") == ["안", "녕", "하", "세", "요"]


def test_timed_tokens_split_a_word_span() -> None:
    toks = m.timed_tokens([(" don't", 1.0, 2.0), (" go", 2.0, 2.5)])
    assert [(t.text, t.start, t.end) for t in toks] == [("do", 1.0, 1.5), ("not", 1.5, 2.0), ("go", 2.0, 2.5)]


def test_align_known_answer() -> None:
    ops = m.align(["a", "b", "c", "d"], ["a", "x", "c"])
    assert ops == [("equal", 0, 0), ("substitute", 1, 1), ("equal", 2, 2), ("delete", 3, None)]
    ops = m.align(["a", "b"], ["a", "z", "b"])
    assert ops == [("equal", 0, 0), ("insert", None, 1), ("equal", 1, 2)]


def test_align_prefers_earliest_reference_match() -> None:
    # A partial showing only "the" must match the first "the", not the one spoken later.
    ops = m.align(["x", "the", "b", "c", "the"], ["the"])
    assert ("equal", 1, 0) in ops
    assert [op for op, _, _ in ops].count("equal") == 1


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from("abcde"), min_size=1, max_size=12),
    st.lists(st.sampled_from("abcdef"), min_size=0, max_size=12),
)
def test_align_edit_count_matches_jiwer(ref: list[str], hyp: list[str]) -> None:
    counts = m.edit_counts(m.align(ref, hyp))
    out = jiwer.process_words(" ".join(ref), " ".join(hyp) if hyp else "")
    assert counts["substitute"] + counts["delete"] + counts["insert"] == (
        out.substitutions + out.deletions + out.insertions
    )
    assert counts["equal"] + counts["substitute"] + counts["delete"] == len(ref)
    assert counts["equal"] + counts["substitute"] + counts["insert"] == len(hyp)


def test_align_reference_matches_and_interpolates() -> None:
    hyp = [(" The", 0.0, 0.2), (" cat", 0.2, 0.6), (" on", 1.4, 1.6), (" the", 1.6, 1.7), (" mat.", 1.7, 2.0)]
    ref = m.align_reference("The cat sat on the mat", hyp, "en", duration=2.5)
    assert [r.text for r in ref] == ["the", "cat", "sat", "on", "the", "mat"]
    assert [r.source for r in ref] == ["match", "match", "interpolated", "match", "match", "match"]
    # "sat" fills the gap between "cat" (ends 0.6) and "on" (starts 1.4).
    assert (ref[2].start, ref[2].end) == pytest.approx((0.6, 1.4))
    assert ref[5].end == 2.0


def test_align_reference_substitution_takes_the_hypothesis_time() -> None:
    ref = m.align_reference("red fox", [(" red", 0.0, 0.5), (" box", 0.5, 1.0)], "en")
    assert ref[1] == m.RefWord("fox", 0.5, 1.0, "substitute")


def test_align_reference_without_hypothesis_spreads_over_duration() -> None:
    ref = m.align_reference("one two three four", [], "en", duration=4.0)
    assert [r.start for r in ref] == pytest.approx([0, 1, 2, 3])
    assert [r.end for r in ref] == pytest.approx([1, 2, 3, 4])
    assert {r.source for r in ref} == {"interpolated"}


def test_align_reference_unanchored_tail_is_bounded_by_duration() -> None:
    ref = m.align_reference("hello big world", [(" hello", 0.0, 0.5)], "en", duration=0.8)
    assert ref[1].start == pytest.approx(0.5)
    assert ref[2].end == pytest.approx(0.8)


# --------------------------------------------------------------------------- latency


REF = ref_words(
    [
        ("the", 0.0, 0.3),
        ("cat", 0.3, 0.7),
        ("sat", 0.7, 1.0),
        ("on", 2.0, 2.2),
        ("the", 2.2, 2.3),
        ("mat", 2.3, 2.8),
    ]
)


def test_word_latencies_known_answer() -> None:
    events = [
        partial("The", 0, 0.5),
        partial("The cap", 0, 1.0),  # "cap" is wrong: "cat" has not appeared yet
        partial("The cat sat", 0, 1.5),
        final("The cat sat.", 0, 1.8),
        partial("On the", 1, 2.5, start=1.9),
        final("On the mat.", 1, 3.3, start=1.9),
    ]
    res = m.word_latencies(REF, events)
    assert [w.first_at for w in res.words] == [0.5, 1.5, 1.5, 2.5, 2.5, 3.3]
    assert [w.final_at for w in res.words] == [1.8, 1.8, 1.8, 3.3, 3.3, 3.3]
    assert res.first_latencies == pytest.approx([0.2, 0.8, 0.5, 0.3, 0.2, 0.5])
    assert res.final_latencies == pytest.approx([1.5, 1.1, 0.8, 1.1, 1.0, 0.5])
    # Final minus the end of the last word it got right.
    assert res.end_of_speech == pytest.approx([0.8, 0.5])
    assert res.missed_final == 0


def test_word_latencies_later_repeat_is_not_credited_early() -> None:
    # "the" shown at 0.5 s is the first "the"; the second one (ends 2.3 s) appears only at 2.5 s.
    res = m.word_latencies(REF, [partial("the", 0, 0.5), final("on the mat", 1, 2.9, start=1.9)])
    assert res.words[0].first_at == 0.5
    assert res.words[4].first_at == 2.9
    assert res.words[0].final_at is None
    assert res.missed_final == 3


def test_word_latencies_revision_keeps_first_correct_appearance() -> None:
    events = [partial("the cat", 0, 0.8), partial("the hat", 0, 1.0), final("the cat sat", 0, 1.4)]
    res = m.word_latencies(REF[:3], events)
    assert res.words[1].first_at == 0.8
    assert res.words[1].final_at == 1.4


def test_word_latencies_ignore_words_not_yet_spoken() -> None:
    # An event at 0.4 s cannot match "mat" (starts 2.3 s) even if the text says so.
    res = m.word_latencies(REF, [partial("mat", 0, 0.4)])
    assert res.words[5].first_at is None


# --------------------------------------------------------------------------- flicker


def test_flicker_known_answer() -> None:
    events = [
        partial("the", 0, 0.5),  # shown 1
        partial("the cap", 0, 1.0),  # shown 1
        partial("the cat sat", 0, 1.5),  # revised 1 (cap), shown 2
        final("the cat sat.", 0, 1.8),  # revised 1 (sat), shown 1
        partial("on", 1, 2.3),  # shown 1 (new utterance)
        final("on the mat", 1, 3.0),  # shown 2
    ]
    f = m.flicker(events)
    assert (f.revised, f.shown) == (2, 8)
    assert f.rate == pytest.approx(0.25)


def test_flicker_without_words_has_no_rate() -> None:
    assert m.flicker([]).rate is None
    assert m.flicker([final("", 0, 1.0)]) == m.Flicker(0, 0)


# --------------------------------------------------------------------------- summaries and rates


def test_percentiles_match_numpy_linear() -> None:
    vals = [0.1, 0.5, 0.2, 0.9, 0.3]
    s = m.summarize(vals)
    assert s["n"] == 5
    assert s["median"] == pytest.approx(0.3)
    assert s["p90"] == pytest.approx(0.74)  # 0.5 + 0.6 * (0.9 - 0.5)
    assert s["p99"] == pytest.approx(0.884)
    assert s["max"] == 0.9
    assert m.summarize([]) == {"n": 0, "mean": None, "median": None, "p90": None, "p99": None, "max": None}


def test_corpus_rate_weights_by_reference_length() -> None:
    # The English normaliser turns number words into digits, so plain words keep the count obvious.
    ref_a, hyp_a = "red green blue black", "red green blue block"
    ref_b, hyp_b = "pink white", "pink white"
    rates = [
        (error_rate(ref_a, hyp_a), m.reference_units(ref_a, "en")),
        (error_rate(ref_b, hyp_b), m.reference_units(ref_b, "en")),
    ]
    assert m.corpus_rate(rates) == pytest.approx(1 / 6)
    assert m.corpus_rate([]) is None
    assert m.reference_units("안녕 하세요", "ko") == 5


def test_ratio_and_word_counts() -> None:
    assert m.ratio(0.11, 0.1) == pytest.approx(1.1)
    assert m.ratio(0.1, 0.0) is None
    assert m.ratio(None, 0.1) is None
    assert m.count_words(["Thank you.", "", "♪"]) == 2


# --------------------------------------------------------------------------- configurations and targets


def test_parse_config() -> None:
    from streamer_bench.runner import parse_config

    c = parse_config("tiny.en,step=0.3,agreement=off,beam=1")
    assert c.model == "tiny.en"
    assert c.overrides == {"decoder.step": 0.3, "decoder.agreement": False, "decoder.beam_size": 1}
    assert c.name == "tiny.en,step=0.3,agreement=off,beam=1"
    named = parse_config("fast=base,vad.pad=0.1")
    assert (named.name, named.model, named.overrides) == ("fast", "base", {"vad.pad": 0.1})
    for bad in ("", "tiny.en,step", "tiny.en,colour=red"):
        with pytest.raises(ValueError):
            parse_config(bad)


def test_summarize_accuracy_excludes_mismatched_references_and_splits_metrics() -> None:
    from streamer_bench.runner import summarize_accuracy

    rows = [
        {
            "file": "en/a",
            "set": "en",
            "lang": "en",
            "metric": "wer",
            "units": 10,
            "stream": 0.2,
            "offline": 0.1,
            "excluded": False,
        },
        {
            "file": "en/b",
            "set": "en",
            "lang": "en",
            "metric": "wer",
            "units": 30,
            "stream": 0.0,
            "offline": 0.1,
            "excluded": False,
        },
        {
            "file": "en/bad",
            "set": "en",
            "lang": "en",
            "metric": "wer",
            "units": 5,
            "stream": 3.0,
            "offline": 3.0,
            "excluded": True,
        },
        {
            "file": "multi/zh",
            "set": "multi",
            "lang": "zh",
            "metric": "cer",
            "units": 20,
            "stream": 0.1,
            "offline": 0.05,
            "excluded": False,
        },
    ]
    sets = summarize_accuracy(rows)
    assert sets["en"]["stream"] == pytest.approx(2 / 40)
    assert sets["en"]["offline"] == pytest.approx(4 / 40)
    assert sets["en"]["ratio"] == pytest.approx(0.5)
    assert sets["en"]["excluded"] == ["en/bad"]
    assert sets["english"]["files"] == 2
    assert sets["multi (cer)"]["ratio"] == pytest.approx(2.0)


def test_evaluate_targets() -> None:
    from streamer_bench.report import evaluate_targets

    summary = {"median": 0.9, "p90": 1.7, "p99": 2.0}
    cfg = {
        "name": "tiny.en",
        "model": "tiny.en",
        "overrides": {},
        "latency": {"overall": {"final": summary, "first": {"median": None}}},
    }
    results = {"configs": [cfg], "capacity": {"max_streams": 6}}
    got = {t["target"]: t for t in evaluate_targets(results)}
    assert got["median final latency"]["ok"] is True
    assert got["p90 final latency"]["ok"] is False
    assert got["median first-appearance latency"]["ok"] is None  # not measured
    assert got["concurrent real-time streams (final p90 <= 2 s)"]["ok"] is True
    assert all(t["model"] == "tiny.en" for t in got.values())  # no base configuration, no base targets


def test_flicker_normalized_ignores_punctuation_and_case() -> None:
    events = [
        partial("the block", 0, 1.0),
        partial("The block books...", 0, 1.5),
        final("The block books.", 0, 2.0),
    ]
    # the -> The, books... -> books.: two words changed as displayed (block only moved on).
    assert m.flicker(events) == m.Flicker(revised=2, shown=5)
    assert m.flicker(events, normalized="en") == m.Flicker(revised=0, shown=3)


# --------------------------------------------------------------------------- protocol 2


def p2_partial(text: str, utt: int, at: float, stable: str = "", start: float = 0.0, seq: int = 1) -> Partial:
    return Partial(
        stream="s",
        utterance=utt,
        rev=0,
        seq=seq,
        text=text,
        stable=stable,
        start=start,
        end=at,
        emitted_at=at,
    )


def p2_final(text: str, utt: int, at: float, last: bool, start: float = 0.0, seq: int = 1) -> Final:
    return Final(
        stream="s",
        utterance=utt,
        rev=0,
        seq=seq,
        text=text,
        stable=text,
        start=start,
        end=at,
        emitted_at=at,
        last=last,
    )


# "the cat sat" (0-1 s) and "on the mat" (2-2.8 s) as one utterance settled mid-sentence.
P2_EVENTS = [
    p2_partial("The", 0, 0.5),
    p2_partial("The cat", 0, 0.9, stable="The"),
    p2_final("The cat", 0, 1.2, last=False, seq=1),
    p2_partial("sat", 0, 1.2, start=0.7, seq=2),
    p2_partial("sat on", 0, 2.4, stable="sat", start=0.7, seq=2),
    p2_final("sat on the", 0, 2.6, last=False, start=0.7, seq=2),
    p2_partial("", 0, 2.6, start=2.3, seq=3),
    p2_partial("mat", 0, 3.0, start=2.3, seq=3),
    p2_final("mat.", 0, 3.2, last=True, start=2.3, seq=3),
]


def test_protocol2_latencies_known_answer() -> None:
    res = m.word_latencies(REF, P2_EVENTS)
    assert [w.first_at for w in res.words] == [0.5, 0.9, 1.2, 2.4, 2.6, 3.0]
    assert [w.final_at for w in res.words] == [1.2, 1.2, 2.6, 2.6, 2.6, 3.2]
    assert res.final_latencies == pytest.approx([0.9, 0.5, 1.6, 0.4, 0.3, 0.4])
    # One utterance, closed by the last final at 3.2 s; its speech ended with "mat" at 2.8 s.
    assert res.end_of_speech_points == [m.SpeechEndDelay(0, 2.8, pytest.approx(0.4))]
    assert res.tail_insertions == 0
    assert res.missed_final == 0


def test_protocol2_settling_known_answer() -> None:
    s = m.settling(P2_EVENTS)
    assert s.revisions == 0
    # Unsettled words shown: The, cat, sat, on, mat (the; 'the' went straight into a final) and
    # changed: 'mat' -> 'mat.' at the last final (an unsettled tail word, not a revision).
    assert s.tail == m.Flicker(revised=1, shown=5)
    assert m.settling(P2_EVENTS, normalized="en").tail == m.Flicker(revised=0, shown=5)


def test_revision_of_a_stable_word_is_counted() -> None:
    events = [
        p2_partial("the cat sat", 0, 1.0, stable="the cat"),
        p2_partial("the hat sat on", 0, 1.5, stable="the"),  # 'cat' was settled
        p2_final("the hat sat on", 0, 2.0, last=True),
    ]
    s = m.settling(events)
    assert s.revisions == 1
    assert s.tail.revised == 0  # 'sat' did not change; 'on' is new
    assert s.tail.shown == 3  # sat; hat (now unsettled); on


def test_inserting_into_settled_text_is_a_revision_moving_words_is_not_flicker() -> None:
    events = [
        p2_partial("a b c", 0, 1.0, stable="a b c"),
        p2_partial("a x b c d", 0, 1.5, stable="a x b c"),  # 'x' pushed into settled text
    ]
    assert m.settling(events).revisions == 1
    tail = [p2_partial("one two", 0, 1.0), p2_partial("one new two three", 0, 1.5)]
    assert m.settling(tail).tail == m.Flicker(revised=0, shown=4)  # one two; new three


def test_revision_by_a_final_and_disappearing_settled_words() -> None:
    events = [
        p2_final("one two", 0, 1.0, last=False),
        p2_partial("three four", 0, 1.5, stable="three"),
        # The next final drops the settled 'three' (and the tail word 'four').
        p2_final("five", 0, 2.0, last=True),
    ]
    assert m.settling(events).revisions == 1
    # A final that starts the next utterance's display does not touch another utterance.
    events2 = [
        p2_partial("a b", 0, 1.0, stable="a b"),
        p2_final("a b", 0, 1.2, last=True),
        p2_partial("c", 1, 1.5, stable="c"),
        p2_final("c", 1, 2.0, last=True),
    ]
    assert m.settling(events2).revisions == 0


def test_shrinking_stable_keeps_words_settled() -> None:
    events = [
        p2_partial("a b c", 0, 1.0, stable="a b"),
        p2_partial("a b c d", 0, 1.5, stable="a"),  # 'b' is still settled though not re-announced
        p2_partial("a x", 0, 2.0, stable=""),  # 'b' changed; 'a' did not
    ]
    assert m.settling(events).revisions == 1


def test_words_in_a_final_count_as_appeared_and_eos_falls_back_to_event_end() -> None:
    # Nothing of this utterance is in the reference: end of speech is the final's own `end`.
    ev = Final(
        stream="s",
        utterance=3,
        rev=0,
        seq=1,
        text="hello",
        stable="hello",
        start=5.0,
        end=5.5,
        emitted_at=6.0,
    )
    res = m.word_latencies(REF, [ev])
    assert res.end_of_speech_points == [m.SpeechEndDelay(3, 5.5, 0.5)]
    assert res.tail_insertions == 0  # 'hello' is aligned as a substitution, not an insertion
    after = Final(
        stream="s", utterance=4, rev=0, seq=2, text="Bye now.", stable="", start=3.0, end=3.5, emitted_at=4.0
    )
    assert m.word_latencies(REF, [*P2_EVENTS, after]).tail_insertions == 2


def test_tail_insertions() -> None:
    ref = "we will meet at noon"
    assert m.tail_insertions(ref, "We will meet at noon. See you later.") == 3
    assert m.tail_insertions(ref, "We will meet at noon.") == 0
    assert m.tail_insertions(ref, "we meet at noon thank you") == 2
    assert m.tail_insertions(ref, "") == 0
    assert m.tail_insertions("", "thank you") == 2


def test_lag_trend() -> None:
    pts = [
        m.SpeechEndDelay(i, t, d) for i, (t, d) in enumerate([(10, 1.0), (50, 2.0), (300, 9.0), (550, 3.0)])
    ]
    lt = m.lag_trend(pts, duration=600.0)
    assert (lt["first_n"], lt["first_median"]) == (2, 1.5)
    assert (lt["last_n"], lt["last_median"]) == (1, 3.0)
    assert lt["growth"] == pytest.approx(1.5)
    assert m.lag_trend([], 600.0)["growth"] is None


def _as_protocol2(events: list[Partial | Final], cut: int) -> list[Partial | Final]:
    """Protocol-1 events of one utterance re-sent as protocol 2: the first `cut` words of the final
    are committed early (when the last partial that already showed them came out)."""
    *partials, fin = events
    words = fin.text.split()
    head, rest = " ".join(words[:cut]), " ".join(words[cut:])
    commit_at = next((p.emitted_at for p in partials if p.text.split()[:cut] == words[:cut]), fin.emitted_at)
    out: list[Partial | Final] = []
    committed = False
    for p in partials:
        if not committed and p.emitted_at >= commit_at:
            out.append(p2_final(head, 0, commit_at, last=False))
            committed = True
        if committed:
            tail = " ".join(p.text.split()[cut:])
            out.append(p2_partial(tail, 0, p.emitted_at))
        else:
            out.append(p2_partial(p.text, 0, p.emitted_at))
    if not committed:
        out.append(p2_final(head, 0, commit_at, last=False))
    out.append(p2_final(rest, 0, fin.emitted_at, last=True))
    return out


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=1, max_value=2), st.lists(st.floats(0.05, 0.5), min_size=3, max_size=3))
def test_protocol1_is_the_special_case(cut: int, gaps: list[float]) -> None:
    # The same words settled earlier: final latency of the early words can only drop, the others
    # and first appearance stay, and nothing counts as a revision.
    t1 = 1.0 + gaps[0]
    t2 = t1 + gaps[1]
    t3 = max(t2, REF[2].end) + gaps[2]
    p1 = [partial("The cat", 0, t1), partial("The cat sat", 0, t2), final("The cat sat.", 0, t3)]
    p2 = _as_protocol2(p1, cut)
    a, b = m.word_latencies(REF[:3], p1), m.word_latencies(REF[:3], p2)
    assert [w.first_at for w in a.words] == [w.first_at for w in b.words]
    assert all(y.final_at <= x.final_at for x, y in zip(a.words, b.words, strict=True))  # type: ignore[operator]
    assert b.words[2].final_at == a.words[2].final_at
    assert a.end_of_speech == pytest.approx(b.end_of_speech)
    assert m.settling(p1).revisions == m.settling(p2).revisions == 0


@st.composite
def protocol2_stream(draw: st.DrawFn) -> tuple[list[Partial | Final], list[int]]:
    """A valid protocol-2 utterance: settled words only grow; unsettled tail words may be wrong.
    Also returns the indices of partials whose `stable` is non-empty (for mutation)."""
    words = [f"w{i}" for i in range(draw(st.integers(1, 12)))]
    events: list[Partial | Final] = []
    committed = settled = 0
    t = 0.0
    with_stable: list[int] = []
    for _ in range(draw(st.integers(0, 10))):
        t += 0.1
        settled = draw(st.integers(settled, len(words)))
        commit = draw(st.integers(committed, settled))
        if commit > committed:
            events.append(p2_final(" ".join(words[committed:commit]), 0, t, last=False))
            committed = commit
        shown = draw(st.integers(settled, len(words)))
        tail = [w if i < settled or draw(st.booleans()) else "zz" for i, w in enumerate(words[:shown])]
        if settled > committed:
            with_stable.append(len(events))
        events.append(p2_partial(" ".join(tail[committed:]), 0, t, stable=" ".join(words[committed:settled])))
    events.append(p2_final(" ".join(words[committed:]), 0, t + 0.1, last=True))
    return events, with_stable


@settings(max_examples=300, deadline=None)
@given(protocol2_stream(), st.data())
def test_valid_protocol2_streams_have_no_revisions(
    stream: tuple[list[Partial | Final], list[int]], data: st.DataObject
) -> None:
    events, with_stable = stream
    s = m.settling(events)
    assert s.revisions == 0
    assert 0 <= s.tail.revised <= s.tail.shown
    if with_stable:
        # Change one settled word of one partial: that is a revision, whatever else happens.
        k = data.draw(st.sampled_from(with_stable))
        ev = events[k]
        stable = ev.stable.split()
        j = data.draw(st.integers(0, len(stable) - 1))
        text = ev.text.split()
        text[j] = "CHANGED"
        bad = ev.model_copy(update={"text": " ".join(text)})
        assert m.settling([*events[:k], bad, *events[k + 1 :]]).revisions >= 1


def test_time_per_degradation_level_from_status_events() -> None:
    from streamer_bench.runner import time_per_level

    statuses = [
        {"state": "running", "at": 0.1, "degraded": 0, "detail": ""},
        {"state": "running", "at": 10.0, "degraded": 1, "detail": "decoder degraded: level 1"},
        {"state": "retrying", "at": 12.0, "degraded": 0, "detail": "source lost"},
        {"state": "running", "at": 15.0, "degraded": 3, "detail": "decoder degraded: level 3"},
        {"state": "running", "at": 18.0, "degraded": 0, "detail": ""},
    ]
    assert time_per_level(statuses, 20.0) == {0: 12.0, 1: 5.0, 3: 3.0}
    assert time_per_level([], 7.5) == {0: 7.5}
