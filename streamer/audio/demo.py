"""The demo source: a short speech recording shipped with the package, replayed live in a loop.

It makes `streamer run` show captions on a machine with no microphone (a server, a container, a
CI box). The recording and its licence are in streamer/data/demo/.
"""

from __future__ import annotations

import threading
import time
from importlib import resources
from pathlib import Path

import numpy as np

from streamer.audio.decode import load_audio
from streamer.audio.ring import SAMPLE_RATE, RingBuffer
from streamer.audio.source import Source

#: 20 ms per write, about what a sound card delivers per callback.
CHUNK = SAMPLE_RATE // 50


def demo_path() -> Path:
    return Path(str(resources.files("streamer") / "data" / "demo" / "speech.opus"))


class DemoSource(Source):
    # Live: it never ends by itself, is paced by the wall clock, and is retried if it fails.
    live = True

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or demo_path()
        # 25 s of 16 kHz float32 is 1.6 MB: decode once, loop from memory.
        self._audio: np.ndarray = load_audio(self.path)

    @property
    def description(self) -> str:
        return "demo (built-in speech sample, looped)"

    def run(self, ring: RingBuffer, stop: threading.Event) -> None:
        audio = self._audio
        # Every chunk's due time is computed from one anchor, so scheduling jitter never accumulates.
        anchor = time.monotonic()
        sent = 0
        while not stop.is_set() and not ring.closed:
            pos = sent % len(audio)
            chunk = audio[pos : pos + CHUNK]
            sent += len(chunk)
            delay = anchor + sent / SAMPLE_RATE - time.monotonic()
            if delay > 0 and stop.wait(delay):
                return
            ring.write(chunk)
