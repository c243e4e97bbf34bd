"""Hostile clients against the caption server (issue 18): each test is the attack probe's own request
where there was one. No model: a real Bus, the real sinks, raw sockets and hand-made frames."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from streamer.audio.ingest import IngestSource
from streamer.bus import Bus
from streamer.sinks.access import address_key, target_host
from streamer.sinks.start import Sinks
from streamer.sinks.wsguard import MaskedOnly

from .raw_http import BadRecords, RawWebSocket, frame, metric, raw, serve_in_thread, status_of
from .sink_events import final
from .sink_harness import StreamHealth, recv_json, run, settings, start


def _no_errors(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [(r.levelname, r.getMessage()) for r in bad]


# --- 1. `since` with 4301+ digits ---------------------------------------------------------------


def test_since_with_4301_digits_is_400_not_500(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        sinks, _ = await start(Bus(), settings())
        port = sinks.server_port
        assert port
        try:
            for since in ("1" * 4301, "9" * 19, "²", "１２", "-1", "1e3"):
                with pytest.raises(InvalidStatus) as e:
                    async with connect(f"ws://127.0.0.1:{port}/ws?since={since}"):
                        pass
                assert e.value.response.status_code == 400, since
                assert len(e.value.response.body or b"") < 300  # the value is not echoed whole
            async with connect(f"ws://127.0.0.1:{port}/ws?since={'0' * 18}") as ws:
                assert (await recv_json(ws))["type"] == "hello"
        finally:
            await sinks.close()

    with caplog.at_level(logging.DEBUG):
        run(main())
    _no_errors(caplog)


# --- 6. the Host check holds for every request form -------------------------------------------


def test_host_check_holds_without_host_and_for_absolute_form_targets() -> None:
    assert target_host("/transcript/main.txt") is None and target_host("*") is None
    assert target_host("http://evil.example:8765/x") == "evil.example:8765"
    assert target_host("http://user@evil.example/x") == "evil.example"

    async def main() -> None:
        bus = Bus()
        bus.publish(final(1, "secret words"))
        sinks, _ = await start(bus, settings())
        port = sinks.server_port
        assert port
        try:

            async def send(req: str) -> bytes:
                return await asyncio.to_thread(raw, port, req.encode())

            # HTTP/1.0 without Host: the probe's request was served before.
            reply = await send("GET /transcript/main.txt HTTP/1.0\r\n\r\n")
            assert status_of(reply) == 400 and b"secret" not in reply
            # HTTP/0.9 (a bare request line): never served.
            reply = await send("GET /transcript/main.txt\r\n\r\n")
            assert status_of(reply) != 200 and b"secret" not in reply
            # Absolute form naming another host, with a Host header that passes.
            host = f"Host: 127.0.0.1:{port}\r\nConnection: close\r\n"
            for target in (
                f"http://evil.example:{port}/transcript/main.txt",
                "http://evil.example/health",
                f"http://x@evil.example:{port}/transcript/main.txt",
            ):
                reply = await send(f"GET {target} HTTP/1.1\r\n{host}\r\n")
                assert status_of(reply) == 403 and b"secret" not in reply, target
            reply = await send(f"GET http://127.0.0.1:{port}/transcript/main.txt HTTP/1.1\r\n{host}\r\n")
            assert status_of(reply) == 200 and b"secret words" in reply
            reply = await send(f"GET /transcript/main.txt HTTP/1.0\r\nHost: localhost:{port}\r\n\r\n")
            assert status_of(reply) == 200
        finally:
            await sinks.close()

    run(main())


# --- 7. unmasked client frames -------------------------------------------------------------------


@given(
    frames=st.lists(
        st.tuples(st.binary(max_size=300), st.booleans(), st.sampled_from([1, 2, 9, 10])),
        min_size=1,
        max_size=6,
    ),
    cut=st.lists(st.integers(1, 400), max_size=8),
)
def test_mask_check_finds_the_first_unmasked_frame_however_the_bytes_are_split(
    frames: list[tuple[bytes, bool, int]], cut: list[int]
) -> None:
    wire = b""
    first_bad = None
    for payload, masked, opcode in frames:
        if not masked and first_bad is None:
            first_bad = len(wire)
        wire += frame(opcode, payload, mask=masked)
    guard = MaskedOnly()
    pos, found = 0, None
    for size in [*cut, len(wire)]:
        piece = wire[pos : pos + size]
        at = guard.feed(piece)
        if at is not None:
            found = pos + at
            break
        pos += len(piece)
        if pos >= len(wire):
            break
    if first_bad is None:
        assert found is None and not guard.bad
    else:
        # The reported offset is where the unmasked frame starts, or the start of the piece
        # holding the rest of its header (bytes before it were already passed on).
        assert found is not None and found <= first_bad + 1 and found >= min(first_bad, pos)


def test_unmasked_client_frames_close_the_connection_1002() -> None:
    async def main() -> None:
        sinks, stubs = await start(Bus(), settings(server={"ingest_token": "in"}), streams=("main", "mic"))
        stubs["mic"].source = IngestSource(stream="mic")  # type: ignore[attr-defined]
        port = sinks.server_port
        assert port
        try:

            def probe(
                path: str,
                headers: dict[str, str] | None = None,
                op: int = 1,
                msg: bytes = b'{"type": "ping"}',
            ) -> tuple[int, int | None]:
                ws = RawWebSocket(port, path, headers)
                try:
                    # A masked message first (taken as before), then the same message unmasked.
                    ws.send(frame(op, msg) + frame(op, msg, mask=False))
                    return ws.status, ws.close_code()
                finally:
                    ws.close()

            assert await asyncio.to_thread(probe, "/ws") == (101, 1002)
            ingest = await asyncio.to_thread(
                probe, "/ingest?stream=mic", {"Authorization": "Bearer in"}, 2, b"\0" * 320
            )
            assert ingest == (101, 1002)
            # Bytes sent together with the upgrade request are checked too.
            assert await asyncio.to_thread(probe_with_head, port) == 1002
            async with connect(f"ws://127.0.0.1:{port}/ws") as ws:  # masked clients are served as before
                assert (await recv_json(ws))["type"] == "hello"
        finally:
            await sinks.close()

    run(main())


def probe_with_head(port: int) -> int | None:
    """The handshake and an unmasked frame in one write: the frame rides in the request's tail."""
    head = (
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head + frame(1, b'{"type": "ping"}', mask=False))
        data = b""
        while True:
            more = s.recv(65536)
            if not more:
                break
            data += more
    _, _, frames = data.partition(b"\r\n\r\n")
    # Server frames: hello (text), then the close frame with its code.
    i = 0
    while i + 2 <= len(frames):
        op, n = frames[i] & 0x0F, frames[i + 1] & 0x7F
        i += 2
        if n == 126:
            n = int.from_bytes(frames[i : i + 2], "big")
            i += 2
        if op == 8:
            return int.from_bytes(frames[i : i + 2], "big")
        i += n
    return None


