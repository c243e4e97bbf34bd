"""Real components the tests drive (OBS, Chromium, mosquitto, PulseAudio, PortAudio, systemd, ffmpeg, curl,
espeak-ng, kernel features): one policy for when one is missing.

Locally a missing component skips the test, with the command that installs it, so a developer
without OBS still runs everything else. Under CI (the environment variable `CI` set, as `.ci/run`
runs) it fails the test: CI installs every component, so a missing one is a broken set-up, and a
skip there would let the test it guards pass unseen.

Tests that need a component are marked `component` (`make check` leaves them out); every check
for one goes through `require` or `tool`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require(component: str, available: bool, how: str = "") -> None:
    """Go on if `available`; otherwise skip (locally) or fail (under CI), naming `component` and `how`
    to get it."""
    if available:
        return
    message = f"{component} is not available" + (f" ({how})" if how else "")
    if in_ci():
        pytest.fail(f"{message}; CI is set, so this fails instead of skipping", pytrace=False)
    pytest.skip(message)


def tool(name: str, apt: str) -> str:
    """The path of the program `name` (also looked for in /usr/sbin, off a user's PATH); `apt` names
    the Debian packages that install it."""
    path = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)
    require(name, path is not None, f"apt-get install {apt}")
    assert path is not None
    return path


def ffmpeg() -> str:
    return tool("ffmpeg", "ffmpeg")
