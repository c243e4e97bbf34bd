"""The caption page's "caption my microphone" button, in real headless Chromium with a fake
microphone that plays recorded speech, against the real daemon (tiny.en) with an `ingest` stream:
the page sends its microphone to `/ingest` and shows the captions that come back on `/ws`.

The downsampler (clients/web/resample.js) is checked in the same browser on synthetic tones.
"""

from __future__ import annotations

import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamer.audio.decode import load_audio

from .rtp_util import Daemon
from .web_harness import CHROMIUM_ARGS, ScriptedServer, chromium, screenshot_dir

pytestmark = pytest.mark.slow

SPEECH = "en/librispeech_2412-153948-0000.flac"  # "IF THE READER WILL EXCUSE ME ..."
TIMEOUT = 10_000  # ms


def fake_mic_wav(src: Path, dest: Path, rate: int = 48000) -> Path:
    """16-bit mono PCM WAV, as Chromium's fake audio capture reads it (it loops the file)."""
    audio = load_audio(src)  # 16 kHz float
    # Resampled with numpy's linear interpolation: a test fixture, the page does the real work.
    n = int(len(audio) * rate / 16000)
    up = np.interp(np.arange(n) * 16000 / rate, np.arange(len(audio)), audio)
    pcm = (np.clip(up, -1, 1) * 32767).astype("<i2")
    with wave.open(str(dest), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return dest


@pytest.fixture(scope="module")
def mic_browser(audio_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    wav = fake_mic_wav(audio_dir / SPEECH, tmp_path_factory.mktemp("mic") / "speech.wav")
    args = [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
    ]
    with chromium(extra_args=args) as b:
        yield b


def test_mic_button_captions_the_fake_microphone(mic_browser: Any, tmp_path: Path) -> None:
    d = Daemon(
        "--source", "ingest", "--stream", "mic1", "--model", "tiny.en", "--language", "en",
        env={"STREAMER_SERVER__INGEST_TOKEN": "speak-in"},
    )  # fmt: skip
    context = mic_browser.new_context(viewport={"width": 1280, "height": 720})
    errors: list[str] = []
    try:
        d.wait_running("mic1")
        page = context.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: print("console:", m.text))
        page.goto(f"http://127.0.0.1:{d.port}/?stream=mic1&ingest_token=speak-in")
        page.wait_for_selector("#state.live", timeout=TIMEOUT)
        page.click("#mic:not([hidden])", timeout=TIMEOUT)
        page.wait_for_selector("#mic-state.on", timeout=TIMEOUT)
        page.wait_for_function(
            "() => [...document.querySelectorAll('.final')].some(e => /reader/i.test(e.textContent))",
            timeout=60_000,
        )
        print(page.inner_text("#finals"))
        page.screenshot(path=str(screenshot_dir(tmp_path) / "caption-page-mic.png"))
    finally:
        context.close()
        code = d.stop()
    assert code == 0, d.stderr[-3000:]
    assert not errors, errors
