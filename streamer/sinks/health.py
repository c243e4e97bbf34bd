"""The `/health` verdict (pure): per-stream health dicts in, HTTP status and JSON body out.

A stream "should be live" while its state is starting, running or retrying, unless its health
says `"live": false` (a file read as fast as possible). Such a stream is unhealthy when no audio
has arrived for `stall_timeout` seconds (a dead microphone, a stuck pipe), or, before its first
audio, when the daemon has been up that long. A stream that stopped (end of file or stdin) is
fine; one that ended in error is not.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

LIVE_STATES = frozenset({"starting", "running", "retrying"})


def stream_problem(health: Mapping[str, Any], *, stall_timeout: float, uptime: float) -> str | None:
    """Why this stream is unhealthy, or None."""
    state = health.get("state")
    if state == "error":
        return "stream failed"
    if state not in LIVE_STATES:
        return None
    if health.get("live") is False:
        # A file read as fast as possible pauses whenever the decoder is busy: not a stall.
        return None
    age = health.get("last_audio_age")
    if age is None:
        if uptime >= stall_timeout:
            return f"no audio received in {uptime:.1f} s"
        return None
    if age >= stall_timeout:
        return f"no audio for {age:.1f} s"
    return None


def evaluate(
    streams: Mapping[str, Mapping[str, Any]],
    *,
    stall_timeout: float,
    uptime: float,
    extra: Mapping[str, Any] | None = None,
) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) for `/health`: 200 "ok" or 503 "unhealthy" with the reasons."""
    problems: dict[str, str] = {}
    out_streams: dict[str, dict[str, Any]] = {}
    for name, h in streams.items():
        problem = stream_problem(h, stall_timeout=stall_timeout, uptime=uptime)
        entry = dict(h)
        entry["healthy"] = problem is None
        if problem:
            entry["problem"] = problem
            problems[name] = problem
        out_streams[name] = entry
    ages = [float(h["last_audio_age"]) for h in streams.values() if h.get("last_audio_age") is not None]
    body: dict[str, Any] = {
        "status": "unhealthy" if problems else "ok",
        "uptime": round(uptime, 3),
        "stall_timeout": stall_timeout,
        "last_audio_age": min(ages) if ages else None,
        "dropped_audio_seconds": sum(float(h.get("dropped_seconds", 0.0)) for h in streams.values()),
        "streams": out_streams,
    }
    if problems:
        body["problems"] = problems
    body.update(extra or {})
    return (503 if problems else 200), body
