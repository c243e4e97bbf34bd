"""The stream runner (pipeline.Stream) over a real file source, with an injected VAD and decoder:
a decode that raises is counted and the stream goes on; reloaded options reach the core whole."""

from __future__ import annotations

import itertools
import wave
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest

from streamer import metrics
from streamer.config import Settings
from streamer.decode.engine import DecodeRequest
from streamer.decode.hypothesis import Hypothesis, HypSegment, HypWord
from streamer.events import Final, Partial, Status
from streamer.pipeline import Stream, run_file

SAMPLE_RATE = 16_000
# Two utterances: speech in [0.5, 2.5) and [4.0, 6.0), silence elsewhere (8 s in all).
SPEECH = [(0.5, 2.5), (4.0, 6.0)]
WORDS = [("one", 0.6, 1.0), ("two", 1.2, 1.6), ("three", 1.8, 2.3), ("four", 4.1, 4.6), ("five", 4.8, 5.4)]


def write_wav(path: Path, seconds: float = 8.0) -> Path:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    audio = 0.1 * np.sin(2 * np.pi * 220 * t)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes((audio * 32767).astype("<i2").tobytes())
    return path


class ScriptedVad:
    """Speech probability by the time of the frame (frames come in order, 32 ms each)."""

    def __init__(self) -> None:
        self.frames = itertools.count()

    def __call__(self, frame: np.ndarray) -> float:
        t = next(self.frames) * 512 / SAMPLE_RATE
        return 0.9 if any(a <= t < b for a, b in SPEECH) else 0.05


class ScriptedDecoder:
    """Answers at once with the words inside the window; raises for the requests `fail` picks."""

    def __init__(self, fail: int | None = None) -> None:
        self.requests: list[DecodeRequest] = []
        self.fail = fail  # index of the final request that raises
        self.finals = 0
        self.ids = itertools.count(1)

    @property
    def level(self) -> int:
        return 0

    def cancel(self, request_id: int) -> bool:
        return False

    def submit(self, request: DecodeRequest) -> Future[Hypothesis]:
        request.id = next(self.ids)
        self.requests.append(request)
        fut: Future[Hypothesis] = Future()
        if request.kind == "final":
            self.finals += 1
            if self.finals - 1 == self.fail:
                fut.set_exception(RuntimeError("CUDA out of memory (scripted)"))
                return fut
        start, end = request.offset, request.offset + request.duration
        words = tuple(HypWord(" " + w, a, b, 0.9) for w, a, b in WORDS if a >= start and b <= end)
        seg = HypSegment("".join(w.text for w in words), start, end, words)
        fut.set_result(
            Hypothesis(
                kind=request.kind,
                window_start=start,
                window_end=end,
                segments=(seg,) if words else (),
                language="en",
            )
        )
        return fut


def settings() -> Settings:
    return Settings(decoder={"language": "en"}, filters={"outside_speech": False})


def test_a_final_that_raises_closes_its_utterance_and_the_stream_goes_on(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "two.wav")
    failures = metrics.DECODE_FAILURES.labels("main", "final")
    before = failures._value.get()
    decoder = ScriptedDecoder(fail=0)  # the first utterance's final raises
    events = run_file(settings(), path, decoder, realtime=False, vad=ScriptedVad(), allow_failures=True)
    finals = [e for e in events if isinstance(e, Final)]
    # The second utterance is captioned in full; the first one lost only what was not settled.
    assert [w.word.strip() for f in finals for w in f.words][-2:] == ["four", "five"]
    assert [f.seq for f in finals] == list(range(1, len(finals) + 1))
    assert failures._value.get() == before + 1
    # The partial showing the first utterance's unconfirmed words was taken off the screen.
    first = [e for e in events if isinstance(e, Partial) and e.utterance == 1]
    assert not first or first[-1].text == ""