# --- 4. ingest frame of exactly ingest_max_frame bytes; and the probe's ingest abuse ------------


def test_ingest_frame_of_exactly_max_is_taken_and_abuse_is_refused() -> None:
    async def main() -> None:
        s = settings(server={"ingest_token": "in", "ingest_max_frame": 32000})
        sinks, stubs = await start(Bus(), s, streams=("mic",))
        source = IngestSource(stream="mic")
        stubs["mic"].source = source  # type: ignore[attr-defined]
        port = sinks.server_port
        assert port
        url = f"ws://127.0.0.1:{port}/ingest?stream=mic"
        auth = {"Authorization": "Bearer in"}
        try:

            async def close_code(*messages: bytes | str) -> int | None:
                async with connect(url, additional_headers=auth, max_size=None) as ws:
                    try:
                        for m in messages:
                            await ws.send(m)
                        await asyncio.wait_for(ws.recv(), 10)
                    except ConnectionClosed as e:
                        return e.rcvd.code if e.rcvd else None
                return None

            # Exactly the limit: taken (the probe's 32000-byte frame was refused with 1009).
            assert await close_code(b"\0" * 32000, b"\0" * 32002) == 1009
            taken = [source._queue.get_nowait() for _ in range(source._queue.qsize())]
            # The first frame went in, the second did not (None: the client left).
            assert [None if b is None else len(b) for b in taken] == [16000, None]
            assert await close_code(b"\0" * 3) == 1003  # odd length: not PCM16
            assert await close_code("text") == 1003
            assert await close_code(*[b"\0" * 32000] * 4) == 1008  # faster than real time
            # A second client while one feeds the stream: 1013.
            async with connect(url, additional_headers=auth) as first:
                await first.send(b"\0" * 320)
                assert await close_code(b"\0" * 320) == 1013
            for bad_url, headers, code in (
                (url, {}, 401),
                (url, {"Authorization": "Bearer wrong"}, 401),
                (f"ws://127.0.0.1:{port}/ingest?stream=nope", auth, 404),
            ):
                with pytest.raises(InvalidStatus) as e:
                    async with connect(bad_url, additional_headers=headers):
                        pass
                assert e.value.response.status_code == code
        finally:
            await sinks.close()

    run(main())


