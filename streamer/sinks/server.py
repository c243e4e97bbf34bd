"""WebSocket and HTTP on one port, served by aiohttp.

Routes: `/ws` (WebSocket captions), `/` and the page's static files (clients/web), `/health`,
`/metrics`, `/streams`, `/transcript/{stream}.{txt|srt|vtt|json|jsonl}`, and whatever extra
routes the daemon adds (the OpenAI-style file API, streamer/api/http.py; audio ingest,
streamer/sinks/ingest.py). See docs/protocol.md.

Why aiohttp: the server first used websockets' asyncio server with HTTP routes through its
`process_request` hook, which sees only a request line and headers - no request body, no
multipart, no streamed response. Uploads and server-sent events need a real HTTP server, and
aiohttp is one maintained library that does HTTP/1.1 (keep-alive, pipelining, 405 for other
methods), WebSocket, streaming multipart parsing (an upload goes to disk chunk by chunk, never
whole into memory) and streamed responses, on the asyncio loop the daemon already runs, on one
port. An ASGI stack (Starlette on uvicorn) would put every WebSocket send behind the ASGI
message interface, a coroutine per client per event; here the fan-out keeps its fast path (below).

Threading: bus callbacks arrive on a stream thread and only hand the event to the loop
(`call_soon_threadsafe`). On the loop the event is serialised and framed once and pushed into
every interested client's bounded `ClientQueue`; while a client's socket keeps up, the frame is
written straight to its transport (no task switch); otherwise the client's own sender task waits
for the socket to drain, so a slow socket only ever fills its own queue, and the queue policy
(clients.py) decides what to drop and when to disconnect.

Access (access.py): `Host` must name this daemon (DNS rebinding) in every request form (a request
without `Host` is refused, an absolute-form request line is judged by the name in it too),
browsers' `Origin` must be the daemon's own or in `server.allowed_origins`, and the token guards
`/ws`, `/metrics`, `/transcript/...` and the file API. One address may hold at most
`server.max_clients_per_address` WebSocket clients, so one local process cannot take every
viewer slot. Client frames must be masked (wsguard.py, RFC 6455 §5.1).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import json
import logging
import mimetypes
import os
import re
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from aiohttp import WSMsgType, web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CONTENT_TYPE_LATEST
from websockets.frames import Frame, Opcode

from streamer import metrics
from streamer.events import Final, Hello, Partial
from streamer.sinks import formats, health
from streamer.sinks.access import (
    WILDCARD_HOSTS,
    address_key,
    bound_names,
    host_ok,
    is_loopback,
    origin_ok,
    target_host,
    token_ok,
)
from streamer.sinks.clients import CLOSE_TOO_SLOW, ClientQueue, Item, Kind, Push, too_slow_reason
from streamer.sinks.wsguard import StrictWebSocketResponse

# One id per daemon process: `seq` restarts with it (see Hello.session).
SESSION_ID = os.urandom(8).hex()

if TYPE_CHECKING:
    from streamer.bus import BusEvent
    from streamer.sinks.context import SinkContext

log = logging.getLogger(__name__)

CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_POLICY = 1008
CLOSE_TRY_AGAIN = 1013
MAX_CONTROL_MESSAGE = 1024
WRITE_HIGH = 2**15  # bytes buffered in the transport before a client's sender must wait for drain
HEADER_TIMEOUT = 10.0  # a connection that has not sent one whole request head by then is closed
KEEPALIVE_TIMEOUT = 30.0  # an idle keep-alive connection (or a slow second request head) is closed
MAX_STATIC_NAME = 255  # longer names cannot be files (NAME_MAX); answered 404 without a syscall
_STATIC_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")
# What the pages are made of; anything else in the folder (its __init__.py) is not served.
_STATIC_SUFFIXES = (".html", ".js", ".css")
_STREAM_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# A final's seq: ASCII digits only (str.isdigit() also takes '²', which int() refuses) and at most
# 18 of them, so int() never meets Python's 4300-digit limit and the value fits any JSON reader.
_SINCE = re.compile(r"[0-9]{1,18}")


def default_web_dir() -> Path:
    """The pages shipped with the package (clients/web, installed as `streamer.web`)."""
    return Path(str(importlib.resources.files("streamer.web")))


class _ClientErrorFilter(logging.Filter):
    """Malformed requests (a 20 kB request line, garbage) and peers that hang up mid-request are
    the client's doing: aiohttp logs them at ERROR with a traceback; they become one bounded line
    here (DEBUG for garbage, INFO for a lost connection, which an operator may want to see)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= (exc.code or 0) < 500:
            log.debug("refused a malformed HTTP request: %s", _shown(str(exc.message), 120))
            return False
        if isinstance(exc, ConnectionError):
            log.info("a client went away mid-request: %s", _shown(str(exc) or type(exc).__name__, 120))
            return False
        return True


