"""`streamer devices`: list the audio input devices PortAudio can see."""

from __future__ import annotations

import argparse
import sys

from streamer.audio.mic import InputDevice, import_sounddevice, list_input_devices
from streamer.errors import SourceError


def format_devices(devices: list[InputDevice]) -> str:
    """A table of input devices; '*' marks the default that `--source mic` uses."""
    if not devices:
        return (
            "no audio input devices found (no sound card, or no permission to use it);\n"
            "file:PATH and stdin sources still work"
        )
    rows = [("", "INDEX", "NAME", "CHANNELS", "DEFAULT RATE", "HOST API")]
    for d in devices:
        mark = "*" if d.is_default else ""
        rows.append((mark, str(d.index), d.name, str(d.channels), f"{d.default_rate:.0f}", d.hostapi))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.append("")
    lines.append("use --source mic:INDEX or mic:NAME (a unique part of the name); * = default")
    return "\n".join(lines)


def main(args: argparse.Namespace | None = None) -> int:
    try:
        sd = import_sounddevice()
        devices = list_input_devices(sd)
    except SourceError as e:
        print(f"streamer: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # PortAudio itself failing (broken sound server, ...)
        print(f"streamer: cannot list audio devices: {e}", file=sys.stderr)
        return 1
    print(format_devices(devices))
    return 0
