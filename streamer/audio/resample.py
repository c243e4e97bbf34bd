"""Streaming conversion of raw sample blocks to the pipeline's 16 kHz mono float32.

Live sources (stdin, mic) hand over blocks of whatever size arrives; libswresample (through PyAV)
keeps its filter state between blocks, so the output has no seams at block boundaries, which a
per-block resample would introduce.
"""

from __future__ import annotations

import av
import numpy as np

from streamer.audio.ring import SAMPLE_RATE

_EMPTY = np.zeros(0, dtype=np.float32)


class StreamResampler:
    """Feed float32 mono blocks at `rate`; get float32 mono blocks at 16 kHz back."""

    def __init__(self, rate: int) -> None:
        if rate <= 0:
            raise ValueError(f"sample rate must be positive, got {rate}")
        self.rate = rate
        self._passthrough = rate == SAMPLE_RATE
        self._resampler = (
            None if self._passthrough else av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        )

    def feed(self, samples: np.ndarray) -> np.ndarray:
        data = np.ascontiguousarray(samples, dtype=np.float32).reshape(-1)
        if self._resampler is None or data.size == 0:
            return data
        frame = av.AudioFrame.from_ndarray(data.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = self.rate
        return _frames_to_array(self._resampler.resample(frame))

    def flush(self) -> np.ndarray:
        """The samples still inside the filter; call once at the end of the input."""
        if self._resampler is None:
            return _EMPTY
        return _frames_to_array(self._resampler.resample(None))


def _frames_to_array(frames: list[av.AudioFrame]) -> np.ndarray:
    if not frames:
        return _EMPTY
    parts = [f.to_ndarray().reshape(-1) for f in frames]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def s16le_to_float(data: bytes) -> np.ndarray:
    """Little-endian signed 16-bit PCM -> float32 in [-1, 1). `data` must have an even length."""
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
