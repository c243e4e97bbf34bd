"""The demo source: a short recording of a human voice shipped with the package, replayed live in a
loop with a pause after each pass.

It makes `streamer run` show captions on a machine with no microphone (a server, a container, a
CI box). The recording (public domain), where it comes from and its transcript are in
streamer/data/demo/.
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
#: Silence after each pass. The recording ends right after its last word; without a pause the next
#: pass would run into the same utterance, and a viewer would never see one end (the segmenter
#: closes an utterance after `vad.end_silence`, 0.5 s by default, and the final follows it).
PAUSE = 2.5


def demo_path() -> Path:
    return Path(str(resources.files("streamer") / "data" / "demo" / "jfk.flac"))


def demo_text() -> str:
    """What the recording says (its reference transcript)."""
    return (demo_path().parent / "speech.txt").read_text(encoding="utf-8").strip()


class DemoSource(Source):
    # Live: it never ends by itself, is paced by the wall clock, and is retried if it fails.
    live = True

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or demo_path()
        # 13.5 s of 16 kHz float32 is under 1 MB: decode once (PyAV, like every file), loop from memory.
        speech = load_audio(self.path)
        self._audio: np.ndarray = np.concatenate([speech, np.zeros(int(PAUSE * SAMPLE_RATE), np.float32)])

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
