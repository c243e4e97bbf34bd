"""The jitter buffer and the audio timeline of an RTP stream, both free of I/O.

`JitterBuffer` puts packets back in sequence order. A packet that arrives out of order waits in
the buffer; a missing packet is waited for until the first packet behind it has waited `depth`
seconds of wall time (`now`, passed in), then it is counted lost and skipped. At the start of a
stream the first packet waits `depth` too, for packets that overtook it. A packet whose place was
already played or given up on is dropped (a duplicate, or late). A new SSRC (a new sender) starts
the buffer over; so does a sequence number far away from the expected one that the next packet
confirms (a sender that restarted without changing its SSRC, as RFC 3550 appendix A.1 does).

`Timeline` turns the ordered, decoded packets into one continuous signal whose length follows the
sender's timestamps: a gap (lost packets, or a sender that skipped a pause) becomes silence of
exactly the missing length, an overlap is cut, and a jump larger than `max_gap` (a timestamp
discontinuity) starts the timeline over at the current position instead of inventing minutes of
silence.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from streamer.audio.rtp import SEQ_MOD, RtpPacket, SeqUnwrapper, ts_delta

DEFAULT_DEPTH = 0.060
#: Sequence jumps beyond these are treated as a restart of the sender, not as loss or reordering.
MAX_DROPOUT = 3000
MAX_MISORDER = 100
MAX_BUFFERED = 1000  # packets held at most, whatever the depth: a flood cannot grow memory
_PLAYED_MEMORY = 512  # sequence numbers remembered to tell a duplicate from a late packet


@dataclass
class JitterStats:
    packets: int = 0  # accepted into the buffer (not duplicates or late)
    duplicates: int = 0
    late: int = 0
    reorders: int = 0  # arrived after a packet with a higher sequence number
    lost: int = 0  # skipped: never arrived within the depth
    resets: int = 0  # new SSRC or sequence restart


class JitterBuffer:
    def __init__(self, rate: int, depth: float = DEFAULT_DEPTH) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        if depth < 0:
            raise ValueError("depth must not be negative")
        self.rate = rate
        self.depth = depth
        self.stats = JitterStats()
        self.ssrc: int | None = None
        self._unwrap = SeqUnwrapper()
        self._next: int | None = None  # extended sequence number to play next
        self._highest: int | None = None
        self._played_any = False
        self._buf: dict[int, tuple[RtpPacket, float]] = {}
        self._played: deque[int] = deque(maxlen=_PLAYED_MEMORY)
        self._played_set: set[int] = set()
        self._probation: int | None = None  # raw sequence number that would confirm a jump

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def _restart(self) -> None:
        self._unwrap.reset()
        self._next = None
        self._highest = None
        self._played_any = False
        self._played.clear()
        self._played_set.clear()
        self._probation = None

    def push(self, packet: RtpPacket, now: float) -> list[RtpPacket]:
        """Add a packet that arrived at `now`; return the packets now ready, in order."""
        out: list[RtpPacket] = []
        if packet.ssrc != self.ssrc:
            if self.ssrc is not None:
                out += self.flush()
                self.stats.resets += 1
            self.ssrc = packet.ssrc
            self._restart()
        ext = self._unwrap.peek(packet.sequence)
        if self._next is not None and not -MAX_MISORDER <= ext - self._next <= MAX_DROPOUT:
            # Far from where we are: a restarted sender if the next packet follows this one.
            if self._probation != packet.sequence:
                self._probation = (packet.sequence + 1) % SEQ_MOD
                self.stats.late += 1
                return out
            out += self.flush()
            self.stats.resets += 1
            self._restart()
            ext = self._unwrap.peek(packet.sequence)
        self._unwrap.extend(packet.sequence)
        self._probation = None
        if self._next is None or (ext < self._next and not self._played_any):
            self._next = ext  # until the start, the earliest packet seen is where playback begins
        if ext < self._next:
            if ext in self._played_set:
                self.stats.duplicates += 1
            else:
                self.stats.late += 1
            return out
        if ext in self._buf:
            self.stats.duplicates += 1
            return out
        self.stats.packets += 1
        if self._highest is not None and ext < self._highest:
            self.stats.reorders += 1
        self._highest = ext if self._highest is None else max(self._highest, ext)
        self._buf[ext] = (packet, now)
        out += self._release(now)
        return out

    def pop(self, now: float) -> list[RtpPacket]:
        """Packets released because the ones missing before them waited long enough."""
        return self._release(now)

    def flush(self) -> list[RtpPacket]:
        """Everything buffered, in order, counting the gaps as lost (the sender went quiet)."""
        out: list[RtpPacket] = []
        for ext in sorted(self._buf):
            assert self._next is not None
            self.stats.lost += ext - self._next
            out.append(self._take(ext))
        return out

    def _take(self, ext: int) -> RtpPacket:
        packet, _ = self._buf.pop(ext)
        self._next = ext + 1
        self._played_any = True
        if len(self._played) == self._played.maxlen:
            self._played_set.discard(self._played[0])
        self._played.append(ext)
        self._played_set.add(ext)
        return packet

    def _release(self, now: float) -> list[RtpPacket]:
        out: list[RtpPacket] = []
        if not self._played_any and self._buf and not self._waited(now):
            return out  # at the start, wait once for packets that overtook the first one
        while self._buf:
            assert self._next is not None
            if self._next in self._buf:
                out.append(self._take(self._next))
                continue
            if not self._waited(now):
                break
            first = min(self._buf)
            self.stats.lost += first - self._next
            out.append(self._take(first))
        return out

    def _waited(self, now: float) -> bool:
        """True once the earliest buffered packet waited `depth` (or the buffer is full).

        Wall time, not the audio queued behind the gap: senders like `ffmpeg -re` send a burst
        of packets at once (a 256 ms FLAC frame's worth), so the queue would span more than the
        depth before a packet delayed by a few ms had any chance to arrive.
        """
        first_arrival = self._buf[min(self._buf)][1]
        return now - first_arrival >= self.depth or len(self._buf) >= MAX_BUFFERED


@dataclass
class TimelineStats:
    samples: int = 0  # samples output, at the payload's clock rate
    concealed: int = 0  # silence samples standing in for lost audio
    trimmed: int = 0  # samples cut because they overlapped audio already played
    discontinuities: int = 0  # timestamp jumps larger than max_gap: timeline started over


class Timeline:
    """Ordered decoded packets -> one signal whose length follows the sender's timestamps."""

    def __init__(self, rate: int, max_gap: float = 2.0) -> None:
        self.rate = rate
        self.max_gap = int(max_gap * rate)
        self.stats = TimelineStats()
        self._expected: int | None = None  # timestamp of the next sample
        self._skipped = False

    def resync(self) -> None:
        """The next packet starts where the output is now (a new sender)."""
        self._expected = None

    def skip(self, n: int) -> None:
        """`n` samples of silence went out meanwhile (the sender was quiet): they count as played.

        A sender that paused with its clock running (DTX) then resumes exactly on time. One
        whose clock stood still (it stalled) would overlap the silence; its audio is not cut
        then but follows it, since the silence cannot be taken back.
        """
        if self._expected is not None:
            self._expected = (self._expected + n) % (1 << 32)
            self._skipped = True

    def place(self, timestamp: int, samples: np.ndarray) -> list[np.ndarray]:
        """Audio to output for a packet with this timestamp: maybe silence first, maybe trimmed."""
        out: list[np.ndarray] = []
        n = int(samples.shape[0])
        skipped, self._skipped = self._skipped, False
        if self._expected is not None:
            d = ts_delta(timestamp, self._expected)
            if d < 0 and skipped:
                pass  # overlaps silence already out: follow it (see skip)
            elif d > self.max_gap or d < -max(self.max_gap, n):
                self.stats.discontinuities += 1
            elif d > 0:
                out.append(np.zeros(d, dtype=np.float32))
                self.stats.concealed += d
                self.stats.samples += d
            elif d < 0:
                cut = min(-d, n)
                self.stats.trimmed += cut
                samples = samples[cut:]
                if not samples.shape[0]:
                    return out
                timestamp = (timestamp + cut) % (1 << 32)
        if samples.shape[0]:
            out.append(samples)
            self.stats.samples += int(samples.shape[0])
        self._expected = (timestamp + int(samples.shape[0])) % (1 << 32)
        return out
