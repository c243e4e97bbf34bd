"""HTTP-layer safety of the server: Host and Origin checks, long paths, methods, pipelining."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from streamer.bus import Bus
from streamer.sinks.access import bound_names, host_ok, origin_ok, split_host

from .raw_http import raw, status_of
from .sink_harness import recv_json, run, settings, start

LOCAL = bound_names("127.0.0.1")


def test_host_policy() -> None:
    for ok in ("127.0.0.1:8765", "localhost:8765", "[::1]:8765", "10.0.0.7", "LOCALHOST", "app.localhost:1"):
        assert host_ok(ok, LOCAL, []), ok
    for bad in ("evil.example:8765", "evil.example", "127.0.0.1.evil.example", ""):
        assert not host_ok(bad, LOCAL, []), bad
    assert host_ok("captions.lan:8765", LOCAL, ["captions.lan"])
    assert host_ok("anything", LOCAL, ["*"])
    wild = bound_names("0.0.0.0", ["studio-pc", "studio-pc.lan"])
    assert host_ok("studio-pc:8765", wild, []) and not host_ok("other-pc:8765", wild, [])
    # HTTP/1.0 or 0.9 without Host: nothing names the site, so the check cannot hold (issue 18).
    assert not host_ok(None, LOCAL, []) and host_ok(None, LOCAL, ["*"])


def test_origin_policy() -> None:
    host = "127.0.0.1:8765"
    assert origin_ok([], None, host)  # non-browser client
    assert origin_ok([], "http://127.0.0.1:8765", host)  # the daemon's own page
    assert not origin_ok([], "http://evil.example", host)
    assert not origin_ok([], "http://127.0.0.1:9999", host)  # another local service
    assert not origin_ok([], "null", host)
    assert origin_ok(["https://ok.example/"], "https://ok.example", host)
    assert origin_ok(["*"], "http://evil.example", host)


@given(st.text(max_size=300))
def test_host_policy_never_raises_and_names_need_allowing(header: str) -> None:
    name = split_host(header)
    allowed = host_ok(header, LOCAL, [])
    if allowed and name:
        assert name in LOCAL or name.endswith(".localhost") or ":" in name or name.replace(".", "").isdigit()


def test_default_origin_and_host_checks_and_explicit_configuration() -> None:
    async def main() -> None:
        bus = Bus()
        sinks, _ = await start(bus, settings())
        port = sinks.server_port
        assert port
        try:
            url = f"ws://127.0.0.1:{port}/ws"
            async with connect(url, origin=Origin(f"http://127.0.0.1:{port}")) as ws:
                assert (await recv_json(ws))["type"] == "hello"  # the daemon's own caption page
            async with connect(url) as ws:  # no Origin: not a browser
                assert (await recv_json(ws))["type"] == "hello"
            with pytest.raises(InvalidStatus) as e:
                async with connect(url, origin=Origin("http://evil.example")):
                    pass
            assert e.value.response.status_code == 403
            # DNS rebinding: the browser sends the attacker's name as Host.
            for path in ("/transcript/main.txt", "/metrics", "/", "/health"):
                req = f"GET {path} HTTP/1.1\r\nHost: evil.example:{port}\r\nConnection: close\r\n\r\n"
                reply = await asyncio.to_thread(raw, port, req.encode())
                assert status_of(reply) == 403 and b"allowed_hosts" in reply, path
            req = f"GET /health HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n"
            assert status_of(await asyncio.to_thread(raw, port, req.encode())) == 200
        finally:
            await sinks.close()
        sinks, _ = await start(
            bus,
            settings(server={"allowed_origins": ["http://evil.example"], "allowed_hosts": ["captions.lan"]}),
        )
        port = sinks.server_port
        assert port
        try:
            async with connect(f"ws://127.0.0.1:{port}/ws", origin=Origin("http://evil.example")) as ws:
                assert (await recv_json(ws))["type"] == "hello"
            req = f"GET /health HTTP/1.1\r\nHost: captions.lan:{port}\r\nConnection: close\r\n\r\n"
            assert status_of(await asyncio.to_thread(raw, port, req.encode())) == 200
        finally:
            await sinks.close()

    run(main())


def test_long_paths_methods_and_pipelining(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        sinks, _ = await start(Bus(), settings())
        port = sinks.server_port
        assert port
        host = f"Host: 127.0.0.1:{port}\r\n"
        try:
            long_name = "a" * 4000
            reply = await asyncio.to_thread(
                raw, port, f"GET /{long_name} HTTP/1.1\r\n{host}Connection: close\r\n\r\n".encode()
            )
            assert status_of(reply) == 404 and long_name not in reply.decode()
            # Beyond the request-line limit the parser refuses it: a 4xx, never a 500.
            huge = "b" * 20000
            reply = await asyncio.to_thread(
                raw, port, f"GET /{huge} HTTP/1.1\r\n{host}Connection: close\r\n\r\n".encode()
            )
            assert 400 <= status_of(reply) < 500
            for method in ("POST", "PUT", "DELETE", "PATCH"):
                for path in ("/", "/index.html", "/health", "/transcript/main.txt"):
                    req = f"{method} {path} HTTP/1.1\r\n{host}Content-Length: 0\r\nConnection: close\r\n\r\n"
                    reply = await asyncio.to_thread(raw, port, req.encode())
                    assert status_of(reply) == 405, (method, path)
            reply = await asyncio.to_thread(
                raw, port, f"HEAD /index.html HTTP/1.1\r\n{host}Connection: close\r\n\r\n".encode()
            )
            _, _, body = reply.partition(b"\r\n\r\n")
            assert status_of(reply) == 200 and body == b""
            assert b"\r\nServer: streamer/" in reply and b"aiohttp" not in reply
            # Two pipelined requests on one connection: both answered, in order.
            two = (
                f"GET /health HTTP/1.1\r\n{host}\r\nGET /streams HTTP/1.1\r\n{host}Connection: close\r\n\r\n"
            )
            reply = await asyncio.to_thread(raw, port, two.encode())
            assert reply.count(b"HTTP/1.1 200") == 2, reply[:300]
            assert reply.index(b'"status"') < reply.index(b'"name": "main"')
        finally:
            await sinks.close()

    with caplog.at_level(logging.DEBUG):
        run(main())
    assert not any("a" * 200 in r.getMessage() for r in caplog.records)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors


@pytest.mark.slow  # waits out the server's header timeout
def test_a_request_head_that_never_ends_is_closed() -> None:
    """Slowloris: a connection that sends part of a request head and stalls does not stay open."""

    def stalled(port: int, first: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
            if first:
                s.sendall(first)
            return s.recv(100)  # b"" once the server closes it; socket.timeout fails the test

    async def main() -> None:
        sinks, _ = await start(Bus(), settings())
        port = sinks.server_port
        assert port
        try:
            closed = await asyncio.gather(
                asyncio.to_thread(stalled, port, b""),
                asyncio.to_thread(stalled, port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "),
            )
            assert closed == [b"", b""]
        finally:
            await sinks.close()

    run(main(), timeout=90)