def test_a_stream_without_failures_captions_every_word(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "two.wav")
    events = run_file(settings(), path, ScriptedDecoder(), realtime=False, vad=ScriptedVad())
    finals = [e for e in events if isinstance(e, Final)]
    assert [w.word.strip() for f in finals for w in f.words] == [w for w, _a, _b in WORDS]


def test_reloaded_settings_reach_the_core_as_one_new_snapshot(tmp_path: Path) -> None:
    """SIGHUP hands the stream a new snapshot built from the new settings; the stream thread
    swaps it in between two frames, and every option type of the core reads the new keys."""
    from streamer.audio.file import FileSource

    path = write_wav(tmp_path / "two.wav")
    events: list[Partial | Final | Status] = []
    cfg = settings()
    cfg.source.realtime = False
    decoder = ScriptedDecoder()
    stream = Stream(cfg, FileSource(path, realtime=False), decoder, events.append, vad=ScriptedVad())
    new = cfg.model_copy(deep=True)
    new.decoder.beam_size = 2
    new.vad.end_silence = 0.7
    new.filters.repetition = False
    new.decoder.no_speech_threshold = 0.5
    before = stream.core.options
    stream.reconfigure(new)
    assert stream.core.options is before  # nothing changes under the stream thread's feet ...
    stream.start()
    assert stream.join(timeout=60)
    after = stream.core.options  # ... it swapped the snapshot in before its next frame
    assert after is not before
    assert after.captioner.beam_size == 2
    assert after.segmenter.end_silence == 0.7
    assert not after.filters.repetition and after.filters.no_speech_threshold == 0.5
    # ... and the decisions follow it: every final asked for uses the new beam.
    assert {r.beam_size for r in decoder.requests if r.kind == "final"} == {2}
    with pytest.raises(AttributeError):
        after.captioner.beam_size = 3  # type: ignore[misc]


def test_decode_trace_has_one_line_per_decode_with_its_outcome(tmp_path: Path) -> None:
    from streamer.decode import trace

    path = write_wav(tmp_path / "two.wav")
    cfg = settings()
    cfg.trace = tmp_path / "trace.jsonl"
    decoder = ScriptedDecoder(fail=1)
    run_file(cfg, path, decoder, realtime=False, vad=ScriptedVad(), allow_failures=True)
    lines = trace.read(cfg.trace)
    assert len(lines) == len(decoder.requests)  # nothing is cancelled in lockstep
    assert {r["kind"] for r in lines} == {"step", "final"}
    assert [r["outcome"] for r in lines].count("failed") == 1
    used = [r for r in lines if r["outcome"] == "used"]
    assert used and all({"start", "end", "beam", "seconds", "text"} <= r.keys() for r in used)
    summary = trace.summarize(lines)
    assert summary["final"]["outcomes"]["failed"] == 1
    assert "| final |" in trace.markdown(summary)


# A new value for every key the option types read; a key added to an option type must get one here.
NEW_VALUES: dict[str, object] = {
    "decoder.agreement": False,
    "decoder.beam_size": 2,
    "decoder.commit_margin": 0.3,
    "decoder.compression_ratio_threshold": 2.0,
    "decoder.context_finals": 1,
    "decoder.fallback_min_seconds": 3.0,
    "decoder.final_context": 25.0,
    "decoder.holdback": 1,
    "decoder.hotwords": "Kubernetes",
    "decoder.initial_prompt": "Glossary: streamer.",
    "decoder.language": "ko",
    "decoder.languages": ["ko", "en"],
    "decoder.left_context": 1.5,
    "decoder.log_prob_threshold": -0.8,
    "decoder.max_tokens_per_second": 9.0,
    "decoder.max_window": 12.0,
    "decoder.min_commit_audio": 3.0,
    "decoder.no_speech_threshold": 0.5,
    "decoder.partial_beam_size": 2,
    "decoder.partial_context": 20.0,
    "decoder.partials": False,
    "decoder.step": 0.7,
    "decoder.task": "translate",
    "decoder.temperatures": [0.0, 0.5],
    "filters.compression": False,
    "filters.low_confidence": False,
    "filters.min_word_probability": 0.2,
    "filters.no_speech": False,
    "filters.outside_speech": True,
    "filters.phrases": False,
    "filters.repetition": False,
    "vad.end_silence": 0.6,
    "vad.max_utterance": 20.0,
    "vad.min_speech": 0.2,
    "vad.neg_threshold": 0.3,
    "vad.pad": 0.3,
    "vad.threshold": 0.6,
}


