"""Many-streams benchmark: the pure parts (slicing speech in pauses, the stream config, verdicts)."""

from __future__ import annotations

from pathlib import Path

import tomllib

from streamer.config import Settings, stream_settings
from streamer_bench.metrics import RefWord
from streamer_bench.streams import cut_points, slice_reference, streams_config, verdict


def _ref() -> list[RefWord]:
    # A word every second: w0 at [0, 0.6], w1 at [1, 1.6], ...
    return [RefWord(f"w{i}", float(i), i + 0.6, "match") for i in range(40)]


def test_slices_are_consecutive_and_cut_in_pauses() -> None:
    cuts = cut_points(_ref(), 10.0, 3)
    assert cuts == [(0.0, 9.8), (9.8, 19.8), (19.8, 29.8)]
    assert len(cut_points(_ref(), 10.0, 10)) == 3  # the recording runs out after ~39 s


def test_slice_reference_is_on_the_slice_clock_and_loses_no_word() -> None:
    ref = _ref()
    cuts = cut_points(ref, 10.0, 3)
    parts = [slice_reference(ref, a, b) for a, b in cuts]
    assert [w.text for p in parts for w in p] == [w.text for w in ref[:30]]
    assert parts[1][0].text == "w10" and abs(parts[1][0].start - 0.2) < 1e-9


def test_streams_config_is_a_valid_daemon_configuration(tmp_path: Path) -> None:
    text = streams_config([tmp_path / "a.wav", tmp_path / "b.wav"], "tiny.en", 2)
    settings = Settings.model_validate(tomllib.loads(text))
    assert settings.model.batch_size == 2
    assert [s.stream for s in stream_settings(settings)] == ["s0", "s1"]
    assert [s.source.spec for s in stream_settings(settings)] == [
        f"file:{tmp_path / 'a.wav'}",
        f"file:{tmp_path / 'b.wav'}",
    ]


def _stream(dropped: float = 0.0, words: int = 5, rc: int = 0) -> dict[str, object]:
    return {"returncode": rc, "dropped_seconds": dropped, "finalised_words": words}


def test_verdict_needs_latency_under_the_limit_and_nothing_lost() -> None:
    assert verdict([_stream(), _stream()], [0.5, 1.0, 1.5])["ok"]
    slow = verdict([_stream()], [3.0] * 10)
    assert not slow["ok"] and slow["going"]  # over 2 s, under 4 s: worth trying N + 1
    assert not verdict([_stream()], [5.0] * 10)["going"]
    assert not verdict([_stream(dropped=0.5)], [0.5])["going"]
    assert not verdict([_stream(), _stream(words=0)], [0.5])["ok"]
    assert not verdict([_stream(rc=1)], [0.5])["ok"]