_http_log = logging.getLogger("streamer.sinks.http")
_http_log.addFilter(_ClientErrorFilter())

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RequestError(Exception):
    """A request that is answered with an HTTP error (before any upgrade)."""

    def __init__(self, status: int, message: str, reason: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason  # label for metrics.WS_REJECTED


@dataclass(frozen=True)
class WsParams:
    stream: str
    since: int | None
    partials: bool


def _flag(value: str, name: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on", ""):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise RequestError(
        400, f"query parameter '{name}' must be true or false, got {_shown(value, 40)!r}", "bad_query"
    )


def parse_ws_query(query: str, streams: list[str], default_stream: str) -> WsParams:
    """Validate `/ws` query parameters (pure): stream, since, partials."""
    q = parse_qs(query, keep_blank_values=True)
    stream = q.get("stream", [default_stream])[-1] or default_stream
    if stream not in streams:
        raise RequestError(
            404, f"unknown stream {_shown(stream, 64)!r}; streams: {', '.join(streams)}", "unknown_stream"
        )
    since: int | None = None
    if "since" in q and q["since"][-1] != "":
        raw = q["since"][-1]
        if not _SINCE.fullmatch(raw):
            raise RequestError(
                400, f"query parameter 'since' must be a final seq >= 0, got {_shown(raw, 40)!r}", "bad_query"
            )
        since = int(raw)
    partials = _flag(q["partials"][-1], "partials") if "partials" in q else True
    return WsParams(stream, since, partials)


def gap_message(stream: str, since: int, first_seq: int) -> str:
    """Control message: finals `since+1 .. first_seq-1` are no longer kept in memory."""
    return json.dumps(
        {
            "type": "gap",
            "stream": stream,
            "since": since,
            "first_seq": first_seq,
            "transcript": f"/transcript/{stream}.jsonl",
        }
    )


def resolve_token(configured: str | None) -> str | None:
    """server.token (or STREAMER_SERVER__TOKEN), else STREAMER_TOKEN; empty means none."""
    token = configured or os.environ.get("STREAMER_TOKEN") or None
    return token


def _response(
    status: int, body: bytes | str, content_type: str, extra: dict[str, str] | None = None
) -> web.Response:
    data = body.encode() if isinstance(body, str) else body
    headers = {"Content-Type": content_type, "Cache-Control": "no-store", **(extra or {})}
    return web.Response(status=status, body=data, headers=headers)


def _json_response(status: int, doc: Any) -> web.Response:
    return _response(status, json.dumps(doc, ensure_ascii=False, indent=1) + "\n", "application/json")


def _error(status: int, message: str) -> web.Response:
    extra = {"WWW-Authenticate": 'Bearer realm="streamer"'} if status == 401 else None
    return _response(status, message + "\n", "text/plain; charset=utf-8", extra)


def _shown(path: str, limit: int = 80) -> str:
    """A path as it may appear in a message: bounded, so a 8 kB path is not echoed or logged."""
    return path if len(path) <= limit else path[:limit] + "…"


def text_frame(payload: bytes) -> bytes:
    """One unmasked server-to-client text frame: built once per event, written to every client."""
    return Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])


@dataclass(frozen=True)
class _Framed(Item):
    frame: bytes = b""


@dataclass(eq=False)
class _Client:
    ws: web.WebSocketResponse
    transport: asyncio.Transport | None
    peer: str
    params: WsParams
    queue: ClientQueue
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    last_sent: int = 0
    closing: bool = False
    draining: bool = False  # server shutdown: send what is queued, then close 1001
    idle: bool = False  # the sender waits for work: events may be written directly (_write_now)
    sender: asyncio.Task[None] | None = None


