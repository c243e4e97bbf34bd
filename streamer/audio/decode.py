"""Decode any audio file PyAV (FFmpeg) can read into 16 kHz mono float32.

`iter_audio` streams fixed-size chunks so a long file never has to sit in memory as a whole (the
file source uses it); `load_audio` returns the whole signal for offline baselines and tests.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from streamer.audio.ring import SAMPLE_RATE
from streamer.errors import SourceError

log = logging.getLogger(__name__)


def _reason(exc: BaseException) -> str:
    # FFmpeg errors carry the path in str(); strerror alone is the readable part.
    strerror = getattr(exc, "strerror", None)
    reason = strerror if isinstance(strerror, str) and strerror else str(exc) or type(exc).__name__
    if isinstance(exc, av.error.InvalidDataError):
        reason += " (not an audio file, or a damaged one)"
    return reason


def _error(path: str | Path, exc: BaseException | str) -> SourceError:
    reason = exc if isinstance(exc, str) else _reason(exc)
    return SourceError(f"cannot read audio from '{path}': {reason}")


def _no_audio(path: str | Path, container: av.container.InputContainer) -> SourceError:
    # FFmpeg guesses a format for nearly anything (a text file is a 'tty' video); say what it saw.
    kinds: list[str] = sorted({str(s.type) for s in container.streams}) or ["nothing"]
    fmt = container.format.name
    return _error(path, f"no audio stream in the file (FFmpeg reads it as '{fmt}' with {', '.join(kinds)})")


def probe(path: str | Path) -> None:
    """Raise SourceError now if `path` cannot be opened or holds no audio stream."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise _no_audio(path, container)
    except SourceError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise _error(path, e) from None


def iter_audio(path: str | Path, chunk: int = 320) -> Iterator[np.ndarray]:
    """Yield float32 16 kHz mono chunks of exactly `chunk` samples (the last one may be shorter)."""
    if chunk <= 0:
        raise ValueError("chunk must be positive")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise _error(path, e) from None
    try:
        if not container.streams.audio:
            raise _no_audio(path, container)
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        pending: list[np.ndarray] = []
        pending_len = 0
        decoded_any = False
        bad_packets = 0

        def frames() -> Iterator[av.AudioFrame]:
            nonlocal bad_packets, decoded_any
            for packet in container.demux(stream):
                try:
                    for frame in packet.decode():
                        decoded_any = True
                        yield frame
                except av.error.InvalidDataError as e:
                    # A damaged packet in the middle of a file loses only that packet, like ffmpeg.
                    bad_packets += 1
                    if bad_packets == 1:
                        log.warning("skipping damaged audio in '%s': %s", path, _reason(e))

        def resampled() -> Iterator[np.ndarray]:
            for frame in frames():
                # Timestamps are irrelevant here and broken ones make swresample complain.
                frame.pts = None
                for out in resampler.resample(frame):
                    yield out.to_ndarray().reshape(-1)
            for out in resampler.resample(None):
                yield out.to_ndarray().reshape(-1)

        try:
            for block in resampled():
                pending.append(block)
                pending_len += block.shape[0]
                if pending_len < chunk:
                    continue
                joined = np.concatenate(pending) if len(pending) > 1 else pending[0]
                cut = pending_len - pending_len % chunk
                for start in range(0, cut, chunk):
                    yield joined[start : start + chunk]
                rest = joined[cut:]
                pending = [rest] if rest.shape[0] else []
                pending_len = rest.shape[0]
        except (av.error.FFmpegError, OSError) as e:
            raise _error(path, e) from None
        if not decoded_any:
            raise _error(path, "the audio stream holds no decodable audio")
        if pending_len:
            yield np.concatenate(pending) if len(pending) > 1 else pending[0]
        if bad_packets:
            log.warning("'%s': %d damaged audio packet(s) skipped", path, bad_packets)
    finally:
        container.close()


def load_audio(path: str | Path) -> np.ndarray:
    """The whole file as float32 16 kHz mono; SourceError if it is unreadable or not audio."""
    chunks = list(iter_audio(path, chunk=SAMPLE_RATE * 10))
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)