def test_a_reload_of_every_live_key_reaches_what_decides(tmp_path: Path) -> None:
    """Every key the option types read is live (derived, not listed); change all of them through
    the daemon's reload path and each one reaches the stream's snapshot or the engine's options,
    and the requests the stream then makes follow them."""
    from types import SimpleNamespace

    from streamer.audio.file import FileSource
    from streamer.daemon import _apply_live
    from streamer.decode.engine import DecodeEngine, DecodeOptions
    from streamer.options import field_for_key, lookup
    from streamer.service.reload import LIVE_KEYS, OPTION_TYPES, is_live, plan_reload

    keys = {k for k in LIVE_KEYS if not k.endswith(".") and field_for_key(OPTION_TYPES, k)}
    assert keys == set(NEW_VALUES), "every option key needs a new value in this test"
    old = settings()
    old.source.realtime = False
    new = old.model_copy(deep=True)
    for key, value in NEW_VALUES.items():
        section, name = key.split(".")
        setattr(getattr(new, section), name, value)
    plan = plan_reload(old, new)
    assert set(plan.live) == keys and not plan.restart and all(is_live(k) for k in keys)

    decoder = ScriptedDecoder()
    stream = Stream(
        old, FileSource(write_wav(tmp_path / "two.wav"), realtime=False), decoder, print, vad=ScriptedVad()
    )
    engine = DecodeEngine.__new__(DecodeEngine)  # only its options are read here
    engine.options = DecodeOptions.from_settings(old)
    daemon = SimpleNamespace(settings=old, streams=[stream], engines=[engine], engine=engine, sinks=None)
    _apply_live(daemon, new, plan.live)  # type: ignore[arg-type]
    stream.start()
    assert stream.join(timeout=60)
    core = stream.core.options
    parts = {
        "CaptionerOptions": core.captioner,
        "SegmenterOptions": core.segmenter,
        "FilterOptions": core.filters,
    }
    for key in NEW_VALUES:
        for cls in OPTION_TYPES:
            found = field_for_key([cls], key)
            if found is None:
                continue
            target = engine.options if cls is DecodeOptions else parts[cls.__name__]
            got = getattr(target, found[1])
            want = lookup(new, key)
            want = tuple(want) if isinstance(want, list) else want
            assert got == want, f"{key}: {got!r} != {want!r} in {cls.__name__}"
    # The requests made after the reload follow it.
    assert decoder.requests
    assert all(
        r.task == "translate" and r.hotwords == "Kubernetes" and r.language == "ko" for r in decoder.requests
    )
    assert {r.beam_size for r in decoder.requests if r.kind == "final"} == {2}
    assert {r.beam_size for r in decoder.requests if r.kind == "step"} <= {2}
    assert all(r.context == (25.0 if r.kind == "final" else 20.0) for r in decoder.requests)
    assert all((r.prompt or "").startswith("Glossary: streamer.") for r in decoder.requests)


def test_a_file_whose_decode_failed_is_an_error_not_a_transcript_with_holes(tmp_path: Path) -> None:
    from streamer.errors import UserError

    path = write_wav(tmp_path / "two.wav")
    with pytest.raises(UserError, match=r"1 decode failed \(RuntimeError: CUDA out of memory"):
        run_file(settings(), path, ScriptedDecoder(fail=0), realtime=False, vad=ScriptedVad())
