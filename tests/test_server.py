"""WebSocket + HTTP server against a real Bus, real websockets clients and real HTTP requests."""

from __future__ import annotations

import asyncio
import json
import logging
import random

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

from streamer.bus import Bus
from streamer.events import parse_event
from streamer.sinks import formats

from .sink_events import final, partial
from .sink_harness import (
    StuckClient,
    http_get,
    publish,
    publish_in_thread,
    recv_json,
    recv_until,
    run,
    settings,
    start,
)


def url(port: int | None, query: str = "") -> str:
    assert port, "server not started"
    return f"ws://127.0.0.1:{port}/ws" + (f"?{query}" if query else "")


def seqs(msgs: list[dict]) -> list[int]:
    return [m["seq"] for m in msgs if m["type"] == "final"]


def test_hello_replay_then_live_partials_and_finals() -> None:
    async def main() -> None:
        bus = Bus()
        for i in range(1, 26):
            bus.publish(final(i))
        sinks, _ = await start(bus, settings(server={"replay_finals": 5}))
        try:
            async with connect(url(sinks.server_port)) as ws:
                hello = await recv_json(ws)
                assert hello["type"] == "hello" and hello["streams"] == ["main"]
                assert hello["model"] == "tiny.en" and hello["language"] == "en" and hello["protocol"] == 2
                replay = [await recv_json(ws) for _ in range(5)]
                assert seqs(replay) == [21, 22, 23, 24, 25]  # the last replay_finals finals
                await publish(bus, [partial(26, 0), partial(26, 1), final(26)])
                live = await recv_until(ws, lambda m: m["type"] == "final")
                assert live[-1]["seq"] == 26
                assert all(m["type"] == "partial" and m["seq"] == 26 for m in live[:-1])
                assert parse_event(live[-1]) == final(26)
        finally:
            await sinks.close()

    run(main())


def test_partials_off_and_unknown_stream_and_bad_since() -> None:
    async def main() -> None:
        bus = Bus()
        sinks, _ = await start(bus, settings(), streams=("main", "room2"))
        port = sinks.server_port
        assert port
        try:
            async with connect(url(port, "stream=room2&partials=false&since=0")) as ws:
                assert (await recv_json(ws))["streams"] == ["main", "room2"]
                await publish(bus, [final(1), partial(1, 0, stream="room2"), final(1, stream="room2")])
                msg = await recv_json(ws)
                assert (msg["type"], msg["stream"], msg["seq"]) == ("final", "room2", 1)
            for query, code in (
                ("stream=nope", 404),
                ("since=-1", 400),
                ("since=x", 400),
                ("partials=maybe", 400),
            ):
                with pytest.raises(InvalidStatus) as e:
                    async with connect(url(port, query)):
                        pass
                assert e.value.response.status_code == code, query
        finally:
            await sinks.close()

    run(main())


def test_reconnect_with_since_gets_exactly_the_missed_finals() -> None:
    async def main() -> None:
        bus = Bus()
        sinks, _ = await start(bus, settings())
        port = sinks.server_port
        assert port
        try:
            async with connect(url(port)) as ws:
                await recv_json(ws)
                await publish(bus, [final(i) for i in range(1, 6)])
                got = await recv_until(ws, lambda m: m.get("seq") == 5)
                assert seqs(got) == [1, 2, 3, 4, 5]
            await publish(bus, [final(i) for i in range(6, 11)])  # while disconnected
            async with connect(url(port, "since=5")) as ws:
                await recv_json(ws)
                await publish(bus, [final(11)])
                got = await recv_until(ws, lambda m: m.get("seq") == 11)
                assert seqs(got) == [6, 7, 8, 9, 10, 11]
        finally:
            await sinks.close()

    run(main())


def test_connects_racing_a_busy_publisher_never_duplicate_or_skip() -> None:
    """Clients join with `since` while finals stream in: each sees since+1 ... N exactly once."""

    async def main() -> None:
        bus = Bus()
        sinks, _ = await start(bus, settings(server={"client_queue": 4096}))
        port = sinks.server_port
        total = 400
        try:
            pub = publish_in_thread(bus, [final(i) for i in range(1, total + 1)], interval=0.002)

            async def client(delay: float) -> tuple[int, list[int]]:
                await asyncio.sleep(delay)
                since = bus.last_seq("main") - random.randint(0, 5)
                since = max(0, since)
                async with connect(url(port, f"since={since}")) as ws:
                    await recv_json(ws)
                    got = await recv_until(ws, lambda m: m.get("seq") == total, timeout=30)
                    return since, seqs(got)

            results = await asyncio.gather(*(client(i * 0.02) for i in range(30)))
            await asyncio.to_thread(pub.join)
            for since, got in results:
                assert got == list(range(since + 1, total + 1))
        finally:
            await sinks.close()

    run(main(), timeout=90)


