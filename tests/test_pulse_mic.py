"""The microphone path with a real capture device and no hardware.

A private PulseAudio server (its own HOME and XDG_RUNTIME_DIR, so nothing of the machine's is used)
with a null sink `vmic`; its monitor is the default source. PortAudio then sees the ALSA `pulse`
and `default` devices (libasound2-plugins), the daemon captures through the real sounddevice /
PortAudio / ALSA / PulseAudio chain, and speech played into the sink with `paplay` is captioned:
with `--source mic`, and with the default source that `make run` uses (which must pick the
microphone here, not the demo).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .components import tool
from .helpers_daemon import Daemon, wait_until

pytestmark = [pytest.mark.model, pytest.mark.slow, pytest.mark.component]

CLIP = "en/ljspeech_LJ001-0001.flac"  # "Printing, in the only sense with which we are at present ..."


def _tool(name: str) -> str:
    return tool(name, "pulseaudio pulseaudio-utils libasound2-plugins")


class Pulse:
    def __init__(self) -> None:
        # A short path: the server's socket path must fit in sun_path (108 bytes).
        self.root = Path(tempfile.mkdtemp(prefix="pa-"))
        (self.root / "home").mkdir()
        (self.root / "run").mkdir(mode=0o700)
        self.env = {
            "HOME": str(self.root / "home"),
            "XDG_RUNTIME_DIR": str(self.root / "run"),
            "PULSE_SERVER": f"unix:{self.root / 'run' / 'pulse' / 'native'}",
        }
        self.log = (self.root / "pulse.log").open("wb")
        # In the foreground (not -D) so the test owns the process and ends it by its pid.
        self.proc = subprocess.Popen(
            [
                _tool("pulseaudio"),
                "--daemonize=no",
                "--exit-idle-time=-1",
                "-n",
                "--load=module-native-protocol-unix",
                "--load=module-null-sink sink_name=vmic",
                "--log-target=stderr",
            ],
            env={**_base_env(), **self.env},
            stdout=self.log,
            stderr=self.log,
        )
        deadline = time.monotonic() + 30
        while self.pactl("info").returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"pulseaudio did not start: {(self.root / 'pulse.log').read_text()[-2000:]}"
                )
            time.sleep(0.1)
        assert self.pactl("set-default-source", "vmic.monitor").returncode == 0

    def pactl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [_tool("pactl"), *args],
            env={**_base_env(), **self.env},
            capture_output=True,
            text=True,
            timeout=30,
        )

    def play(self, path: Path) -> None:
        subprocess.run(
            [_tool("paplay"), "--device=vmic", str(path)],
            env={**_base_env(), **self.env},
            check=True,
            timeout=120,
        )

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)


def _base_env() -> dict[str, str]:
    return dict(os.environ)


@pytest.fixture
def pulse() -> Iterator[Pulse]:
    p = Pulse()
    try:
        yield p
    finally:
        p.stop()


def test_portaudio_lists_the_pulse_devices(pulse: Pulse) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "streamer", "devices"],
        env={**_base_env(), **pulse.env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    rows = [
        line.lstrip("* ").split()[:2] for line in res.stdout.splitlines() if line.lstrip("* ")[:1].isdigit()
    ]
    assert [r[1] for r in rows] == ["pulse", "default"], res.stdout
    assert any(line.startswith("*") and " default " in line for line in res.stdout.splitlines()), res.stdout


@pytest.mark.parametrize("args", [["--source", "mic"], []], ids=["source-mic", "default-source"])
def test_speech_played_into_the_virtual_microphone_is_captioned(
    pulse: Pulse, audio_dir: Path, tmp_path: Path, args: list[str]
) -> None:
    d = Daemon(
        tmp_path,
        [*args, "--model", "tiny.en", "--language", "en", "--no-server", "--transcripts", "", "--jsonl"],
        env=pulse.env,
    )
    try:
        d.notify.wait_message("READY")  # the microphone delivers audio (silence from the monitor)
        assert "capturing from" in d.log() and "stream main: mic:" in d.log()
        pulse.play(audio_dir / CLIP)
        wait_until(lambda: any('"final"' in line for line in d.stdout_lines), "a final caption", timeout=120)
        d.signal(signal.SIGTERM)
        assert d.wait(60) == 0, d.log()[-3000:]
    finally:
        d.stop()
    finals = [json.loads(line) for line in d.stdout_lines if '"final"' in line]
    text = " ".join(f["text"] for f in finals).lower()
    assert "printing" in text and "exhibition" in text, text
    assert "no usable microphone" not in d.log() and "demo" not in d.log()
