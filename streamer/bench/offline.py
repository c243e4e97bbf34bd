"""The baseline: plain offline faster-whisper (`WhisperModel.transcribe`, default options, beam 5).

The only option set is the language, to the file's known language (the streaming run gets it too),
so that the comparison measures streaming, not language detection. Word timestamps are asked for
only by the reference pass (reference.py), never by the WER baseline, because they change how
faster-whisper seeks through long files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamer.config import Settings


@dataclass
class OfflineResult:
    text: str
    words: list[tuple[str, float, float]] = field(default_factory=list)
    language: str | None = None
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0


def model_location(name: str, settings: Settings) -> str:
    """A CTranslate2 directory as is, otherwise what streamer.models resolves the name to."""
    if Path(name).is_dir():
        return str(name)
    from streamer.models import resolve_model

    resolved = resolve_model(name, settings.model.cache_dir)
    return str(resolved.path)


class OfflineModel:
    """One loaded faster-whisper model used the way a user of the library would use it."""

    def __init__(self, name: str, settings: Settings) -> None:
        from faster_whisper import WhisperModel

        from streamer.models import compute_type_for, resolve_device

        self.name = name
        device = resolve_device(settings.model.device)
        t0 = time.perf_counter()
        self.model = WhisperModel(
            model_location(name, settings),
            device=device,
            compute_type=compute_type_for(device, settings.model.compute_type),
            cpu_threads=settings.model.cpu_threads,
        )
        self.load_seconds = time.perf_counter() - t0
        self.multilingual = bool(self.model.model.is_multilingual)

    def transcribe(
        self, audio: np.ndarray, language: str | None, word_timestamps: bool = False
    ) -> OfflineResult:
        kwargs: dict[str, Any] = {"language": language if self.multilingual else "en"}
        if word_timestamps:
            kwargs["word_timestamps"] = True
        wall0, cpu0 = time.perf_counter(), time.process_time()
        segments, info = self.model.transcribe(audio, **kwargs)
        texts: list[str] = []
        words: list[tuple[str, float, float]] = []
        for seg in segments:  # a generator: decoding happens while iterating
            texts.append(seg.text)
            for w in seg.words or []:
                words.append((w.word, float(w.start), float(w.end)))
        return OfflineResult(
            text="".join(texts).strip(),
            words=words,
            language=info.language,
            audio_seconds=len(audio) / 16000,
            wall_seconds=time.perf_counter() - wall0,
            cpu_seconds=time.process_time() - cpu0,
        )


def load_audio(path: Path) -> np.ndarray:
    from streamer.audio.decode import load_audio as _load

    return _load(path)
