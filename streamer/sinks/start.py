"""Start the configured sinks on the running loop, and close them: `start_sinks` -> `Sinks`.

`start_sinks` starts the WebSocket/HTTP server (server.enabled), the MQTT publisher (mqtt.url) and
the transcript writer (transcripts.dir). Each subscribes to the bus with a callback that only hands
the event over (to the loop or to the writer thread) and returns, so no sink can slow the
pipeline. `Sinks.close()` flushes them all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from streamer.api.http import FileApi
from streamer.sinks.context import SinkContext
from streamer.sinks.files import TranscriptWriter
from streamer.sinks.ingest import IngestRoute
from streamer.sinks.mqtt import MqttSink
from streamer.sinks.server import CaptionServer

log = logging.getLogger(__name__)


class Sinks:
    """The running sinks; `close()` flushes and stops them."""

    def __init__(self) -> None:
        self.server: CaptionServer | None = None
        self.mqtt: MqttSink | None = None
        self.files: TranscriptWriter | None = None

    @property
    def server_port(self) -> int | None:
        return self.server.port if self.server is not None else None

    async def close(self) -> None:
        """Flush everything the bus delivered so far: files, MQTT outbox, WebSocket queues."""
        closing: list[Awaitable[None]] = []
        if self.files is not None:
            closing.append(asyncio.to_thread(self.files.close))  # joins the writer thread
        if self.mqtt is not None:
            closing.append(self.mqtt.close())
        if self.server is not None:
            closing.append(self.server.close())
        # Concurrently: a broker that is down must not hold back the WebSocket clients' last finals.
        results = await asyncio.gather(*closing, return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                log.error("closing a sink failed: %s", r)


async def start_sinks(ctx: SinkContext) -> Sinks:
    """Start the configured sinks on the running loop (raises ConfigError for bad settings)."""
    s = ctx.settings
    for name in ctx.streams:
        ctx.bus.add_stream(name)
    sinks = Sinks()

    def status_extra() -> dict[str, Any]:
        extra: dict[str, Any] = {"mqtt": sinks.mqtt.state() if sinks.mqtt is not None else {"enabled": False}}
        if api is not None:
            extra["api"] = api.status()
        return extra

    # Construct (which validates the settings) before starting anything.
    if s.mqtt.url:
        sinks.mqtt = MqttSink(
            s.mqtt, ctx.bus, streams=list(ctx.streams) or [s.stream], model=ctx.model, version=ctx.version
        )
    if s.transcripts.dir is not None:
        sinks.files = TranscriptWriter(s.transcripts, ctx.bus, layout=s.layout.rules())
    api: FileApi | None = None
    if s.server.enabled:
        sinks.server = CaptionServer(ctx, status_extra=status_extra)
        if s.api.enabled and ctx.engine is not None:
            api = FileApi(s, ctx.engine, sinks.server)
    try:
        # The server first: a port already in use is the likeliest failure, and it should come
        # before anything has connected to a broker or created files.
        if sinks.server is not None:
            IngestRoute(ctx, sinks.server).mount()  # before start(), like the file API
            if api is not None:
                api.mount()  # before start(): the static catch-all route is added last
            await sinks.server.start()
            if api is not None:
                await api.start()
        if sinks.mqtt is not None:
            sinks.mqtt.start()
        if sinks.files is not None:
            sinks.files.start()
    except BaseException:
        await sinks.close()
        raise
    return sinks