# --- 11. per-address limit for WebSocket clients --------------------------------------------------


def test_one_address_cannot_take_every_viewer_slot() -> None:
    assert address_key("::ffff:127.0.0.1") == "127.0.0.1" == address_key("127.0.0.1")
    assert address_key("2001:db8::1") == address_key("2001:db8::2") == "2001:db8::/64"
    assert address_key("::1") == "::1" and address_key(None) == "unknown"

    async def main() -> None:
        sinks, _ = await start(Bus(), settings(server={"max_clients_per_address": 2, "max_clients": 10}))
        port = sinks.server_port
        assert port
        url = f"ws://127.0.0.1:{port}/ws"
        before = metric("streamer_address_limit_refused_total", route="ws")
        try:
            async with connect(url) as a, connect(url) as b:
                for ws in (a, b):
                    assert (await recv_json(ws))["type"] == "hello"
                with pytest.raises(InvalidStatus) as e:
                    async with connect(url):  # loopback counts like any address
                        pass
                assert e.value.response.status_code == 429
                assert b"max_clients_per_address" in (e.value.response.body or b"")
            # Both gone: the address has its slots back (the server unregisters on close).
            for _ in range(2):
                async with connect(url) as ws:
                    assert (await recv_json(ws))["type"] == "hello"
            text = (
                await asyncio.to_thread(
                    raw,
                    port,
                    b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                )
            ).decode()
            assert 'streamer_address_limit_refused_total{route="ws"}' in text
        finally:
            await sinks.close()
        assert metric("streamer_address_limit_refused_total", route="ws") == before + 1

    run(main())


# --- the probe's passing groups ------------------------------------------------------------------


def test_probe_groups_traversal_smuggling_and_websocket_floods(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        bus = Bus()
        bus.publish(final(1, "hello"))
        sinks, _ = await start(bus, settings())
        port = sinks.server_port
        assert port
        host = f"Host: 127.0.0.1:{port}\r\n"

        async def send(req: bytes) -> bytes:
            return await asyncio.to_thread(raw, port, req)

        try:
            for path in (
                "/../pyproject.toml",
                "/%2e%2e/pyproject.toml",
                "/%2e%2e%2fpyproject.toml",
                "/..%2f..%2fetc%2fpasswd",
                "/static/../../etc/passwd",
                "/....//....//etc/passwd",
                "/%252e%252e/etc/passwd",
                "/transcript/..%2f..%2fetc%2fpasswd",
                "/transcript/main.txt%00.html",
                "/index.html%00",
                "/.git/config",
                "/__init__.py",
                "/C:%5cwindows%5cwin.ini",
            ):
                reply = await send(f"GET {path} HTTP/1.1\r\n{host}Connection: close\r\n\r\n".encode())
                assert status_of(reply) in (400, 404), (path, reply[:100])
                assert b"root:" not in reply and b"[project]" not in reply and b"[core]" not in reply
            # Oversized head: many headers, each small.
            many = "".join(f"X-H{i}: {'v' * 100}\r\n" for i in range(2000))
            reply = await send(f"GET /health HTTP/1.1\r\n{host}{many}\r\n".encode())
            assert 400 <= status_of(reply) < 500
            # Smuggling: Content-Length with Transfer-Encoding, two lengths, an obfuscated chunked.
            for head in (
                "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
                "Content-Length: 4\r\nContent-Length: 40\r\n",
                "Transfer-Encoding: xchunked\r\n",
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
            ):
                body = "0\r\n\r\nGET /metrics HTTP/1.1\r\nHost: evil.example\r\n\r\n"
                reply = await send(f"POST /health HTTP/1.1\r\n{host}{head}\r\n{body}".encode())
                assert reply.count(b"HTTP/1.") == 1, (head, reply[:200])  # no second, smuggled reply
                assert 400 <= status_of(reply) < 500

            # WebSocket floods: a frame that claims 2^40 bytes, and an endless fragmented message.
            def flood(frames: bytes) -> int | None:
                ws = RawWebSocket(port, "/ws")
                try:
                    ws.send(frames)
                    return ws.close_code()
                finally:
                    ws.close()

            assert await asyncio.to_thread(flood, frame(2, b"", length=1 << 40)) == 1009
            fragments = frame(1, b"x" * 100, fin=False) + b"".join(
                frame(0, b"x" * 100, fin=False) for _ in range(20)
            )
            assert await asyncio.to_thread(flood, fragments) == 1009
            async with connect(f"ws://127.0.0.1:{port}/ws") as ws:  # still serving
                assert (await recv_json(ws))["type"] == "hello"
        finally:
            await sinks.close()

    with caplog.at_level(logging.DEBUG):
        run(main())
    _no_errors(caplog)


# --- the fuzz test of everything the server parses ----------------------------------------------

_HEADER_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n\0"), max_size=80
)
_QUERY_TEXT = st.text(max_size=60) | st.sampled_from(["1" * 5000, "%", "%zz", "&&&", "=", "main", "0"])


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[tuple[Sinks, BadRecords]]:
    """One server for every example (hypothesis runs many), on a loop in a thread."""
    bus = Bus()
    bus.publish(final(1, "hello"))
    s = settings(server={"token": "tok", "ingest_token": "in"})
    with serve_in_thread(s, bus, {"main": StreamHealth("main")}) as served:
        yield served


