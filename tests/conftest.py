"""Shared fixtures. Recorded audio is read from STREAMER_TEST_AUDIO (default ../shared/audio)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def audio_root() -> Path:
    return Path(os.environ.get("STREAMER_TEST_AUDIO", REPO.parent / "shared" / "audio")).resolve()


@pytest.fixture(scope="session")
def audio_dir() -> Path:
    root = audio_root()
    if not (root / "README.md").is_file():
        pytest.fail(f"recorded test audio not found at {root} (set STREAMER_TEST_AUDIO)")
    return root
