from __future__ import annotations

import json

from streamer.events import Final, Word, parse_event
from streamer.sinks import formats

from .sink_events import final


def test_clock_formats() -> None:
    assert formats.srt_time(0) == "00:00:00,000"
    assert formats.srt_time(3661.2345) == "01:01:01,234"
    assert formats.vtt_time(59.9996) == "00:01:00.000"
    assert formats.vtt_time(-3) == "00:00:00.000"


def test_srt_numbers_only_finals_with_text() -> None:
    # "hello world" is timed by its words (2.0-2.1 s) and stays up the minimum display time (1 s).
    finals = [final(1, "hello world"), final(2, "   "), final(3, "second\n\nline")]
    out = formats.format_srt(finals)
    assert out == (
        "1\n00:00:02,000 --> 00:00:03,000\nhello world\n\n2\n00:00:06,000 --> 00:00:07,000\nsecond line\n\n"
    )


def test_vtt_escapes_and_numbers_cues() -> None:
    # Its 3 words do not spell the text, so the cue takes the final's own times (8.0-9.5 s).
    out = formats.format_vtt([final(4, "a <b> & c --> d")])
    assert out == "WEBVTT\n\n1\n00:00:08.000 --> 00:00:09.500\na &lt;b&gt; &amp; c --&gt; d\n\n"


def test_zero_length_cue_gets_minimum_duration() -> None:
    f = final(1, "x").model_copy(update={"start": 5.0, "end": 5.0, "words": []})
    assert "00:00:05,000 --> 00:00:06,000" in formats.format_srt([f])


def _timed_final(seq: int, words: list[tuple[str, float, float]], *, utterance: int, last: bool) -> Final:
    text = "".join(w for w, _, _ in words).strip()
    return Final(
        stream="main",
        utterance=utterance,
        rev=0,
        seq=seq,
        last=last,
        text=text,
        stable=text,
        start=words[0][1],
        end=words[-1][2],
        emitted_at=words[-1][2] + 0.5,
        words=[Word(word=w, start=a, end=b, probability=0.9) for w, a, b in words],
    )


def _words(text: str, t0: float, step: float = 0.3) -> list[tuple[str, float, float]]:
    return [(" " + w, t0 + i * step, t0 + i * step + step * 0.8) for i, w in enumerate(text.split())]


def test_long_final_becomes_two_line_captions_broken_at_phrases() -> None:
    text = (
        "Hello everyone, and welcome to the show. Today we are going to talk about the history "
        "of the printing press in Europe and how it changed the world."
    )
    f = _timed_final(1, _words(text, 10.0), utterance=0, last=True)
    cues = formats.final_cues([f])
    assert [c.lines for c in cues] == [
        ("Hello everyone, and welcome to the show.", "Today we are going to talk about"),
        ("the history of the printing press", "in Europe and how it changed the world."),
    ]
    assert cues[0].start == 10.0 and cues[1].start == f.words[14].start
    assert cues[0].end <= cues[1].start  # no overlap
    srt = formats.format_srt([f])
    assert "1\n00:00:10,000 --> " in srt and "\nHello everyone, and welcome to the show.\nToday we" in srt


def test_finals_of_one_utterance_are_laid_out_together() -> None:
    # Protocol 2: an utterance settles as several finals; captions are not cut at final boundaries.
    a = _timed_final(1, _words("I went to the store", 0.0), utterance=0, last=False)
    b = _timed_final(2, _words("yesterday and bought some", 1.5), utterance=0, last=False)
    c = _timed_final(3, _words("apples and pears for dinner.", 2.7), utterance=0, last=True)
    d = _timed_final(4, _words("Thanks.", 6.0), utterance=1, last=True)
    cues = formats.final_cues([a, b, c])
    assert [cue.lines for cue in cues] == [
        ("I went to the store yesterday and bought", "some apples and pears for dinner."),
    ]
    w = formats.SubtitleWriter("srt")
    assert w.feed(a) == "" and w.feed(b) == "" and w.feed(c) == ""  # utterance held until the next one starts
    first = w.feed(d)
    assert first.startswith("1\n00:00:00,000 --> ") and "dinner." in first
    # 74 columns at 17/s need 4.35 s: shown past the last word's end (4.14 s), before the next (6.0 s).
    assert "--> 00:00:04,353\n" in first
    assert w.flush().startswith("2\n00:00:06,000 --> 00:00:07,000\nThanks.")


def test_caption_never_overlaps_the_next() -> None:
    a = _timed_final(1, _words("A long sentence that needs reading time.", 0.0, 0.1), utterance=0, last=True)
    b = _timed_final(2, _words("Next.", 1.0), utterance=1, last=True)
    srt = formats.format_srt([a, b])
    assert "1\n00:00:00,000 --> 00:00:01,000\n" in srt  # wanted 2.3 s, the next caption starts at 1.0


def test_korean_final_is_wrapped_by_width() -> None:
    text = "오늘은 날씨가 정말 좋아서 친구들과 함께 공원에 가서 산책을 하고 맛있는 점심을 먹었습니다."
    f = _timed_final(1, _words(text, 0.0), utterance=0, last=True)
    cues = formats.final_cues([f])
    assert [c.lines for c in cues] == [
        ("오늘은 날씨가 정말 좋아서", "친구들과 함께 공원에 가서"),
        ("산책을 하고 맛있는 점심을 먹었습니다.",),
    ]


def test_txt_json_jsonl_round_trip() -> None:
    finals = [final(1, "één"), final(2, "two")]
    assert formats.format_txt(finals) == "één\ntwo\n"
    lines = formats.format_jsonl(finals).splitlines()
    assert [parse_event(line) for line in lines] == finals
    doc = json.loads(formats.format_json(finals))
    assert doc["text"] == "één two"
    assert [seg["text"] for seg in doc["segments"]] == ["één", "two"]
    assert [seg["seq"] for seg in doc["segments"]] == [1, 2]
    assert "één" in formats.format_json(finals)  # UTF-8 kept, not \u-escaped


def test_cue_by_cue_equals_whole_document() -> None:
    finals = [final(i, "" if i == 3 else None) for i in range(1, 7)]
    srt = formats.SubtitleWriter("srt")
    assert "".join(srt.feed(f) for f in finals) + srt.flush() == formats.format_srt(finals)
    w = formats.SubtitleWriter("vtt")
    assert w.header() + "".join(w.feed(f) for f in finals) + w.flush() == formats.format_vtt(finals)
