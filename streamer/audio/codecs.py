"""RTP audio payloads -> float32 mono samples at the payload's own clock rate.

PCMU/PCMA (G.711; 8 kHz mono as payload types 0 and 8, any rate as a dynamic type, as ffmpeg
sends them for 16 kHz input) go through 256-entry tables built from the ITU-T G.711 expansion rules: one
numpy lookup per packet, exact by construction, checked against FFmpeg's decoders in the tests.
L16 is big-endian signed 16-bit, interleaved when stereo (RFC 3551 section 4.5.11). Opus is decoded
by libopus through PyAV, one decoder per stream because Opus carries state between packets.
Several channels are mixed down to mono by averaging; resampling to 16 kHz is the caller's job
(streamer.audio.resample), so silence inserted for lost packets goes through the same filter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import av
import numpy as np

from streamer.audio.rtp import RtpError

#: Static payload types of RFC 3551 that carry audio we decode.
STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("PCMU", 8000, 1),
    8: ("PCMA", 8000, 1),
    10: ("L16", 44100, 2),
    11: ("L16", 44100, 1),
}
CODECS = ("PCMU", "PCMA", "L16", "OPUS")
_EMPTY = np.zeros(0, dtype=np.float32)


@dataclass(frozen=True)
class PayloadFormat:
    """What a payload type carries: codec name (upper case), clock rate (Hz) and channels."""

    payload_type: int
    codec: str
    rate: int
    channels: int = 1

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise ValueError(f"unsupported codec {self.codec!r}; supported: {', '.join(CODECS)}")
        if not 0 <= self.payload_type <= 127:
            raise ValueError(f"payload type {self.payload_type} is outside 0..127")
        if not 1000 <= self.rate <= 384_000:
            raise ValueError(f"clock rate {self.rate} is outside 1000..384000 Hz")
        if not 1 <= self.channels <= 8:
            raise ValueError(f"{self.channels} channels; 1..8 are supported")
        if self.codec == "OPUS" and self.rate != 48000:
            raise ValueError("Opus over RTP always uses a 48000 Hz clock (RFC 7587)")

    @classmethod
    def static(cls, payload_type: int) -> PayloadFormat | None:
        entry = STATIC_PAYLOAD_TYPES.get(payload_type)
        return None if entry is None else cls(payload_type, *entry)


def _ulaw_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.int16)


def _alaw_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (a & 0x70) >> 4
    t = (a & 0x0F) << 4
    t = np.where(seg == 0, t + 8, (t + 0x108) << np.maximum(seg - 1, 0))
    return np.where(a & 0x80, t, -t).astype(np.int16)


#: G.711 byte -> 16-bit linear sample.
ULAW_TO_LINEAR = _ulaw_table()
ALAW_TO_LINEAR = _alaw_table()
_ULAW_FLOAT = ULAW_TO_LINEAR.astype(np.float32) / 32768.0
_ALAW_FLOAT = ALAW_TO_LINEAR.astype(np.float32) / 32768.0


class PayloadDecoder(Protocol):
    fmt: PayloadFormat

    def decode(self, payload: bytes) -> np.ndarray:
        """float32 mono samples at fmt.rate; RtpError(kind='payload') if the payload is unusable."""


def _mono(interleaved: np.ndarray, channels: int) -> np.ndarray:
    if channels == 1:
        return interleaved
    return interleaved.reshape(-1, channels).mean(axis=1, dtype=np.float32)


class G711Decoder:
    def __init__(self, fmt: PayloadFormat) -> None:
        self.fmt = fmt
        self._table = _ULAW_FLOAT if fmt.codec == "PCMU" else _ALAW_FLOAT

    def decode(self, payload: bytes) -> np.ndarray:
        if len(payload) % self.fmt.channels:
            raise RtpError(
                "payload", f"{self.fmt.codec} payload is not whole {self.fmt.channels}-channel frames"
            )
        return _mono(self._table[np.frombuffer(payload, dtype=np.uint8)], self.fmt.channels)


class L16Decoder:
    def __init__(self, fmt: PayloadFormat) -> None:
        self.fmt = fmt
        self._frame_bytes = 2 * fmt.channels

    def decode(self, payload: bytes) -> np.ndarray:
        if len(payload) % self._frame_bytes:
            raise RtpError(
                "payload",
                f"L16 payload of {len(payload)} bytes is not whole {self.fmt.channels}-channel frames",
            )
        samples = np.frombuffer(payload, dtype=">i2").astype(np.float32) / 32768.0
        return _mono(samples, self.fmt.channels)


class OpusDecoder:
    def __init__(self, fmt: PayloadFormat) -> None:
        self.fmt = fmt
        self._ctx = av.CodecContext.create("libopus", "r")
        self._ctx.sample_rate = fmt.rate
        self._ctx.layout = "stereo" if fmt.channels >= 2 else "mono"

    def decode(self, payload: bytes) -> np.ndarray:
        if not payload:
            raise RtpError("payload", "empty Opus payload")
        try:
            frames = self._ctx.decode(av.Packet(payload))
        except av.error.FFmpegError as e:
            raise RtpError("payload", f"Opus payload does not decode: {e}") from None
        parts = [_frame_mono(f) for f in frames]
        if not parts:
            return _EMPTY
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _frame_mono(frame: av.AudioFrame) -> np.ndarray:
    data = frame.to_ndarray()
    channels = frame.layout.nb_channels
    if data.dtype == np.int16:
        data = data.astype(np.float32) / 32768.0
    else:
        data = data.astype(np.float32, copy=False)
    if frame.format.is_planar:
        return data.mean(axis=0, dtype=np.float32) if channels > 1 else data.reshape(-1)
    return _mono(data.reshape(-1), channels)


def make_decoder(fmt: PayloadFormat) -> PayloadDecoder:
    if fmt.codec in ("PCMU", "PCMA"):
        return G711Decoder(fmt)
    if fmt.codec == "L16":
        return L16Decoder(fmt)
    return OpusDecoder(fmt)
