"""Silero VAD (v6, the ONNX file faster-whisper ships) run one 32 ms frame at a time.

The model is recurrent: its LSTM state (h, c) and the last 64 samples of the previous frame are
carried from frame to frame, so probabilities are the same as when the model sees the whole stream
at once, and each frame costs well under a millisecond. onnxruntime only; no torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
from faster_whisper.utils import get_assets_path

from streamer.vad.segmenter import FRAME_SAMPLES

CONTEXT_SAMPLES = 64


def default_model_path() -> Path:
    return Path(get_assets_path()) / "silero_vad_v6.onnx"


class SileroVad:
    def __init__(self, model_path: str | Path | None = None) -> None:
        opts = onnxruntime.SessionOptions()
        # One frame is tiny: thread hand-offs would cost more than they save.
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 3
        self._session = onnxruntime.InferenceSession(
            str(model_path or default_model_path()), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self.reset()

    def reset(self) -> None:
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT_SAMPLES, dtype=np.float32)

    def __call__(self, frame: np.ndarray) -> float:
        """Speech probability of one frame of 512 samples at 16 kHz."""
        if frame.shape != (FRAME_SAMPLES,):
            raise ValueError(f"a VAD frame is {FRAME_SAMPLES} samples, got {frame.shape}")
        x = np.concatenate([self._context, frame.astype(np.float32, copy=False)])[None, :]
        prob, self._h, self._c = self._session.run(None, {"input": x, "h": self._h, "c": self._c})
        self._context = frame[-CONTEXT_SAMPLES:].astype(np.float32, copy=True)
        return float(np.asarray(prob).reshape(-1)[0])
