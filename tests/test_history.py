"""A `since` older than the bus's memory window gets a `gap` message; /transcript reads the files."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from websockets.asyncio.client import connect

from streamer.bus import Bus
from streamer.sinks import formats

from .sink_events import final
from .sink_harness import http_get, publish, recv_json, recv_until, run, settings, start


def test_since_older_than_the_window_is_told_and_transcript_reads_the_files(tmp_path: Path) -> None:
    async def main() -> None:
        s = settings(server={"history_finals": 5}, transcripts={"dir": str(tmp_path)})
        bus = Bus(max_finals=s.server.history_finals)
        sinks, _ = await start(bus, s)
        port = sinks.server_port
        try:
            sent = [final(i) for i in range(1, 13)]
            # Through a live client, so that the end marker (seq 12) proves the files got them too.
            async with connect(f"ws://127.0.0.1:{port}/ws?partials=false") as ws:
                assert (await recv_json(ws))["type"] == "hello"
                await publish(bus, sent)
                await recv_until(ws, lambda m: m.get("seq") == 12)
            async with connect(f"ws://127.0.0.1:{port}/ws?since=3") as ws:
                assert (await recv_json(ws))["type"] == "hello"
                gap = await recv_json(ws)
                assert gap == {
                    "type": "gap",
                    "stream": "main",
                    "since": 3,
                    "first_seq": 8,
                    "transcript": "/transcript/main.jsonl",
                }
                replay = [await recv_json(ws) for _ in range(5)]
                assert [m["seq"] for m in replay] == [8, 9, 10, 11, 12]
            async with connect(f"ws://127.0.0.1:{port}/ws?since=7") as ws:
                assert (await recv_json(ws))["type"] == "hello"
                assert (await recv_json(ws))["seq"] == 8  # inside the window: no gap
            # The writer thread appends on its own: wait until final 12 (the end marker) is on disk.
            deadline = time.monotonic() + 20
            while True:
                status, headers, body = await http_get(port, "/transcript/main.jsonl")
                if body.decode().count("\n") >= 12 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.02)
            assert status == 200 and "Streamer-Missing-From" not in headers
            lines = [json.loads(line) for line in body.decode().splitlines()]
            assert [d["seq"] for d in lines] == list(range(1, 13))
            assert body.decode() == formats.format_jsonl(sent)
        finally:
            await sinks.close()

    run(main())


def test_transcript_without_files_says_where_it_starts_missing() -> None:
    async def main() -> None:
        s = settings(server={"history_finals": 3})
        bus = Bus(max_finals=3)
        for i in range(1, 11):
            bus.publish(final(i))
        sinks, _ = await start(bus, s)
        try:
            assert sinks.server_port is not None
            status, headers, body = await http_get(sinks.server_port, "/transcript/main.jsonl")
            assert status == 200 and headers["Streamer-Missing-From"] == "1"
            assert [json.loads(x)["seq"] for x in body.decode().splitlines()] == [8, 9, 10]
        finally:
            await sinks.close()

    run(main())
