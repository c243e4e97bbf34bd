"""Word timing reference: when was each reference word spoken?

Method. An offline faster-whisper pass with `word_timestamps=True` (cross-attention DTW word
alignment) over the whole file, with a model at least as large as the one under test (default
`base`), gives timestamped hypothesis words. The human reference transcript is normalised word
by word (streamer_bench/textnorm.py) and aligned to those words by minimal edit distance
(metrics.align_reference): matched and substituted reference words take the hypothesis word's
times; reference words the pass missed are spread evenly between their timed neighbours.

Error. Whisper's word times are typically within ~0.1-0.3 s of forced alignment on read speech;
interpolated words (reported as a share) are less exact. `timing_disagreement` compares two passes
(different models) on the same files and the report gives it as the measured spread of the method.

The hypothesis words are cached on disk (JSON, one per file + model + reference text) under the
output directory, so later runs skip the offline pass; the alignment is cheap and redone each time.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from streamer_bench.dataset import AudioItem
from streamer_bench.metrics import RefWord, align_reference
from streamer_bench.offline import OfflineModel, load_audio

CACHE_VERSION = 1


def _cache_file(cache_dir: Path, item: AudioItem, model_name: str) -> Path:
    st = item.path.stat()
    key = json.dumps(
        [
            CACHE_VERSION,
            str(item.path.resolve()),
            st.st_size,
            st.st_mtime_ns,
            model_name,
            item.reference,
            item.lang,
        ]
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    safe_model = "".join(c if c.isalnum() or c in "._-" else "_" for c in model_name)[-40:]
    return cache_dir / safe_model / f"{item.path.stem}-{digest}.json"


def timestamped_words(
    item: AudioItem, model: OfflineModel, cache_dir: Path
) -> list[tuple[str, float, float]]:
    path = _cache_file(cache_dir, item, model.name)
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return [(str(w), float(s), float(e)) for w, s, e in data["words"]]
        except (ValueError, KeyError, TypeError):
            pass  # a damaged cache entry is recomputed
    result = model.transcribe(load_audio(item.path), item.lang, word_timestamps=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        json.dumps(
            {"file": str(item.path), "model": model.name, "text": result.text, "words": result.words},
            ensure_ascii=False,
        ),
        encoding="utf-8",
    )
    tmp.replace(path)
    return result.words


def reference_words(item: AudioItem, model: OfflineModel, cache_dir: Path) -> list[RefWord]:
    """The item's reference tokens with their times on the file's audio clock."""
    if item.reference is None:
        return []
    words = timestamped_words(item, model, cache_dir)
    return align_reference(item.reference, words, item.lang, duration=item.seconds)


def interpolated_share(words: list[RefWord]) -> float | None:
    return sum(1 for w in words if w.source == "interpolated") / len(words) if words else None


def match_share(words: list[RefWord]) -> float | None:
    """Share of reference tokens the timing pass heard exactly (low: the reference may not fit)."""
    return sum(1 for w in words if w.source == "match") / len(words) if words else None


def timing_disagreement(a: list[RefWord], b: list[RefWord]) -> list[float]:
    """|end time difference| per token between two references of the same text (same tokens)."""
    if [w.text for w in a] != [w.text for w in b]:
        raise ValueError("the two references do not have the same tokens")
    return [abs(x.end - y.end) for x, y in zip(a, b, strict=True)]
