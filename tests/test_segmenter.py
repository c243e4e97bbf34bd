"""The VAD segmenter state machine, fed synthetic probability sequences (no model, no threads)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.vad.segmenter import FRAME_SECONDS, Segmenter, SegmenterOptions, SpeechEnd, SpeechStart

F = FRAME_SECONDS


def run(probs: list[float], opts: SegmenterOptions | None = None) -> list[SpeechStart | SpeechEnd]:
    seg = Segmenter(opts or SegmenterOptions())
    out: list[SpeechStart | SpeechEnd] = []
    for i, p in enumerate(probs):
        out.extend(seg.feed(p, i * F))
    out.extend(seg.flush(len(probs) * F))
    return out


def frames(seconds: float) -> int:
    return round(seconds / F)


def test_silence_gives_nothing() -> None:
    assert run([0.0] * 500) == []
    assert run([0.3] * 500) == []  # below the onset threshold


def test_one_utterance_with_padding_and_end_silence() -> None:
    opts = SegmenterOptions(threshold=0.5, min_speech=0.25, end_silence=0.5, pad=0.2)
    probs = [0.0] * frames(1.0) + [0.9] * frames(2.0) + [0.0] * frames(2.0)
    events = run(probs, opts)
    assert [type(e) for e in events] == [SpeechStart, SpeechEnd]
    start, end = events
    assert isinstance(start, SpeechStart) and isinstance(end, SpeechEnd)
    speech_on = frames(1.0) * F
    speech_off = (frames(1.0) + frames(2.0)) * F
    assert abs(start.start - (speech_on - 0.2)) < 1e-9
    assert abs(end.end - (speech_off + 0.2)) < 1e-9
    # The start is decided once min_speech of speech was heard; the end after end_silence.
    assert start.at - speech_on >= 0.25 - 1e-9 and start.at - speech_on < 0.25 + 2 * F
    assert end.at - speech_off >= 0.5 - 1e-9 and end.at - speech_off < 0.5 + 2 * F
    assert not end.forced


def test_short_blip_is_not_speech() -> None:
    probs = [0.0] * 20 + [0.9] * frames(0.1) + [0.0] * 50
    assert run(probs, SegmenterOptions(min_speech=0.25)) == []


def test_hysteresis_keeps_utterance_open_between_thresholds() -> None:
    # 0.4 is under the onset (0.5) but over the offset (0.35): speech goes on.
    probs = [0.9] * frames(1.0) + [0.4] * frames(2.0) + [0.9] * frames(0.5) + [0.0] * frames(1.0)
    events = run(probs, SegmenterOptions(threshold=0.5, neg_threshold=0.35))
    assert [type(e) for e in events] == [SpeechStart, SpeechEnd]


def test_pause_shorter_than_end_silence_does_not_split() -> None:
    probs = [0.9] * frames(1.0) + [0.0] * frames(0.3) + [0.9] * frames(1.0) + [0.0] * frames(1.0)
    events = run(probs, SegmenterOptions(end_silence=0.5))
    assert [type(e) for e in events] == [SpeechStart, SpeechEnd]


def test_pause_longer_than_end_silence_splits() -> None:
    probs = [0.9] * frames(1.0) + [0.0] * frames(0.8) + [0.9] * frames(1.0) + [0.0] * frames(1.0)
    events = run(probs, SegmenterOptions(end_silence=0.5, pad=0.2))
    assert [type(e) for e in events] == [SpeechStart, SpeechEnd, SpeechStart, SpeechEnd]
    first_end, second_start = events[1], events[2]
    assert isinstance(first_end, SpeechEnd) and isinstance(second_start, SpeechStart)
    assert second_start.start >= first_end.end  # padding never makes utterances overlap


def test_max_utterance_splits_at_quietest_point() -> None:
    probs = [0.95] * frames(6.0)
    quiet = len(probs)
    probs += [0.4] * 2 + [0.95] * frames(6.0) + [0.0] * frames(1.0)
    events = run(probs, SegmenterOptions(max_utterance=10.0, neg_threshold=0.3))
    kinds = [type(e) for e in events]
    assert kinds == [SpeechStart, SpeechEnd, SpeechStart, SpeechEnd]
    forced = events[1]
    assert isinstance(forced, SpeechEnd) and forced.forced
    assert abs(forced.end - (quiet + 1) * F) <= F + 1e-9  # the latest of the two quiet frames
    assert forced.end - forced.start <= 10.0 + 1e-9


def test_flush_closes_open_utterance_at_end_of_stream() -> None:
    seg = Segmenter(SegmenterOptions(pad=0.2))
    out = []
    for i in range(frames(2.0)):
        out += seg.feed(0.9, i * F)
    out += seg.flush(frames(2.0) * F)
    assert isinstance(out[-1], SpeechEnd)
    assert out[-1].end <= frames(2.0) * F + 1e-9  # never past the audio there is


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=0, max_size=1500))
def test_events_alternate_and_stay_ordered(probs: list[float]) -> None:
    opts = SegmenterOptions(max_utterance=8.0)
    events = run(probs, opts)
    expect_start = True
    last_end = 0.0
    for ev in events:
        assert isinstance(ev, SpeechStart if expect_start else SpeechEnd)
        if isinstance(ev, SpeechStart):
            assert ev.start >= last_end - 1e-9
        else:
            assert ev.end >= ev.start
            assert ev.end - ev.start <= opts.max_utterance + 1e-6
            last_end = ev.end
        expect_start = not expect_start
    assert expect_start, "every utterance is closed after flush"
