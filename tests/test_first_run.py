"""A newcomer's first `streamer run` on a machine with no usable microphone, and `streamer bench`
without the streamer-bench distribution.

- No PortAudio: the real sounddevice import runs with the dynamic loader finding no libportaudio
  (ctypes.util.find_library answers None for it, which is what happens where the library is not
  installed), so sounddevice raises its own OSError.
- No input device: the real PortAudio with no sound card and no sound server reachable.

Either way the daemon says so in one line, runs the built-in demo, prints the caption page's
address, and captions the demo speech.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from .components import require
from .helpers_daemon import REPO, wait_until
from .helpers_mosquitto import free_port

NO_PORTAUDIO = """
import ctypes.util, sys
_find = ctypes.util.find_library
ctypes.util.find_library = lambda name: None if "portaudio" in name else _find(name)
from streamer.cli import main
sys.exit(main(sys.argv[1:]))
"""

NO_BENCH = """
import sys
sys.modules["streamer_bench"] = None  # as if `pip install streamer` alone: import streamer_bench fails
from streamer.cli import main
sys.exit(main(sys.argv[1:]))
"""

NO_JIWER = """
import sys
sys.modules["jiwer"] = None  # streamer-bench installed without its dependencies (pip install --no-deps)
from streamer.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _env(tmp: Path) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    env.pop("STREAMER_CONFIG", None)
    # No sound server: a private, empty runtime directory and a server address that does not exist.
    (tmp / "run").mkdir(mode=0o700, exist_ok=True)
    env.update(XDG_RUNTIME_DIR=str(tmp / "run"), PULSE_SERVER=f"unix:{tmp}/no-pulse", HOME=str(tmp))
    return env


class Run:
    def __init__(self, tmp: Path, code: str | None, *args: str) -> None:
        head = [sys.executable, "-c", code] if code else [sys.executable, "-m", "streamer"]
        self.proc = subprocess.Popen(
            [*head, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_env(tmp),
            cwd=tmp,
            text=True,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        for stream, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=self._read, args=(stream, lines), daemon=True).start()

    @staticmethod
    def _read(stream: object, lines: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            lines.append(line)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)

    def plain_err(self) -> list[str]:
        """stderr without log records: what a user reads as the daemon's own messages."""
        return [line for line in self.err if line.startswith("streamer:")]


def _devices_here(tmp: Path) -> str:
    res = subprocess.run(
        [sys.executable, "-m", "streamer", "devices"],
        env=_env(tmp),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return res.stdout + res.stderr


@pytest.mark.model
@pytest.mark.slow
def test_without_portaudio_the_default_source_falls_back_to_the_captioned_demo(tmp_path: Path) -> None:
    port = free_port()
    run = Run(tmp_path, NO_PORTAUDIO, "run", "--model", "tiny.en", "--port", str(port), "--jsonl")
    try:
        wait_until(
            lambda: any(json.loads(x).get("type") == "final" for x in run.out if x.startswith("{")),
            "a final caption of the demo",
            timeout=180,
        )
    finally:
        rc = run.stop()
    mine = run.plain_err()
    assert mine[0].startswith("streamer: no usable microphone (microphone input needs the PortAudio library")
    assert "running the built-in demo instead" in mine[0]
    assert mine[1] == f"streamer: captions at http://127.0.0.1:{port}/\n"
    finals = [json.loads(x) for x in run.out if x.startswith("{") and '"final"' in x]
    text = " ".join(f["text"] for f in finals).lower()
    # The demo's words (its first utterance is "And so, my fellow Americans,"); what tiny.en makes
    # of the whole recording is checked in test_console.py.
    assert any(w in text for w in ("americans", "fellow", "country")), text
    assert rc == 0


@pytest.mark.model
def test_without_input_devices_the_default_source_falls_back_to_the_demo(tmp_path: Path) -> None:
    listing = _devices_here(tmp_path)
    # What this test needs is the absence of a component: a machine with no sound card (a server,
    # a container, CI). Elsewhere it cannot run, and under CI that is a failure like any other.
    require(
        "a machine without audio input devices",
        "no audio input devices found" in listing,
        f"this one lists: {listing[:200]}",
    )
    run = Run(tmp_path, None, "run", "--model", "tiny.en", "--port", "0", "--transcripts", "")
    try:
        wait_until(lambda: len(run.plain_err()) >= 2, "the fallback line and the page address", timeout=120)
    finally:
        rc = run.stop()
    mine = run.plain_err()
    assert mine[0].startswith("streamer: no usable microphone (no audio input devices found")
    assert mine[1].startswith("streamer: captions at http://127.0.0.1:")
    assert rc == 0


def test_an_explicit_microphone_never_falls_back(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-c", NO_PORTAUDIO, "run", "--source", "mic", "--model", "tiny.en"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        "streamer: microphone input needs the PortAudio library, which was not found "
        "(Debian/Ubuntu: apt install libportaudio2; macOS: brew install portaudio)"
    ]


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (
            NO_BENCH,
            "streamer: `streamer bench` needs the streamer-bench package: pip install ./bench "
            "(the bench/ folder of the streamer source)",
        ),
        (NO_JIWER, "streamer: `streamer bench` needs jiwer: pip install ./bench"),
    ],
    ids=["no-streamer-bench", "no-jiwer"],
)
def test_bench_without_the_bench_package_says_how_to_install_it_in_one_line(
    tmp_path: Path, code: str, message: str
) -> None:
    res = subprocess.run(
        [sys.executable, "-c", code, "bench", "--quick"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [message]
