"""Bytes on a socket for tests of hostile clients: raw HTTP requests and hand-made WebSocket frames
(masked or not, any length field), which no well-behaved client library will send."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import socket
import struct
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY

from streamer.bus import Bus
from streamer.config import Settings
from streamer.sinks.context import SinkContext
from streamer.sinks.start import Sinks, start_sinks


def raw(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send bytes, read until the server closes the connection (or `timeout`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
        except (TimeoutError, ConnectionResetError):
            pass
    return b"".join(chunks)


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/") else 0


def frame(
    opcode: int, payload: bytes, *, mask: bool = True, fin: bool = True, length: int | None = None
) -> bytes:
    """One client frame; `length` overrides the length field (a lie about the payload size)."""
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | opcode])
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 1 << 16:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class RawWebSocket:
    """A WebSocket client on a plain socket: handshake, then whatever frames the test writes."""

    def __init__(self, port: int, path: str, headers: dict[str, str] | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
            ).encode()
        )
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            more = self.sock.recv(65536)
            assert more, "closed during the handshake"
            self.buf += more
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        self.status = status_of(head)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            more = self.sock.recv(65536)
            if not more:
                raise ConnectionError("closed")
            self.buf += more
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def close_code(self) -> int | None:
        """Read server frames until a close frame: its code (None if the socket just closed)."""
        try:
            while True:
                b0, b1 = self._read(2)
                n = b1 & 0x7F
                if n == 126:
                    n = struct.unpack("!H", self._read(2))[0]
                elif n == 127:
                    n = struct.unpack("!Q", self._read(8))[0]
                payload = self._read(n)
                if b0 & 0x0F == 0x8:
                    return int(struct.unpack("!H", payload[:2])[0]) if len(payload) >= 2 else 1005
        except (ConnectionError, TimeoutError):
            return None

    def close(self) -> None:
        self.sock.close()


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class BadRecords(logging.Handler):
    """Keeps what must never be logged for a client's input: ERROR and above, or a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        if record.levelno >= logging.ERROR or record.exc_info:
            self.records.append(record)

    def bad(self) -> list[str]:
        return [f"{r.levelname} {r.getMessage()}" for r in self.records]


@contextlib.contextmanager
def serve_in_thread(
    s: Settings, bus: Bus, streams: dict[str, Any], engine: Any = None
) -> Iterator[tuple[Sinks, BadRecords]]:
    """The real sinks on an event loop in a thread, for tests that make many requests (hypothesis
    examples) or talk with blocking sockets; with a handler that keeps errors and tracebacks."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    ctx = SinkContext(settings=s, bus=bus, streams=streams, model="tiny.en", engine=engine)
    sinks = asyncio.run_coroutine_threadsafe(start_sinks(ctx), loop).result(60)
    bad = BadRecords()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(bad)
    root.setLevel(logging.DEBUG)
    try:
        yield sinks, bad
    finally:
        root.removeHandler(bad)
        root.setLevel(old_level)
        asyncio.run_coroutine_threadsafe(sinks.close(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
