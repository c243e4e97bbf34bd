"""Audio sources against real files, real FFmpeg (PyAV and the ffmpeg CLI), real pipes and PortAudio."""

from __future__ import annotations

import ctypes.util
import io
import json
import os
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path

import av
import numpy as np
import pytest

from streamer.audio import ACCEPTED_FORMS, SourceSpec, open_source, parse_spec
from streamer.audio.decode import iter_audio, load_audio
from streamer.audio.devices import format_devices
from streamer.audio.devices import main as devices_main
from streamer.audio.file import FileSource
from streamer.audio.mic import InputDevice, MicCallback, list_input_devices, select_device
from streamer.audio.ring import SAMPLE_RATE, RingBuffer
from streamer.audio.stdin import StdinSource
from streamer.config import ConfigError, load_settings
from streamer.errors import SourceError

from .components import ffmpeg, require


def format_files(audio_dir: Path) -> list[Path]:
    files = sorted(p for p in (audio_dir / "formats").iterdir() if p.suffix != ".txt")
    assert {p.suffix for p in files} >= {".wav", ".ogg", ".flac"}
    return files


def expected_length(path: Path) -> float:
    """Length at 16 kHz from the container's own metadata, independent of our decode path."""
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        assert s.duration is not None and s.time_base is not None
        return float(s.duration * s.time_base) * SAMPLE_RATE


