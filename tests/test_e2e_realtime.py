"""`streamer run` on a file replayed at 1x behaves like a live source: partials come before their
final, and each final arrives soon after its speech ends (audio clock, so compute delay counts)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from .e2e_util import jsonl, streamer


@pytest.mark.model
def test_realtime_replay_partials_then_finals_fast(audio_dir: Path) -> None:
    path = audio_dir / "en" / "librispeech_2412-153948-0000.flac"
    res = streamer(
        "run",
        "--source",
        f"file:{path}",
        "--model",
        "tiny.en",
        "--language",
        "en",
        "--jsonl",
        "--no-server",
        "--transcripts",
        "",
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    events = jsonl(res.stdout)
    finals = [e for e in events if e["type"] == "final"]
    partials = [e for e in events if e["type"] == "partial"]
    assert finals and partials
    assert [f["seq"] for f in finals] == list(range(1, len(finals) + 1))
    for f in finals:
        index = events.index(f)
        before = [p for p in events[:index] if p["type"] == "partial" and p["seq"] == f["seq"]]
        assert before, f"no partial before final {f['seq']}"
        latency = f["emitted_at"] - f["end"]
        print(f"final {f['seq']}: end {f['end']:.2f} emitted {f['emitted_at']:.2f} latency {latency:.2f} s")
        assert latency < 2.0
    # The stream ended at the end of the file, after the last final.
    assert events[-1]["type"] == "status" and events[-1]["state"] == "stopped"
    assert "If the reader will excuse me" in " ".join(f["text"] for f in finals)
    # Stable text only grows from one partial to the next.
    for f in finals:
        stables = [p["stable"] for p in partials if p["seq"] == f["seq"] and p["utterance"] == f["utterance"]]
        for a, b in itertools.pairwise(stables):
            assert b.startswith(a)
