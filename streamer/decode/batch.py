"""One encoder pass for several decode windows.

Whisper's encoder is the part of a decode whose cost does not depend on what is said: a window
is always a (truncated) 30 s log-mel block. Several windows of the same length can go through
CTranslate2's encoder in one call (a batch), which a GPU runs in about the time of one. The text
decoder (generate, word alignment, temperature fallback, the prompt retry) stays per window
(streamer/decode/whisper.py): the engine passes each window its row of the batched encoder output
as an argument, so everything after the encoder is the same as for a window encoded alone.

Rows are taken on the host (`to_cpu=True`): that is a no-op on CPU and a small copy on CUDA
(1500 x d_model floats per window), and it keeps this module free of any GPU array library.
"""

from __future__ import annotations

from typing import Any

import ctranslate2
import numpy as np

N_FRAMES = 3000  # Whisper's 30 s window in log-mel frames


def window_frames(context: float, duration: float, frames_per_second: int = 100) -> int | None:
    """Encoder frames a window needs: max(context, duration + 5 s), None when that is the full 30 s.

    Rounded up to whole multiples of 2.5 s: every distinct input shape makes oneDNN build and cache
    new kernels (native memory that a daemon running for days kept growing), and a handful of
    shapes keeps that cache small and warm."""
    step = frames_per_second * 5 // 2
    frames = int(max(context, duration + 5.0) * frames_per_second)
    frames = -(-frames // step) * step
    return frames if frames < N_FRAMES else None


def batch_frames(frames: list[int | None]) -> int | None:
    """The frame count a batch is padded to: the longest of its windows (None = full 30 s)."""
    if not frames or any(f is None for f in frames):
        return None
    return max(f for f in frames if f is not None)


def split_rows(encoded: Any, n: int) -> list[Any]:
    """One (1, T, d) StorageView per window of a batched encoder output."""
    rows = np.asarray(encoded)
    return [ctranslate2.StorageView.from_array(np.ascontiguousarray(rows[i : i + 1])) for i in range(n)]


def resolve_batch_size(configured: int | str, device: str) -> int:
    """`model.batch_size`: "auto" is 1 on CPU (measured: no gain on a small CPU) and 8 on CUDA."""
    if configured == "auto":
        return 8 if device == "cuda" else 1
    return int(configured)