def write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def sine(seconds: float, rate: int, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def drain(ring: RingBuffer) -> np.ndarray:
    parts = []
    while True:
        _, data = ring.read(timeout=0)
        if data.size == 0:
            break
        parts.append(data)
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


# --- decoding ----------------------------------------------------------------------------------


def test_every_format_decodes_to_16k_mono_with_the_right_length(audio_dir: Path) -> None:
    for path in format_files(audio_dir):
        audio = load_audio(path)
        assert audio.dtype == np.float32 and audio.ndim == 1, path.name
        assert abs(audio.size - expected_length(path)) <= 1, (path.name, audio.size, expected_length(path))
        assert float(np.sqrt(np.mean(audio**2))) > 0.001 and float(np.abs(audio).max()) <= 1.0, path.name


@pytest.mark.component
def test_decode_matches_the_ffmpeg_command_line(audio_dir: Path) -> None:
    for path in format_files(audio_dir):
        out = subprocess.run(
            [ffmpeg(), "-v", "error", "-i", str(path), "-ac", "1", "-ar", "16000", "-f", "f32le", "-"],
            check=True,
            capture_output=True,
        ).stdout
        ref = np.frombuffer(out, dtype="<f4")
        ours = load_audio(path)
        assert abs(ours.size - ref.size) <= 2, path.name
        n = min(ours.size, ref.size)
        corr = np.corrcoef(ours[:n], ref[:n])[0, 1]
        assert corr > 0.999, (path.name, corr)


def test_streamed_chunks_equal_the_whole_file(audio_dir: Path) -> None:
    path = audio_dir / "formats" / "emotiontts_pfa00001.wav"
    chunks = list(iter_audio(path, chunk=320))
    assert all(c.size == 320 for c in chunks[:-1]) and 0 < chunks[-1].size <= 320
    np.testing.assert_array_equal(np.concatenate(chunks), load_audio(path))


def test_non_audio_and_missing_files_raise_clear_errors(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("this is not audio\n" * 50)
    expected = r"cannot read audio from '.*notes\.txt': no audio stream in the file \(FFmpeg reads it as 'tty"
    with pytest.raises(SourceError, match=expected):
        load_audio(text)
    with pytest.raises(SourceError, match=r"cannot read audio from '.*nope\.wav': No such file or directory"):
        load_audio(tmp_path / "nope.wav")
    # A file source fails at construction, before any thread or model exists.
    with pytest.raises(SourceError, match=r"notes\.txt"):
        FileSource(text)
    with pytest.raises(SourceError, match="No such file"):
        open_source(f"file:{tmp_path / 'nope.wav'}", load_settings())


@pytest.mark.component
def test_a_file_without_an_audio_stream_is_refused(tmp_path: Path) -> None:
    video = tmp_path / "still.mp4"
    subprocess.run(
        [ffmpeg(), "-v", "error", "-f", "lavfi", "-i", "color=c=black:s=32x32:d=0.2", str(video)],
        check=True,
    )
    with pytest.raises(SourceError, match="no audio stream"):
        FileSource(video)


# --- file source -------------------------------------------------------------------------------


def test_realtime_file_is_paced_at_1x(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "two.wav", sine(2.0, 22050), 22050)
    ring = RingBuffer(SAMPLE_RATE * 5)
    seen: list[tuple[float, int]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            written = ring.written  # read before the clock: it can only be ahead of `written`
            seen.append((time.monotonic(), written))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    t0 = time.monotonic()
    watcher.start()
    FileSource(path, realtime=True).run(ring, threading.Event())
    elapsed = time.monotonic() - t0
    done.set()
    watcher.join()
    # Paced: never ahead of the wall clock (a busy machine can only make it later). How late it
    # runs on a loaded machine is a benchmark figure, not a pass/fail criterion.
    assert elapsed >= 1.9
    assert ring.written == round(2.0 * SAMPLE_RATE)
    for t, written in seen:
        assert written / SAMPLE_RATE <= (t - t0) + 0.05
    assert len({w for _, w in seen}) > 2  # audio arrived progressively, not in one block


def test_fast_file_replay_is_much_faster_than_realtime(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "long.wav", sine(60.0, 16000), 16000)
    ring = RingBuffer(SAMPLE_RATE * 61)
    t0 = time.monotonic()
    FileSource(path, realtime=False).run(ring, threading.Event())
    # Not paced: a minute of audio in far less than a minute, whatever the machine's load.
    assert time.monotonic() - t0 < 30.0
    assert ring.written == 60 * SAMPLE_RATE


def test_fast_replay_into_a_small_ring_drops_nothing(audio_dir: Path) -> None:
    path = audio_dir / "formats" / "librispeech_2412-153948-0000.flac"
    ring = RingBuffer(1000)  # far smaller than one write of a fast replay
    got: list[np.ndarray] = []

    def slow_reader() -> None:
        while not ring.drained:
            _, data = ring.read(max_samples=256, timeout=0.5)
            got.append(data)
            time.sleep(0.0005)

    reader = threading.Thread(target=slow_reader)
    reader.start()
    FileSource(path, realtime=False).run(ring, threading.Event())
    ring.close()
    reader.join(30)
    assert ring.dropped == 0
    np.testing.assert_array_equal(np.concatenate(got), load_audio(path))


def test_file_source_stops_promptly(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "long.wav", sine(60.0, 16000), 16000)
    ring = RingBuffer(SAMPLE_RATE * 61)
    stop = threading.Event()
    runner = threading.Thread(target=FileSource(path, realtime=True).run, args=(ring, stop), daemon=True)
    runner.start()
    deadline = time.monotonic() + 20
    while ring.written == 0:  # audio flows: now stop it
        assert time.monotonic() < deadline, "no audio from the file source"
        time.sleep(0.005)
    stop.set()
    runner.join(30)  # paced at 1x, the minute-long file would still be running
    assert not runner.is_alive()
    assert 0 < ring.written < SAMPLE_RATE * 60


# --- stdin source ------------------------------------------------------------------------------


def pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def test_stdin_16k_passes_samples_through_exactly() -> None:
    raw = pcm16(sine(1.0, 16000))
    ring = RingBuffer(SAMPLE_RATE * 2)
    StdinSource(16000, stream=io.BytesIO(raw)).run(ring, threading.Event())
    expected = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768
    np.testing.assert_array_equal(drain(ring), expected)


def test_stdin_8k_is_resampled_to_16k() -> None:
    raw = pcm16(sine(2.0, 8000))
    ring = RingBuffer(SAMPLE_RATE * 3)
    src = StdinSource(8000, stream=io.BytesIO(raw))
    assert src.description == "stdin:8000"
    src.run(ring, threading.Event())
    out = drain(ring)
    assert out.size == 2 * SAMPLE_RATE
    ref = sine(2.0, SAMPLE_RATE)
    # The same 440 Hz tone, in phase (no delay), away from the filter's edges.
    assert float(np.abs(out[200:-200] - ref[200:-200]).max()) < 0.01


def test_stdin_from_a_pipe_in_odd_sized_writes_with_an_odd_trailing_byte() -> None:
    raw = pcm16(sine(0.5, 16000, freq=300))
    read_fd, write_fd = os.pipe()

    def producer() -> None:
        with os.fdopen(write_fd, "wb", buffering=0) as w:
            for i in range(0, len(raw), 333):  # splits samples across writes
                w.write(raw[i : i + 333])
                time.sleep(0.001)
            w.write(b"\x7f")  # half a sample at the very end

    ring = RingBuffer(SAMPLE_RATE)
    threading.Thread(target=producer).start()
    with os.fdopen(read_fd, "rb") as r:
        StdinSource(16000, stream=r).run(ring, threading.Event())
    expected = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768
    np.testing.assert_array_equal(drain(ring), expected)


def test_stdin_waits_for_room_instead_of_dropping() -> None:
    raw = pcm16(sine(1.0, 16000))
    ring = RingBuffer(3000)
    got: list[np.ndarray] = []

    def reader_loop() -> None:
        while not ring.drained:
            got.append(ring.read(timeout=0.5)[1])

    reader = threading.Thread(target=reader_loop)
    reader.start()
    StdinSource(16000, stream=io.BytesIO(raw)).run(ring, threading.Event())
    ring.close()
    reader.join(10)
    assert ring.dropped == 0
    assert sum(g.size for g in got) == len(raw) // 2


def test_stdin_stops_while_the_producer_is_silent() -> None:
    read_fd, write_fd = os.pipe()
    stop = threading.Event()
    with os.fdopen(read_fd, "rb") as r:
        runner = threading.Thread(
            target=StdinSource(16000, stream=r).run, args=(RingBuffer(1000), stop), daemon=True
        )
        runner.start()
        # Stop only once the source is blocked waiting for input (Linux: the thread's kernel
        # wait channel is select's), so the test proves a stop gets through a silent producer.
        deadline = time.monotonic() + 20
        while "poll_schedule" not in Path(f"/proc/self/task/{runner.native_id}/wchan").read_text():
            assert time.monotonic() < deadline, "the stdin source never waited for input"
            time.sleep(0.005)
        stop.set()
        runner.join(30)  # the producer never writes nor closes: only `stop` can end the run
        assert not runner.is_alive()
    os.close(write_fd)


# --- spec parsing ------------------------------------------------------------------------------


def test_spec_parsing_accepts_every_documented_form(tmp_path: Path) -> None:
    assert parse_spec("mic") == SourceSpec("mic")
    assert parse_spec("mic:USB Audio") == SourceSpec("mic", device="USB Audio")
    assert parse_spec("mic:2") == SourceSpec("mic", device="2")
    assert parse_spec("file:/a/b c.flac") == SourceSpec("file", path=Path("/a/b c.flac"))
    assert parse_spec("file:C:x.wav").path == Path("C:x.wav")  # only the first colon splits
    assert parse_spec("stdin") == SourceSpec("stdin", rate=16000)
    assert parse_spec("stdin:8000") == SourceSpec("stdin", rate=8000)
    wav = write_wav(tmp_path / "x.wav", sine(0.1, 16000), 16000)
    src = open_source(f"file:{wav}", load_settings(overrides={"source.realtime": False}))
    assert isinstance(src, FileSource) and not src.realtime and src.description == "file:x.wav"
    stdin_src = open_source("stdin:44100", load_settings())
    assert isinstance(stdin_src, StdinSource) and stdin_src.rate == 44100 and stdin_src.live


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("microphone", "not a source"),
        ("http://x", "unknown source kind 'http'"),
        ("file:", "missing path"),
        ("mic:", "missing device"),
        ("stdin:fast", "not a whole number"),
        ("stdin:10", "outside"),
        ("", "not a source"),
    ],
)
def test_bad_specs_name_the_key_the_value_and_the_accepted_forms(spec: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_spec(spec)
    msg = str(info.value)
    assert "source.spec" in msg and repr(spec) in msg and problem in msg and ACCEPTED_FORMS in msg


# --- microphone (PortAudio is real; the device list is whatever this machine has) ---------------


def devs() -> list[InputDevice]:
    return [
        InputDevice(0, "HDA Intel PCH: ALC257 Analog (hw:0,0)", 2, 48000.0, "ALSA", False),
        InputDevice(4, "USB Audio Device: Mic (hw:1,0)", 1, 44100.0, "ALSA", False),
        InputDevice(7, "pulse", 32, 44100.0, "ALSA", True),
    ]


def test_device_selection_by_default_index_and_name() -> None:
    assert select_device(devs(), None).index == 7
    assert select_device(devs(), "4").index == 4
    assert select_device(devs(), "usb").index == 4
    assert select_device(devs(), "PULSE").index == 7
    with pytest.raises(SourceError, match=r"no input device matches 'Blue Yeti'; available input devices: 0"):
        select_device(devs(), "Blue Yeti")
    with pytest.raises(SourceError, match="no input device with index 9"):
        select_device(devs(), "9")
    with pytest.raises(SourceError, match="matches several devices"):
        select_device(devs(), "hw:")
    with pytest.raises(SourceError, match="no audio input devices found"):
        select_device([], None)


def test_mic_callback_downmixes_resamples_and_counts_overflows() -> None:
    import sounddevice as sd

    ring = RingBuffer(SAMPLE_RATE * 2)
    cb = MicCallback(ring, 48000)
    tone = sine(1.0, 48000)
    stereo = np.stack([tone, tone], axis=1)
    flags = sd.CallbackFlags()
    for i in range(0, 48000, 960):
        status = flags
        if i == 960 * 10:
            status = sd.CallbackFlags()
            status.input_overflow = True
        cb(stereo[i : i + 960], 960, None, status)
    assert cb.error is None and cb.overflows == 1 and cb.blocks == 50
    out = drain(ring)
    assert abs(out.size - SAMPLE_RATE) <= 64  # the resampler holds back a few samples
    ref = sine(1.0, SAMPLE_RATE)[: out.size]
    assert float(np.abs(out[200:] - ref[200:]).max()) < 0.01


def test_mic_on_this_machine_works_or_fails_naming_the_devices() -> None:
    import sounddevice as sd

    devices = list_input_devices(sd)
    if devices:
        assert open_source("mic", load_settings()).live
        with pytest.raises(SourceError, match="available input devices"):
            open_source("mic:no such device 1234", load_settings())
    else:
        with pytest.raises(SourceError, match="no audio input devices found"):
            open_source("mic", load_settings())


def test_devices_command_lists_or_explains(capsys: pytest.CaptureFixture[str]) -> None:
    assert devices_main(None) == 0
    out = capsys.readouterr().out
    assert "INDEX" in out or "no audio input devices found" in out
    table = format_devices(devs())
    assert "USB Audio Device" in table and "44100" in table
    assert next(line for line in table.splitlines() if line.startswith("*")).split()[1] == "7"


MIC_SCRIPT = """
import json, sys, threading, time
from streamer.audio import open_source
from streamer.audio.ring import RingBuffer
from streamer.config import load_settings
from streamer.errors import SourceError

out = {}
try:
    open_source("mic:no such mic", load_settings())
except SourceError as e:
    out["missing"] = str(e)
src = open_source("mic:streamer_null", load_settings())
out["description"] = src.description
ring = RingBuffer(16000 * 5)
stop = threading.Event()
t = threading.Thread(target=src.run, args=(ring, stop))
t.start()
deadline = time.monotonic() + 20
while ring.written == 0 and time.monotonic() < deadline:  # until audio flows
    time.sleep(0.01)
stop.set()
t0 = time.monotonic()
t.join(5)
out["stop_seconds"] = time.monotonic() - t0
out["alive"] = t.is_alive()
out["written"] = ring.written
_, data = ring.read()
out["read"] = int(data.size)
out["dtype"] = str(data.dtype)
json.dump(out, sys.stdout)
"""


@pytest.mark.component
def test_mic_source_on_a_real_alsa_device(tmp_path: Path) -> None:
    require("PortAudio", ctypes.util.find_library("portaudio") is not None, "apt-get install libportaudio2")
    # No sound card here: an ALSA 'null' capture device (silence, delivered without a clock) in a
    # private $HOME/.asoundrc lets PortAudio open a real input stream in a child process.
    (tmp_path / ".asoundrc").write_text(
        'pcm.streamer_null {\n type null\n hint { show on description "null capture" }\n}\n'
    )
    env = {**os.environ, "HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-c", MIC_SCRIPT], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["description"] == "mic:streamer_null"
    assert "no input device matches 'no such mic'" in out["missing"] and "streamer_null" in out["missing"]
    assert not out["alive"]
    # The null device's samples are not meaningful; that they flowed through the callback is.
    assert out["written"] > 0 and out["read"] > 0 and out["dtype"] == "float32"

    listing = subprocess.run(
        [sys.executable, "-m", "streamer", "devices"], env=env, capture_output=True, text=True, timeout=60
    )
    assert listing.returncode == 0, listing.stderr
    assert "streamer_null" in listing.stdout and "44100" in listing.stdout
