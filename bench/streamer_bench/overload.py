"""Starving the decoder on purpose: what does the daemon do when it cannot keep up?

The overload benchmark replays a long input at 1x with one decode thread (`model.cpu_threads=1`)
while other processes each burn a core in a busy loop, so decoding gets a fraction of the CPU it
needs. A daemon that never falls behind keeps the delay of its last finals bounded (the same at
the end of the input as at its start) and says that it degraded (the scheduler's gauges and
counters on `/metrics`, and the stream's status events); one that queues work shows a delay that
grows with the length of the input.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType

# A Python busy loop holds one core at 100% and nothing else.
_BURN = "while True:\n    pass\n"


class CpuBurner:
    """`cores` busy-loop subprocesses for the duration of a `with` block (killed on exit)."""

    def __init__(self, cores: int = 1) -> None:
        self.cores = cores
        self._procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> CpuBurner:
        for _ in range(self.cores):
            self._procs.append(subprocess.Popen([sys.executable, "-c", _BURN]))
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        for p in self._procs:
            p.kill()
        for p in self._procs:
            p.wait()
        self._procs.clear()


class GaugeSampler:
    """Samples a value (the degradation level) every `interval` s in a thread while a block runs:
    two snapshots would miss a level the daemon reached and left in between."""

    def __init__(self, read: Callable[[], float | None], interval: float = 0.25) -> None:
        self.read = read
        self.interval = interval
        self.samples: list[tuple[float, float]] = []  # (seconds since start, value)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-gauge", daemon=True)

    def _run(self) -> None:
        t0 = time.monotonic()
        while not self._stop.wait(self.interval):
            value = self.read()
            if value is not None:
                self.samples.append((time.monotonic() - t0, value))

    def __enter__(self) -> GaugeSampler:
        self._thread.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, float | int | None]:
        values = [v for _, v in self.samples]
        return {
            "samples": len(values),
            "max": max(values) if values else None,
            "mean": sum(values) / len(values) if values else None,
            # Share of the run spent degraded (level above 0).
            "degraded_share": sum(1 for v in values if v > 0) / len(values) if values else None,
        }
