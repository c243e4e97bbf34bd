"""`streamer run`: one stream from the configured source to every configured sink.

The asyncio loop in the main thread owns the network sinks; the stream runs in its own threads
and hands events to the Bus. At the end of a file or stdin the daemon waits for the last final,
lets the sinks flush it (MQTT outbox, transcript files, WebSocket clients) and exits 0; SIGINT or
SIGTERM stop the source and shut down the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from streamer import __version__
from streamer.bus import Bus
from streamer.config import Settings
from streamer.decode.engine import DecodeEngine
from streamer.errors import UserError
from streamer.pipeline import Stream
from streamer.sinks.console import ConsoleSink

log = logging.getLogger(__name__)


def main(settings: Settings, args: argparse.Namespace) -> int:
    from streamer.audio import open_source

    source = open_source(settings.source.spec, settings)  # a bad file fails before the model loads
    engine = DecodeEngine.from_settings(settings)
    try:
        return asyncio.run(_serve(settings, args, source, engine))
    finally:
        engine.close()


async def _serve(settings: Settings, args: argparse.Namespace, source: object, engine: DecodeEngine) -> int:
    from streamer.audio.source import Source

    assert isinstance(source, Source)
    bus = Bus(max_finals=settings.server.history_finals, max_age=settings.server.history_seconds)
    bus.add_stream(settings.stream)
    stream = Stream(settings, source, engine, bus.publish)
    console = ConsoleSink(jsonl=getattr(args, "jsonl", False))
    bus.subscribe(console)
    sinks = None
    try:
        from streamer.sinks import SinkContext, start_sinks
    except ImportError:  # pragma: no cover - only while the network sinks are not installed
        start_sinks = None  # type: ignore[assignment]
    if start_sinks is not None:
        try:
            sinks = await start_sinks(
                SinkContext(
                    settings=settings,
                    bus=bus,
                    streams={stream.name: stream},
                    model=engine.model_name,
                    version=__version__,
                )
            )
        except OSError as e:
            raise UserError(
                f"cannot listen on {settings.server.host}:{settings.server.port}: {e.strerror or e}"
            ) from None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on the main thread
            loop.add_signal_handler(sig, stream.stop)
    stream.start()
    log.info("stream %s: %s -> model %s", stream.name, source.description, engine.model_name)
    try:
        while not stream.join(timeout=0):
            await asyncio.sleep(0.1)
    finally:
        if sinks is not None:
            await sinks.close()
        await asyncio.to_thread(console.close)  # bounded: a stuck stdout does not hold the exit
    if stream.error:
        print(f"streamer: {stream.error}", file=sys.stderr)
        return 1
    return 0
