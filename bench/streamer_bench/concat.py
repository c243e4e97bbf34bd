"""A long stream made of short files: does the lag grow over ten minutes?

The sets hold sentence-length files; a daemon that falls behind shows it only over minutes. So the
files of a set are joined, in order and cycled if needed, with a short pause between them (like
the pauses between a speaker's sentences), into one file of the wanted length. It is built in
memory and written once as 16-bit WAV under the benchmark's cache directory (keyed by the source
files, the pause and the length), so that it is replayed at 1x through the daemon's own file
source like every other latency file. The reference timing of each part is that of its source
file shifted by the part's offset.
"""

from __future__ import annotations

import hashlib
import json
import wave
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamer.audio.decode import load_audio
from streamer_bench.dataset import AudioItem
from streamer_bench.metrics import RefWord

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class Concatenation:
    item: AudioItem  # the joined file, replayable like any set file
    parts: tuple[tuple[AudioItem, float], ...]  # (source file, its offset in seconds)
    pause: float


def plan_parts(items: Sequence[AudioItem], seconds: float, pause: float) -> list[AudioItem]:
    """Source files (cycled) until their durations and pauses add up to at least `seconds`."""
    if not items:
        return []
    parts: list[AudioItem] = []
    t = 0.0
    while t < seconds:
        item = items[len(parts) % len(items)]
        parts.append(item)
        t += item.seconds + pause
    return parts


def _key(parts: Sequence[AudioItem], pause: float) -> str:
    ident = []
    for item in parts:
        st = item.path.stat()
        ident.append([str(item.path.resolve()), st.st_size, st.st_mtime_ns])
    return hashlib.sha256(json.dumps([1, pause, ident]).encode()).hexdigest()[:16]


def build(
    items: Sequence[AudioItem], seconds: float, pause: float, cache_dir: Path, set_name: str
) -> Concatenation | None:
    """The joined file (written to `cache_dir` unless already there); None without items."""
    parts = plan_parts(items, seconds, pause)
    if not parts:
        return None
    path = cache_dir / f"{set_name}-{round(seconds)}s-{_key(parts, pause)}.wav"
    manifest = path.with_suffix(".json")
    offsets: list[float] | None = None
    if path.is_file() and manifest.is_file():
        try:
            offsets = [float(x) for x in json.loads(manifest.read_text(encoding="utf-8"))["offsets"]]
        except (ValueError, KeyError, TypeError):
            offsets = None
    if offsets is None or len(offsets) != len(parts):
        offsets = _write(parts, pause, path)
        manifest.write_text(
            json.dumps({"offsets": offsets, "files": [i.name for i in parts]}), encoding="utf-8"
        )
    with wave.open(str(path), "rb") as r:
        total = r.getnframes() / SAMPLE_RATE
    langs = {item.lang for item in parts}
    text = " ".join(item.reference or "" for item in parts)
    joined = AudioItem(path, set_name, langs.pop() if len(langs) == 1 else None, text, total)
    return Concatenation(joined, tuple(zip(parts, offsets, strict=True)), pause)


def _write(parts: Sequence[AudioItem], pause: float, path: Path) -> list[float]:
    """Join the decoded files with `pause` s of silence after each; offsets from the real lengths."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    gap = np.zeros(round(pause * SAMPLE_RATE), dtype=np.int16).tobytes()
    offsets: list[float] = []
    pos = 0
    with wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        for item in parts:
            offsets.append(pos / SAMPLE_RATE)
            pcm = (np.clip(load_audio(item.path), -1.0, 1.0) * 32767).astype(np.int16)
            w.writeframes(pcm.tobytes())
            w.writeframes(gap)
            pos += len(pcm) + len(gap) // 2
    tmp.replace(path)
    return offsets


def reference(conc: Concatenation, refs: Mapping[str, Sequence[RefWord]]) -> list[RefWord]:
    """Reference words of the joined file: each part's words shifted by its offset."""
    out: list[RefWord] = []
    for item, offset in conc.parts:
        out.extend(RefWord(w.text, w.start + offset, w.end + offset, w.source) for w in refs[item.name])
    return out
