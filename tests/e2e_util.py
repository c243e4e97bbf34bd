"""Helpers for end-to-end tests: run the real CLI, the real models, and the offline baseline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import wave
from functools import cache
from pathlib import Path
from typing import Any

import av
import numpy as np

REPO = Path(__file__).resolve().parent.parent


def streamer(
    *args: str, env: dict[str, str] | None = None, timeout: float = 900, input: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    full_env.setdefault("HF_HUB_OFFLINE", "1")
    return subprocess.run(
        [sys.executable, "-m", "streamer", *args],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input.decode("latin-1") if input is not None else None,
    )


def jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip().startswith("{")]


@cache
def offline_model(name: str) -> Any:
    """Plain faster-whisper, INT8, same weights as the pipeline: the baseline."""
    from faster_whisper import WhisperModel

    from streamer.models import resolve_model

    return WhisperModel(str(resolve_model(name).path), device="cpu", compute_type="int8")


def offline_text(model: str, path: Path, language: str | None) -> str:
    segments, _ = offline_model(model).transcribe(str(path), language=language, beam_size=5)
    return " ".join(s.text for s in segments)


def transcribe_texts(model: str, files: list[Path], out: Path, language: str | None) -> dict[Path, str]:
    """`streamer transcribe --format json` over files (one run, one model load): text per file."""
    args = ["transcribe", *map(str, files), "--model", model, "--format", "json", "-o", str(out)]
    args.append("--no-progress")
    if language:
        args += ["--language", language]
    res = streamer(*args)
    assert res.returncode == 0, res.stderr
    texts = {}
    for f in files:
        doc = json.loads((out / f"{f.stem}.json").read_text(encoding="utf-8"))
        texts[f] = doc["text"]
    return texts


def concat_sentences(files: list[Path], out: Path, pause: float = 0.5) -> list[float]:
    """Sentences one after another with short pauses (as people read them); returns each end."""
    ends, chunks, t = [], [], 0.0
    for f in files:
        with av.open(str(f)) as c:
            pcm = np.concatenate([fr.to_ndarray().reshape(-1) for fr in c.decode(audio=0)])
        if pcm.dtype != np.int16:
            pcm = (np.clip(pcm, -1, 1) * 32767).astype(np.int16)
        chunks += [pcm, np.zeros(int(pause * 16000), dtype=np.int16)]
        t += len(pcm) / 16000
        ends.append(t)
        t += pause
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.concatenate(chunks).tobytes())
    return ends
