"""Microphone input through PortAudio (sounddevice).

sounddevice is imported only when a microphone is used, so file and stdin sources work on machines
without PortAudio. The stream opens at the device's own default rate (what the hardware or the
sound server supports for sure) and is resampled to 16 kHz in the callback.

The PortAudio callback runs on a real-time audio thread: it converts, resamples and writes into
the ring (which never waits on the reader) and only counts problems; logging happens in `run`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from streamer.audio.resample import StreamResampler
from streamer.audio.ring import RingBuffer
from streamer.audio.source import Source
from streamer.errors import SourceError

log = logging.getLogger(__name__)

_POLL = 0.5
#: A device that delivers nothing for this long is treated as gone (USB unplug often just stalls).
STALL_SECONDS = 3.0


def import_sounddevice() -> ModuleType:
    try:
        # lazy: importing sounddevice loads PortAudio, which may be missing (OSError) and is needed
        # only when a microphone is opened or listed
        import sounddevice
    except OSError:
        raise SourceError(
            "microphone input needs the PortAudio library, which was not found "
            "(Debian/Ubuntu: apt install libportaudio2; macOS: brew install portaudio)"
        ) from None
    except ImportError:
        msg = "microphone input needs the 'sounddevice' package: pip install sounddevice"
        raise SourceError(msg) from None
    return sounddevice


@dataclass(frozen=True)
class InputDevice:
    index: int
    name: str
    channels: int
    default_rate: float
    hostapi: str
    is_default: bool

    def label(self) -> str:
        return f"{self.index} '{self.name}'"


def list_input_devices(sd: ModuleType) -> list[InputDevice]:
    """Every PortAudio device with at least one input channel."""
    try:
        default_index = int(sd.query_devices(kind="input")["index"])
    except Exception:  # PortAudio raises when there is no default input device
        default_index = -1
    hostapis = [h["name"] for h in sd.query_hostapis()]
    out: list[InputDevice] = []
    for info in sd.query_devices():
        if int(info["max_input_channels"]) <= 0:
            continue
        api = int(info["hostapi"])
        out.append(
            InputDevice(
                index=int(info["index"]),
                name=str(info["name"]),
                channels=int(info["max_input_channels"]),
                default_rate=float(info["default_samplerate"]),
                hostapi=hostapis[api] if 0 <= api < len(hostapis) else "?",
                is_default=int(info["index"]) == default_index,
            )
        )
    return out


def _available(devices: list[InputDevice]) -> str:
    return "available input devices: " + ", ".join(d.label() for d in devices)


def select_device(devices: list[InputDevice], wanted: str | None) -> InputDevice:
    """The device for `wanted` (None = default; an index; or a name, exact or a unique substring)."""
    if not devices:
        raise SourceError("no audio input devices found (is a microphone connected? see `streamer devices`)")
    if wanted is None or wanted == "":
        for d in devices:
            if d.is_default:
                return d
        return devices[0]
    if wanted.strip().isdigit():
        index = int(wanted)
        for d in devices:
            if d.index == index:
                return d
        raise SourceError(f"no input device with index {index}; {_available(devices)}")
    key = wanted.casefold()
    exact = [d for d in devices if d.name.casefold() == key]
    if exact:
        return exact[0]
    partial = [d for d in devices if key in d.name.casefold()]
    if len(partial) == 1:
        return partial[0]
    if partial:
        names = ", ".join(d.label() for d in partial)
        raise SourceError(f"input device name '{wanted}' matches several devices ({names}); use the index")
    raise SourceError(f"no input device matches '{wanted}'; {_available(devices)}")


class MicCallback:
    """The PortAudio callback: downmix, resample, write to the ring; never waits, never logs."""

    def __init__(self, ring: RingBuffer, rate: int) -> None:
        self.ring = ring
        self.resampler = StreamResampler(rate)
        self.overflows = 0
        self.other_flags = 0
        self.blocks = 0
        self.last_block = time.monotonic()
        self.error: BaseException | None = None

    def __call__(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        try:
            if status:
                if getattr(status, "input_overflow", False):
                    self.overflows += 1
                else:
                    self.other_flags += 1
            block = indata.reshape(frames, -1)
            mono = block[:, 0] if block.shape[1] == 1 else block.mean(axis=1)
            self.ring.write(self.resampler.feed(mono))
            self.blocks += 1
            self.last_block = time.monotonic()
        except Exception as e:  # an exception would kill the stream silently; report it from run()
            self.error = e


def _refresh_portaudio(sd: ModuleType) -> None:
    # PortAudio reads the device list once at initialisation; a replugged USB microphone only
    # shows up (often under a new index) after re-initialising it.
    terminate, initialize = getattr(sd, "_terminate", None), getattr(sd, "_initialize", None)
    if terminate is None or initialize is None:
        return
    try:
        terminate()
        initialize()
    except Exception as e:
        log.debug("re-initialising PortAudio failed: %s", e)


class MicSource(Source):
    live = True

    def __init__(self, device: str | None = None) -> None:
        self._sd = import_sounddevice()
        self.device_spec = device
        # A wrong device name should stop the daemon at start, naming the devices there are.
        self._device = select_device(list_input_devices(self._sd), device)
        self._runs = 0
        self.overflows = 0

    @property
    def description(self) -> str:
        return f"mic:{self._device.name}"

    def run(self, ring: RingBuffer, stop: threading.Event) -> None:
        sd = self._sd
        if self._runs:
            _refresh_portaudio(sd)
        self._runs += 1
        dev = select_device(list_input_devices(sd), self.device_spec)
        self._device = dev
        rate = round(dev.default_rate)
        callback = MicCallback(ring, rate)
        stream = self._open(dev, rate, callback)
        try:
            stream.start()
            log.info("capturing from %s at %d Hz (%s)", dev.label(), rate, dev.hostapi)
            self._watch(stream, dev, callback, stop)
        finally:
            try:
                stream.close()
            except Exception as e:
                log.debug("closing input stream: %s", e)

    def _open(self, dev: InputDevice, rate: int, callback: MicCallback) -> Any:
        sd = self._sd
        last: Exception | None = None
        # Mono first; some raw ALSA devices only open with their native channel count.
        for channels in dict.fromkeys((1, min(dev.channels, 2))):
            try:
                return sd.InputStream(
                    device=dev.index,
                    channels=channels,
                    samplerate=rate,
                    dtype="float32",
                    blocksize=max(1, rate // 50),
                    callback=callback,
                )
            except Exception as e:
                last = e
        raise SourceError(f"cannot open input device {dev.label()} at {rate} Hz: {last}")

    def _watch(self, stream: Any, dev: InputDevice, callback: MicCallback, stop: threading.Event) -> None:
        reported_overflows = 0
        reported_flags = 0
        while not stop.wait(_POLL):
            if callback.error is not None:
                raise SourceError(f"input device {dev.label()}: {callback.error}")
            if callback.overflows != reported_overflows:
                log.warning(
                    "input overflow on %s: %d block(s) lost by the sound card since the last report",
                    dev.label(),
                    callback.overflows - reported_overflows,
                )
                reported_overflows = callback.overflows
                self.overflows = callback.overflows
            if callback.other_flags != reported_flags:
                log.debug("input status flags on %s: %d", dev.label(), callback.other_flags - reported_flags)
                reported_flags = callback.other_flags
            if not stream.active:
                raise SourceError(f"input device {dev.label()} stopped delivering audio")
            silent_for = time.monotonic() - callback.last_block
            if silent_for > STALL_SECONDS:
                raise SourceError(f"no audio from input device {dev.label()} for {silent_for:.0f} s")
