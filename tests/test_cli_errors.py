"""Bad input gives a clear one-line error and a non-zero exit, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

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
    cfg.write_text("[decoder]\nbeam_size = 0\n")
    res = streamer("transcribe", wav, "--config", str(cfg))
    assert_clean_failure(res, 2, "decoder.beam_size", "greater than or equal to 1")
    cfg.write_text("[vad]\nend_silense = 0.4\n")
    res = streamer("transcribe", wav, "--config", str(cfg))
    assert_clean_failure(res, 2, "unknown key", "vad.end_silense")
    cfg.write_text("[vad\n")
    res = streamer("transcribe", wav, "--config", str(cfg))
    assert_clean_failure(res, 2, "not valid TOML")
    res = streamer("run", "--source", "carrier-pigeon", "--no-server")
    assert_clean_failure(res, 2, "source.spec", "carrier-pigeon")


def _one_line_usage_error(res, *needles: str) -> None:  # type: ignore[no-untyped-def]
    assert_clean_failure(res, 2, *needles)
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


# Each of these once ended in a traceback or in broken behaviour (issue 11's attack probe). The
# command would fail with exit 1 on the missing audio file if the value were accepted.
BAD_ENV = [
    ({"STREAMER_DECODER__TEMPERATURES": "notalist"}, ["decoder.temperatures", "notalist", "JSON list"]),
    ({"STREAMER_DECODER__TEMPERATURES": "[0.0, 7]"}, ["decoder.temperatures", "less than or equal to 1"]),
    ({"STREAMER_DECODER__TEMPERATURES": "[]"}, ["decoder.temperatures", "at least 1"]),
    ({"STREAMER_SOURCE__RING_SECONDS": "1e7"}, ["source.ring_seconds", "less than or equal to 600"]),
    ({"STREAMER_SOURCE__RING_SECONDS": "1e308"}, ["source.ring_seconds", "1e308"]),
    ({"STREAMER_VAD__END_SILENCE": "inf"}, ["vad.end_silence", "finite number"]),
    ({"STREAMER_VAD__THRESHOLD": "nan"}, ["vad.threshold", "finite number"]),
    ({"STREAMER_SERVER__SEND_BUFFER": str(2**31)}, ["server.send_buffer", "less than or equal to"]),
    ({"STREAMER_SERVER__HISTORY_FINALS": "0"}, ["server.history_finals"]),
    ({"STREAMER_MQTT__RECONNECT_MAX": "1e300"}, ["mqtt.reconnect_max"]),
    ({"STREAMER_DECODER__LANGUAGE": "xx"}, ["decoder.language", "unknown language code 'xx'"]),
    ({"STREAMER_DECODER__LANGUAGES": '["ko", "klingon"]'}, ["decoder.languages", "'klingon'"]),
    ({"STREAMER_SERVER__TOKEN": ""}, ["server.token", "empty token would disable authentication"]),
    ({"STREAMER_SERVER__TOKEN": "  "}, ["server.token", "empty token"]),
    ({"STREAMER_TOKEN": ""}, ["STREAMER_TOKEN", "empty"]),
    ({"STREAMER_SERVER": "5"}, ["key 'server'", "JSON object"]),
]


@pytest.mark.parametrize(("env", "needles"), BAD_ENV, ids=[next(iter(e)) for e, _ in BAD_ENV])
def test_bad_environment_values(tmp_path: Path, env: dict[str, str], needles: list[str]) -> None:
    res = streamer("run", "--no-server", "--source", f"file:{tmp_path / 'absent.flac'}", env=env)
    _one_line_usage_error(res, *needles)


def test_bad_flag_values(tmp_path: Path) -> None:
    absent = f"file:{tmp_path / 'absent.flac'}"
    res = streamer("run", "--no-server", "--source", absent, "--language", "klingon")
    _one_line_usage_error(res, "decoder.language", "klingon")
    res = streamer("run", "--no-server", "--source", absent, "--token", "")
    _one_line_usage_error(res, "server.token", "empty")


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", ["not valid TOML", "not UTF-8", "binary"]),
        (b"server = 5\n", ["key 'server' = 5", "must be a table"]),
        (b"[decoder]\ntemperatures = 'notalist'\n", ["decoder.temperatures", "valid list"]),
        (b"[source]\nring_seconds = 1e308\n", ["source.ring_seconds"]),
        (b"[source]\nring_seconds = inf\n", ["source.ring_seconds", "finite"]),
        (b"[server]\ntoken = ''\n", ["server.token", "empty token"]),
    ],
    ids=["binary", "section-not-table", "temperatures", "ring-1e308", "ring-inf", "empty-token"],
)
def test_bad_config_files(tmp_path: Path, content: bytes, needles: list[str]) -> None:
    cfg = tmp_path / "streamer.toml"
    cfg.write_bytes(content)
    # --port touches [server]: the wrong-typed section must not be silently replaced by the flag's.
    res = streamer(
        "run", "--config", str(cfg), "--port", "0", "--no-server", "--source", f"file:{tmp_path / 'x.flac'}"
    )
    _one_line_usage_error(res, *needles)


def test_config_path_that_is_not_a_file(tmp_path: Path) -> None:
    absent = f"file:{tmp_path / 'absent.flac'}"
    res = streamer("run", "--config", str(tmp_path), "--no-server", "--source", absent)
    _one_line_usage_error(res, str(tmp_path), "is a directory")
    res = streamer("run", "--config", str(tmp_path / "nope.toml"), "--no-server", "--source", absent)
    _one_line_usage_error(res, "nope.toml", "not found")
    # /dev/null is an empty configuration (the defaults), not "not found": the run goes on to the
    # source and fails there.
    res = streamer("run", "--config", "/dev/null", "--no-server", "--source", absent)
    assert res.returncode == 1 and "absent.flac" in res.stderr, res.stderr
