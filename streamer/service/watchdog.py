"""When the watchdog may be fed, and the one-line status: pure functions over plain snapshots.

systemd restarts the daemon when WATCHDOG=1 stops arriving, so it is sent only while every
stream's pipeline makes progress:

- the stream loop is alive: it passes its heartbeat (one ring read per iteration, at least every
  50 ms) within `limit` seconds, whether or not audio arrives;
- no decode of the stream has been running or waiting longer than `limit` seconds. In live mode
  the loop never waits for the decoder, so a hung decoder shows only here.

A source that is retrying (microphone unplugged) is not a stalled pipeline: the capture thread
recovers it, and a restart would not bring the device back sooner.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class StreamProbe:
    name: str
    state: str  # the stream's state: starting | running | retrying | stopped | error
    beat_age: float | None  # seconds since the stream loop's last iteration (None: not started)
    oldest_decode_age: float | None  # seconds the oldest unfinished decode has waited or run
    clients: int = 0


def stalls(probes: Sequence[StreamProbe], limit: float) -> list[str]:
    """Why the watchdog must not be fed now (empty: every pipeline makes progress)."""
    problems: list[str] = []
    for p in probes:
        if p.beat_age is not None and p.beat_age > limit:
            problems.append(f"stream {p.name}: loop stalled for {p.beat_age:.0f} s")
        if p.oldest_decode_age is not None and p.oldest_decode_age > limit:
            problems.append(f"stream {p.name}: a decode has not finished in {p.oldest_decode_age:.0f} s")
    return problems


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "none yet"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.0f} h ago"


def status_line(
    probes: Sequence[StreamProbe], clients: int, last_caption_age: float | None, problems: Sequence[str] = ()
) -> str:
    """E.g. 'main running; 3 clients; last caption 4 s ago' (systemctl status shows it)."""
    streams = ", ".join(f"{p.name} {p.state}" for p in probes) or "no streams"
    line = f"{streams}; {clients} client{'s' if clients != 1 else ''}; last caption {_age(last_caption_age)}"
    if problems:
        line += "; STALLED: " + "; ".join(problems)
    return line
