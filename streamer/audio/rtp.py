"""RTP packets (RFC 3550 section 5.1), parsed without any I/O.

`parse(datagram)` returns an `RtpPacket` or raises `RtpError` with a short `kind` the receiver
counts in its metrics (truncated, version, padding, csrc, extension, rtcp). Nothing else escapes:
the property tests feed it arbitrary bytes. `build` is the inverse, for senders in tests.
Sequence numbers are 16 bits and wrap; `seq_delta` gives the signed distance that survives the
wrap, `SeqUnwrapper` turns them into a count that keeps growing.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

HEADER_BYTES = 12
SEQ_MOD = 1 << 16
TS_MOD = 1 << 32
_HEADER = struct.Struct("!BBHII")


class RtpError(ValueError):
    """A datagram that is not a usable RTP packet; `kind` names the reason for the metrics."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None  # (profile-defined id, data)
    padding: int = 0  # padding bytes that were stripped
    version: int = 2


def parse(data: bytes) -> RtpPacket:
    """One datagram -> RtpPacket; RtpError for anything that is not RTP version 2."""
    n = len(data)
    if n < HEADER_BYTES:
        raise RtpError("truncated", f"{n} bytes is shorter than the 12-byte RTP header")
    b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data)
    version = b0 >> 6
    if version != 2:
        raise RtpError("version", f"RTP version {version}, expected 2")
    if 200 <= b1 <= 206:
        # RTCP multiplexed on the same port (RFC 5761): not audio, not an error of the sender.
        raise RtpError("rtcp", f"RTCP packet type {b1}")
    end = n
    padding = 0
    if b0 & 0x20:
        padding = data[-1]
        if padding == 0:
            raise RtpError("padding", "padding bit set with a zero padding count")
        if padding > n - HEADER_BYTES:
            raise RtpError("padding", f"padding of {padding} bytes is longer than the packet")
        end -= padding
    offset = HEADER_BYTES
    cc = b0 & 0x0F
    if offset + 4 * cc > end:
        raise RtpError("csrc", f"CSRC list of {cc} entries does not fit in {n} bytes")
    csrc = struct.unpack_from(f"!{cc}I", data, offset) if cc else ()
    offset += 4 * cc
    extension = None
    if b0 & 0x10:
        if offset + 4 > end:
            raise RtpError("extension", "header extension flag set but no extension header")
        profile, words = struct.unpack_from("!HH", data, offset)
        offset += 4
        if offset + 4 * words > end:
            raise RtpError("extension", f"header extension of {words} words does not fit")
        extension = (profile, bytes(data[offset : offset + 4 * words]))
        offset += 4 * words
    if offset > end:
        raise RtpError("padding", f"padding of {padding} bytes overlaps the header")
    return RtpPacket(
        payload_type=b1 & 0x7F,
        sequence=seq,
        timestamp=ts,
        ssrc=ssrc,
        payload=bytes(data[offset:end]),
        marker=bool(b1 & 0x80),
        csrc=tuple(csrc),
        extension=extension,
        padding=padding,
        version=version,
    )


def build(packet: RtpPacket) -> bytes:
    """Serialise a packet (padding is written as `packet.padding` bytes, the last holding the count)."""
    if len(packet.csrc) > 15:
        raise ValueError("at most 15 CSRC entries")
    b0 = 0x80 | len(packet.csrc)
    if packet.padding:
        b0 |= 0x20
    if packet.extension is not None:
        b0 |= 0x10
    b1 = (0x80 if packet.marker else 0) | (packet.payload_type & 0x7F)
    out = bytearray(
        _HEADER.pack(b0, b1, packet.sequence % SEQ_MOD, packet.timestamp % TS_MOD, packet.ssrc % TS_MOD)
    )
    for c in packet.csrc:
        out += struct.pack("!I", c)
    if packet.extension is not None:
        profile, ext = packet.extension
        if len(ext) % 4:
            raise ValueError("extension data must be a whole number of 32-bit words")
        out += struct.pack("!HH", profile, len(ext) // 4) + ext
    out += packet.payload
    if packet.padding:
        if not 1 <= packet.padding <= 255:
            raise ValueError("padding must be 1..255 bytes")
        out += bytes(packet.padding - 1) + bytes([packet.padding])
    return bytes(out)


def seq_delta(a: int, b: int) -> int:
    """Signed distance from sequence number b to a, modulo 2**16 (in -32768..32767)."""
    return (a - b + SEQ_MOD // 2) % SEQ_MOD - SEQ_MOD // 2


def ts_delta(a: int, b: int) -> int:
    """Signed distance from timestamp b to a, modulo 2**32."""
    return (a - b + TS_MOD // 2) % TS_MOD - TS_MOD // 2


class SeqUnwrapper:
    """16-bit sequence numbers -> an ever-growing index, assuming neighbours are < 2**15 apart."""

    def __init__(self) -> None:
        self._last: int | None = None  # the last extended value returned

    def reset(self) -> None:
        self._last = None

    def peek(self, seq: int) -> int:
        """The extended value `seq` would get, without remembering it."""
        if self._last is None:
            return seq + SEQ_MOD  # room below for packets that arrive before the first one
        return self._last + seq_delta(seq, self._last % SEQ_MOD)

    def extend(self, seq: int) -> int:
        value = self.peek(seq)
        self._last = value if self._last is None else max(self._last, value)
        return value
