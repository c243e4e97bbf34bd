"""Running the real sinks against a Bus in tests: settings, a stand-in stream, HTTP helpers.

The stream object here only reports health (what the sinks read from a stream); events are
published into a real Bus from another thread, as the pipeline does.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from streamer.bus import Bus, BusEvent
from streamer.config import Settings
from streamer.sinks.context import SinkContext
from streamer.sinks.start import Sinks, start_sinks
from streamer_bench.fanout import StuckClient

T = TypeVar("T")


class StreamHealth:
    """What the sinks see of a stream: a name and `.health()`; tests set the values."""

    def __init__(self, name: str = "main") -> None:
        self.name = name
        self.values: dict[str, Any] = {
            "state": "running",
            "source": "file:test.wav",
            "audio_seconds": 1.0,
            "dropped_seconds": 0.0,
            "speech_seconds": 0.5,
            "last_audio_age": 0.0,
            "finals": 0,
        }

    def health(self) -> dict[str, Any]:
        return dict(self.values)


def settings(**sections: dict[str, Any]) -> Settings:
    base: dict[str, Any] = {
        "server": {"port": 0},
        "transcripts": {"dir": None},
        "decoder": {"language": "en"},
        "model": "tiny.en",
    }
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value}
    return Settings(**base)


def run(coro: Awaitable[T], timeout: float = 60.0) -> T:
    """Run one test coroutine with a hard time bound."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


async def start(
    bus: Bus, s: Settings, streams: Iterable[str] = ("main",)
) -> tuple[Sinks, dict[str, StreamHealth]]:
    stubs = {name: StreamHealth(name) for name in streams}
    sinks = await start_sinks(SinkContext(settings=s, bus=bus, streams=stubs, model="tiny.en"))
    return sinks, stubs


def publish_in_thread(bus: Bus, events: Iterable[BusEvent], interval: float = 0.0) -> threading.Thread:
    """Publish from another thread, like the pipeline; records the slowest publish() call."""
    evs = list(events)

    def work() -> None:
        slowest = 0.0
        for ev in evs:
            t0 = time.perf_counter()
            bus.publish(ev)
            slowest = max(slowest, time.perf_counter() - t0)
            if interval:
                time.sleep(interval)
        t.slowest = slowest  # type: ignore[attr-defined]

    t = threading.Thread(target=work, daemon=True)
    t.start()
    return t


def _http(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


async def http_get(
    port: int, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    return await asyncio.to_thread(_http, f"http://127.0.0.1:{port}{path}", headers)


async def recv_json(ws: Any, timeout: float = 10.0) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return doc


async def recv_until(
    ws: Any, stop: Callable[[dict[str, Any]], bool], timeout: float = 20.0
) -> list[dict[str, Any]]:
    """Messages up to and including the first one for which `stop` is true."""
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        doc = await recv_json(ws, max(0.1, deadline - time.monotonic()))
        out.append(doc)
        if stop(doc):
            return out


async def publish(bus: Bus, events: Iterable[BusEvent], interval: float = 0.0) -> float:
    """Publish from another thread without blocking the test's loop; returns the slowest publish()."""
    t = publish_in_thread(bus, events, interval)
    await asyncio.to_thread(t.join)
    return float(t.slowest)  # type: ignore[attr-defined]


__all__ = [
    "StreamHealth",
    "StuckClient",
    "http_get",
    "publish",
    "publish_in_thread",
    "recv_json",
    "recv_until",
    "run",
    "settings",
    "start",
]
