"""`/ingest?stream=NAME`: a WebSocket that feeds audio into a stream whose source is `ingest`.

Frames are binary messages of 16 kHz mono signed 16-bit little-endian PCM (an even number of
bytes, at most `server.ingest_max_frame`); text messages are refused. The route needs
`server.ingest_token` (Authorization: Bearer or ?token=), which is separate from the read token:
whoever may read captions may not inject audio. Without an ingest token the route is off (403).

Limits, and why: a frame larger than `ingest_max_frame` is closed with 1009 (memory per message);
audio sent faster than real time beyond `ingest_burst` seconds is closed with 1008 (a client
must not push an hour of audio into a live stream's ring, which would overwrite it); one client
per stream at a time (1013 for the second), since two microphones mixed into one stream would
caption neither. When the client goes away the stream's open utterance ends with a final.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from aiohttp import WSMsgType, web

from streamer import metrics
from streamer.audio.ingest import IngestBusy, IngestPacer, IngestSource
from streamer.sinks.access import token_ok
from streamer.sinks.wsguard import StrictWebSocketResponse

if TYPE_CHECKING:
    from streamer.sinks.context import SinkContext
    from streamer.sinks.server import CaptionServer

log = logging.getLogger(__name__)

CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_TRY_AGAIN = 1013


class IngestRoute:
    def __init__(self, ctx: SinkContext, server: CaptionServer) -> None:
        self.ctx = ctx
        self.server = server
        self.cfg = ctx.settings.server

    def mount(self) -> None:
        self.server.app.router.add_get("/ingest", self._ingest)

    def _refuse(self, status: int, message: str, reason: str) -> web.Response:
        metrics.INGEST_REJECTED.labels(reason).inc()
        return web.json_response({"error": message}, status=status)

    async def _ingest(self, request: web.Request) -> web.StreamResponse:
        token = self.cfg.ingest_token
        if token is None:
            return self._refuse(403, "audio ingest is off (set server.ingest_token)", "off")
        if not token_ok(token, request.headers, request.query_string):
            return self._refuse(
                401, "missing or wrong ingest token (Authorization: Bearer or ?token=)", "token"
            )
        names = parse_qs(request.query_string).get("stream", [])
        name = names[-1] if names else None
        stream = self.ctx.streams.get(name) if name else None
        source = getattr(stream, "source", None)
        if not isinstance(source, IngestSource):
            takers = [
                n for n, s in self.ctx.streams.items() if isinstance(getattr(s, "source", None), IngestSource)
            ]
            return self._refuse(
                404, f"no stream {name!r} takes ingest (streams with source 'ingest': {takers})", "stream"
            )
        # aiohttp refuses a message of max_msg_size bytes or more; the limit here is the largest
        # frame allowed, so one more (and the explicit check below, whatever aiohttp does).
        ws = StrictWebSocketResponse(
            max_msg_size=self.cfg.ingest_max_frame + 1, heartbeat=self.cfg.ping_interval
        )
        if not ws.can_prepare(request).ok:
            return self._refuse(426, "this route is for WebSocket upgrades only", "not_websocket")
        await ws.prepare(request)
        peer = str(request.remote)
        try:
            source.connect(peer)
        except IngestBusy as e:
            metrics.INGEST_REJECTED.labels("busy").inc()
            await ws.close(code=CLOSE_TRY_AGAIN, message=str(e).encode())
            return ws
        log.info("stream %s: ingest from %s", name, peer)
        pacer = IngestPacer(self.cfg.ingest_burst)
        try:
            async for msg in ws:
                if msg.type is WSMsgType.BINARY:
                    data: bytes = msg.data
                    if len(data) > self.cfg.ingest_max_frame:
                        metrics.INGEST_REJECTED.labels("too_big").inc()
                        await ws.close(code=CLOSE_TOO_BIG, message=b"frame over server.ingest_max_frame")
                        break
                    if len(data) % 2:
                        metrics.INGEST_REJECTED.labels("odd_frame").inc()
                        await ws.close(
                            code=CLOSE_UNSUPPORTED_DATA, message=b"PCM16 frames have an even length"
                        )
                        break
                    if not pacer.allow(len(data) // 2, time.monotonic()):
                        metrics.INGEST_REJECTED.labels("too_fast").inc()
                        await ws.close(code=CLOSE_POLICY, message=b"audio sent faster than real time")
                        break
                    source.push(data)
                    metrics.INGEST_BYTES.labels(name).inc(len(data))
                elif msg.type is WSMsgType.TEXT:
                    metrics.INGEST_REJECTED.labels("text").inc()
                    await ws.close(code=CLOSE_UNSUPPORTED_DATA, message=b"send binary PCM16 frames")
                    break
                elif msg.type is WSMsgType.ERROR:  # e.g. a frame over ingest_max_frame (1009)
                    metrics.INGEST_REJECTED.labels("error").inc()
                    break
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            source.disconnect()
            log.info("stream %s: ingest client %s left", name, peer)
        return ws
