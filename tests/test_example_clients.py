"""The example subscribers in clients/examples/ against a real daemon and a real broker."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers_mosquitto import Broker, free_port, running_broker

pytestmark = [pytest.mark.model, pytest.mark.component]
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    yield from running_broker(tmp_path)


def test_ws_and_mqtt_examples_print_the_finals(broker: Broker, audio_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    clip = audio_dir / "en" / "librispeech_2412-153948-0000.flac"
    examples = REPO / "clients" / "examples"
    mqtt = subprocess.Popen(
        [
            sys.executable,
            str(examples / "mqtt_follow.py"),
            "--port",
            str(broker.port),
            "--prefix",
            "ex",
            "--count",
            "2",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    daemon = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamer",
            "run",
            "--source",
            f"file:{clip}",
            "--model",
            "tiny.en",
            "--language",
            "en",
            "--port",
            str(port),
            "--mqtt",
            broker.url,
            "--mqtt-prefix",
            "ex",
            "--transcripts",
            "",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ws = subprocess.run(
            [sys.executable, str(examples / "ws_follow.py"), f"ws://127.0.0.1:{port}/ws", "--count", "2"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        mqtt_out, _ = mqtt.communicate(timeout=60)
        assert daemon.wait(timeout=60) == 0, daemon.stderr.read() if daemon.stderr else ""
    finally:
        for p in (mqtt, daemon):
            if p.poll() is None:
                p.kill()
    ws_lines = ws.stdout.splitlines()
    assert [line.split("\t")[0] for line in ws_lines] == ["1", "2"]
    assert "If the reader will excuse me" in ws_lines[0]
    mqtt_lines = mqtt_out.splitlines()
    assert [line.split("\t", 1)[1] for line in mqtt_lines] == ws_lines