def test_slow_client_is_closed_4008_and_catches_up_with_since() -> None:
    async def main() -> None:
        bus = Bus()
        sinks, _ = await start(bus, settings(server={"client_queue": 32}))
        port = sinks.server_port
        big = "word " * 12000  # 60 kB finals fill the socket buffers quickly
        try:
            assert port
            stuck = await asyncio.to_thread(StuckClient, port)
            fast = await connect(url(port), max_size=None)
            await recv_json(fast)
            n = 200
            pub = publish_in_thread(bus, [final(i, f"{i} {big}") for i in range(1, n + 1)], interval=0.01)
            got_fast = await recv_until(fast, lambda m: m.get("seq") == n, timeout=30)
            assert seqs(got_fast) == list(range(1, n + 1))
            await asyncio.to_thread(pub.join)
            # The publisher finished while the stuck client held its socket full: the bus never
            # waited for it (how long a publish takes is measured by `streamer bench`, not here).
            assert sinks.server.client_count == 1  # type: ignore[union-attr]
            # The stuck client now reads what it was sent, then finds the close frame.
            msgs, code, reason = await asyncio.to_thread(stuck.drain)
            assert code == 4008, (code, reason)
            received = seqs(msgs)
            hint = int(reason.rsplit("since=", 1)[1])  # a safe lower bound of what the client has
            assert received == list(range(1, len(received) + 1)) and len(received) < n
            assert received[-1] - 1 <= hint <= received[-1]
            async with connect(url(port, f"since={received[-1]}"), max_size=None) as again:
                await recv_json(again)
                rest = await recv_until(again, lambda m: m.get("seq") == n, timeout=30)
                assert seqs(rest) == list(range(received[-1] + 1, n + 1))
            await fast.close()
        finally:
            await sinks.close()

    run(main(), timeout=90)


def test_control_messages() -> None:
    async def main() -> None:
        bus = Bus()
        bus.publish(final(1))
        sinks, _ = await start(bus, settings())
        port = sinks.server_port
        try:
            async with connect(url(port, "since=1")) as ws:
                await recv_json(ws)
                await ws.send(json.dumps({"type": "ping", "id": "abc"}))
                assert await recv_json(ws) == {"type": "pong", "id": "abc", "last_seq": 1}
                await ws.send("hello?")
                with pytest.raises(ConnectionClosed) as e:
                    await recv_json(ws)
                assert e.value.rcvd is not None and e.value.rcvd.code == 1008
                assert "only" in e.value.rcvd.reason
            async with connect(url(port, "since=1")) as ws:
                await recv_json(ws)
                await ws.send(b"\x00\x01")
                with pytest.raises(ConnectionClosed) as e:
                    await recv_json(ws)
                assert e.value.rcvd is not None and e.value.rcvd.code == 1003
            async with connect(url(port, "since=1")) as ws:
                await recv_json(ws)
                await ws.send("x" * 5000)  # over the control message size limit
                with pytest.raises(ConnectionClosed) as e:
                    await recv_json(ws)
                assert e.value.rcvd is not None and e.value.rcvd.code == 1009
        finally:
            await sinks.close()

    run(main())


def test_token_and_origin_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMER_TOKEN", "s3cret")  # accepted besides server.token

    async def main() -> None:
        bus = Bus()
        bus.publish(final(1, "hello"))
        sinks, _ = await start(bus, settings(server={"origins": ["https://ok.example"]}))
        port = sinks.server_port
        assert port
        try:
            for query, headers in (("", {}), ("token=wrong", {}), ("", {"Authorization": "Bearer nope"})):
                with pytest.raises(InvalidStatus) as e:
                    async with connect(url(port, query), additional_headers=headers):
                        pass
                assert e.value.response.status_code == 401
            async with connect(url(port, "token=s3cret")) as ws:
                assert (await recv_json(ws))["type"] == "hello"
            async with connect(url(port), additional_headers={"Authorization": "Bearer s3cret"}) as ws:
                assert (await recv_json(ws))["type"] == "hello"
            async with connect(url(port, "token=s3cret"), origin=Origin("https://ok.example")) as ws:
                assert (await recv_json(ws))["type"] == "hello"
            with pytest.raises(InvalidStatus) as e:
                async with connect(url(port, "token=s3cret"), origin=Origin("https://evil.example")):
                    pass
            assert e.value.response.status_code == 403
            for path in ("/metrics", "/transcript/main.txt"):
                assert (await http_get(port, path))[0] == 401
                assert (await http_get(port, path + "?token=wrong"))[0] == 401
                assert (await http_get(port, path, {"Authorization": "Bearer s3cret"}))[0] == 200
            status, _, body = await http_get(port, "/transcript/main.txt?token=s3cret")
            assert (status, body) == (200, b"hello\n")
            assert (await http_get(port, "/health"))[0] == 200  # open: for load balancers
        finally:
            await sinks.close()

    run(main())


