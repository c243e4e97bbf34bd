"""WebSocket and HTTP on one port (websockets' asyncio server; HTTP routes via `process_request`).

Routes: `/ws` (WebSocket captions), `/` and the page's static files (clients/web), `/health`,
`/metrics`, `/streams`, `/transcript/{stream}.{txt|srt|vtt|json|jsonl}`. See docs/protocol.md.

Threading: bus callbacks arrive on a stream thread and only hand the event to the loop
(`call_soon_threadsafe`). On the loop the event is serialised once and pushed into every
interested client's bounded `ClientQueue`; each client has its own sender task, so a slow socket
only ever fills its own queue, and the queue policy (clients.py) decides what to drop and when
to disconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hmac
import http
import ipaddress
import json
import logging
import mimetypes
import os
import re
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST
from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from streamer import metrics
from streamer.events import Final, Hello, Partial
from streamer.sinks import formats, health
from streamer.sinks.clients import CLOSE_TOO_SLOW, ClientQueue, Item, Kind, Push, too_slow_reason

# One id per daemon process: `seq` restarts with it (see Hello.session).
SESSION_ID = os.urandom(8).hex()

if TYPE_CHECKING:
    from streamer.bus import BusEvent
    from streamer.sinks import SinkContext

log = logging.getLogger(__name__)
# websockets logs every HTTP request and connection at INFO (health probes every few seconds);
# its own logger is kept at WARNING unless someone configured it.
_ws_log = logging.getLogger("streamer.sinks.websockets")

CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_POLICY = 1008
CLOSE_TRY_AGAIN = 1013
MAX_CONTROL_MESSAGE = 1024
WRITE_HIGH = 2**15  # bytes buffered in the transport before a client's sender must wait for drain
_STATIC_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")
_STREAM_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
DEFAULT_WEB_DIR = Path(__file__).resolve().parents[2] / "clients" / "web"


class RequestError(Exception):
    """A request that is answered with an HTTP error before any upgrade."""

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
    raise RequestError(400, f"query parameter '{name}' must be true or false, got {value!r}", "bad_query")


def parse_ws_query(query: str, streams: list[str], default_stream: str) -> WsParams:
    """Validate `/ws` query parameters (pure): stream, since, partials."""
    q = parse_qs(query, keep_blank_values=True)
    stream = q.get("stream", [default_stream])[-1] or default_stream
    if stream not in streams:
        raise RequestError(404, f"unknown stream {stream!r}; streams: {', '.join(streams)}", "unknown_stream")
    since: int | None = None
    if "since" in q and q["since"][-1] != "":
        raw = q["since"][-1]
        if not raw.isdigit():
            raise RequestError(
                400, f"query parameter 'since' must be a final seq >= 0, got {raw!r}", "bad_query"
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


def token_ok(expected: str | None, headers: Headers, query: str) -> bool:
    if expected is None:
        return True
    offered: list[str] = []
    auth = headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        offered.append(auth[7:].strip())
    offered.extend(parse_qs(query, keep_blank_values=True).get("token", []))
    want = expected.encode()
    # Every offered value is compared, in constant time each, so timing tells nothing.
    ok = False
    for value in offered:
        ok |= hmac.compare_digest(value.encode(), want)
    return ok


def origin_ok(allowed: list[str] | None, origin: str | None) -> bool:
    """A missing Origin (non-browser clients) is allowed: the check protects browsers' users."""
    if allowed is None or origin is None:
        return True
    return origin.rstrip("/") in {o.rstrip("/") for o in allowed}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _response(
    status: int, body: bytes | str, content_type: str, extra: Mapping[str, str] | None = None
) -> Response:
    data = body.encode() if isinstance(body, str) else body
    st = http.HTTPStatus(status)
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Length", str(len(data))),
            ("Content-Type", content_type),
            ("Cache-Control", "no-store"),
        ]
    )
    for k, v in (extra or {}).items():
        headers[k] = v
    return Response(st.value, st.phrase, headers, data)


def _json_response(status: int, doc: Any) -> Response:
    return _response(status, json.dumps(doc, ensure_ascii=False, indent=1) + "\n", "application/json")


def _error(status: int, message: str) -> Response:
    extra = {"WWW-Authenticate": 'Bearer realm="streamer"'} if status == 401 else None
    return _response(status, message + "\n", "text/plain; charset=utf-8", extra)


