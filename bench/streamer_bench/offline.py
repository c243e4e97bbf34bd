"""The baseline: plain offline faster-whisper (`WhisperModel.transcribe`, default options, beam 5).

The only option set is the language, to the file's known language (the streaming run gets it too),
so that the comparison measures streaming, not language detection. Word timestamps are asked for
only by the reference pass (reference.py), never by the WER baseline, because they change how
faster-whisper seeks through long files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from faster_whisper import WhisperModel

from streamer.audio.decode import load_audio as _load
from streamer.config import Settings
from streamer.models import compute_type_for, resolve_device, resolve_model
from streamer_bench.dataset import AudioItem


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
    resolved = resolve_model(name, settings.model.cache_dir)
    return str(resolved.path)


class OfflineModel:
    """One loaded faster-whisper model used the way a user of the library would use it."""

    def __init__(self, name: str, settings: Settings) -> None:
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
    return _load(path)


def cached_transcribe(model: OfflineModel, item: AudioItem, cache_dir: Path) -> OfflineResult:
    """`model.transcribe` of one file, cached as JSON keyed by the file, model, language and
    faster-whisper version (the baseline's own CPU time is kept with it)."""
    st = item.path.stat()
    key = json.dumps(
        [
            1,
            str(item.path.resolve()),
            st.st_size,
            st.st_mtime_ns,
            model.name,
            item.lang,
            metadata.version("faster-whisper"),
        ]
    )
    safe_model = "".join(c if c.isalnum() or c in "._-" else "_" for c in model.name)[-40:]
    path = cache_dir / safe_model / f"{item.path.stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            data["words"] = [(str(w), float(s), float(e)) for w, s, e in data["words"]]
            return OfflineResult(**data)
        except (ValueError, KeyError, TypeError):
            pass  # a damaged entry is recomputed
    result = model.transcribe(load_audio(item.path), item.lang)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dataclasses.asdict(result), ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)
    return result
