"""The daemon as systemd runs it: a real `streamer run` (tiny.en) under a test-owned NOTIFY_SOCKET.

- READY=1 after the model is loaded and audio flows; WATCHDOG=1 keeps arriving while the
  pipeline progresses, stops while the decoder hangs (test hook STREAMER_TEST_HANG_DECODER),
  resumes when it recovers; STOPPING=1 and exit 0 on SIGTERM.
- SIGHUP with a changed token applies it without dropping connected clients; SIGHUP with an
  invalid file is rejected (logged with key and value) and the running configuration stays.
- SIGTERM in the middle of a sentence: the sentence arrives as a final at a WebSocket client, an
  MQTT subscriber (real mosquitto) and the transcript file before the daemon exits.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .helpers_daemon import Daemon, Message
from .helpers_mosquitto import Broker, Subscriber, free_port, running_broker
from .sink_harness import run

pytestmark = [pytest.mark.model, pytest.mark.slow]

SENTENCES = "long/en_pocketsphinx_sense_and_sensibility_01_0870-0930_concat.flac"


def _ticks_since(ms: list[Message], start: int) -> list[Message]:
    """Supervision ticks (each sends one STATUS, with or without WATCHDOG=1) from `start` on."""
    return [m for m in ms[start:] if "STATUS" in m and "READY" not in m]


def test_ready_watchdog_stops_while_decoder_hangs_and_stopping_on_sigterm(tmp_path: Path) -> None:
    hang = tmp_path / "hang"
    d = Daemon(
        tmp_path,
        ["--source", "demo", "--model", "tiny.en", "--no-server", "--transcripts", ""],
        env={"STREAMER_SERVICE__PROGRESS_TIMEOUT": "2", "STREAMER_TEST_HANG_DECODER": str(hang)},
        watchdog_usec=1_000_000,  # a ping every 0.5 s
    )
    n = d.notify
    try:
        ready = n.wait_message("READY")
        assert "model tiny.en" in d.log() and "loaded" in d.log()  # READY only after the model
        n.wait_for(lambda ms: sum("WATCHDOG" in m for m in ms[ready:]) >= 3, "watchdog pings")
        # Hang the decoder: the next decode blocks, and after progress_timeout (2 s) the watchdog
        # is no longer fed. Every tick still sends STATUS, so three ticks in a row without
        # WATCHDOG=1 are three missed pings, not a guess about time.
        hang.touch()
        stalled = n.wait_for(lambda ms: any("STALLED" in m.get("STATUS", "") for m in ms), "stall")
        n.wait_for(lambda ms: len(_ticks_since(ms, stalled - 1)) >= 4, "ticks while hung")
        hung_ticks = _ticks_since(n.snapshot(), stalled - 1)[:4]
        assert all("WATCHDOG" not in m and "a decode has not finished" in m["STATUS"] for m in hung_ticks)
        hang.unlink()
        n.wait_message("WATCHDOG", start=stalled)  # the decoder recovered: pings resume
        before_stop = len(n.snapshot())
        d.signal(signal.SIGTERM)
        n.wait_message("STOPPING", start=before_stop)
        assert d.wait(60) == 0, d.log()[-3000:]
    finally:
        d.stop()
    assert "watchdog not fed: stream main: a decode has not finished" in d.log()


def _write_config(path: Path, port: int, token: str, extra: str = "") -> None:
    path.write_text(
        f'model = "tiny.en"\n[source]\nspec = "demo"\n[server]\nport = {port}\ntoken = "{token}"\n'
        f'[transcripts]\ndir = ""\n[decoder]\nlanguage = "en"\n{extra}'
    )


def test_sighup_applies_a_new_token_without_dropping_clients_and_rejects_an_invalid_file(
    tmp_path: Path,
) -> None:
    port = free_port()
    cfg = tmp_path / "streamer.toml"
    _write_config(cfg, port, "old-token")
    d = Daemon(tmp_path, ["--config", str(cfg)])
    n = d.notify
    url = f"ws://127.0.0.1:{port}/ws"

    async def refused(token: str) -> int:
        try:
            ws = await connect(f"{url}?token={token}")
        except InvalidStatus as e:
            return e.response.status_code
        await ws.close()
        return 101

    async def next_final(ws: Any, after_seq: int) -> dict[str, Any]:
        while True:
            doc = json.loads(await asyncio.wait_for(ws.recv(), 60))
            if doc["type"] == "final" and doc["seq"] > after_seq:
                return doc

    async def next_caption(ws: Any) -> dict[str, Any]:
        while True:
            doc = json.loads(await asyncio.wait_for(ws.recv(), 60))
            if doc["type"] in ("partial", "final"):
                return doc

    async def main() -> int | None:
        await asyncio.to_thread(n.wait_message, "READY")
        ws = await connect(f"{url}?token=old-token")
        assert json.loads(await ws.recv())["type"] == "hello"
        first = await next_caption(ws)

        _write_config(cfg, port, "new-token")
        mark = len(n.snapshot())
        d.signal(signal.SIGHUP)
        reloading = await asyncio.to_thread(n.wait_message, "RELOADING", mark)
        await asyncio.to_thread(n.wait_message, "READY", reloading)
        assert await refused("old-token") == 401
        assert await refused("new-token") == 101
        # The client connected with the old token is still there and still gets captions.
        # (A final numbered after the first caption: decoded and sent after the reload began.)
        later = await next_final(ws, first["seq"] - (first["type"] == "partial"))
        assert later["seq"] >= first["seq"]

        # An invalid file: rejected, logged with the key and value, the running config kept.
        _write_config(cfg, port, "third-token", extra="[vad]\nthreshold = 5.0\n")
        mark = len(n.snapshot())
        d.signal(signal.SIGHUP)
        reloading = await asyncio.to_thread(n.wait_message, "RELOADING", mark)
        await asyncio.to_thread(n.wait_message, "READY", reloading)
        assert await refused("third-token") == 401
        assert await refused("new-token") == 101
        await next_caption(ws)

        d.signal(signal.SIGTERM)
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 60)
        except ConnectionClosed:
            pass
        return ws.close_code

    try:
        close_code = run(main(), timeout=300)
        assert d.wait(60) == 0, d.log()[-3000:]
    finally:
        d.stop()
    log = d.log()
    assert "reload: applied server.token" in log
    assert "reload rejected, keeping the running configuration" in log
    assert "vad.threshold' = 5.0" in log
    assert close_code == 1001


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    yield from running_broker(tmp_path)


@pytest.mark.component  # mosquitto
def test_sigterm_mid_sentence_delivers_the_sentence_to_every_sink_before_exit(
    broker: Broker, audio_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    tx = tmp_path / "tx"
    sub = Subscriber(broker, "svc/#")
    sub.wait_ready("svc/probe")
    d = Daemon(
        tmp_path,
        [
            *("--source", f"file:{audio_dir / SENTENCES}", "--model", "tiny.en", "--language", "en"),
            *("--port", str(port), "--mqtt", broker.url, "--mqtt-prefix", "svc", "--transcripts", str(tx)),
        ],
    )

    async def main() -> tuple[dict[str, Any], list[dict[str, Any]], int | None]:
        await asyncio.to_thread(d.notify.wait_message, "READY")
        ws = await connect(f"ws://127.0.0.1:{port}/ws")
        events: list[dict[str, Any]] = []
        # Wait until the speaker is inside a sentence: a partial with a few words and no final
        # of that utterance yet. Then stop the daemon.
        while True:
            doc = json.loads(await asyncio.wait_for(ws.recv(), 120))
            events.append(doc)
            if doc["type"] == "partial" and len(doc["text"].split()) >= 3:
                break
        partial = doc
        d.signal(signal.SIGTERM)
        try:
            while True:
                events.append(json.loads(await asyncio.wait_for(ws.recv(), 60)))
        except ConnectionClosed:
            pass
        return partial, events, ws.close_code

    try:
        partial, events, close_code = run(main(), timeout=300)
        assert d.wait(60) == 0, d.log()[-3000:]
    finally:
        d.stop()
    assert close_code == 1001
    utt = partial["utterance"]
    finals = [e for e in events if e["type"] == "final" and e["utterance"] == utt]
    assert finals and finals[-1]["last"] is True, events[-5:]
    closing = finals[-1]
    # The final covers what the partial showed of the open sentence.
    shown = set(partial["text"].lower().replace(",", "").replace(".", "").split())
    said = set(" ".join(f["text"] for f in finals).lower().replace(",", "").replace(".", "").split())
    assert len(shown & said) >= len(shown) // 2, (partial["text"], [f["text"] for f in finals])
    # The same final reached the MQTT subscriber (the outbox was flushed before exit) ...
    sub.wait_for(
        lambda ms: any(json.loads(p)["seq"] == closing["seq"] for t, p in ms if t.endswith("/final"))
    )
    assert closing in sub.finals()
    sub.stop()
    # ... and the transcript file, complete on disk when the daemon exited.
    (jsonl,) = tx.glob("main-*.jsonl")
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert closing in lines
