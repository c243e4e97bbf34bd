"""No word lost or doubled, on real models and synthetic speech (espeak-ng), English and Korean.

Two failures seen on held-out recordings, reproduced here where a test can build them at will:
the first word of a sentence after a short pause was lost (Whisper times it early, before the
speech the VAD heard), and repeated phrases lost words (a restatement matched by text alone).
Each case runs through `streamer transcribe` (the same core and captioner as a live stream, in
lockstep); the property tests of the core (test_core_properties.py) cover the same rules over
thousands of scripted cases.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import jiwer
import pytest

from streamer_bench.textnorm import normalize

from .components import tool
from .e2e_util import concat_sentences, jsonl, streamer

pytestmark = [pytest.mark.model, pytest.mark.component]  # espeak-ng


def speak(text: str, voice: str, out: Path) -> Path:
    subprocess.run(
        [tool("espeak-ng", "espeak-ng"), "-v", voice, "-s", "140", "-w", str(out), text],
        check=True,
        timeout=60,
    )
    return out


def transcribe(wav: Path, model: str, language: str) -> str:
    res = streamer(
        "transcribe", str(wav), "--model", model, "--language", language, "--format", "jsonl", "--no-progress"
    )
    assert res.returncode == 0, res.stderr
    return " ".join(e["text"] for e in jsonl(res.stdout) if e["type"] == "final")


def sentences_with_pause(tmp: Path, voice: str, first: str, second: str, pause: float = 0.6) -> Path:
    a, b = speak(first, voice, tmp / "a.wav"), speak(second, voice, tmp / "b.wav")
    wav = tmp / "two.wav"
    concat_sentences([a, b], wav, pause=pause)
    return wav


def lost_and_doubled(reference: str, hypothesis: str, lang: str) -> tuple[int, int]:
    """Words of the reference missing from the hypothesis, and words it has in excess, after the
    best alignment: a misheard word (espeak-ng's voice is hard on Whisper) is a substitution and
    counts as neither."""
    out = jiwer.process_words(normalize(reference, lang), normalize(hypothesis, lang))
    return out.deletions, out.insertions


FIRST = "I like to read a good book in the evening."
SECOND = "When the sun goes down we walk back home."
FIGHT = (
    "We shall fight on the beaches, we shall fight on the landing grounds, "
    "we shall fight in the fields and in the streets."
)


# Known and open (issue 16): with tiny.en, "When" is lost. Traced: after the 0.6 s pause tiny.en
# stretches "When" back to the window start (2.31-3.33 s, the speech starts at 4.31 s); the
# outside_speech filter drops it (it ends > 0.3 s before the speech), and without that filter the
# alignment takes it for a misheard restatement of "evening." (cheaper than a new word that early).
# Not strict: another CPU may decode this window differently (the note of issue 16 has the trace).
TINY_FIRST_WORD = pytest.mark.xfail(
    strict=False, reason="tiny.en stretches the first word back over the pause"
)


@pytest.mark.parametrize("model", [pytest.param("tiny.en", marks=TINY_FIRST_WORD), "base"])
def test_english_sentence_after_a_short_pause_keeps_its_first_word(model: str, tmp_path: Path) -> None:
    wav = sentences_with_pause(tmp_path, "en-us", FIRST, SECOND, pause=0.6)
    text = transcribe(wav, model, "en")
    print(text)
    words = normalize(text, "en").split()
    assert "when" in words and words.index("when") > words.index("book"), text
    assert lost_and_doubled(f"{FIRST} {SECOND}", text, "en") == (0, 0), text


@pytest.mark.parametrize("model", ["tiny.en", "base"])
def test_english_repeated_phrases_keep_every_word(model: str, tmp_path: Path) -> None:
    text = transcribe(speak(FIGHT, "en-us", tmp_path / "fight.wav"), model, "en")
    print(text)
    assert " ".join(normalize(text, "en").split()).count("we shall fight") == 3, text
    assert lost_and_doubled(FIGHT, text, "en") == (0, 0), text


# Korean: espeak-ng's Korean voice is beyond Whisper base (it hears a few syllables of it), so
# these use real recordings: a sentence whose first word base hears reliably, after a 0.6 s pause;
# and one sentence said twice, as a speaker repeats himself (the old duplicate check matched the
# last settled words by text and dropped the repeat).
def korean(audio_dir: Path, name: str) -> Path:
    return audio_dir / "ko" / f"emotiontts_{name}.flac"


def test_korean_sentence_after_a_short_pause_keeps_its_first_word(audio_dir: Path, tmp_path: Path) -> None:
    wav = tmp_path / "two.wav"
    concat_sentences([korean(audio_dir, "pmi00003"), korean(audio_dir, "pfd00002")], wav, pause=0.6)
    text = normalize(transcribe(wav, "base", "ko"), "ko").replace(" ", "")
    print(text)
    assert "오랫동안" in text and text.index("오랫동안") > text.index("기다리"), text
    assert text.count("오랫동안") == 1 and text.count("기다리") == 1, text


def test_korean_repeated_sentence_keeps_every_word(audio_dir: Path, tmp_path: Path) -> None:
    wav = tmp_path / "twice.wav"
    once = korean(audio_dir, "lmy01002")  # 세계적으로 널리 알려진 아르헨티나의 민요 예술가예요.
    concat_sentences([once, once], wav, pause=0.6)
    text = normalize(transcribe(wav, "base", "ko"), "ko").replace(" ", "")
    print(text)
    assert text.count("널리") == 2 and text.count("예술가") == 2, text
