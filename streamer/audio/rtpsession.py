"""One RTP stream's receiving logic, free of I/O: datagrams and clock ticks in, 16 kHz audio out.

    session = RtpSession(options)
    audio = session.on_datagram(data, sender_address, now)   # for every datagram
    audio = session.on_tick(now)                             # every few ms, datagram or not

It checks the sender against the allow-list, parses (malformed packets are counted by kind and
dropped, never raised), maps the payload type to a format, orders packets in the jitter buffer,
decodes them, lays them on a timeline that follows the sender's timestamps (losses become
silence of the right length) and resamples to 16 kHz mono. A sender that sends nothing for
`quiet_after` seconds is "quiet": the session then produces silence in step with `now`, so the
stream's clock keeps running like a microphone's and an utterance still open when the sender
stopped gets its final. The thread around it (streamer.audio.rtpsource) only moves bytes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from streamer.audio.codecs import PayloadDecoder, PayloadFormat, make_decoder
from streamer.audio.jitter import DEFAULT_DEPTH, JitterBuffer, JitterStats, Timeline
from streamer.audio.resample import StreamResampler
from streamer.audio.rtp import RtpError, RtpPacket, parse

_EMPTY = np.zeros(0, dtype=np.float32)
DYNAMIC_PAYLOAD_TYPES = range(96, 128)


@dataclass(frozen=True)
class RtpOptions:
    #: Formats by payload type (from SDP or configuration); static types 0, 8, 10, 11 are
    #: understood unless listed here differently.
    formats: dict[int, PayloadFormat] = field(default_factory=dict)
    #: (codec, rate, channels) for any dynamic payload type not in `formats`.
    dynamic: tuple[str, int, int] | None = None
    jitter: float = DEFAULT_DEPTH
    quiet_after: float = 1.0
    max_gap: float = 2.0
    #: Sender IP addresses accepted; empty = any.
    allow: frozenset[str] = frozenset()


@dataclass
class RtpStats:
    datagrams: int = 0
    bytes: int = 0
    rejected: int = 0  # datagrams from senders not on the allow-list
    rtcp: int = 0
    malformed: Counter[str] = field(default_factory=Counter)  # by kind
    concealed_seconds: float = 0.0
    quiet_seconds: float = 0.0
    discontinuities: int = 0


class RtpSession:
    def __init__(self, options: RtpOptions) -> None:
        self.options = options
        self.stats = RtpStats()
        self.state = "waiting"  # waiting (nothing yet) | receiving | quiet
        self.sender: str | None = None
        self.format: PayloadFormat | None = None
        self._jitter = JitterBuffer(8000, options.jitter)
        self._decoder: PayloadDecoder | None = None
        self._resampler: StreamResampler | None = None
        self._timeline: Timeline | None = None
        self._play_ssrc: int | None = None
        self._last_arrival = 0.0
        self._quiet_filled = 0  # samples of quiet silence produced, at the format's rate

    @property
    def jitter_stats(self) -> JitterStats:
        return self._jitter.stats

    @property
    def lost(self) -> int:
        return self._jitter.stats.lost

    def format_for(self, payload_type: int) -> PayloadFormat | None:
        fmt = self.options.formats.get(payload_type)
        if fmt is not None:
            return fmt
        if self.options.dynamic is not None and payload_type in DYNAMIC_PAYLOAD_TYPES:
            return PayloadFormat(payload_type, *self.options.dynamic)
        return PayloadFormat.static(payload_type)

    def on_datagram(self, data: bytes, sender: str, now: float) -> np.ndarray:
        if self.options.allow and sender not in self.options.allow:
            self.stats.rejected += 1
            return _EMPTY
        self.stats.datagrams += 1
        self.stats.bytes += len(data)
        try:
            packet = parse(data)
        except RtpError as e:
            if e.kind == "rtcp":
                self.stats.rtcp += 1
            else:
                self.stats.malformed[e.kind] += 1
            return _EMPTY
        fmt = self.format_for(packet.payload_type)
        if fmt is None:
            self.stats.malformed["payload_type"] += 1
            return _EMPTY
        out: list[np.ndarray] = []
        self.state = "receiving"
        self.sender = sender
        self._last_arrival = now
        self._jitter.rate = fmt.rate
        self._play(self._jitter.push(packet, now), out)
        return _join(out)

    def on_tick(self, now: float) -> np.ndarray:
        out: list[np.ndarray] = []
        self._play(self._jitter.pop(now), out)
        if self.state == "receiving" and now - self._last_arrival >= self.options.quiet_after:
            self._play(self._jitter.flush(), out)
            self.state = "quiet"
            self._quiet_filled = 0
        if self.state == "quiet" and self.format is not None and self._resampler is not None:
            owed = int((now - self._last_arrival) * self.format.rate) - self._quiet_filled
            if owed > 0:
                self._quiet_filled += owed
                if self._timeline is not None:
                    self._timeline.skip(owed)
                self.stats.quiet_seconds += owed / self.format.rate
                out.append(self._resampler.feed(np.zeros(owed, dtype=np.float32)))
        return _join(out)

    def _switch(self, fmt: PayloadFormat, out: list[np.ndarray]) -> None:
        if self._resampler is not None:
            out.append(self._resampler.flush())
        self.format = fmt
        self._decoder = make_decoder(fmt)
        self._resampler = StreamResampler(fmt.rate)
        self._timeline = Timeline(fmt.rate, self.options.max_gap)

    def _play(self, packets: list[RtpPacket], out: list[np.ndarray]) -> None:
        for packet in packets:
            fmt = self.format_for(packet.payload_type)
            assert fmt is not None  # checked before the packet went into the buffer
            if fmt != self.format:
                self._switch(fmt, out)
            assert self._decoder is not None and self._timeline is not None and self._resampler is not None
            if packet.ssrc != self._play_ssrc:
                self._timeline.resync()
                self._play_ssrc = packet.ssrc
            try:
                samples = self._decoder.decode(packet.payload)
            except RtpError as e:
                # The lost packet's time is filled with silence when the next one is placed.
                self.stats.malformed[e.kind] += 1
                continue
            before = self._timeline.stats
            concealed, jumps = before.concealed, before.discontinuities
            for chunk in self._timeline.place(packet.timestamp, samples):
                out.append(self._resampler.feed(chunk))
            after = self._timeline.stats
            self.stats.concealed_seconds += (after.concealed - concealed) / fmt.rate
            self.stats.discontinuities += after.discontinuities - jumps


def _join(parts: list[np.ndarray]) -> np.ndarray:
    parts = [p for p in parts if p.shape[0]]
    if not parts:
        return _EMPTY
    return parts[0] if len(parts) == 1 else np.concatenate(parts)