def _q(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


@hsettings(max_examples=150, deadline=None)
@given(
    path=st.sampled_from(["/ws", "/metrics", "/transcript/main.txt", "/streams", "/health", "/", "/ingest"]),
    since=st.none() | _QUERY_TEXT,
    token=st.none() | _QUERY_TEXT,
    stream=st.none() | _QUERY_TEXT,
    partials=st.none() | _QUERY_TEXT,
    origin=st.none() | _HEADER_TEXT,
    host=st.none() | _HEADER_TEXT | st.sampled_from(["127.0.0.1", "localhost:1", "[::1]", "a" * 300]),
    auth=st.none() | _HEADER_TEXT.map(lambda t: "Bearer " + t),
    upgrade=st.booleans(),
)
def test_fuzz_every_parsed_query_parameter_and_header(
    fuzz_server: tuple[Sinks, BadRecords],
    path: str,
    since: str | None,
    token: str | None,
    stream: str | None,
    partials: str | None,
    origin: str | None,
    host: str | None,
    auth: str | None,
    upgrade: bool,
) -> None:
    sinks, bad = fuzz_server
    port = sinks.server_port
    assert port
    query = "&".join(
        f"{k}={_q(v)}"
        for k, v in (("since", since), ("token", token), ("stream", stream), ("partials", partials))
        if v is not None
    )
    headers = ""
    if host is not None:
        headers += f"Host: {host}\r\n"
    if origin is not None:
        headers += f"Origin: {origin}\r\n"
    if auth is not None:
        headers += f"Authorization: {auth}\r\n"
    if upgrade:
        headers += (
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        )
    else:
        headers += "Connection: close\r\n"
    req = f"GET {path}{'?' + query if query else ''} HTTP/1.1\r\n{headers}\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(req)
        reply = s.recv(4096)  # the status line is all we need; a 101 stays open, so no read-to-end
    code = status_of(reply)
    assert 100 <= code < 500, reply[:200]
    assert not bad.records, bad.bad()


def test_health_and_streams_show_the_sources_own_counts() -> None:
    """Kernel drops (RTP) and gaps (ingest) are in the stream's status, read from the source."""

    class Counting:
        def status(self) -> dict[str, object]:
            return {"kernel_drops": 7}

    async def main() -> None:
        sinks, stubs = await start(Bus(), settings(), streams=("room",))
        stubs["room"].source = Counting()  # type: ignore[attr-defined]
        port = sinks.server_port
        assert port
        try:
            for path in ("/health", "/streams"):
                reply = await asyncio.to_thread(
                    raw, port, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
                )
                assert status_of(reply) == 200, reply[:200]
                doc = json.loads(reply.partition(b"\r\n\r\n")[2])
                room = doc["streams"]["room"] if path == "/health" else doc[0]
                assert room["source_status"] == {"kernel_drops": 7}, (path, room)
        finally:
            await sinks.close()

    run(main())
