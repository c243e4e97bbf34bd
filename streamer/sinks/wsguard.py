"""RFC 6455 §5.1 for aiohttp's server: a client frame without a mask closes the connection.

"The server MUST close the connection upon receiving a frame that is not masked" - masking is
what keeps a browser page from writing bytes of its choosing onto the wire (cache poisoning of
intermediaries). aiohttp's frame reader unmasks what is masked and accepts what is not, so
`MaskedOnly` (sans-I/O) follows the frame headers in the byte stream and reports the first
unmasked frame, and `StrictWebSocketResponse` puts it in front of aiohttp's reader: the frames
before it are delivered, then `receive()` sees a protocol error and aiohttp closes with 1002.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import WSCloseCode, web
from aiohttp.http_websocket import WebSocketError

log = logging.getLogger(__name__)

_HEAD, _EXT_LEN, _MASK, _PAYLOAD = range(4)


class MaskedOnly:
    """Follows frame boundaries; `feed(data)` returns the offset where an unmasked frame starts
    (its first byte), or None while every frame so far is masked. Never raises."""

    def __init__(self) -> None:
        self._state = _HEAD
        self._need = 2  # bytes still wanted for the current header part
        self._hdr = bytearray()
        self._payload_left = 0
        self._frame_start = 0
        self.bad = False

    def feed(self, data: bytes) -> int | None:
        i, n = 0, len(data)
        while i < n and not self.bad:
            if self._state == _PAYLOAD:
                step = min(self._payload_left, n - i)
                i += step
                self._payload_left -= step
                if self._payload_left == 0:
                    self._start_frame(i)
                continue
            take = min(self._need, n - i)
            self._hdr += data[i : i + take]
            i += take
            self._need -= take
            if self._need:
                continue
            if self._state == _HEAD:
                if not self._hdr[1] & 0x80:
                    self.bad = True
                    return max(0, self._frame_start)
                length = self._hdr[1] & 0x7F
                if length >= 126:
                    self._state, self._need = _EXT_LEN, 2 if length == 126 else 8
                else:
                    self._payload_left = length
                    self._state, self._need = _MASK, 4
                self._hdr.clear()
            elif self._state == _EXT_LEN:
                self._payload_left = int.from_bytes(self._hdr, "big")
                self._hdr.clear()
                self._state, self._need = _MASK, 4
            else:  # the masking key has been read
                self._hdr.clear()
                self._state = _PAYLOAD
                if self._payload_left == 0:
                    self._start_frame(i)
        # Offsets are per feed() call: a frame that began in an earlier call starts "before" this one.
        self._frame_start -= n
        return None

    def _start_frame(self, at: int) -> None:
        self._state, self._need = _HEAD, 2
        self._hdr.clear()
        self._frame_start = at


class _GuardedParser:
    """Stands in for aiohttp's frame reader on the connection: checks, then hands bytes on."""

    def __init__(self, inner: Any, queue: Any) -> None:
        self._inner = inner
        self._queue = queue
        self._mask = MaskedOnly()

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if self._mask.bad:
            return False, b""  # after the error nothing the client sends matters
        at = self._mask.feed(bytes(data))
        if at is None:
            result: tuple[bool, bytes] = self._inner.feed_data(data)
            return result
        if at > 0:
            self._inner.feed_data(data[:at])
        # receive() turns this into a 1002 close (aiohttp's own path for protocol errors).
        self._queue.set_exception(
            WebSocketError(WSCloseCode.PROTOCOL_ERROR, "client frames must be masked (RFC 6455 5.1)")
        )
        return False, b""

    def feed_eof(self) -> None:
        self._inner.feed_eof()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class StrictWebSocketResponse(web.WebSocketResponse):
    """aiohttp's WebSocketResponse that closes with 1002 on an unmasked client frame."""

    def _post_start(self, request: Any, protocol: Any, writer: Any) -> None:
        proto = request.protocol
        # Bytes that came in with the upgrade request must pass the check too: take them before
        # aiohttp's reader is installed (it would parse them at once) and feed them through it.
        tail = getattr(proto, "_message_tail", b"")
        if tail:
            proto._message_tail = b""
        super()._post_start(request, protocol, writer)
        inner = getattr(proto, "_payload_parser", None)
        queue = getattr(self, "_reader", None)
        if inner is None or queue is None or not hasattr(queue, "set_exception"):
            # An aiohttp whose internals moved: serve unguarded rather than not at all.
            log.warning("WebSocket mask check unavailable with this aiohttp version")
            if tail:
                proto._message_tail = tail
                if inner is not None:
                    inner.feed_data(tail)
                    proto._message_tail = b""
            return
        guard = _GuardedParser(inner, queue)
        proto._payload_parser = guard
        if tail:
            guard.feed_data(tail)
