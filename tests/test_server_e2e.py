"""End to end: `streamer run` (a subprocess, real tiny.en model) to a WebSocket client, an MQTT
subscriber (real mosquitto) and transcript files, with /health going 503 when audio stops.

Recorded speech is fed through `--source stdin` (s16le, 16 kHz), so the test decides when audio
flows: first while the subscribers listen, then not at all (the source stalls), then EOF.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from streamer.audio.decode import load_audio
from streamer.events import parse_event

from .helpers_mosquitto import Broker, Subscriber, free_port, running_broker
from .sink_harness import http_get, run

pytestmark = [pytest.mark.model, pytest.mark.slow, pytest.mark.component]

REPO = Path(__file__).resolve().parent.parent
CLIP = "long/en_pocketsphinx_sense_and_sensibility_01_0870-0930_concat.flac"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    yield from running_broker(tmp_path)


def streamer_exe() -> list[str]:
    return [sys.executable, "-m", "streamer"]


async def wait_http(port: int, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited early with {proc.returncode}")
        try:
            status, _, _ = await http_get(port, "/streams")
            if status == 200:
                return
        except OSError:
            pass
        await asyncio.sleep(0.2)
    raise AssertionError("daemon did not start listening")


def test_daemon_delivers_identical_finals_to_websocket_mqtt_and_files(
    broker: Broker, audio_dir: Path, tmp_path: Path
) -> None:
    pcm = (np.clip(load_audio(audio_dir / CLIP), -1.0, 1.0) * 32767).astype("<i2").tobytes()
    sub = Subscriber(broker, "e2e/#")
    sub.wait_ready("e2e/probe")
    port = free_port()
    tx = tmp_path / "tx"
    env = {**os.environ, "STREAMER_SERVER__STALL_TIMEOUT": "2", "STREAMER_TOKEN": "tok"}
    env.pop("STREAMER_CONFIG", None)
    log = (tmp_path / "daemon.log").open("wb")
    proc = subprocess.Popen(
        [
            *streamer_exe(),
            "run",
            "--source",
            "stdin",
            "--model",
            "tiny.en",
            "--language",
            "en",
            "--mqtt",
            broker.url,
            "--mqtt-prefix",
            "e2e",
            "--port",
            str(port),
            "--transcripts",
            str(tx),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=log,
        env=env,
        cwd=tmp_path,
    )

    async def main() -> tuple[list[dict[str, Any]], int | None]:
        assert proc.stdin is not None
        await wait_http(port, proc)
        ws = await connect(f"ws://127.0.0.1:{port}/ws?since=0&token=tok")
        hello = json.loads(await ws.recv())
        assert hello["type"] == "hello" and hello["model"] == "tiny.en" and hello["language"] == "en"
        got: list[dict[str, Any]] = []
        code: list[int | None] = [None]

        async def reader() -> None:
            try:
                async for msg in ws:
                    doc = json.loads(msg)
                    if doc["type"] == "final":
                        got.append(doc)
            except ConnectionClosed:
                pass
            code[0] = ws.close_code

        task = asyncio.ensure_future(reader())
        # Feed at about 4x real time: 0.5 s of audio every 0.125 s.
        step = 16000 * 2 // 2
        for i in range(0, len(pcm), step):
            await asyncio.to_thread(proc.stdin.write, pcm[i : i + step])
            await asyncio.to_thread(proc.stdin.flush)
            await asyncio.sleep(0.125)
        status, _, body = await http_get(port, "/health")
        assert status == 200, body
        # The source stays open but silent: after stall_timeout (2 s) the daemon is unhealthy.
        deadline = time.monotonic() + 30
        while True:
            status, _, body = await http_get(port, "/health")
            if status == 503:
                break
            assert time.monotonic() < deadline, body
            await asyncio.sleep(0.5)
        doc = json.loads(body)
        assert doc["status"] == "unhealthy" and "no audio" in doc["problems"]["main"]
        assert doc["mqtt"]["connected"] is True and doc["clients"] == 1
        proc.stdin.close()  # end of input: the daemon flushes every sink and exits
        rc = await asyncio.to_thread(proc.wait, 120)
        assert rc == 0, (tmp_path / "daemon.log").read_text()[-3000:]
        await asyncio.wait_for(task, 10)
        return got, code[0]

    try:
        ws_finals, close_code = run(main(), timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert close_code == 1001
    seqs = [f["seq"] for f in ws_finals]
    assert len(seqs) >= 2 and seqs == list(range(1, len(seqs) + 1))
    sub.wait_for(lambda ms: [t for t, _ in ms].count("e2e/main/text") >= len(seqs), timeout=20)
    sub.wait_ready("e2e/probe")  # end marker: anything the daemon published is delivered before it
    assert sub.finals() == ws_finals  # identical finals, same order
    assert sub.payloads("/main/text") == [f["text"] for f in ws_finals]
    jsonl = list(tx.glob("main-*.jsonl"))
    assert len(jsonl) == 1
    assert [
        parse_event(line).model_dump(mode="json") for line in jsonl[0].read_text().splitlines()
    ] == ws_finals
    text = " ".join(f["text"] for f in ws_finals).lower()
    assert "dashwood" in text and "amiable" in text, text
    sub.stop()