@dataclass(eq=False)
class _Client:
    ws: ServerConnection
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
        self.web_dir = Path(self.cfg.web_dir) if self.cfg.web_dir else DEFAULT_WEB_DIR
        self._status_extra = status_extra
        self._clients: dict[str, set[_Client]] = {}
        self._n_clients = 0
        self._server: Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._started = time.monotonic()
        self._closing = False
        self.port: int | None = None
        self._kicks: set[asyncio.Task[None]] = set()

    # --- lifecycle -------------------------------------------------------------------------
    async def start(self) -> int:
        self._loop = asyncio.get_running_loop()
        if _ws_log.level == logging.NOTSET and not log.isEnabledFor(logging.DEBUG):
            _ws_log.setLevel(logging.WARNING)
        host = self.cfg.host
        if not is_loopback(host) and self.token is None:
            log.warning(
                "server bound to non-loopback address %s without an access token: anyone who can reach "
                "it can read the captions (set server.token, STREAMER_TOKEN or --token)",
                host,
            )
        self._server = await serve(
            self._handler,
            host,
            self.cfg.port,
            process_request=self._process_request,
            ping_interval=self.cfg.ping_interval,
            ping_timeout=self.cfg.ping_interval,
            close_timeout=5,
            max_size=MAX_CONTROL_MESSAGE,
            max_queue=4,
            server_header=f"streamer/{self.ctx.version}",
            logger=_ws_log,
            # permessage-deflate keeps a zlib context per connection and compresses every event once
            # per client: with hundreds of clients that was the largest CPU cost of the fan-out,
            # for messages of a few hundred bytes.
            compression=None,
        )
        self.port = next(iter(self._server.sockets)).getsockname()[1]
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
        if self._server is not None:
            self._server.close(close_connections=True)
            try:
                await asyncio.wait_for(self._server.wait_closed(), timeout=10.0)
            except asyncio.TimeoutError:
                log.warning("some WebSocket connections did not close in time")
        for t in list(self._kicks):
            t.cancel()

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
        # Serialised and encoded once for all clients, sent as a text frame (send(..., text=True)).
        payload = event.to_json().encode()
        if isinstance(event, Final):
            item = Item(Kind.FINAL, payload, event.seq, event.rev)
        elif isinstance(event, Partial):
            item = Item(Kind.PARTIAL, payload, event.seq, event.rev)
        else:
            item = Item(Kind.OTHER, payload)
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
            log.info("closing slow WebSocket client %s: queue full", c.ws.remote_address)
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
        (websockets' `broadcast`, which never waits for the socket) keeps the order. As soon as the
        transport buffers more than WRITE_HIGH bytes, the sender takes over and waits for drain.
        """
        transport = c.ws.transport
        while True:
            if (
                c.ws.state is not State.OPEN
                or transport is None
                or transport.get_write_buffer_size() > WRITE_HIGH
            ):
                c.wake.set()
                return
            item = c.queue.pop()
            if item is None:
                return
            broadcast([c.ws], item.payload, text=True)
            if item.kind is Kind.FINAL:
                c.last_sent = item.seq

    def _kick(self, c: _Client, code: int, reason: str) -> None:
        c.closing = True
        c.queue.clear()
        self._unregister(c)
        if c.sender is not None:
            c.sender.cancel()
        task = asyncio.get_running_loop().create_task(c.ws.close(code, reason))
        self._kicks.add(task)
        task.add_done_callback(self._kicks.discard)

    def _register(self, c: _Client) -> None:
        self._clients.setdefault(c.params.stream, set()).add(c)
        self._n_clients += 1
        metrics.WS_CLIENTS.set(self._n_clients)

    def _unregister(self, c: _Client) -> None:
        group = self._clients.get(c.params.stream)
        if group is not None and c in group:
            group.discard(c)
            self._n_clients -= 1
            metrics.WS_CLIENTS.set(self._n_clients)

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

    async def _handler(self, ws: ServerConnection) -> None:
        query = urlsplit(ws.request.path if ws.request else "").query
        try:
            params = parse_ws_query(query, self._stream_names(), self._stream_names()[0])
        except RequestError as e:  # validated in process_request already; the streams may have changed
            await ws.close(CLOSE_POLICY, e.message[:120])
            return
        if self._closing:
            await ws.close(CLOSE_GOING_AWAY, "server shutting down")
            return
        self._limit_send_buffer(ws)
        if self._n_clients >= self.cfg.max_clients:
            # Checked in process_request too; a burst of upgrades can pass that check together.
            metrics.WS_REJECTED.labels("max_clients").inc()
            await ws.close(CLOSE_TRY_AGAIN, f"too many clients (server.max_clients = {self.cfg.max_clients})")
            return
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
        c = _Client(ws, params, ClientQueue(self.cfg.client_queue, last_final_seq=baseline))
        self._register(c)
        c.sender = asyncio.get_running_loop().create_task(self._send_loop(c, replay, preface))
        try:
            async for message in ws:
                refusal = self._control(c, message)
                if refusal is not None:
                    metrics.WS_REJECTED.labels("bad_message").inc()
                    self._unregister(c)
                    c.closing = True
                    if c.sender is not None:
                        c.sender.cancel()
                    await ws.close(*refusal)
                    break
        except ConnectionClosed:
            pass
        finally:
            self._unregister(c)
            if c.sender is not None and not c.sender.done() and not c.draining:
                c.sender.cancel()

    def _limit_send_buffer(self, ws: ServerConnection) -> None:
        # Linux autotunes a socket's send buffer up to megabytes (tcp_wmem). For a client that
        # stopped reading that is memory held per client, and it hides the stall from the queue
        # policy for a long time; our per-client queue is the buffer we mean to have.
        sock = ws.transport.get_extra_info("socket") if ws.transport is not None else None
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
            await ws.send(self._hello().to_json())
            for message in preface:
                await ws.send(message)
            for f in replay:
                await ws.send(f.to_json())
                c.last_sent = f.seq
            while True:
                item = c.queue.pop()
                if item is None:
                    if c.draining:
                        await ws.close(CLOSE_GOING_AWAY, "server shutting down")
                        return
                    c.wake.clear()
                    c.idle = True
                    try:
                        await c.wake.wait()
                    finally:
                        c.idle = False
                    continue
                await ws.send(item.payload, text=True)
                if item.kind is Kind.FINAL:
                    c.last_sent = item.seq
        except ConnectionClosed:
            pass

    # --- HTTP ----------------------------------------------------------------------------------
    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        path, query = url.path, url.query
        try:
            if path == "/ws":
                self._check_upgrade(request, query)
                return None  # go on with the WebSocket handshake
            if path == "/health":
                return self._health()
            if path == "/metrics":
                self._require_token(request, query)
                metrics.WS_CLIENTS.set(self._n_clients)
                return _response(200, metrics.exposition(), CONTENT_TYPE_LATEST)
            if path == "/streams":
                return _json_response(200, self._streams_doc())
            if path.startswith("/transcript/"):
                self._require_token(request, query)
                return self._transcript(path[len("/transcript/") :])
            return self._static(path)
        except RequestError as e:
            if path == "/ws":
                metrics.WS_REJECTED.labels(e.reason).inc()
            return _error(e.status, e.message)

    def _require_token(self, request: Request, query: str) -> None:
        if not token_ok(self.token, request.headers, query):
            raise RequestError(
                401, "missing or wrong access token (Authorization: Bearer or ?token=)", "token"
            )

    def _check_upgrade(self, request: Request, query: str) -> None:
        self._require_token(request, query)
        origin = request.headers.get("Origin")
        if not origin_ok(self.cfg.origins, origin):
            raise RequestError(403, f"origin {origin!r} is not allowed", "origin")
        if self._closing:
            raise RequestError(503, "server shutting down", "shutdown")
        if self._n_clients >= self.cfg.max_clients:
            raise RequestError(
                503, f"too many clients (server.max_clients = {self.cfg.max_clients})", "max_clients"
            )
        names = self._stream_names()
        parse_ws_query(query, names, names[0])

    def _streams_doc(self) -> list[dict[str, Any]]:
        out = []
        for name in self._stream_names():
            doc: dict[str, Any] = {"name": name, "finals": self.bus.last_seq(name)}
            stream = self.ctx.streams.get(name)
            if stream is not None:
                h = stream.health()
                doc["state"] = h.get("state")
                doc["source"] = h.get("source")
            doc["clients"] = len(self._clients.get(name, ()))
            out.append(doc)
        return out

    def _health(self) -> Response:
        streams = {name: dict(s.health()) for name, s in self.ctx.streams.items()}
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

    def _transcript(self, name: str) -> Response:
        stream, _, ext = name.rpartition(".")
        if ext not in formats.FORMATTERS or not _STREAM_NAME.match(stream):
            raise RequestError(
                404, f"no transcript {name!r}: use /transcript/STREAM.txt|srt|vtt|json|jsonl", "route"
            )
        if stream not in self._stream_names():
            raise RequestError(404, f"unknown stream {stream!r}", "route")
        finals, missing = self.bus.transcript(stream)
        # Finals that left the memory window come back from the transcript files; without those
        # (transcripts.dir off) the header says where the list starts missing finals.
        extra = {"Streamer-Missing-From": str(missing)} if missing else None
        body = formats.format_as(ext, finals, self.ctx.settings.layout.rules())
        return _response(200, body, formats.MEDIA_TYPES[ext], extra)

    def _static(self, path: str) -> Response:
        name = "index.html" if path in ("/", "") else path.lstrip("/")
        if not _STATIC_NAME.match(name):
            raise RequestError(404, f"not found: {path}", "route")
        file = self.web_dir / name
        if "." not in name and not file.is_file():
            file = self.web_dir / f"{name}.html"  # /overlay, /display: pages without the extension
            name = file.name
        if not file.is_file():
            raise RequestError(404, f"not found: {path}", "route")
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype in ("application/javascript", "text/javascript"):
            ctype += "; charset=utf-8"
        return _response(200, file.read_bytes(), ctype)
