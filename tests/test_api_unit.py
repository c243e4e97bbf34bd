"""The file API's pure parts: form validation, response rendering, job state (no model, no sockets)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamer.api.jobs import Job, expired
from streamer.api.openai_compat import ApiError, TranscribeOptions, parse_form, render
from streamer.events import Final, Word
from streamer.layout import Layout


def form(**fields: str | list[str]) -> dict[str, list[str]]:
    return {k.replace("__", "[]"): v if isinstance(v, list) else [v] for k, v in fields.items()}


def test_parse_form_defaults_and_errors() -> None:
    opts = parse_form(form(model="whisper-1"), "transcribe")
    assert (opts.response_format, opts.language, opts.stream, opts.granularities) == (
        "json",
        None,
        False,
        frozenset({"segment"}),
    )
    cases = [
        (form(), "model"),
        (form(model="m", response_format="docx"), "response_format"),
        (form(model="m", language="english"), "language"),
        (form(model="m", temperature="hot"), "temperature"),
        (form(model="m", temperature="1.5"), "temperature"),
        (form(model="m", stream="maybe"), "stream"),
        (
            form(model="m", timestamp_granularities__="char", response_format="verbose_json"),
            "timestamp_granularities",
        ),
        (form(model="m", timestamp_granularities__="word"), "timestamp_granularities"),  # needs verbose_json
        (form(model="m", response_format="srt", stream="true"), "response_format"),
    ]
    for fields, param in cases:
        with pytest.raises(ApiError) as e:
            parse_form(fields, "transcribe")
        assert e.value.status == 400 and e.value.param == param, fields
        assert set(e.value.body()["error"]) == {"message", "type", "param", "code"}
    with pytest.raises(ApiError):
        parse_form(form(model="m", language="ko"), "translate")  # translations take no language
    with pytest.raises(ApiError):
        parse_form(form(model="m", stream="true"), "transcribe", jobs=True)
    o = parse_form(
        form(model="m", response_format="verbose_json", timestamp_granularities__=["word", "segment"]),
        "translate",
    )
    assert o.task == "translate" and o.granularities == {"word", "segment"}
    assert TranscribeOptions.from_doc(json.loads(json.dumps(o.to_doc()))) == o


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "model",
                "language",
                "temperature",
                "response_format",
                "stream",
                "prompt",
                "timestamp_granularities[]",
            ]
        ),
        st.lists(st.text(max_size=30), min_size=1, max_size=3),
    )
)
def test_parse_form_answers_any_form_with_options_or_a_400(fields: dict[str, list[str]]) -> None:
    try:
        parse_form(fields, "transcribe")
    except ApiError as e:
        assert e.status == 400 and e.message


def fin(seq: int, text: str, start: float) -> Final:
    words = [
        Word(word=" " + w, start=start + i * 0.3, end=start + i * 0.3 + 0.25, probability=0.9)
        for i, w in enumerate(text.split())
    ]
    end = start + 0.3 * len(words)
    return Final(
        stream="file",
        utterance=seq - 1,
        rev=0,
        seq=seq,
        text=text,
        stable=text,
        start=start,
        end=end,
        emitted_at=end,
        words=words,
        lang="en",
    )


def test_render_every_format() -> None:
    finals = [fin(1, "Hello there.", 0.5), fin(2, "General Kenobi.", 2.0)]
    layout = Layout()
    base = TranscribeOptions(model="m")
    body, ctype = render(base, finals, 3.2, layout)
    assert json.loads(body) == {"text": "Hello there. General Kenobi."} and ctype == "application/json"
    body, ctype = render(TranscribeOptions(model="m", response_format="text"), finals, 3.2, layout)
    assert body == "Hello there. General Kenobi.\n" and ctype.startswith("text/plain")
    body, _ = render(TranscribeOptions(model="m", response_format="srt"), finals, 3.2, layout)
    assert body.startswith("1\n00:00:00,500 --> ")
    body, _ = render(TranscribeOptions(model="m", response_format="vtt"), finals, 3.2, layout)
    assert body.startswith("WEBVTT")
    verbose = TranscribeOptions(
        model="m", response_format="verbose_json", granularities=frozenset({"word", "segment"})
    )
    doc = json.loads(render(verbose, finals, 3.2, layout)[0])
    assert doc["duration"] == 3.2 and doc["language"] == "en" and doc["task"] == "transcribe"
    assert [w["word"] for w in doc["words"]] == ["Hello", "there.", "General", "Kenobi."]
    assert [s["start"] for s in doc["segments"]] == [0.5, 2.0]
    assert all(s["avg_logprob"] < 0 for s in doc["segments"])


def test_job_progress_eta_and_expiry() -> None:
    job = Job(
        id="job_" + "0" * 24, filename="a.flac", options={"model": "m"}, created=100.0, audio_seconds=60.0
    )
    assert job.public(100.0, 10.0)["eta_seconds"] is None
    job.state, job._run_wall, job.done_seconds = "running", 100.0, 15.0
    doc = job.public(110.0, 10.0)  # 15 s of audio in 10 s: 45 s left take 30 s
    assert doc["progress"] == 0.25 and doc["eta_seconds"] == 30.0 and doc["audio_seconds_done"] == 15.0
    assert not expired(job, 1e9, 10.0)  # running jobs never expire
    job.state, job.finished = "done", 200.0
    assert job.public(201.0, 10.0)["progress"] == 1.0 and job.public(201.0, 10.0)["expires_at"] == 210
    assert not expired(job, 209.0, 10.0) and expired(job, 210.0, 10.0)
    assert Job.from_doc(json.loads(json.dumps(job.to_doc()))).to_doc() == job.to_doc()
