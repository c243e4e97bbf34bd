"""Raw PCM on standard input: signed 16-bit little-endian mono at a stated rate (default 16 kHz).

Feed it with e.g. `ffmpeg -i talk.mp3 -f s16le -ac 1 -ar 16000 - | streamer run --source stdin`
or `arecord -f S16_LE -c1 -r16000 | streamer run --source stdin`. Audio is passed on as it arrives
(no waiting for a full buffer). When the ring is full the source waits for room instead of dropping:
the pipe then fills and slows the producer, which loses nothing for a pipe fed from a file.
"""

from __future__ import annotations

import io
import logging
import os
import select
import sys
import threading
from typing import BinaryIO

import numpy as np

from streamer.audio.resample import StreamResampler, s16le_to_float
from streamer.audio.ring import SAMPLE_RATE, RingBuffer
from streamer.audio.source import Source
from streamer.errors import SourceError

log = logging.getLogger(__name__)

_READ_BYTES = 6400  # 200 ms at 16 kHz; a read returns sooner with whatever is there
_STOP_POLL = 0.2


class StdinSource(Source):
    live = True

    def __init__(self, rate: int = SAMPLE_RATE, stream: BinaryIO | None = None) -> None:
        if rate <= 0:
            raise ValueError(f"sample rate must be positive, got {rate}")
        self.rate = rate
        self._stream = stream
        self._carry = b""  # an odd byte left over from the previous read

    @property
    def description(self) -> str:
        return "stdin" if self.rate == SAMPLE_RATE else f"stdin:{self.rate}"

    def _input(self) -> BinaryIO:
        return self._stream if self._stream is not None else sys.stdin.buffer

    def run(self, ring: RingBuffer, stop: threading.Event) -> None:
        stream = self._input()
        fd = _fileno(stream)
        resampler = StreamResampler(self.rate)
        while not stop.is_set():
            try:
                data = _read_some(stream, fd, stop)
            except OSError as e:
                raise SourceError(f"cannot read audio from stdin: {e.strerror or e}") from None
            if data is None:  # stopped while waiting for input
                return
            if not data:  # EOF
                if self._carry:
                    log.warning("stdin ended with half a 16-bit sample; dropped the odd byte")
                    self._carry = b""
                self._put(ring, resampler.flush(), stop)
                return
            data = self._carry + data
            usable = len(data) & ~1
            self._carry = data[usable:]
            if usable and not self._put(ring, resampler.feed(s16le_to_float(data[:usable])), stop):
                return

    @staticmethod
    def _put(ring: RingBuffer, block: np.ndarray, stop: threading.Event) -> bool:
        """Write, waiting for room so nothing is dropped; False if told to stop meanwhile."""
        for start in range(0, block.shape[0], ring.capacity):
            part = block[start : start + ring.capacity]
            while not ring.wait_free(part.shape[0], timeout=_STOP_POLL):
                if stop.is_set():
                    return False
            if ring.closed:
                return False
            ring.write(part)
        return True


def _fileno(stream: BinaryIO) -> int | None:
    try:
        return stream.fileno()
    except (OSError, AttributeError, io.UnsupportedOperation):
        return None


def _read_some(stream: BinaryIO, fd: int | None, stop: threading.Event) -> bytes | None:
    """Bytes available now (b'' at EOF), or None if `stop` was set while waiting."""
    if fd is None:
        read1 = getattr(stream, "read1", None)
        return read1(_READ_BYTES) if read1 is not None else stream.read(_READ_BYTES)
    # select() lets a stop request through while the producer is silent; reading the descriptor
    # directly returns what the pipe holds instead of waiting to fill a buffer.
    while True:
        ready, _, _ = select.select([fd], [], [], _STOP_POLL)
        if ready:
            return os.read(fd, _READ_BYTES)
        if stop.is_set():
            return None
