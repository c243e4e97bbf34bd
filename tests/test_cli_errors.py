"""Bad input gives a clear one-line error and a non-zero exit, never a traceback."""

from __future__ import annotations

from pathlib import Path

from .e2e_util import streamer


def assert_clean_failure(res, status: int, *needles: str) -> None:  # type: ignore[no-untyped-def]
    assert res.returncode == status, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr
    for needle in needles:
        assert needle in res.stderr, res.stderr


def test_non_audio_file(tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("this is not audio\n")
    res = streamer("transcribe", str(bad), "--model", "tiny.en")
    assert_clean_failure(res, 1, "cannot read audio", "notes.txt")


def test_missing_file(tmp_path: Path) -> None:
    res = streamer("transcribe", str(tmp_path / "nope.flac"), "--model", "tiny.en")
    assert_clean_failure(res, 1, "nope.flac")
    res = streamer("run", "--source", f"file:{tmp_path / 'nope.flac'}", "--model", "tiny.en", "--no-server")
    assert_clean_failure(res, 1, "nope.flac")


def test_unknown_model(audio_dir: Path) -> None:
    wav = str(audio_dir / "en" / "ljspeech_LJ001-0002.flac")
    res = streamer("transcribe", wav, "--model", "no-such-model")
    assert_clean_failure(res, 1, "no-such-model")


def test_invalid_config_values(audio_dir: Path, tmp_path: Path) -> None:
    wav = str(audio_dir / "en" / "ljspeech_LJ001-0002.flac")
    res = streamer("transcribe", wav, env={"STREAMER_VAD__END_SILENCE": "soon"})
    assert_clean_failure(res, 2, "vad.end_silence", "soon", "number")
    cfg = tmp_path / "streamer.toml"
    cfg.write_text('[decoder]\nbeam_size = 0\n')
    res = streamer("transcribe", wav, "--config", str(cfg))
    assert_clean_failure(res, 2, "decoder.beam_size", "greater than or equal to 1")
    cfg.write_text('[vad]\nend_silense = 0.4\n')
    res = streamer("transcribe", wav, "--config", str(cfg))
    assert_clean_failure(res, 2, "unknown key", "vad.end_silense")
    cfg.write_text('[vad\n')
    res = streamer("transcribe", wav, "--config", str(cfg))
    assert_clean_failure(res, 2, "not valid TOML")
    res = streamer("run", "--source", "carrier-pigeon", "--no-server")
    assert_clean_failure(res, 2, "source.spec", "carrier-pigeon")
