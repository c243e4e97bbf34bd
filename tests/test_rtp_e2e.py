"""RTP from real ffmpeg senders on loopback into the real daemon (tiny.en).

PCMU (static payload type 0, no SDP), L16 and Opus (dynamic types, read from the SDP file ffmpeg
writes) are sent at 1x, all at once, to separate daemons, while a fourth daemon receives L16
(described by options instead of SDP) through a relay that drops 5 % of the packets, duplicates
3 % and delays each by up to 40 ms. The finals are compared with the same audio through the file
source: word error rate for the codecs, final timestamps and loss counters for the relay. "The
same audio" is the file after the codec (ffmpeg writes it once as µ-law WAV and Ogg Opus): what
RTP must not add to is transport error; 8 kHz µ-law costs tiny.en words on its own, and that is
the codec's, not the receiver's.
"""

from __future__ import annotations

import difflib
import json
import subprocess
from pathlib import Path
from typing import Any

import jiwer
import pytest

from streamer_bench.textnorm import normalize

from .components import ffmpeg
from .e2e_util import streamer
from .rtp_util import Daemon, Relay, ffmpeg_send, free_udp_port, write_sdp

SPEECH = "en/ljspeech_LJ001-0009.flac"  # 7.6 s, one sentence
# This test compares audio paths (RTP against the file source), so the text policy is held to the
# mode that does not depend on when step decodes happen: finals at end of speech only. Mid-sentence
# commits are decided by decodes whose timing differs between a live and a lockstep run.
POLICY = {"STREAMER_DECODER__AGREEMENT": "false"}


def _wer(ref: str, hyp: str) -> float:
    return float(jiwer.wer(normalize(ref, "en"), normalize(hyp, "en")))


def _text(finals: list[dict[str, Any]]) -> str:
    return " ".join(f["text"] for f in finals)


# The file each codec's RTP stream is compared with: the speech as that codec leaves it.
CODEC_FILES = {
    "pcmu": ("pcmu.wav", ["-ar", "8000", "-c:a", "pcm_mulaw"]),
    "l16": ("l16.wav", ["-c:a", "pcm_s16le"]),
    "opus": ("opus.ogg", ["-c:a", "libopus", "-b:a", "32k"]),
}


