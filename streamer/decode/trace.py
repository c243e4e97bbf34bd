"""The decode trace: one JSON line per decode request, and its summary per kind.

Each line says what was asked and what came of it: stream, kind, window start and end, encoder
context, beam, whether temperature fallback was used, tokens (and the cap), queue wait, run time,
the text, and the outcome (used, discarded because it became obsolete while it ran, cancelled
before it ran, failed). It is how the Korean loops were found: a figure that is off is traced
before anything is tuned. `streamer run --trace FILE` and `streamer bench --trace FILE` write it;
`summarize()` gives, per kind, the count, mean window, mean and p90 decode time.
"""

from __future__ import annotations

import json
import statistics
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from streamer.decode.captioner import DecodeSpec
from streamer.decode.hypothesis import Hypothesis


class TraceWriter:
    """Appends trace lines to a file; shared by every stream of a process (one lock)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._file: IO[str] = path.open("a", encoding="utf-8", buffering=1)

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
        with self._lock:
            self._file.write(line + "\n")

    def close(self) -> None:
        with self._lock:
            self._file.close()


_writers: dict[Path, TraceWriter] = {}
_writers_lock = threading.Lock()


def writer_for(path: Path) -> TraceWriter:
    """The one writer of a trace file in this process (every stream appends to it)."""
    key = path.resolve()
    with _writers_lock:
        if key not in _writers:
            _writers[key] = TraceWriter(key)
        return _writers[key]


def record(
    stream: str, spec: DecodeSpec, outcome: str, hyp: Hypothesis | None = None, error: str = ""
) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "stream": stream,
        "kind": spec.kind,
        "utterance": spec.utterance,
        "start": round(spec.start, 3),
        "end": round(spec.end, 3),
        "beam": spec.beam_size,
        "fallback_allowed": spec.fallback,
        "outcome": outcome,
    }
    if hyp is not None:
        info = hyp.info
        rec["seconds"] = round(hyp.decode_seconds, 4)
        rec["text"] = hyp.text
        rec["language"] = hyp.language
        if info is not None:
            rec.update(
                context=info.encoder_seconds,
                fallback_used=info.temperature > 0,
                temperature=info.temperature,
                tokens=info.tokens,
                max_tokens=info.max_tokens,
                queue_wait=info.queue_wait,
                retried_without_prompt=info.retried_without_prompt,
                no_speech_skip=info.no_speech_skip,
                continued=info.continued,
            )
    if error:
        rec["error"] = error
    return rec


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _p90(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(0.9 * (len(xs) - 1)))]


def summarize(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per kind: decodes run, mean window (s), mean and p90 decode time (s), and outcomes."""
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_kind.setdefault(r["kind"], []).append(r)
    out: dict[str, dict[str, Any]] = {}
    for kind, rs in sorted(by_kind.items()):
        ran = [r for r in rs if "seconds" in r]
        secs = [r["seconds"] for r in ran]
        outcomes: dict[str, int] = {}
        for r in rs:
            outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
        out[kind] = {
            "count": len(ran),
            "mean_window": round(statistics.fmean(r["end"] - r["start"] for r in ran), 3) if ran else None,
            "mean_seconds": round(statistics.fmean(secs), 3) if secs else None,
            "p90_seconds": round(_p90(secs), 3) if secs else None,
            "fallback_used": sum(1 for r in ran if r.get("fallback_used")),
            "token_capped": sum(1 for r in ran if r.get("tokens", 0) >= r.get("max_tokens", 1 << 30) - 1),
            "outcomes": outcomes,
        }
    return out


def markdown(summary: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| kind | decodes | mean window (s) | mean decode (s) | p90 decode (s) | fallback | token cap "
        "| outcomes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind, s in summary.items():
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(s["outcomes"].items()))
        lines.append(
            f"| {kind} | {s['count']} | {s['mean_window']} | {s['mean_seconds']} | {s['p90_seconds']} | "
            f"{s['fallback_used']} | {s['token_capped']} | {outcomes} |"
        )
    return "\n".join(lines)
