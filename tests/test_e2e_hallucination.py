"""Nothing is invented on non-speech: every clip in nonspeech/, 60 s of digital silence and 60 s of
white noise give zero words through the pipeline, while plain offline faster-whisper does invent
words on at least one of them (so the suppression is shown to do something)."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from .e2e_util import offline_text, transcribe_texts


def write_wav(path: Path, samples: np.ndarray) -> Path:
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm.tobytes())
    return path


@pytest.fixture(scope="module")
def nonspeech_files(audio_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    tmp = tmp_path_factory.mktemp("nonspeech")
    rng = np.random.default_rng(7)
    files = sorted((audio_dir / "nonspeech").glob("*.flac"))
    assert len(files) >= 10
    files.append(write_wav(tmp / "silence_60s.wav", np.zeros(60 * 16000, dtype=np.float32)))
    files.append(write_wav(tmp / "white_noise_60s.wav", rng.normal(0, 0.1, 60 * 16000).astype(np.float32)))
    return files


@pytest.mark.model
@pytest.mark.parametrize("model,language", [("tiny.en", "en"), ("base", None)])
def test_no_words_on_nonspeech(
    model: str, language: str | None, nonspeech_files: list[Path], tmp_path: Path
) -> None:
    texts = transcribe_texts(model, nonspeech_files, tmp_path, language)
    emitted = {f.name: text for f, text in texts.items()}
    assert {name: text for name, text in emitted.items() if text} == {}

    offline = {f.name: offline_text(model, f, language) for f in nonspeech_files}
    invented = {name: text for name, text in offline.items() if text.split()}
    print(f"{model}: offline faster-whisper invented words on {len(invented)} clips: {invented}")
    assert invented, "offline faster-whisper invented nothing: this test would prove nothing"