def test_max_clients() -> None:
    async def main() -> None:
        bus = Bus()
        sinks, _ = await start(bus, settings(server={"max_clients": 2}))
        port = sinks.server_port
        try:
            a = await connect(url(port))
            b = await connect(url(port))
            await recv_json(a)
            await recv_json(b)
            with pytest.raises(InvalidStatus) as e:
                async with connect(url(port)):
                    pass
            assert e.value.response.status_code == 503
            await a.close()
            server = sinks.server
            assert server is not None
            while server.client_count != 1:  # the server saw the close (the test's timeout bounds it)
                await asyncio.sleep(0.01)
            async with connect(url(port)) as c:
                assert (await recv_json(c))["type"] == "hello"
            await b.close()
        finally:
            await sinks.close()

    run(main())


def test_http_routes() -> None:
    async def main() -> None:
        bus = Bus()
        finals = [final(1, "first line"), final(2, "second <line>")]
        for f in finals:
            bus.publish(f)
        sinks, stubs = await start(bus, settings(server={"stall_timeout": 5}))
        port = sinks.server_port
        assert port
        try:
            status, headers, body = await http_get(port, "/")
            assert status == 200 and headers["Content-Type"].startswith("text/html")
            assert b"page.js" in body
            status, headers, body = await http_get(port, "/captions.js")
            assert status == 200 and b"WebSocket" in body
            assert headers["Content-Type"].startswith("text/javascript")  # ES modules need a JS type
            status, headers, body = await http_get(port, "/overlay")
            assert status == 200 and b"overlay.js" in body
            for bad in (
                "/nope",
                "/../pyproject.toml",
                "/.hidden",
                "/transcript/main.doc",
                "/transcript/zz.txt",
            ):
                assert (await http_get(port, bad))[0] == 404, bad
            status, _, body = await http_get(port, "/streams")
            assert status == 200
            assert json.loads(body) == [
                {"name": "main", "finals": 2, "state": "running", "source": "file:test.wav", "clients": 0}
            ]
            for ext in ("txt", "srt", "vtt", "json", "jsonl"):
                status, headers, body = await http_get(port, f"/transcript/main.{ext}")
                assert status == 200 and body.decode() == formats.FORMATTERS[ext](finals), ext
                assert headers["Content-Type"] == formats.MEDIA_TYPES[ext]
            status, _, body = await http_get(port, "/health")
            doc = json.loads(body)
            assert status == 200 and doc["status"] == "ok" and doc["clients"] == 0
            assert doc["streams"]["main"]["state"] == "running"
            stubs["main"].values["last_audio_age"] = 6.0  # the source went quiet
            status, _, body = await http_get(port, "/health")
            assert status == 503 and json.loads(body)["problems"] == {"main": "no audio for 6.0 s"}
            status, headers, body = await http_get(port, "/metrics")
            assert status == 200 and headers["Content-Type"].startswith("text/plain")
            names = {fam.name for fam in text_string_to_metric_families(body.decode())}
            assert {
                "streamer_ws_clients",
                "streamer_mqtt_publishes",
                "streamer_caption_latency_seconds",
            } <= names
        finally:
            await sinks.close()

    run(main())


def test_close_delivers_queued_finals_then_1001() -> None:
    async def main() -> None:
        bus = Bus()
        sinks, _ = await start(bus, settings())
        port = sinks.server_port
        ws = await connect(url(port))
        await recv_json(ws)
        # Publish and close at once: what the bus accepted before close() must still arrive.
        await publish(bus, [final(i) for i in range(1, 51)])
        await sinks.close()
        got: list[int] = []
        with pytest.raises(ConnectionClosed) as e:
            while True:
                got.append((await recv_json(ws))["seq"])
        assert got == list(range(1, 51))
        assert e.value.rcvd is not None and e.value.rcvd.code == 1001

    run(main())


def test_warns_when_exposed_without_token_and_port_in_use_fails(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        with caplog.at_level(logging.WARNING, logger="streamer.sinks.server"):
            sinks, _ = await start(Bus(), settings(server={"host": "0.0.0.0"}))
        try:
            assert any("without an access token" in r.getMessage() for r in caplog.records)
            taken = settings(server={"host": "0.0.0.0", "port": sinks.server_port})
            with pytest.raises(OSError):
                await start(Bus(), taken)
        finally:
            await sinks.close()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="streamer.sinks.server"):
            quiet, _ = await start(Bus(), settings(server={"host": "0.0.0.0", "token": "t"}))
            await quiet.close()
        assert not any("without an access token" in r.getMessage() for r in caplog.records)

    run(main())
