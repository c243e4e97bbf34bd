"""`streamer run` on audio replayed at 1x behaves like a live source (protocol 2): words settle
while the speaker is still talking, a settled word is never revised, and finals keep flowing
instead of piling up behind slow decodes. Ordering tests on the audio clock, not timing tests."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from streamer.decode.hypothesis import norm_word

from .e2e_util import concat_sentences, jsonl, streamer


def _run_live(path: Path, model: str, language: str) -> list[dict]:
    res = streamer(
        "run",
        "--source",
        f"file:{path}",
        "--model",
        model,
        "--language",
        language,
        "--jsonl",
        "--no-server",
        "--transcripts",
        "",
        timeout=600,
    )
    assert res.returncode == 0, res.stderr
    return jsonl(res.stdout)


def _words(text: str) -> list[str]:
    return [w for w in (norm_word(x) for x in text.split()) if w]


def check_protocol(events: list[dict]) -> None:
    """What every client relies on: gapless finals, settled words never revised or repeated."""
    finals = [e for e in events if e["type"] == "final"]
    assert [f["seq"] for f in finals] == list(range(1, len(finals) + 1))
    last_partial: dict[int, dict] = {}
    for e in events:
        if e["type"] == "partial":
            last_partial[e["utterance"]] = e
            continue
        if e["type"] != "final":
            continue
        if not e["last"]:
            # A mid-sentence final is words the previous decode already showed as the tail, and
            # the next one agreed on: the head of the partial before it, unchanged.
            shown = last_partial.get(e["utterance"])
            assert shown is not None, f"final {e['seq']} came from nowhere"
            assert _words(shown["text"])[: len(_words(e["text"]))] == _words(e["text"]), (e, shown)
        if e["last"]:
            last_partial.pop(e["utterance"], None)
    times = [(w["start"], w["end"]) for f in finals for w in f["words"]]
    for (s0, e0), (s1, _e1) in itertools.pairwise(times):
        assert s1 >= s0 and s1 >= e0 - 0.05, "a settled word was said again or out of order"


@pytest.mark.model
def test_english_words_settle_mid_sentence_and_are_never_revised(audio_dir: Path) -> None:
    path = audio_dir / "en" / "librispeech_2412-153948-0000.flac"
    events = _run_live(path, "tiny.en", "en")
    check_protocol(events)
    finals = [e for e in events if e["type"] == "final"]
    partials = [e for e in events if e["type"] == "partial"]
    assert finals and partials
    # Finals arrive during the sentence, not only at its end: some final is out before the
    # speech of its utterance is over.
    by_utt: dict[int, list[dict]] = {}
    for f in finals:
        by_utt.setdefault(f["utterance"], []).append(f)
    early = [
        f for fs in by_utt.values() for f in fs if not f["last"] and f["emitted_at"] < fs[-1]["end"] - 0.5
    ]
    assert early, "no word settled before its utterance ended"
    assert events[-1]["type"] == "status" and events[-1]["state"] == "stopped"
    assert "If the reader will excuse me" in " ".join(f["text"] for f in finals)


@pytest.mark.model
def test_korean_base_finals_keep_flowing_in_real_time(audio_dir: Path, tmp_path: Path) -> None:
    """Korean with the default model, live: every final is out before the sentence after next
    has ended (it used to stall for minutes and release everything at the end of the input)."""
    files = sorted((audio_dir / "ko").glob("*.flac"))[::10][:7]
    wav = tmp_path / "ko.wav"
    ends = concat_sentences(files, wav)
    events = _run_live(wav, "base", "ko")
    check_protocol(events)
    finals = [e for e in events if e["type"] == "final"]
    assert len(finals) >= len(files) - 1
    for f in finals:
        i = next((k for k, e in enumerate(ends) if f["end"] <= e + 0.3), len(ends) - 1)
        deadline = ends[i + 2] if i + 2 < len(ends) else ends[-1] + 5.0
        print(f"final {f['seq']} (sentence {i}): end {f['end']:.2f} out {f['emitted_at']:.2f}")
        assert f["emitted_at"] <= deadline, f"final {f['seq']} only came after two more sentences"
