"""Several streams in one daemon sharing one model: two rooms fed by two ffmpeg RTP senders.

Each room gets different speech; each stream's captions must match its own audio and none of the
other's, and killing one sender midway must leave the other room captioning to the end.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import jiwer
import pytest

from streamer.config import ConfigError, load_settings, stream_settings
from streamer_bench.textnorm import normalize

from .rtp_util import Daemon, ffmpeg_send, free_udp_port

ROOM_A = "en/ljspeech_LJ001-0009.flac"  # 7.6 s
ROOM_B = "en/pocketsphinx_sense_and_sensibility_01_0870.flac"  # 7.1 s, another speaker and text


def _wer(ref: str, hyp: str) -> float:
    return float(jiwer.wer(normalize(ref, "en"), normalize(hyp, "en")))


def test_streams_table_overrides_per_stream_and_keeps_the_rest(tmp_path: Path) -> None:
    cfg = tmp_path / "s.toml"
    cfg.write_text(
        'model = "tiny.en"\n[decoder]\nlanguage = "en"\nbeam_size = 3\n'
        '[[streams]]\nname = "a"\nsource = "rtp://127.0.0.1:5004"\nprompt = "Room A."\n'
        '[[streams]]\nname = "b"\nsource = "stdin"\nhotwords = "Elinor"\nmodel = "base"\nlanguage = "ko"\n'
    )
    a, b = stream_settings(load_settings(cfg))
    assert (a.stream, a.source.spec, a.decoder.initial_prompt, a.decoder.language) == (
        "a",
        "rtp://127.0.0.1:5004",
        "Room A.",
        "en",
    )
    assert (b.stream, b.model.name, b.decoder.hotwords, b.decoder.language) == ("b", "base", "Elinor", "ko")
    assert a.decoder.beam_size == b.decoder.beam_size == 3 and a.model.name == "tiny.en"
    one = load_settings(overrides={"stream": "solo", "source.spec": "stdin"})
    assert [s.stream for s in stream_settings(one)] == ["solo"]  # no [[streams]]: the one-stream shortcut
    cfg.write_text('[[streams]]\nname = "a"\nsource = "stdin"\n[[streams]]\nname = "a"\nsource = "mic"\n')
    with pytest.raises(ConfigError, match="used twice"):
        load_settings(cfg)
    cfg.write_text('[[streams]]\nname = "bad name"\nsource = "stdin"\n')
    with pytest.raises(ConfigError, match=r"streams\.0\.name"):
        load_settings(cfg)


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.component  # ffmpeg
def test_two_rtp_rooms_one_model_no_leaks_and_one_sender_killed(audio_dir: Path, tmp_path: Path) -> None:
    speech = {"a": audio_dir / ROOM_A, "b": audio_dir / ROOM_B}
    refs = {k: p.with_suffix(".txt").read_text(encoding="utf-8").strip() for k, p in speech.items()}
    ports = {"a": free_udp_port(), "b": free_udp_port()}
    cfg = tmp_path / "rooms.toml"
    specs = {"a": f"rtp://127.0.0.1:{ports['a']}", "b": f"rtp://127.0.0.1:{ports['b']}?codec=l16&rate=16000"}
    rooms = "".join(f'[[streams]]\nname = "{k}"\nsource = "{v}"\n' for k, v in specs.items())
    cfg.write_text('model = "tiny.en"\n[decoder]\nlanguage = "en"\n' + rooms)
    d = Daemon("--config", str(cfg))
    try:
        d.wait_running("a")
        d.wait_running("b")
        health = d.health()
        assert set(health["streams"]) == {"a", "b"}
        for room in ("a", "b"):  # no sender yet: waiting, and that is healthy
            d.wait_state(room, "waiting")
            assert d.health()["streams"][room]["healthy"]
        a = ffmpeg_send(speech["a"], "pcmu", ports["a"])
        b = ffmpeg_send(speech["b"], "l16", ports["b"])
        # Room A's sender dies midway: once room A's captions have started.
        d.wait_for(lambda e: e["type"] == "partial" and e["stream"] == "a" and len(e["text"].split()) >= 3)
        a.kill()
        a.wait(10)
        d.wait_state("a", "quiet")
        assert b.poll() is None, b.communicate()[1]
        assert d.health()["streams"]["b"]["state"] == "running"  # room B is unaffected
        _, err = b.communicate(timeout=60)
        assert b.returncode == 0, err.decode(errors="replace")
        d.wait_state("b", "quiet")
        got_a = d.metric("streamer_rtp_datagrams_total", stream="a")
        got_b = d.metric("streamer_rtp_datagrams_total", stream="b")
    finally:
        code = d.stop()
    assert code == 0, d.stderr[-3000:]
    # Metrics are kept per stream: A's sender stopped early (20 ms packets), B's sent all of it.
    full = {k: av.open(str(p)).duration / 1e6 / 0.02 for k, p in speech.items()}
    assert 0 < got_a < 0.9 * full["a"] and got_b >= 0.95 * full["b"], (got_a, got_b, full)
    texts = {k: " ".join(f["text"] for f in d.finals(k)) for k in speech}
    print(json.dumps(texts, indent=1))
    assert {e["stream"] for e in d.events if e["type"] in ("final", "partial")} <= {"a", "b"}
    # Room B ran to the end: its captions are its own speech.
    assert _wer(refs["b"], texts["b"]) <= 0.25
    # Room A got captions for what was said before its sender died, and none of room B's words.
    assert texts["a"], d.events
    own_a = set(normalize(refs["a"], "en").split())
    said_a = normalize(texts["a"], "en").split()
    assert sum(w in own_a for w in said_a) >= 0.6 * len(said_a)
    own_b = set(normalize(refs["b"], "en").split())
    said_b = set(normalize(texts["b"], "en").split())
    assert not set(said_a) & (own_b - own_a), "room B's words in room A"
    assert not said_b & (own_a - own_b), "room A's words in room B"


FOUR_ROOMS = [
    "en/ljspeech_LJ001-0009.flac",
    "en/pocketsphinx_sense_and_sensibility_01_0870.flac",
    "en/ljspeech_LJ001-0018.flac",
    "en/pocketsphinx_sense_and_sensibility_01_0920.flac",
]


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.component  # ffmpeg
def test_four_rtp_rooms_each_caption_their_own_speech(audio_dir: Path, tmp_path: Path) -> None:
    rooms = {f"room{i}": audio_dir / f for i, f in enumerate(FOUR_ROOMS)}
    refs = {k: p.with_suffix(".txt").read_text(encoding="utf-8").strip() for k, p in rooms.items()}
    ports = {k: free_udp_port() for k in rooms}
    codecs = dict(zip(rooms, ["pcmu", "l16", "opus", "l16"], strict=True))
    options = {"pcmu": "", "l16": "?codec=l16&rate=16000", "opus": "?codec=opus"}
    tables = "".join(
        f'[[streams]]\nname = "{k}"\nsource = "rtp://127.0.0.1:{ports[k]}{options[codecs[k]]}"\n'
        for k in rooms
    )
    cfg = tmp_path / "rooms.toml"
    cfg.write_text('model = "tiny.en"\n[decoder]\nlanguage = "en"\n' + tables)
    d = Daemon("--config", str(cfg))
    try:
        for k in rooms:
            d.wait_running(k)
        senders = [ffmpeg_send(p, codecs[k], ports[k]) for k, p in rooms.items()]
        for s in senders:
            _, err = s.communicate(timeout=60)
            assert s.returncode == 0, err.decode(errors="replace")
        for k in rooms:
            d.wait_state(k, "quiet")
    finally:
        code = d.stop()
    assert code == 0, d.stderr[-3000:]
    for k in rooms:
        text = " ".join(f["text"] for f in d.finals(k))
        wers = {other: _wer(refs[other], text) for other in rooms}
        print(k, codecs[k], {o: round(w, 2) for o, w in wers.items()}, repr(text))
        assert text and min(wers, key=lambda o: wers[o]) == k  # closest to its own speech
        assert wers[k] <= 0.35  # PCMU at 8 kHz costs tiny.en a few words
