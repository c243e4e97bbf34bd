"""The benchmark's audio: a directory of sets (en/, long/, ko/, multi/, nonspeech/).

Each speech file NAME.flac has NAME.txt (reference transcript) and NAME.lang (language code);
non-speech files have neither. Any extension PyAV reads is accepted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import av

from streamer.errors import UserError

SPEECH_SETS = ("en", "long", "ko", "multi")
NONSPEECH_SET = "nonspeech"
AUDIO_SUFFIXES = frozenset({".flac", ".wav", ".ogg", ".mp3", ".m4a", ".opus"})


@dataclass(frozen=True)
class AudioItem:
    path: Path
    set: str
    lang: str | None
    reference: str | None
    seconds: float

    @property
    def name(self) -> str:
        return f"{self.set}/{self.path.stem}"

    @property
    def speech(self) -> bool:
        return self.reference is not None


def default_audio_dir() -> Path:
    return Path(os.environ.get("STREAMER_TEST_AUDIO", "../shared/audio"))


def duration_of(path: Path) -> float:
    try:
        with av.open(str(path)) as c:
            if c.duration is not None:
                return float(c.duration) / 1_000_000
            stream = c.streams.audio[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
    except (av.error.FFmpegError, OSError, IndexError) as e:
        raise UserError(f"cannot read audio file '{path}': {e}") from None
    raise UserError(f"cannot tell the duration of '{path}'")


def load_set(root: Path, name: str) -> list[AudioItem]:
    """Every audio file of set `name` under `root`, sorted by name; [] if the folder is missing."""
    folder = root / name
    if not folder.is_dir():
        return []
    items: list[AudioItem] = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in AUDIO_SUFFIXES:
            continue
        txt, lang_file = path.with_suffix(".txt"), path.with_suffix(".lang")
        reference = txt.read_text(encoding="utf-8").strip() if txt.is_file() else None
        lang = lang_file.read_text(encoding="utf-8").strip() if lang_file.is_file() else None
        if name != NONSPEECH_SET and reference is None:
            raise UserError(f"speech file '{path}' has no reference transcript '{txt.name}'")
        items.append(
            AudioItem(
                path, name, lang or ("en" if name in ("en", "long") else None), reference, duration_of(path)
            )
        )
    return items


def load_all(root: Path) -> dict[str, list[AudioItem]]:
    if not root.is_dir():
        raise UserError(f"audio directory '{root}' not found (use --audio DIR or STREAMER_TEST_AUDIO)")
    sets = {name: load_set(root, name) for name in (*SPEECH_SETS, NONSPEECH_SET)}
    if not any(sets.values()):
        raise UserError(
            f"no audio found in '{root}': expected sub-folders {', '.join((*SPEECH_SETS, NONSPEECH_SET))}"
        )
    return sets


def take_seconds(items: list[AudioItem], seconds: float) -> list[AudioItem]:
    """The first items (in order) whose total duration reaches `seconds` (at least one item)."""
    out: list[AudioItem] = []
    total = 0.0
    for item in items:
        if out and total >= seconds:
            break
        out.append(item)
        total += item.seconds
    return out
