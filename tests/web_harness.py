"""Real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright; no browser download)
and a real caption server (streamer.sinks on a Bus in a background thread) to drive the pages with
scripted protocol-2 events.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from streamer.bus import Bus, BusEvent
from streamer.events import Final, Partial, Word
from streamer.sinks.start import Sinks

from .components import require
from .sink_harness import settings, start

CHROMIUM = os.environ.get("STREAMER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def screenshot_dir(tmp_path: Path) -> Path:
    """Where page screenshots go: $STREAMER_SCREENSHOTS (e.g. docs/img) or the test's tmp dir."""
    d = Path(os.environ.get("STREAMER_SCREENSHOTS") or tmp_path)
    d.mkdir(parents=True, exist_ok=True)
    return d


@contextmanager
def playwright() -> Iterator[Any]:
    """Playwright's sync API, to launch one or more browsers with `launch`."""
    require(
        f"Chromium ({CHROMIUM})",
        Path(CHROMIUM).is_file() or bool(shutil.which(CHROMIUM)),
        "apt-get install chromium",
    )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


def launch(p: Any, extra_args: Iterable[str] = ()) -> Any:
    return p.chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, *extra_args], headless=True)


@contextmanager
def chromium(extra_args: Iterable[str] = ()) -> Iterator[Any]:
    with playwright() as p:
        browser = launch(p, extra_args)
        try:
            yield browser
        finally:
            browser.close()


class ScriptedServer:
    """The real caption server (WebSocket + HTTP + static pages) on a Bus the test publishes to."""

    def __init__(self, streams: Iterable[str] = ("main",), **server: Any) -> None:
        cfg = settings(server={"port": 0, **server})
        # Built like the daemon builds it (streamer/daemon.py), with its memory window.
        self.bus = Bus(max_finals=cfg.server.history_finals, max_age=cfg.server.history_seconds)
        self.streams = list(streams)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="scripted-server", daemon=True)
        self.thread.start()
        sinks, _ = asyncio.run_coroutine_threadsafe(start(self.bus, cfg, self.streams), self.loop).result(30)
        self.sinks: Sinks = sinks
        port = sinks.server_port
        assert port is not None
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def publish(self, *events: BusEvent) -> None:
        for ev in events:
            self.bus.publish(ev)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.sinks.close(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class Script:
    """Protocol-2 events for one stream: utterances settle as several finals, partials carry the tail."""

    def __init__(self, stream: str = "main", lang: str | None = "en") -> None:
        self.stream = stream
        self.lang = lang
        self.seq = 1
        self.utterance = 0
        self.rev = 0
        self.t = 1.0

    def partial(self, text: str, stable: str = "") -> Partial:
        self.rev += 1
        return Partial(
            stream=self.stream,
            utterance=self.utterance,
            rev=self.rev,
            seq=self.seq,
            text=text,
            stable=stable,
            start=self.t,
            end=self.t + 0.5,
            lang=self.lang,
            emitted_at=self.t + 0.6,
        )

    def final(self, text: str, *, last: bool = True) -> Final:
        self.rev += 1
        words = text.split()
        step = 0.3
        ev = Final(
            stream=self.stream,
            utterance=self.utterance,
            rev=self.rev,
            seq=self.seq,
            last=last,
            text=text,
            stable=text,
            start=self.t,
            end=self.t + step * len(words),
            lang=self.lang,
            emitted_at=self.t + step * len(words) + 0.5,
            words=[
                Word(word=" " + w, start=self.t + i * step, end=self.t + (i + 0.8) * step, probability=0.9)
                for i, w in enumerate(words)
            ],
        )
        self.seq += 1
        self.t += step * len(words)
        if last:
            self.utterance += 1
            self.rev = 0
            self.t += 1.0
        return ev