class CaptionServer:
    def __init__(self, ctx: SinkContext, *, status_extra: Callable[[], dict[str, Any]] | None = None) -> None:
        self.ctx = ctx
        self.cfg = ctx.settings.server
        self.bus = ctx.bus
        self.token = resolve_token(self.cfg.token)
        self.web_dir = Path(self.cfg.web_dir) if self.cfg.web_dir else default_web_dir()
        self._status_extra = status_extra
        self._clients: dict[str, set[_Client]] = {}
        self._n_clients = 0
        self._per_address: dict[str, int] = {}  # address_key -> WebSocket clients connected
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._started = time.monotonic()
        self._closing = False
        self.port: int | None = None
        self._kicks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        wildcard = self.cfg.host in WILDCARD_HOSTS
        self._host_names = bound_names(self.cfg.host, _machine_names() if wildcard else ())
        # Routes other components add (the file API) before start(); the static catch-all comes last.
        self.app = web.Application(middlewares=[self._access_middleware])
        self.app.on_response_prepare.append(self._server_header)
        self._public: set[str] = {"/health", "/streams"}
        self.on_close: list[Callable[[], Awaitable[None]]] = []

    def require_token(self, request: web.Request) -> None:
        if not token_ok(self.token, request.headers, request.query_string):
            raise RequestError(
                401, "missing or wrong access token (Authorization: Bearer or ?token=)", "token"
            )

    # --- lifecycle -------------------------------------------------------------------------
    async def start(self) -> int:
        self._loop = asyncio.get_running_loop()
        host = self.cfg.host
        if not is_loopback(host) and self.token is None:
            log.warning(
                "server bound to non-loopback address %s without an access token: anyone who can reach "
                "it can read the captions (set server.token, STREAMER_TOKEN or --token)",
                host,
            )
        r = self.app.router
        r.add_get("/ws", self._ws)
        r.add_get("/health", self._health)
        r.add_get("/metrics", self._metrics)
        r.add_get("/streams", self._streams)
        r.add_get("/transcript/{name}", self._transcript)
        r.add_get("/{path:.*}", self._static)
        self._runner = web.AppRunner(
            self.app,
            access_log=None,  # health probes every few seconds; metrics count what matters
            handle_signals=False,
            shutdown_timeout=5.0,
            logger=_http_log,
            keepalive_timeout=KEEPALIVE_TIMEOUT,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host or None, self.cfg.port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await self._runner.cleanup()
            self._runner = None
            raise
        self.port = int(self._runner.addresses[0][1])
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_slow_connections())
        self._unsubscribe = self.bus.subscribe(self._on_bus_event)
        log.info("captions on ws://%s:%s/ws, page on http://%s:%s/", host, self.port, host, self.port)
        return self.port

    async def close(self) -> None:
        """Flush every client's queue, close them with 1001, stop listening."""
        if self._unsubscribe:
            self._unsubscribe()
        await asyncio.sleep(0)  # let dispatches already scheduled by the bus run first
        self._closing = True
        senders: list[asyncio.Task[None]] = []
        for clients in self._clients.values():
            for c in clients:
                c.draining = True
                c.wake.set()
                if c.sender is not None:
                    senders.append(c.sender)
        if senders:
            await asyncio.wait(senders, timeout=5.0)
        if self._sweeper is not None:
            self._sweeper.cancel()
        for hook in self.on_close:
            with contextlib.suppress(Exception):
                await hook()
        if self._runner is not None:
            await self._runner.cleanup()
        for t in list(self._kicks):
            t.cancel()

    async def _sweep_slow_connections(self) -> None:
        """Close connections that never finish their first request head (slowloris).

        aiohttp has no timeout for reading a request's head; websockets' server had one (10 s).
        Idle keep-alive connections are closed by aiohttp itself (KEEPALIVE_TIMEOUT).
        """
        first_seen: dict[int, float] = {}
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(HEADER_TIMEOUT / 4)
            server = self._runner.server if self._runner is not None else None
            if server is None:
                continue
            now = loop.time()
            alive: dict[int, float] = {}
            for handler in server.connections:
                key = id(handler)
                seen = first_seen.get(key, now)
                if getattr(handler, "_request_count", 1) == 0 and now - seen >= HEADER_TIMEOUT:
                    handler.force_close()
                    continue
                alive[key] = seen
            first_seen = alive

    @property
    def client_count(self) -> int:
        return self._n_clients

    # --- bus -> clients ----------------------------------------------------------------------
    def _on_bus_event(self, event: BusEvent) -> None:
        # Called on the pipeline's thread: hand over and return at once.
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed after the check
            loop.call_soon_threadsafe(self._dispatch, event)

    def _dispatch(self, event: BusEvent) -> None:
        if isinstance(event, Hello):
            return
        clients = self._clients.get(event.stream)
        if not clients:
            return
        # Serialised, encoded and framed once for all clients.
        payload = event.to_json().encode()
        frame = text_frame(payload)
        if isinstance(event, Final):
            item = _Framed(Kind.FINAL, payload, event.seq, event.rev, frame)
        elif isinstance(event, Partial):
            item = _Framed(Kind.PARTIAL, payload, event.seq, event.rev, frame)
        else:
            item = _Framed(Kind.OTHER, payload, frame=frame)
        for c in list(clients):
            if item.kind is Kind.PARTIAL and not c.params.partials:
                continue
            self._push(c, item)

    def _push(self, c: _Client, item: Item) -> None:
        if c.closing:
            return
        result = c.queue.push(item)
        if result.dropped_partials:
            metrics.WS_DROPPED_PARTIALS.inc(result.dropped_partials)
        if result.outcome is Push.OVERFLOW:
            metrics.WS_SLOW_CLOSED.inc()
            log.info("closing slow WebSocket client %s: queue full", c.peer)
            self._kick(c, CLOSE_TOO_SLOW, too_slow_reason(c.last_sent))
            return
        if c.idle:
            self._write_now(c)
        else:
            c.wake.set()

    def _write_now(self, c: _Client) -> None:
        """Fast path: the sender is parked and the socket keeps up, so write without a task switch.

        Waking one sender task per client per event was most of the fan-out's cost. While the
        sender waits on `wake` nothing else is writing to this connection, so a synchronous write
        of the prebuilt frame keeps the order (aiohttp's own writes - pongs, the close frame - are
        synchronous too, so frames never interleave). As soon as the transport buffers more than
        WRITE_HIGH bytes, the sender takes over and waits for drain.
        """
        transport = c.transport
        while True:
            if (
                c.ws.closed
                or transport is None
                or transport.is_closing()
                or transport.get_write_buffer_size() > WRITE_HIGH
            ):
                c.wake.set()
                return
            item = c.queue.pop()
            if item is None:
                return
            transport.write(item.frame if isinstance(item, _Framed) else text_frame(_bytes(item.payload)))
            if item.kind is Kind.FINAL:
                c.last_sent = item.seq

    def _kick(self, c: _Client, code: int, reason: str) -> None:
        c.closing = True
        c.queue.clear()
        self._unregister(c)
        if c.sender is not None:
            c.sender.cancel()
        task = asyncio.get_running_loop().create_task(self._close_ws(c, code, reason))
        self._kicks.add(task)
        task.add_done_callback(self._kicks.discard)

    async def _close_ws(self, c: _Client, code: int, reason: str) -> None:
        try:
            await asyncio.wait_for(c.ws.close(code=code, message=reason.encode()), timeout=30.0)
        except (asyncio.TimeoutError, ConnectionError, RuntimeError):
            if c.transport is not None:
                c.transport.close()

    def _register(self, c: _Client) -> None:
        self._clients.setdefault(c.params.stream, set()).add(c)
        self._n_clients += 1
        key = address_key(c.peer)
        self._per_address[key] = self._per_address.get(key, 0) + 1
        metrics.WS_CLIENTS.set(self._n_clients)

    def _unregister(self, c: _Client) -> None:
        group = self._clients.get(c.params.stream)
        if group is not None and c in group:
            group.discard(c)
            self._n_clients -= 1
            key = address_key(c.peer)
            left = self._per_address.get(key, 1) - 1
            if left > 0:
                self._per_address[key] = left
            else:
                self._per_address.pop(key, None)
            metrics.WS_CLIENTS.set(self._n_clients)

    def _address_full(self, peer: str) -> str | None:
        """Why one more WebSocket client from `peer` is refused (None: it is not)."""
        limit = self.cfg.max_clients_per_address
        if limit and self._per_address.get(address_key(peer), 0) >= limit:
            return f"too many clients from one address (server.max_clients_per_address = {limit})"
        return None

    async def _server_header(self, request: web.Request, response: web.StreamResponse) -> None:
        # Our name and version, as before the move, rather than aiohttp's and Python's versions.
        response.headers["Server"] = f"streamer/{self.ctx.version}"

    # --- access --------------------------------------------------------------------------------
    def _check_host(self, request: web.Request) -> None:
        host = request.headers.get("Host")
        if host is None and "*" not in self.cfg.allowed_hosts:
            raise RequestError(400, "a Host header is required (it must name this server)", "host")
        named = [host]
        target = target_host(request.raw_path)
        if target is not None:
            named.append(target)  # absolute-form: the name in the request line counts too
        for name in named:
            if not host_ok(name, self._host_names, self.cfg.allowed_hosts):
                raise RequestError(
                    403,
                    f"host {_shown(name or '')!r} is not a name of this server (server.allowed_hosts)",
                    "host",
                )

    @web.middleware
    async def _access_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        host = request.headers.get("Host")
        is_ws = request.path == "/ws"
        try:
            self._check_host(request)
            origin = request.headers.get("Origin")
            if not origin_ok(self.cfg.allowed_origins, origin, host):
                raise RequestError(
                    403, f"origin {_shown(origin or '')!r} is not allowed (server.allowed_origins)", "origin"
                )
            return await handler(request)
        except RequestError as e:
            if is_ws:
                metrics.WS_REJECTED.labels(e.reason).inc()
            return _error(e.status, e.message)

    # --- WebSocket -----------------------------------------------------------------------------
    def _stream_names(self) -> list[str]:
        names = list(self.ctx.streams)
        for s in self.bus.streams:
            if s not in names:
                names.append(s)
        return names or [self.ctx.settings.stream]

    def _hello(self) -> Hello:
        d = self.ctx.settings.decoder
        return Hello(
            server=self.ctx.version,
            streams=self._stream_names(),
            model=self.ctx.model,
            language=d.language,
            task=d.task,
            session=SESSION_ID,
        )

    def _check_upgrade(self, request: web.Request) -> WsParams:
        self.require_token(request)
        if self._closing:
            raise RequestError(503, "server shutting down", "shutdown")
        if self._n_clients >= self.cfg.max_clients:
            raise RequestError(
                503, f"too many clients (server.max_clients = {self.cfg.max_clients})", "max_clients"
            )
        full = self._address_full(str(request.remote))
        if full is not None:
            # 429, not 503: the server has room, this address has had its share.
            metrics.ADDRESS_LIMIT_REFUSED.labels("ws").inc()
            raise RequestError(429, full, "per_address")
        names = self._stream_names()
        return parse_ws_query(request.query_string, names, names[0])

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        params = self._check_upgrade(request)
        ws = StrictWebSocketResponse(
            heartbeat=self.cfg.ping_interval,
            max_msg_size=MAX_CONTROL_MESSAGE,
            compress=False,  # per-client zlib was the largest CPU cost of the fan-out
            writer_limit=WRITE_HIGH,
            timeout=5.0,
        )
        if not ws.can_prepare(request).ok:
            raise RequestError(426, "this route is for WebSocket upgrades only", "not_websocket")
        transport = request.transport
        self._limit_send_buffer(transport)
        peer = str(request.remote)
        await ws.prepare(request)
        if self._closing:
            await ws.close(code=CLOSE_GOING_AWAY, message=b"server shutting down")
            return ws
        if self._n_clients >= self.cfg.max_clients:
            # Checked before the upgrade too; a burst of upgrades can pass that check together.
            metrics.WS_REJECTED.labels("max_clients").inc()
            reason = f"too many clients (server.max_clients = {self.cfg.max_clients})"
            await ws.close(code=CLOSE_TRY_AGAIN, message=reason.encode())
            return ws
        full = self._address_full(peer)
        if full is not None:  # as above: upgrades from one address racing past the first check
            metrics.WS_REJECTED.labels("per_address").inc()
            metrics.ADDRESS_LIMIT_REFUSED.labels("ws").inc()
            await ws.close(code=CLOSE_TRY_AGAIN, message=full.encode())
            return ws
        # Snapshot the finals and register for live events in the same loop step, with no await
        # in between: a final is then either in the snapshot or dispatched to this client later
        # (or both, which the queue's seq check removes) - never neither.
        last = self.bus.last_seq(params.stream)
        preface: list[str] = []
        if params.since is not None and params.since <= last:
            start = params.since
            oldest = self.bus.oldest_seq(params.stream)
            if start < oldest - 1:
                # Older than the memory window (server.history_*): say so, send what is kept.
                preface.append(gap_message(params.stream, start, oldest))
        else:
            # A new client, or a `since` from an earlier session (seq restarts at 1 per session).
            start = max(0, last - self.cfg.replay_finals)
        replay = self.bus.finals(params.stream, start)
        baseline = replay[-1].seq if replay else start
        c = _Client(ws, transport, peer, params, ClientQueue(self.cfg.client_queue, last_final_seq=baseline))
        self._register(c)
        c.sender = asyncio.get_running_loop().create_task(self._send_loop(c, replay, preface))
        try:
            while True:
                msg = await ws.receive()
                if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                    break
                refusal = self._control(c, msg.data if msg.type is WSMsgType.TEXT else b"")
                if refusal is not None:
                    metrics.WS_REJECTED.labels("bad_message").inc()
                    self._unregister(c)
                    c.closing = True
                    if c.sender is not None:
                        c.sender.cancel()
                    await ws.close(code=refusal[0], message=refusal[1].encode())
                    break
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._unregister(c)
            if c.sender is not None and not c.sender.done() and not c.draining:
                c.sender.cancel()
            if c.draining and c.sender is not None:
                # Server shutdown: the handler stays until the sender said 1001.
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(asyncio.shield(c.sender), timeout=5.0)
        return ws

    def _limit_send_buffer(self, transport: asyncio.Transport | None) -> None:
        # Linux autotunes a socket's send buffer up to megabytes (tcp_wmem). For a client that
        # stopped reading that is memory held per client, and it hides the stall from the queue
        # policy for a long time; our per-client queue is the buffer we mean to have.
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.cfg.send_buffer)

    def _control(self, c: _Client, message: str | bytes) -> tuple[int, str] | None:
        """Answer one client message; returns (close code, reason) when it is refused."""
        if isinstance(message, bytes):
            return CLOSE_UNSUPPORTED_DATA, "binary messages are not supported"
        try:
            doc = json.loads(message)
        except ValueError:
            doc = None
        if not isinstance(doc, dict) or doc.get("type") != "ping":
            return CLOSE_POLICY, 'unsupported message: only {"type": "ping"} is accepted'
        reply: dict[str, Any] = {"type": "pong"}
        if isinstance(doc.get("id"), (str, int)) and len(str(doc["id"])) <= 64:
            reply["id"] = doc["id"]
        reply["last_seq"] = self.bus.last_seq(c.params.stream)
        self._push(c, Item(Kind.OTHER, json.dumps(reply).encode()))
        return None

    async def _send_loop(self, c: _Client, replay: list[Final], preface: list[str]) -> None:
        ws = c.ws
        try:
            await ws.send_str(self._hello().to_json())
            for message in preface:
                await ws.send_str(message)
            for f in replay:
                await ws.send_str(f.to_json())
                c.last_sent = f.seq
            while True:
                item = c.queue.pop()
                if item is None:
                    if c.draining:
                        await ws.close(code=CLOSE_GOING_AWAY, message=b"server shutting down")
                        return
                    c.wake.clear()
                    c.idle = True
                    try:
                        await c.wake.wait()
                    finally:
                        c.idle = False
                    continue
                await ws.send_frame(_bytes(item.payload), WSMsgType.TEXT)
                if item.kind is Kind.FINAL:
                    c.last_sent = item.seq
        except (ConnectionError, RuntimeError):
            pass  # the peer went away; the handler unregisters the client

    # --- HTTP ----------------------------------------------------------------------------------
    async def _metrics(self, request: web.Request) -> web.Response:
        self.require_token(request)
        metrics.WS_CLIENTS.set(self._n_clients)
        return _response(200, metrics.exposition(), CONTENT_TYPE_LATEST)

    async def _streams(self, request: web.Request) -> web.Response:
        out = []
        for name in self._stream_names():
            doc: dict[str, Any] = {"name": name, "finals": self.bus.last_seq(name)}
            stream = self.ctx.streams.get(name)
            if stream is not None:
                h = stream.health()
                doc["state"] = h.get("state")
                doc["source"] = h.get("source")
                source_status = _source_status(stream)
                if source_status is not None:
                    doc["source_status"] = source_status
            doc["clients"] = len(self._clients.get(name, ()))
            out.append(doc)
        return _json_response(200, out)

    async def _health(self, request: web.Request) -> web.Response:
        streams = {name: _with_source_status(s) for name, s in self.ctx.streams.items()}
        extra: dict[str, Any] = {
            "version": self.ctx.version,
            "model": self.ctx.model,
            "clients": self._n_clients,
        }
        if self._status_extra is not None:
            extra.update(self._status_extra())
        status, body = health.evaluate(
            streams,
            stall_timeout=self.cfg.stall_timeout,
            uptime=time.monotonic() - self._started,
            extra=extra,
        )
        return _json_response(status, body)

    async def _transcript(self, request: web.Request) -> web.Response:
        self.require_token(request)
        name = request.match_info["name"]
        stream, _, ext = name.rpartition(".")
        if ext not in formats.FORMATTERS or not _STREAM_NAME.match(stream):
            raise RequestError(
                404, f"no transcript {_shown(name)!r}: use /transcript/STREAM.txt|srt|vtt|json|jsonl", "route"
            )
        if stream not in self._stream_names():
            raise RequestError(404, f"unknown stream {stream!r}", "route")
        finals, missing = self.bus.transcript(stream)
        # Finals that left the memory window come back from the transcript files; without those
        # (transcripts.dir off) the header says where the list starts missing finals.
        extra = {"Streamer-Missing-From": str(missing)} if missing else None
        body = formats.format_as(ext, finals, self.ctx.settings.layout.rules())
        return _response(200, body, formats.MEDIA_TYPES[ext], extra)

    async def _static(self, request: web.Request) -> web.Response:
        path = request.path
        name = "index.html" if path in ("/", "") else path.lstrip("/")
        if len(name) > MAX_STATIC_NAME - len(".html") or not _STATIC_NAME.match(name):
            raise RequestError(404, f"not found: {_shown(path)}", "route")
        file = self.web_dir / name
        try:
            if "." not in name and not file.is_file():
                file = self.web_dir / f"{name}.html"  # /overlay, /display: pages without the extension
                name = file.name
            if not file.is_file() or not name.endswith(_STATIC_SUFFIXES):
                raise RequestError(404, f"not found: {_shown(path)}", "route")
            data = file.read_bytes()
        except OSError:
            raise RequestError(404, f"not found: {_shown(path)}", "route") from None
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype in ("application/javascript", "text/javascript"):
            ctype += "; charset=utf-8"
        return _response(200, data, ctype)


def _source_status(stream: Any) -> dict[str, Any] | None:
    """What a network source counts itself (RTP: kernel drops, jitter; ingest: gaps): sources
    that have a `status()` report it beside the stream's own health, read at the edge so the
    stream itself needs no field for it."""
    status = getattr(getattr(stream, "source", None), "status", None)
    if not callable(status):
        return None
    try:
        doc = status()
    except Exception:  # a status is a courtesy; /health must answer whatever a source does
        log.debug("source status failed", exc_info=True)
        return None
    return dict(doc) if isinstance(doc, dict) else None


def _with_source_status(stream: Any) -> dict[str, Any]:
    doc = dict(stream.health())
    source_status = _source_status(stream)
    if source_status is not None:
        doc["source_status"] = source_status
    return doc


def _bytes(payload: bytes | str) -> bytes:
    return payload if isinstance(payload, bytes) else payload.encode()


def _machine_names() -> list[str]:
    names = [socket.gethostname()]
    with contextlib.suppress(OSError):
        names.append(socket.getfqdn())
    return names
