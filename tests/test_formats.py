from __future__ import annotations

import json

from streamer.events import parse_event
from streamer.sinks import formats

from .sink_events import final


def test_clock_formats() -> None:
    assert formats.srt_time(0) == "00:00:00,000"
    assert formats.srt_time(3661.2345) == "01:01:01,234"
    assert formats.vtt_time(59.9996) == "00:01:00.000"
    assert formats.vtt_time(-3) == "00:00:00.000"


def test_srt_numbers_only_finals_with_text() -> None:
    finals = [final(1, "hello world"), final(2, "   "), final(3, "second\n\nline")]
    out = formats.format_srt(finals)
    assert out == (
        "1\n00:00:02,000 --> 00:00:03,500\nhello world\n\n2\n00:00:06,000 --> 00:00:07,500\nsecond line\n\n"
    )


def test_vtt_escapes_and_uses_seq_as_cue_id() -> None:
    out = formats.format_vtt([final(4, "a <b> & c --> d")])
    assert out == "WEBVTT\n\n4\n00:00:08.000 --> 00:00:09.500\na &lt;b&gt; &amp; c --&gt; d\n\n"


def test_zero_length_cue_gets_minimum_duration() -> None:
    f = final(1, "x").model_copy(update={"start": 5.0, "end": 5.0})
    assert "00:00:05,000 --> 00:00:05,500" in formats.format_srt([f])


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
    srt, n = "", 0
    for f in finals:
        cue = formats.srt_cue(n + 1, f)
        if cue:
            n += 1
            srt += cue
    assert srt == formats.format_srt(finals)
    assert formats.VTT_HEADER + "".join(formats.vtt_cue(f) for f in finals) == formats.format_vtt(finals)
