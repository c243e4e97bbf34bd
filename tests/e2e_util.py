"""Helpers for end-to-end tests: run the real CLI, the real models, and the offline baseline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

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
