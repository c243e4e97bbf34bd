"""The caption policy, driven like the segmenter: scripted events and hypotheses, no model."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.decode.captioner import (
    Action,
    Cancel,
    Captioner,
    CaptionerOptions,
    DecodeSpec,
    Discarded,
    Emit,
    Skipped,
    Submit,
)
from streamer.decode.filters import FilterOptions
from streamer.decode.hypothesis import Hypothesis, HypSegment, HypWord
from streamer.events import Final, Partial

OPTS = CaptionerOptions(
    stream="t", step=0.5, commit_margin=0.2, left_context=2.0, language="en", min_commit_audio=0.0
)


def hyp(spec: DecodeSpec, words: list[tuple[str, float, float]], kind: str | None = None) -> Hypothesis:
    ws = tuple(HypWord(" " + w, s, e, 0.9) for w, s, e in words)
    seg = HypSegment(
        text="".join(w.text for w in ws), start=ws[0].start if ws else spec.start, end=spec.end, words=ws
    )
    return Hypothesis(
        kind=kind or spec.kind,
        window_start=spec.start,
        window_end=spec.end,
        segments=(seg,) if ws else (),
        language="en",
        language_probability=1.0,
    )


def submits(actions: list[Action]) -> list[DecodeSpec]:
    return [a.spec for a in actions if isinstance(a, Submit)]


def events(actions: list[Action]) -> list[Partial | Final]:
    return [a.event for a in actions if isinstance(a, Emit)]


def finals(actions: list[Action]) -> list[Final]:
    return [e for e in events(actions) if isinstance(e, Final)]


SENTENCE = [("one", 0.1, 0.4), ("two", 0.5, 0.8), ("three", 0.9, 1.2), ("four", 1.3, 1.6), ("five", 1.7, 2.0)]


def words_until(t: float) -> list[tuple[str, float, float]]:
    return [w for w in SENTENCE if w[2] <= t]


def step(c: Captioner, now: float) -> DecodeSpec:
    (spec,) = submits(c.on_tick(now))
    assert spec.kind == "step" and spec.end == now
    return spec


def test_words_two_decodes_agree_on_become_final_mid_sentence() -> None:
    c = Captioner(OPTS, FilterOptions.off())
    c.on_speech_start(0.0, 0.0)
    s1 = step(c, 1.3)
    out = c.on_result(s1.id, hyp(s1, words_until(1.3)), 1.4)
    assert not finals(out)  # one decode alone decides nothing
    (p,) = events(out)
    assert isinstance(p, Partial) and p.text == "one two three" and p.stable == ""
    s2 = step(c, 1.9)
    out = c.on_result(s2.id, hyp(s2, words_until(1.9)), 2.0)
    (f,) = finals(out)
    # "three" ends at 1.2, within 0.2 s of what the first decode heard (1.3): held back.
    assert f.text == "one two" and not f.last and f.seq == 1
    assert [w.word for w in f.words] == [" one", " two"]
    tail = [e for e in events(out) if isinstance(e, Partial)]
    assert tail and tail[-1].text == "three four" and tail[-1].seq == 2


def test_a_cold_utterance_commits_only_after_enough_of_it_was_heard() -> None:
    c = Captioner(CaptionerOptions(stream="t", min_commit_audio=2.0, language="en"), FilterOptions.off())
    c.on_speech_start(0.0, 0.0)
    for now in (1.3, 1.9, 2.5):
        s = step(c, now)
        out = c.on_result(s.id, hyp(s, words_until(now)), now)
        assert not finals(out)  # the first decodes of a cold start agree on wrong words too often
    s = step(c, 3.0)  # the previous decode heard 2.5 s of the utterance
    assert finals(c.on_result(s.id, hyp(s, SENTENCE), 3.0))
    # Right after a short pause the context carries over: no wait.
    (fin,) = submits(c.on_speech_end(3.1, 3.2))
    c.on_result(fin.id, hyp(fin, SENTENCE), 3.3)
    c.on_speech_start(3.4, 3.5)
    words = [("six", 3.5, 3.8), ("seven", 3.9, 4.2), ("eight", 4.3, 4.6)]
    s = step(c, 4.3)
    c.on_result(s.id, hyp(s, words[:2]), 4.3)
    s = step(c, 4.8)
    assert finals(c.on_result(s.id, hyp(s, words), 4.8))


def test_settled_words_are_never_revised_and_never_repeated() -> None:
    c = Captioner(OPTS, FilterOptions.off())
    c.on_speech_start(0.0, 0.0)
    for now in (1.3, 1.9):
        s = step(c, now)
        c.on_result(s.id, hyp(s, words_until(now)), now)
    # A later decode spells the settled words differently and restates them just past the
    # boundary: neither changes what is settled, and nothing is said twice.
    s3 = step(c, 2.5)
    out = c.on_result(
        s3.id, hyp(s3, [("won", 0.1, 0.4), ("two", 0.82, 0.9), ("three", 0.95, 1.2), ("four", 1.3, 1.6)]), 2.5
    )
    (f,) = finals(out)
    assert f.text == "three four"  # both agreed with the previous decode, heard 0.2 s past "four"
    assert f.words[0].start >= 0.8  # never before the settled part


def test_end_of_speech_closes_with_the_rest_as_last_final() -> None:
    c = Captioner(OPTS, FilterOptions.off())
    c.on_speech_start(0.0, 0.0)
    for now in (1.3, 1.9):
        s = step(c, now)
        c.on_result(s.id, hyp(s, words_until(now)), now)
    out = c.on_speech_end(2.1, 2.6)
    (fin,) = submits(out)
    assert fin.kind == "final" and fin.end == 2.1 and fin.beam_size == OPTS.beam_size
    assert fin.start <= 0.8  # covers the first unsettled word, with left context
    out = c.on_result(fin.id, hyp(fin, SENTENCE), 2.8)
    (f,) = finals(out)
    assert f.last and f.text == "three four five" and f.seq == 2


def test_speculative_final_is_used_if_silence_lasts_and_cancelled_if_speech_resumes() -> None:
    c = Captioner(OPTS, FilterOptions.off())
    c.on_speech_start(0.0, 0.0)
    out = c.on_silence(2.1, 2.2)
    (spec,) = submits(out)
    assert spec.kind == "final" and spec.end == 2.1
    assert c.on_tick(2.4) == []  # no step decodes while the speculative final is out
    # Speech resumes: the request is cancelled, and its result, if it still comes, is discarded.
    out = c.on_silence(None, 2.5)
    assert [a for a in out if isinstance(a, Cancel)] == [Cancel(spec.id, "resumed", "final")]
    assert c.on_result(spec.id, hyp(spec, SENTENCE), 2.6) == [Discarded(spec.id, "obsolete")]
    # Silence again, and this time it lasts: the speculative result becomes the final.
    (spec2,) = submits(c.on_silence(3.0, 3.1))
    early = c.on_result(spec2.id, hyp(spec2, SENTENCE), 3.2)
    assert early == []  # decoded before the VAD was sure; nothing emitted yet
    out = c.on_speech_end(3.0, 3.5)
    assert not submits(out)
    (f,) = finals(out)
    assert f.last and f.text == "one two three four five"


def test_step_result_of_a_closed_utterance_is_discarded() -> None:
    c = Captioner(OPTS, FilterOptions.off())
    c.on_speech_start(0.0, 0.0)
    s = step(c, 1.0)
    out = c.on_speech_end(1.2, 1.3)
    assert Cancel(s.id, "obsolete", "step") in out
    assert c.on_result(s.id, hyp(s, words_until(1.0)), 1.4) == [Discarded(s.id, "obsolete")]


def test_a_word_stretched_over_the_pause_never_pushes_the_next_window_into_the_next_sentence() -> None:
    c = Captioner(OPTS, FilterOptions.off())
    c.on_speech_start(0.0, 0.0)
    (fin,) = submits(c.on_speech_end(2.0, 2.5))
    # Whisper stretches "five" to 4.5 s, well into the next sentence (which starts at 3.0).
    c.on_result(fin.id, hyp(fin, [*SENTENCE[:4], ("five", 1.7, 4.5)]), 2.6)
    c.on_speech_start(3.0, 3.1)
    s = step(c, 4.0)
    assert s.start <= 3.0 - OPTS.left_context + 1e-9 or s.start <= 2.0  # it hears the new sentence's start
    out = c.on_result(s.id, hyp(s, [("five", 1.7, 2.0), ("six", 3.1, 3.4), ("seven", 3.5, 3.8)]), 4.1)
    (p,) = events(out)
    assert p.text == "six seven"  # the previous sentence's last word is not said again


def test_no_step_decodes_while_the_previous_final_is_pending_then_order_is_kept() -> None:
    c = Captioner(OPTS, FilterOptions.off())
    c.on_speech_start(0.0, 0.0)
    (fin,) = submits(c.on_speech_end(2.0, 2.1))
    c.on_speech_start(2.6, 2.7)
    assert c.on_tick(3.5) == []  # the closing utterance's final goes first
    (f,) = finals(c.on_result(fin.id, hyp(fin, SENTENCE), 3.6))
    assert f.seq == 1
    assert submits(c.on_tick(3.7))


def test_degradation_cheapens_finals_then_thins_steps_then_stops_steps() -> None:
    c = Captioner(OPTS, FilterOptions.off())
    c.on_speech_start(0.0, 0.0)
    c.level = 1  # cheaper finals: steps as usual
    s = step(c, 1.0)
    c.on_result(s.id, hyp(s, words_until(1.0)), 1.0)
    c.level = 2  # partials thinned: steps twice as far apart
    assert c.on_tick(1.6) == [Skipped("degraded")]
    assert c.on_tick(1.7) == []  # counted once per skipped step
    assert submits(c.on_tick(2.0))
    for level in (1, 2, 3):
        c2 = Captioner(OPTS, FilterOptions.off())
        c2.level = level
        c2.on_speech_start(0.0, 0.0)
        assert bool(submits(c2.on_tick(1.0))) == (level < 3)
        # Every final follows the level: the speculative one and the one at the end of speech.
        (spec,) = submits(c2.on_silence(1.8, 2.0))
        (fin,) = submits(c2.on_speech_end(2.0, 2.1))
        for f in (spec, fin):
            assert f.kind == "final" and f.beam_size == 1 and not f.fallback and f.context < 30
    c3 = Captioner(OPTS, FilterOptions.off())
    c3.on_speech_start(0.0, 0.0)
    (fin,) = submits(c3.on_speech_end(2.0, 2.1))
    assert fin.beam_size == OPTS.beam_size and fin.fallback
    # Full-quality finals too: encoder context sized to the window, never 30 s of padding.
    assert fin.context == OPTS.final_context == 30.0  # full quality: Whisper's full window, once


def test_forced_commit_keeps_a_long_window_bounded() -> None:
    opts = CaptionerOptions(stream="t", left_context=0.0, max_window=4.0, commit_margin=0.0, language="en")
    c = Captioner(opts, FilterOptions.off())
    c.on_speech_start(0.0, 0.0)
    # Every decode disagrees with the previous one on every word (nothing agrees).
    for i, now in enumerate((2.0, 3.0, 4.5)):
        s = c.on_tick(now)
        (spec,) = submits(s)
        words = [(f"w{i}x{k}", k * 0.4, k * 0.4 + 0.3) for k in range(int(now / 0.4))]
        out = c.on_result(spec.id, hyp(spec, words), now)
    fs = finals(out)
    assert fs and not fs[0].last  # forced out past max_window
    (spec,) = submits(c.on_tick(5.5))
    assert spec.end - spec.start <= 4.0


TRUTH = [f"w{i}" for i in range(60)]


@settings(max_examples=150, deadline=None)
@given(
    noise=st.lists(st.integers(min_value=0, max_value=3), min_size=8, max_size=40),
    pauses=st.lists(st.booleans(), min_size=8, max_size=40),
)
def test_finals_are_the_truth_in_order_without_gaps_or_repeats(noise: list[int], pauses: list[bool]) -> None:
    """Decodes get the last few words wrong in ways that never repeat; whatever the sequence of
    steps, speech ends and resumes, the finals are exactly the spoken words, in order, once."""
    c = Captioner(OPTS, FilterOptions.off())
    spoken: list[tuple[str, float, float]] = []
    out_finals: list[Final] = []

    def speak(until: float) -> None:
        # Words every 0.3 s while the speaker talks.
        t = spoken[-1][2] + 0.05 if spoken else 0.05
        t = max(t, speak.resume)  # type: ignore[attr-defined]
        while t + 0.2 <= until and len(spoken) < len(TRUTH):
            spoken.append((TRUTH[len(spoken)], t, t + 0.2))
            t += 0.3

    speak.resume = 0.0  # type: ignore[attr-defined]

    def close(now: float) -> None:
        (fin,) = [s for s in submits(c.on_speech_end(now, now)) if s.kind == "final"]
        heard = [w for w in spoken if fin.start <= w[1] and w[2] <= fin.end]
        out_finals.extend(finals(c.on_result(fin.id, hyp(fin, heard), now)))

    now = 0.0
    c.on_speech_start(0.0, 0.0)
    open_ = True
    for k, (bad, pause) in enumerate(zip(noise, pauses, strict=False)):
        if pause and open_:
            now += 0.1
            close(now)
            open_ = False
            now += 0.5  # silence
            continue
        if not open_:
            c.on_speech_start(now, now)
            speak.resume = now + 0.05  # type: ignore[attr-defined]
            open_ = True
        now += 0.6
        speak(now)
        specs = submits(c.on_tick(now))
        if not specs:
            continue
        (s,) = specs
        heard = [w for w in spoken if s.start <= w[1] and w[2] <= s.end]
        garbled = heard[: len(heard) - bad] + [(f"{w}_{k}", a, b) for w, a, b in heard[len(heard) - bad :]]
        out_finals.extend(finals(c.on_result(s.id, hyp(s, garbled), now)))
    if open_:
        now += 0.1
        close(now)
    assert [f.seq for f in out_finals] == list(range(1, len(out_finals) + 1))
    said = [w.word.strip() for f in out_finals for w in f.words]
    assert said == TRUTH[: len(spoken)]  # every spoken word, once, in order
    assert all("_" not in w for w in said)  # never a word two decodes did not agree on
    ends = [w.end for f in out_finals for w in f.words]
    assert ends == sorted(ends)
    assert [f.last for f in out_finals].count(True) <= pauses.count(True) + 1