def _file_source_finals(speech: Path, tmp: Path) -> dict[str, list[dict[str, Any]]]:
    """Finals of `streamer transcribe` (the file source) per codec, on the codec's version of the file."""
    files = {}
    for codec, (name, args) in CODEC_FILES.items():
        files[codec] = tmp / name
        subprocess.run(
            [
                ffmpeg(),
                "-hide_banner",
                "-loglevel",
                "error",
                "-nostdin",
                "-i",
                str(speech),
                "-ac",
                "1",
                *args,
                str(files[codec]),
            ],
            check=True,
            timeout=60,
        )
    out = tmp / "out"
    res = streamer(
        "transcribe",
        *map(str, files.values()),
        "--model",
        "tiny.en",
        "--language",
        "en",
        "--format",
        "jsonl",
        "--no-progress",
        "-o",
        str(out),
        env=POLICY,
    )
    assert res.returncode == 0, res.stderr
    finals = {}
    for codec, path in files.items():
        lines = (out / f"{path.stem}.jsonl").read_text(encoding="utf-8").splitlines()
        finals[codec] = [json.loads(x) for x in lines if x.strip()]
    return finals


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.component  # ffmpeg
def test_ffmpeg_rtp_senders_caption_like_the_file_source(audio_dir: Path, tmp_path: Path) -> None:
    speech = audio_dir / SPEECH
    reference = speech.with_suffix(".txt").read_text(encoding="utf-8").strip()
    common = ["--model", "tiny.en", "--language", "en"]

    sources: dict[str, str] = {}
    ports: dict[str, int] = {}
    # quiet=3: a sender starved of CPU for a second on a busy machine is not taken for one that
    # stopped (which would put wall-clock silence into the middle of its sentence).
    for codec in ("pcmu", "l16", "opus"):
        ports[codec] = free_udp_port()
        if codec == "pcmu":
            sources[codec] = f"rtp://127.0.0.1:{ports[codec]}?quiet=3"  # payload type 0: no SDP needed
        else:
            sdp = tmp_path / f"{codec}.sdp"
            write_sdp(codec, ports[codec], sdp, speech)
            sources[codec] = f"sdp:{sdp}?quiet=3"
    relay_port = free_udp_port()
    sources["relay"] = f"rtp://127.0.0.1:{relay_port}?codec=l16&rate=16000&jitter=0.06&quiet=3"  # no SDP

    daemons = {
        name: Daemon("--source", src, "--stream", name, *common, env=POLICY) for name, src in sources.items()
    }
    relay = Relay(relay_port, loss=0.05, dup=0.03, reorder=0.04, seed=10)
    try:
        baseline = _file_source_finals(speech, tmp_path)  # while the models load
        for d in daemons.values():
            d.wait_running()
        relay.start()
        senders = [ffmpeg_send(speech, codec, ports[codec]) for codec in ("pcmu", "l16", "opus")]
        senders.append(ffmpeg_send(speech, "l16", relay.port))
        for s in senders:
            _, err = s.communicate(timeout=60)
            assert s.returncode == 0, err.decode(errors="replace")
        relay.stop()
        # The sender stopped: once the stream says so, the silence after it has closed the utterance.
        for name, d in daemons.items():
            d.wait_state(name, "quiet")
        relay_lost = daemons["relay"].metric("streamer_rtp_packets_total", stream="relay", event="lost")
        relay_dups = daemons["relay"].metric("streamer_rtp_packets_total", stream="relay", event="duplicate")
        relay_late = daemons["relay"].metric("streamer_rtp_packets_total", stream="relay", event="late")
        concealed = daemons["relay"].metric("streamer_rtp_concealed_seconds_total", stream="relay")
        health = daemons["relay"].health()["streams"]["relay"]
    finally:
        relay.stop()
        codes = {name: d.stop() for name, d in daemons.items()}  # stop() never raises
    assert all(code == 0 for code in codes.values()), {n: d.stderr[-2000:] for n, d in daemons.items()}

    for name, d in daemons.items():
        finals = d.finals(name)
        codec = "l16" if name == "relay" else name
        file_wer = _wer(reference, _text(baseline[codec]))
        wer = _wer(reference, _text(finals))
        print(f"{name}: RTP WER {wer:.3f} {_text(finals)!r}; file source WER {file_wer:.3f}")
        assert finals, f"{name}: no captions"
        if name != "relay":
            assert wer <= 1.10 * file_wer + 0.005, f"{name}: WER {wer:.3f} vs file source {file_wer:.3f}"

    # Through the lossy relay captions still come, on the same clock as the file source: the
    # captions start and end where the file source's do. A lost packet in a pause may split an
    # utterance in two, so finals are compared one to one only when both runs made as many;
    # the words both heard (aligned on their normalised text) are close in time on the whole.
    finals = daemons["relay"].finals("relay")
    want = baseline["l16"]
    print(
        f"relay: received {relay.received} dropped {len(relay.dropped)} duplicated {relay.duplicated} "
        f"reordered {relay.reordered} (max lateness {relay.max_lateness * 1000:.0f} ms); "
        f"metrics lost {relay_lost} duplicate {relay_dups} late {relay_late} concealed {concealed:.3f} s"
    )
    assert abs(finals[0]["start"] - want[0]["start"]) <= 0.2, (finals[0], want[0])
    assert abs(finals[-1]["end"] - want[-1]["end"]) <= 0.2, (finals[-1], want[-1])
    if len(finals) == len(want):
        for got, ref in zip(finals, want, strict=True):
            assert abs(got["start"] - ref["start"]) <= 0.2 and abs(got["end"] - ref["end"]) <= 0.2, (got, ref)
    got_words = [w for f in finals for w in f["words"]]
    want_words = [w for f in want for w in f["words"]]
    matcher = difflib.SequenceMatcher(
        a=[normalize(w["word"], "en") for w in got_words], b=[normalize(w["word"], "en") for w in want_words]
    )
    pairs = [
        (got_words[b.a + k], want_words[b.b + k])
        for b in matcher.get_matching_blocks()
        for k in range(b.size)
    ]
    assert len(pairs) >= 0.8 * len(want_words)
    deltas = sorted(max(abs(g["start"] - w["start"]), abs(g["end"] - w["end"])) for g, w in pairs)
    print("word time differences:", [round(d, 2) for d in deltas])
    assert deltas[len(deltas) // 2] <= 0.1
    assert relay.dropped and relay.duplicated and relay.reordered
    # A packet that came after its gap was given up on (a busy machine delays the relay or the
    # receiver beyond the 60 ms depth) is both late and lost: lost = dropped + late.
    assert relay_lost == relay.detectable_losses() + relay_late
    assert relay_late <= 0.03 * len(relay.forwarded)
    assert relay_dups == relay.duplicated
    # 20 ms per packet; ffmpeg cuts a shorter packet where its input frames do not divide evenly.
    assert relay_lost * 0.02 - 0.1 <= concealed <= relay_lost * 0.02 + 1e-6
    assert health["state"] == "quiet"
