"""Batched encoding (streamer.decode.batch): the pure parts, and the real tiny.en model giving the
same words for windows of two streams encoded in one call as for each decoded on its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamer.decode.batch import batch_frames, resolve_batch_size, window_frames


def test_window_frames_follow_the_context_rule() -> None:
    assert window_frames(15.0, 4.0) == 1500
    assert window_frames(10.0, 8.0) == 1500  # speech + 5 s beats a shorter context (in 2.5 s steps)
    assert {window_frames(15.0, d / 10) for d in range(0, 150)} == {1500, 1750, 2000}  # few shapes
    assert window_frames(30.0, 4.0) is None  # the full window: no truncation
    assert window_frames(15.0, 26.0) is None


def test_batch_is_padded_to_its_longest_window() -> None:
    assert batch_frames([1500, 1300]) == 1500
    assert batch_frames([1500, None]) is None
    assert batch_frames([]) is None


def test_auto_batch_size_depends_on_the_device() -> None:
    assert resolve_batch_size("auto", "cpu") == 1
    assert resolve_batch_size("auto", "cuda") == 8
    assert resolve_batch_size(4, "cpu") == 4


@pytest.mark.model
@pytest.mark.parametrize("kind,context", [("final", 30.0), ("step", 15.0)])
def test_batch_of_two_streams_gives_the_single_decodes_words(
    audio_dir: Path, kind: str, context: float
) -> None:
    from streamer import metrics
    from streamer.audio.decode import load_audio
    from streamer.config import load_settings
    from streamer.decode.engine import DecodeEngine, DecodeRequest

    settings = load_settings(overrides={"model.name": "tiny.en", "model.batch_size": 2})
    engine = DecodeEngine.from_settings(settings)
    files = ["ljspeech_LJ001-0001.flac", "librispeech_2412-153948-0000.flac"]
    audios = [load_audio(audio_dir / "en" / f)[: 16000 * 8] for f in files]

    def req(i: int) -> DecodeRequest:
        return DecodeRequest(kind=kind, audio=audios[i], offset=10.0 * i, stream=f"s{i}", context=context)  # type: ignore[arg-type]

    try:
        assert engine.batch_size == 2
        single = [engine.decode(req(i)) for i in range(2)]
        before = metrics.REGISTRY.get_sample_value("streamer_decode_batch_size_count") or 0.0
        with engine._cond:  # both queued before the worker looks: they go in one batch
            futures = [engine.submit(req(i)) for i in range(2)]
        batched = [f.result(timeout=120) for f in futures]
        assert metrics.REGISTRY.get_sample_value("streamer_decode_batch_size_count") == before + 1
    finally:
        engine.close()
    for one, both in zip(single, batched, strict=True):
        assert one.text.strip()
        assert both.text == one.text
        assert [(w.text, round(w.start, 2), round(w.end, 2)) for w in both.words] == [
            (w.text, round(w.start, 2), round(w.end, 2)) for w in one.words
        ]
