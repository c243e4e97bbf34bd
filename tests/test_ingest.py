"""`/ingest`: audio pushed over a WebSocket into a stream, with its own token and limits.

The pacer is tested as a pure object; the route with the real daemon (tiny.en) and a real
WebSocket client sending recorded speech as 16 kHz PCM16 at real-time pace.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import jiwer
import numpy as np
import pytest
import websockets

from streamer.audio.decode import load_audio
from streamer.audio.ingest import IngestPacer
from streamer_bench.textnorm import normalize

from .rtp_util import Daemon

SPEECH = "en/ljspeech_LJ001-0009.flac"
FRAME = 1600  # 100 ms


def test_pacer_allows_real_time_and_a_burst_but_not_more() -> None:
    p = IngestPacer(burst=2.0)
    assert all(p.allow(FRAME, i * 0.1) for i in range(600))  # a minute at real time
    assert p.allow(16000 * 2 - 10, 60.0)  # a 2 s burst after a hiccup
    assert not p.allow(FRAME, 60.0)  # but nothing more until time passes
    assert p.allow(FRAME, 60.2)
    fast = IngestPacer(burst=1.0)
    assert sum(fast.allow(FRAME, 0.0) for _ in range(50)) == 10  # 1 s of audio, then refused


def _pcm(path: Path) -> bytes:
    audio = load_audio(path)
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


async def _send(
    url: str, token: str, pcm: bytes, *, realtime: bool = True, expect_close: bool = False
) -> int | None:
    """Send PCM in 100 ms frames; the close code the server sent (None: we closed, nothing refused)."""
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        try:
            for i in range(0, len(pcm), FRAME * 2):
                await ws.send(pcm[i : i + FRAME * 2])
                if realtime:
                    await asyncio.sleep(0.1)  # a microphone delivers 100 ms every 100 ms
            if expect_close:
                await asyncio.wait_for(ws.recv(), timeout=10)
        except websockets.ConnectionClosed as e:
            return e.rcvd.code if e.rcvd else None
    return None


async def _status(url: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with websockets.connect(url, additional_headers=headers):
            return 101
    except websockets.InvalidStatus as e:
        return int(e.response.status_code)


@pytest.mark.model
@pytest.mark.slow
def test_ingest_captions_a_client_and_enforces_token_and_limits(audio_dir: Path) -> None:
    speech = audio_dir / SPEECH
    reference = speech.with_suffix(".txt").read_text(encoding="utf-8").strip()
    d = Daemon(
        "--source",
        "ingest",
        "--stream",
        "mic1",
        "--model",
        "tiny.en",
        "--language",
        "en",
        "--token",
        "read-me",
        env={"STREAMER_SERVER__INGEST_TOKEN": "speak-in"},
    )
    d.token = "read-me"
    try:
        d.wait_running("mic1")
        base = f"ws://127.0.0.1:{d.port}/ingest"
        url = f"{base}?stream=mic1"
        assert asyncio.run(_status(url, None)) == 401
        assert asyncio.run(_status(url, "read-me")) == 401  # the read token gives no ingest rights
        assert asyncio.run(_status(f"{base}?stream=nope", "speak-in")) == 404
        pcm = _pcm(speech)

        async def two_clients() -> tuple[int | None, int | None]:
            first = asyncio.create_task(_send(url, "speak-in", pcm))
            await asyncio.sleep(0.5)  # the first client is connected and talking
            second = await _send(url, "speak-in", pcm[: FRAME * 2], expect_close=True)
            return await first, second

        first_code, second_code = asyncio.run(two_clients())
        assert first_code is None and second_code == 1013  # one microphone per stream
        final = d.wait_for(
            lambda e: e["type"] == "final" and e["stream"] == "mic1" and e["last"], timeout=120
        )
        first = d.finals("mic1")[0]
        text = " ".join(f["text"] for f in d.finals("mic1"))
        # Faster than real time beyond the burst allowance: closed with 1008.
        assert asyncio.run(_send(url, "speak-in", pcm, realtime=False, expect_close=True)) == 1008
        ingested = d.metric("streamer_ingest_bytes_total", stream="mic1")
    finally:
        code = d.stop()
    assert code == 0, d.stderr[-3000:]
    print(text)
    # The speech starts at once: the utterance's first final starts near 0 (protocol 2: an utterance
    # may come as several finals; `final` is the one that closed it).
    assert first["start"] < 1.0 and first["utterance"] == final["utterance"]
    assert float(jiwer.wer(normalize(reference, "en"), normalize(text, "en"))) <= 0.15
    assert ingested >= len(pcm)
