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
from .web_harness import ScriptedServer, launch, playwright, screenshot_dir

pytestmark = [pytest.mark.slow, pytest.mark.component]

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


FAKE_DEVICE = "--use-fake-device-for-media-stream"


@pytest.fixture(scope="module")
def pw() -> Iterator[Any]:
    with playwright() as p:
        yield p


@pytest.fixture(scope="module")
def mic_browser(pw: Any, audio_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Chromium whose microphone plays recorded speech, permission granted without asking."""
    wav = fake_mic_wav(audio_dir / SPEECH, tmp_path_factory.mktemp("mic") / "speech.wav")
    b = launch(
        pw, [FAKE_DEVICE, "--use-fake-ui-for-media-stream", f"--use-file-for-fake-audio-capture={wav}"]
    )
    yield b
    b.close()


def _open(browser: Any, url: str, errors: list[str]) -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    page = context.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_selector("#state.live", timeout=TIMEOUT)
    return page


def _mic_error(page: Any) -> str:
    page.click("#mic:not([hidden])", timeout=TIMEOUT)
    page.wait_for_selector("#mic-state.error", timeout=TIMEOUT)
    return str(page.inner_text("#mic-state"))


@pytest.mark.model
def test_mic_button_captions_the_fake_microphone(pw: Any, mic_browser: Any, tmp_path: Path) -> None:
    d = Daemon(
        "--source", "ingest", "--stream", "mic1", "--model", "tiny.en", "--language", "en",
        env={"STREAMER_SERVER__INGEST_TOKEN": "speak-in"},
    )  # fmt: skip
    errors: list[str] = []
    pages: list[Any] = []
    try:
        d.wait_running("mic1")
        base = f"http://127.0.0.1:{d.port}/?stream=mic1"
        # The read side needs no token here, the ingest side does: a wrong one is refused readably.
        wrong = _open(mic_browser, base + "&ingest_token=nope", errors)
        pages.append(wrong)
        assert "ingest token is missing or wrong" in _mic_error(wrong)
        assert wrong.inner_text("#mic") == "caption my microphone"

        page = _open(mic_browser, base + "&ingest_token=speak-in", errors)
        pages.append(page)
        page.click("#mic:not([hidden])", timeout=TIMEOUT)
        page.wait_for_selector("#mic-state.on", timeout=TIMEOUT)
        page.wait_for_function(
            "() => [...document.querySelectorAll('.final')].some(e => /reader/i.test(e.textContent))",
            timeout=60_000,
        )
        rate = page.evaluate("window.micIngest.contextRate")
        page.screenshot(path=str(screenshot_dir(tmp_path) / "caption-page-mic.png"))

        # A second microphone on the same stream is refused (1013) and says why.
        other = _open(mic_browser, base + "&ingest_token=speak-in", errors)
        pages.append(other)
        assert "already captioning this stream" in _mic_error(other)

        # Stopping the microphone closes /ingest; the daemon ends the open utterance with a final.
        seen = len(d.finals("mic1"))
        page.click("#mic")
        page.wait_for_selector("#mic-state.off", timeout=TIMEOUT)
        d.wait_for(lambda e: e["type"] == "final" and e["last"] and e["seq"] > seen, timeout=60)
        assert d.health()["streams"]["mic1"]["source"] == "ingest"  # no client any more
        text = page.inner_text("#finals")
        sent = page.evaluate("window.micIngest.sent")
        ingested = d.metric("streamer_ingest_bytes_total", stream="mic1")

        # The user says no to the microphone (the stream is free again, so the page gets as far as
        # asking): the page says so and lets go of /ingest.
        denied_browser = launch(pw, [FAKE_DEVICE, "--use-fake-ui-for-media-stream=deny"])
        try:
            denied = _open(denied_browser, base + "&ingest_token=speak-in", errors)
            assert "microphone permission denied" in _mic_error(denied)
        finally:
            denied_browser.close()
    finally:
        for p in pages:
            p.context.close()
        code = d.stop()
    assert code == 0, d.stderr[-3000:]
    assert not errors, errors
    print(f"context rate {rate} Hz, {sent} bytes sent, {ingested:.0f} ingested; page: {text!r}")
    assert ingested >= sent > 16000 * 2  # more than a second of audio, all of it taken
    assert "excuse me" in text.lower()


RESAMPLE_CHECKS = """async () => {
  const { Downsampler, Framer, toPcm16 } = await import("/resample.js");
  const tone = (rate, hz, n) =>
    Float32Array.from({ length: n }, (_, i) => Math.sin((2 * Math.PI * hz * i) / rate));
  const rms = (a) => Math.sqrt(a.reduce((s, x) => s + x * x, 0) / a.length);
  const run = (rate, input, blocks) => {
    const d = new Downsampler(rate);
    const parts = [];
    let off = 0, k = 0;
    while (off < input.length) {
      const n = blocks[k++ % blocks.length];
      parts.push(d.process(input.subarray(off, off + n)));
      off += n;
    }
    return Float32Array.from(parts.flatMap((p) => Array.from(p)));
  };
  const maxDiff = (a, b) => a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i])), 0);
  const out = {};
  for (const rate of [48000, 44100, 16000]) {
    const n = rate * 2; // two seconds
    const keep = run(rate, tone(rate, 1000, n), [128]);
    const alias = run(rate, tone(rate, 12000, n), [128]);
    const whole = run(rate, tone(rate, 1000, n), [n]);
    const ragged = run(rate, tone(rate, 1000, n), [1, 127, 128, 300, 7]);
    out[rate] = {
      samples: keep.length,
      keepRms: rms(keep.subarray(200)),
      aliasRms: rms(alias.subarray(200)),
      blockLengthsAgree: whole.length === keep.length && ragged.length === keep.length,
      blockDiff: Math.max(maxDiff(whole, keep), maxDiff(whole, ragged)),
    };
  }
  out.pcm = Array.from(toPcm16(Float32Array.from([0, 1, -1, 2, -2, 0.5])));
  const f = new Framer(4);
  const frames = [f.push(Int16Array.from([1, 2, 3])), f.push(Int16Array.from([4, 5, 6, 7, 8, 9]))];
  out.frames = frames.map((fs) => fs.map((x) => Array.from(x)));
  return out;
}"""


def test_downsampler_in_the_browser(mic_browser: Any) -> None:
    """resample.js as the worklet runs it: 48 and 44.1 kHz to 16 kHz, speech band kept, what
    would alias attenuated, the same output whatever the block sizes (the worklet gets 128)."""
    srv = ScriptedServer()
    context = mic_browser.new_context()
    try:
        page = context.new_page()
        page.goto(srv.url + "/")
        out = page.evaluate(RESAMPLE_CHECKS)
    finally:
        context.close()
        srv.close()
    for rate in ("48000", "44100"):
        r = out[rate]
        assert abs(r["samples"] - 32000) <= 1, r
        assert r["keepRms"] == pytest.approx(2**-0.5, rel=0.02), r
        assert r["blockLengthsAgree"] and r["blockDiff"] < 1e-5, r
        # 12 kHz would fold back to 4 kHz at 16 kHz; the low-pass takes it out (40 dB at least).
        assert r["aliasRms"] < 0.01 * 2**-0.5, r
    assert out["16000"]["samples"] == 32000 and out["16000"]["blockDiff"] == 0  # passed through
    assert out["pcm"] == [0, 32767, -32768, 32767, -32768, 16384]
    assert out["frames"] == [[], [[1, 2, 3, 4], [5, 6, 7, 8]]]
