"""`streamer transcribe` with the real tiny.en and base models on recorded speech.

Word error rate of the streaming pipeline against plain offline faster-whisper with the same model
on the same files, in the same run, after the same normalisation (streamer.textnorm).
"""

from __future__ import annotations

import json
from pathlib import Path

import jiwer
import pytest

from streamer.textnorm import normalize, uses_cer

from .e2e_util import offline_text, streamer


# A fixed, representative subset (every 7th English file, both LibriSpeech files, every 16th
# Korean one, and the European sentences); the benchmark runs the full sets.
def subset(audio_dir: Path, folder: str, every: int, start: int = 0) -> list[Path]:
    return sorted((audio_dir / folder).glob("*.flac"))[start::every]


def corpus_error(refs: list[str], hyps: list[str], lang: str) -> float:
    r = [normalize(x, lang) for x in refs]
    h = [normalize(x, lang) for x in hyps]
    if uses_cer(lang):
        return float(jiwer.cer([x.replace(" ", "") for x in r], [x.replace(" ", "") for x in h]))
    return float(jiwer.wer(r, h))


def run_transcribe(model: str, files: list[Path], tmp: Path, language: str | None) -> dict[Path, str]:
    out = tmp / model
    args = ["transcribe", *map(str, files), "--model", model, "--format", "json", "-o", str(out), "--no-progress"]
    if language:
        args += ["--language", language]
    res = streamer(*args)
    assert res.returncode == 0, res.stderr
    texts = {}
    for f in files:
        doc = json.loads((out / f"{f.stem}.json").read_text(encoding="utf-8"))
        texts[f] = doc["text"]
    return texts


def compare(model: str, files: list[Path], tmp: Path, language: str | None, lang: str) -> tuple[float, float]:
    streamed = run_transcribe(model, files, tmp, language)
    refs = [f.with_suffix(".txt").read_text(encoding="utf-8").strip() for f in files]
    offline = [offline_text(model, f, language) for f in files]
    s = corpus_error(refs, [streamed[f] for f in files], lang)
    o = corpus_error(refs, offline, lang)
    for f, ref, off in zip(files, refs, offline, strict=True):
        print(f"{model} {f.name}: stream={corpus_error([ref], [streamed[f]], lang):.3f} "
              f"offline={corpus_error([ref], [off], lang):.3f}")
    print(f"{model} {lang}: streaming {s:.4f} offline {o:.4f}")
    return s, o


@pytest.mark.model
def test_tiny_en_wer_close_to_offline(audio_dir: Path, tmp_path: Path) -> None:
    files = subset(audio_dir, "en", 7) + sorted((audio_dir / "en").glob("librispeech_*.flac"))
    s, o = compare("tiny.en", files, tmp_path, "en", "en")
    assert s <= 1.10 * o + 0.005, f"streaming WER {s:.4f} vs offline {o:.4f}"


@pytest.mark.model
def test_base_english_and_korean_close_to_offline(audio_dir: Path, tmp_path: Path) -> None:
    en = subset(audio_dir, "en", 9, start=3)
    s, o = compare("base", en, tmp_path / "en", None, "en")
    assert s <= 1.10 * o + 0.005, f"English: streaming WER {s:.4f} vs offline {o:.4f}"
    ko = subset(audio_dir, "ko", 16)
    s, o = compare("base", ko, tmp_path / "ko", None, "ko")
    assert s <= 1.10 * o + 0.005, f"Korean: streaming CER {s:.4f} vs offline {o:.4f}"
