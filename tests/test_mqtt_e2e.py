"""The broker dies mid-stream under the real daemon: every final reaches the subscriber exactly
once and in order after the restart (real tiny.en model, real mosquitto, `streamer run`)."""

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

from streamer.audio.decode import load_audio
from streamer.events import parse_event

from .helpers_mosquitto import Broker, Subscriber, free_port, running_broker
from .sink_harness import http_get, run

pytestmark = [pytest.mark.model, pytest.mark.slow, pytest.mark.component]

CLIP = "long/en_pocketsphinx_sense_and_sensibility_01_0870-0930_concat.flac"
RATE = 16000


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    yield from running_broker(tmp_path)


async def health(port: int) -> dict[str, Any]:
    _, _, body = await http_get(port, "/health")
    doc: dict[str, Any] = json.loads(body)
    return doc


async def until_health(port: int, pred: Any, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            doc = await health(port)
            if pred(doc):
                return doc
        except (OSError, ValueError):
            pass
        assert time.monotonic() < deadline, "daemon never reached the expected state"
        await asyncio.sleep(0.2)


def test_daemon_broker_restart_every_final_once_in_order(
    broker: Broker, audio_dir: Path, tmp_path: Path
) -> None:
    pcm = (np.clip(load_audio(audio_dir / CLIP), -1.0, 1.0) * 32767).astype("<i2").tobytes()
    broker.set_users({"streamer": "pw"})
    broker.stop()
    broker.start()
    sub = Subscriber(broker, "r/#")
    sub.wait_ready("r/probe")
    port = free_port()
    tx = tmp_path / "tx"
    env = {**os.environ, "STREAMER_MQTT__RECONNECT_MAX": "1", "STREAMER_SERVER__STALL_TIMEOUT": "600"}
    env.pop("STREAMER_TOKEN", None)
    env.pop("STREAMER_CONFIG", None)
    log = (tmp_path / "daemon.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamer",
            "run",
            "--source",
            "stdin",
            "--model",
            "tiny.en",
            "--language",
            "en",
            "--mqtt",
            f"mqtt://streamer:pw@127.0.0.1:{broker.port}",
            "--mqtt-prefix",
            "r",
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

    async def feed(start_s: float, end_s: float) -> None:
        assert proc.stdin is not None
        step = RATE  # 1 s of s16le audio = 2 * RATE bytes; feed 2 s of audio per 0.5 s
        for i in range(int(start_s * RATE) * 2, min(len(pcm), int(end_s * RATE) * 2), 2 * step * 2):
            chunk = pcm[i : min(i + 2 * step * 2, int(end_s * RATE) * 2)]
            await asyncio.to_thread(proc.stdin.write, chunk)
            await asyncio.to_thread(proc.stdin.flush)
            await asyncio.sleep(0.5)

    async def main() -> None:
        assert proc.stdin is not None
        await until_health(port, lambda d: d["mqtt"]["connected"], timeout=120)
        await feed(0, 8.0)  # the first utterance ends at 6.9 s
        await asyncio.to_thread(sub.wait_for, lambda ms: any(t == "r/main/text" for t, _ in ms), 60)
        await until_health(port, lambda d: d["mqtt"]["outbox"] == 0)

        broker.kill()
        await until_health(port, lambda d: not d["mqtt"]["connected"])
        await feed(8.0, 16.5)  # one or two more utterances: their finals wait in the outbox
        await until_health(port, lambda d: d["mqtt"]["outbox"] >= 1 and d["streams"]["main"]["finals"] >= 2)

        broker.set_users({})  # the daemon may come back only after the subscriber resubscribed
        await asyncio.to_thread(broker.start)
        await asyncio.to_thread(sub.wait_ready, "r/probe")
        broker.set_users({"streamer": "pw"})
        broker.reload()
        await until_health(port, lambda d: d["mqtt"]["connected"] and d["mqtt"]["outbox"] == 0)
        await feed(16.5, 1e9)
        proc.stdin.close()
        rc = await asyncio.to_thread(proc.wait, 120)
        assert rc == 0, (tmp_path / "daemon.log").read_text()[-3000:]

    try:
        run(main(), timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    files = [
        parse_event(line).model_dump(mode="json")
        for p in tx.glob("main-*.jsonl")
        for line in p.read_text().splitlines()
    ]
    assert len(files) >= 4
    sub.wait_for(lambda ms: [t for t, _ in ms].count("r/main/text") >= len(files), timeout=20)
    # The daemon exited after the broker acknowledged every publish, so a probe published now
    # reaches the subscriber after any duplicate would have: the end marker.
    sub.wait_ready("r/probe")
    assert sub.finals() == files  # exactly once each, in order
    assert sub.payloads("/main/text") == [f["text"] for f in files]
    sub.stop()
