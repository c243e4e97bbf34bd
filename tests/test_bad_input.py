"""Deployment mistakes end the daemon with one line on stderr and a non-zero status, never a
daemon that runs on silently: a wrong broker address (no such host, nothing listening), a broker
that refuses the credentials (real mosquitto with a password file), and a transcript directory
that cannot be written (the missing container volume is tested with podman in test_container.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers_mosquitto import Broker, free_port

pytestmark = [pytest.mark.model, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING) ")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "broker")
    b.set_users({"streamer": "right"})
    b.start()
    try:
        yield b
    finally:
        b.stop()


def run_daemon(tmp: Path, *args: str, timeout: float = 90) -> tuple[int, list[str], float]:
    """(exit status, stderr lines that are not log records, seconds it ran)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env.pop("STREAMER_CONFIG", None)
    started = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-m", "streamer", "run", "--source", "demo", "--model", "tiny.en", *args],
        cwd=tmp,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    said = [line for line in res.stderr.splitlines() if line.strip() and not LOG_LINE.match(line)]
    return res.returncode, said, time.monotonic() - started


@pytest.mark.parametrize(
    "url", ["mqtt://127.0.0.1:{free}", "mqtt://no-such-broker.invalid:1883"], ids=["refused", "no-such-host"]
)
def test_wrong_broker_address(url: str, tmp_path: Path) -> None:
    url = url.format(free=free_port())
    code, said, took = run_daemon(tmp_path, "--no-server", "--transcripts", "", "--mqtt", url)
    assert code == 1, said
    assert len(said) == 1, said
    assert said[0].startswith("streamer: cannot connect to the MQTT broker") and "check mqtt.url" in said[0]
    print(f"\nbad input: {url} -> exit {code} after {took:.1f} s: {said[0]}")


@pytest.mark.component  # mosquitto
def test_broker_refuses_the_credentials(broker: Broker, tmp_path: Path) -> None:
    url = f"mqtt://streamer:wrong@127.0.0.1:{broker.port}"
    code, said, took = run_daemon(tmp_path, "--no-server", "--transcripts", "", "--mqtt", url)
    assert code == 1, said
    assert len(said) == 1 and "refused the credentials" in said[0] and "user 'streamer'" in said[0], said
    assert "wrong" not in said[0]  # the password is never echoed
    # Refused credentials do not get better by retrying: no need to wait for the start-up window.
    assert took < 30, took
    print(f"\nbad input: wrong password -> exit {code} after {took:.1f} s: {said[0]}")


def test_unwritable_transcript_directory(tmp_path: Path) -> None:
    # sysfs refuses mkdir even to root: the closest stand-in for a volume that is not there.
    code, said, _ = run_daemon(tmp_path, "--no-server", "--transcripts", "/sys/streamer-transcripts")
    assert code != 0
    assert len(said) == 1, said
    assert said[0].startswith("streamer: transcripts.dir = '/sys/streamer-transcripts'"), said
