"""`streamer obs`: follow a stream of the daemon and drive OBS Studio through obs-websocket v5.

Two connections, each reconnecting on its own with exponential backoff: the daemon's `/ws`
(resuming with `since`, starting over when the daemon's session changes) and OBS (re-checking
the Text source and the streaming state after each connect). Captions update `CaptionState`;
the OBS side pushes its display text to the Text source whenever it changed (only the newest
text matters, so updates never queue up) and sends each live final with `SendStreamCaption`
while OBS is streaming.

Why not a client library: `simpleobsws` (asyncio) hides why a connection ended (a wrong
password is a timeout in `wait_until_identified`, the 4009 close code only reaches a debug log)
and has no close notification; `obsws-python` is thread-based on websocket-client. The protocol
part we need is small (see `protocol`), and `websockets` is already a dependency.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
import sys
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import pydantic
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.typing import Subprotocol

from streamer.config import ObsConfig, Settings
from streamer.errors import UserError
from streamer.events import Final, Hello, parse_event
from streamer.obs import protocol
from streamer.obs.captions import CaptionState

log = logging.getLogger("streamer.obs")

OPEN_TIMEOUT = 10.0
CAPTION_TYPES = frozenset({"hello", "partial", "final", "status"})
REQUEST_TIMEOUT = 10.0


class ObsError(UserError):
    """A problem with OBS the user must fix (wrong password, missing scene or source)."""


class DaemonError(UserError):
    """The daemon refuses the bridge (token, unknown stream): reconnecting cannot help."""


class Backoff:
    """Exponential reconnect delay with jitter: min, 2*min, ... up to max, times 0.5-1."""

    def __init__(self, lo: float, hi: float) -> None:
        self.lo, self.hi = lo, max(lo, hi)
        self.current = lo

    def next(self) -> float:
        delay = self.current * random.uniform(0.5, 1.0)
        self.current = min(self.hi, self.current * 2)
        return delay

    def reset(self) -> None:
        self.current = self.lo


class OnceLogger:
    """Logs a connection problem when it changes, not on every retry."""

    def __init__(self) -> None:
        self.last: str | None = None

    def problem(self, message: str, delay: float) -> None:
        if message != self.last:
            log.warning("%s; retrying (next in %.1f s; logged again when this changes)", message, delay)
        self.last = message

    def ok(self, message: str) -> None:
        log.info("%s", message)
        self.last = None

    def clear(self) -> None:
        self.last = None


def describe_connect_error(e: BaseException, url: str, what: str) -> str:
    if isinstance(e, ConnectionRefusedError):
        return f"{what} is not running or not listening at {url} (connection refused)"
    if isinstance(e, TimeoutError | asyncio.TimeoutError):
        return f"{what} at {url} did not answer in time"
    if isinstance(e, ConnectionClosed):
        rcvd = e.rcvd
        return f"connection to {what} lost" + (f" (code {rcvd.code})" if rcvd else "")
    return f"cannot connect to {what} at {url}: {e}"


# --- OBS -----------------------------------------------------------------------------------------


class ObsClient:
    """One identified obs-websocket session: requests by id, events on a queue."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.events: asyncio.Queue[protocol.Event] = asyncio.Queue()
        self.version = ""
        self._pending: dict[str, asyncio.Future[protocol.RequestResponse]] = {}
        self._ids = itertools.count(1)
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, url: str, password: str | None) -> ObsClient:
        ws = await connect(
            url,
            subprotocols=[Subprotocol(protocol.SUBPROTOCOL)],
            open_timeout=OPEN_TIMEOUT,
            max_size=2**24,
            compression=None,
        )
        client = cls(ws)
        try:
            await asyncio.wait_for(client._identify(password), OPEN_TIMEOUT)
        except BaseException:
            await ws.close()
            raise
        client._reader = asyncio.get_running_loop().create_task(client._read())
        return client

    async def _identify(self, password: str | None) -> None:
        try:
            msg = protocol.parse(await self.ws.recv())
            if not isinstance(msg, protocol.Hello):
                raise ObsError(f"OBS WebSocket sent {type(msg).__name__} instead of Hello")
            self.version = msg.obs_websocket_version
            try:
                await self.ws.send(protocol.identify(msg, password))
            except protocol.ObsAuthRequired as e:
                raise ObsError(str(e)) from None
            while not isinstance(protocol.parse(await self.ws.recv()), protocol.Identified):
                pass
        except ConnectionClosed as e:
            code = e.rcvd.code if e.rcvd else None
            if code in protocol.FATAL_CLOSE_CODES:
                raise ObsError(protocol.close_reason(code)) from None
            raise

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                try:
                    msg = protocol.parse(raw)
                except protocol.ObsProtocolError as e:
                    log.warning("dropped a message from OBS: %s", e)
                    continue
                if isinstance(msg, protocol.RequestResponse):
                    fut = self._pending.pop(msg.request_id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(msg)
                elif isinstance(msg, protocol.Event):
                    self.events.put_nowait(msg)
        except ConnectionClosed:
            pass
        finally:
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("OBS connection closed"))
            self._pending.clear()

    async def request(
        self, request_type: str, data: dict[str, Any] | None = None
    ) -> protocol.RequestResponse:
        """Send a request and wait for its response (any status; see `call` for success only)."""
        rid = str(next(self._ids))
        fut: asyncio.Future[protocol.RequestResponse] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            await self.ws.send(protocol.request(request_type, rid, data))
            return await asyncio.wait_for(fut, REQUEST_TIMEOUT)
        finally:
            self._pending.pop(rid, None)

    async def call(self, request_type: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
        resp = await self.request(request_type, data)
        if not resp.ok:
            raise resp.error()
        return resp.data

    async def wait_closed(self) -> ConnectionClosed | None:
        await self.ws.wait_closed()
        return None

    def close_info(self) -> tuple[int | None, str]:
        return self.ws.close_code, self.ws.close_reason or ""

    async def close(self) -> None:
        await self.ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


# --- the bridge ----------------------------------------------------------------------------------


def daemon_url(settings: Settings) -> str:
    if settings.obs.daemon:
        return settings.obs.daemon
    host = settings.server.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"ws://{host}:{settings.server.port}/ws"


def follow_url(base: str, stream: str | None, since: int | None, token: str | None) -> str:
    """`base` with the bridge's query parameters (stream, since, token) set."""
    parts = urlsplit(base)
    query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
    if stream:
        query["stream"] = stream
    query.pop("since", None)
    if since is not None:
        query["since"] = str(since)
    if token:
        query["token"] = token
    return urlunsplit(parts._replace(query=urlencode(query)))


class Bridge:
    def __init__(self, settings: Settings, *, stream: str | None = None, token: str | None = None) -> None:
        self.cfg: ObsConfig = settings.obs
        self.daemon = daemon_url(settings)
        self.stream = stream
        self.token = token
        self.state = CaptionState(settings.layout.max_chars, settings.layout.max_lines)
        self.text_changed = asyncio.Event()
        self.captions: asyncio.Queue[Final] = asyncio.Queue(maxsize=64)
        self.streaming = False  # OBS is streaming: native captions go out
        self.obs_connected = False
        self.shown = ""  # last text OBS confirmed
        self.malformed = 0
        self.captions_sent = 0

    async def run(self) -> None:
        """Run both sides until one hits an error reconnecting cannot fix (raised as UserError)."""
        tasks = [
            asyncio.ensure_future(self._daemon_loop()),
            asyncio.ensure_future(self._obs_loop()),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                t.result()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # --- daemon side ---------------------------------------------------------------------
    async def _daemon_loop(self) -> None:
        backoff = Backoff(self.cfg.reconnect_min, self.cfg.reconnect_max)
        status = OnceLogger()
        while True:
            url = follow_url(self.daemon, self.stream, self.state.query_since(), self.token)
            try:
                async with connect(url, open_timeout=OPEN_TIMEOUT, max_size=2**22) as ws:
                    outcome = await self._follow(ws)
                    code, reason = ws.close_code, ws.close_reason or ""
            except InvalidStatus as e:
                code = e.response.status_code
                body = e.response.body.decode("utf-8", "replace").strip() if e.response.body else ""
                if code in (400, 401, 403, 404):
                    raise DaemonError(
                        f"the daemon at {self.daemon} refused the bridge: HTTP {code} {body}"
                    ) from None
                delay = backoff.next()
                status.problem(f"the daemon answered HTTP {code} {body}", delay)
                await asyncio.sleep(delay)
                continue
            except InvalidURI as e:
                raise DaemonError(f"bad daemon URL {self.daemon!r}: {e}") from None
            except (OSError, TimeoutError, ConnectionClosed, InvalidHandshake) as e:
                delay = backoff.next()
                status.problem(describe_connect_error(e, self.daemon, "the streamer daemon"), delay)
                await asyncio.sleep(delay)
                continue
            if outcome == "no hello":
                # Closed before saying hello (too many clients, shutting down): not a session.
                delay = backoff.next()
                status.problem(f"the daemon closed the connection (code {code} {reason})".strip(), delay)
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            status.clear()
            if outcome == "restart" or code == 4008:  # new session, or too slow: resume at once
                continue
            log.info("the daemon closed the connection (code %s %s); reconnecting", code, reason)
            await asyncio.sleep(backoff.next())

    async def _follow(self, ws: ClientConnection) -> str:
        """Read one connection: 'no hello', 'restart' (a new daemon session) or 'closed'."""
        hello = False
        async for raw in ws:
            try:
                doc = json.loads(raw)
                kind = doc.get("type") if isinstance(doc, dict) else None
                if not isinstance(kind, str):
                    raise ValueError("not an event")
                if kind == "pong":
                    self.state.on_replay_done(int(doc.get("last_seq", 0)))
                    continue
                if kind == "gap":
                    # Finals that left the daemon's history window: the display just goes on.
                    log.info(
                        "the daemon no longer has finals %s to %s", doc.get("since"), doc.get("first_seq")
                    )
                    continue
                if kind not in CAPTION_TYPES:
                    continue  # a message type newer than this bridge: ignored, as the protocol says
                event = parse_event(doc)
            except (ValueError, TypeError, pydantic.ValidationError):
                self.malformed += 1
                log.debug("dropped a malformed message from the daemon: %.120r", raw)
                continue
            if isinstance(event, Hello):
                hello = True
                restart = self.state.on_hello(event)
                if restart is not None:
                    log.info("%s: following it from the start", restart.reason)
                    await ws.close()
                    return "restart"
                log.info("following %s (stream %s)", self.daemon, self.stream or "default")
                # The pong comes after the replayed finals: what precedes it is not live.
                await ws.send(json.dumps({"type": "ping", "id": "bridge"}))
                continue
            if not hello:
                self.malformed += 1  # events before hello: not the daemon's protocol
                continue
            changed, live = self.state.on_event(event)
            if changed:
                self.text_changed.set()
            if live is not None and self.streaming and self.cfg.stream_captions:
                with contextlib.suppress(asyncio.QueueFull):  # OBS stuck: the newest can wait
                    self.captions.put_nowait(live)
        return "no hello" if not hello else "closed"

    # --- OBS side ------------------------------------------------------------------------
    async def _obs_loop(self) -> None:
        backoff = Backoff(self.cfg.reconnect_min, self.cfg.reconnect_max)
        status = OnceLogger()
        while True:
            try:
                client = await ObsClient.open(self.cfg.url, self.cfg.password)
            except (
                OSError,
                TimeoutError,
                ConnectionClosed,
                InvalidHandshake,
                protocol.ObsProtocolError,
            ) as e:
                delay = backoff.next()
                status.problem(describe_connect_error(e, self.cfg.url, "OBS WebSocket"), delay)
                await asyncio.sleep(delay)
                continue
            try:
                where = await self._prepare(client)
                status.ok(f"connected to OBS (obs-websocket {client.version}): {where}")
                backoff.reset()
                self.obs_connected = True
                await self._drive(client)
            except (OSError, ConnectionClosed, ConnectionError, TimeoutError) as e:
                code, reason = client.close_info()
                delay = backoff.next()
                msg = (
                    protocol.close_reason(code, reason)
                    if code
                    else describe_connect_error(e, self.cfg.url, "OBS")
                )
                status.problem(msg, delay)
                await asyncio.sleep(delay)
            except protocol.ObsRequestError as e:
                if e.code != protocol.STATUS_NOT_READY:
                    raise ObsError(
                        f"OBS refused {e.request_type}: {e.comment or f'status {e.code}'}"
                    ) from None
                # OBS is starting, shutting down or switching scene collections: try again.
                delay = backoff.next()
                status.problem("OBS is not ready", delay)
                await asyncio.sleep(delay)
            finally:
                self.obs_connected = False
                self.streaming = False
                await client.close()

    async def _prepare(self, client: ObsClient) -> str:
        """Find or create the Text source; read the streaming state. Returns where the text goes."""
        name = self.cfg.source
        resp = await client.request("GetInputSettings", {"inputName": name})
        if resp.ok:
            kind = str(resp.data.get("inputKind", ""))
            if not protocol.is_text_kind(kind):
                raise ObsError(f"OBS source '{name}' is a {kind}, not a Text source: choose another --source")
            where = f"Text source '{name}' ({kind})"
        elif resp.code == protocol.STATUS_RESOURCE_NOT_FOUND:
            where = await self._create_source(client, name)
        else:
            raise ObsError(f"OBS cannot read source '{name}': {resp.error()}")
        self.shown = ""
        self.text_changed.set()  # push the current text to the (new or reconnected) source
        if self.cfg.stream_captions:
            self.streaming = bool((await client.call("GetStreamStatus")).get("outputActive"))
            where += ", streaming" if self.streaming else ", not streaming"
        return where

    async def _create_source(self, client: ObsClient, name: str) -> str:
        if not self.cfg.create:
            raise ObsError(
                f"OBS has no source named '{name}' (create a Text source of that name, or allow creation)"
            )
        scene = self.cfg.scene
        if scene is None:
            scene = str((await client.call("GetCurrentProgramScene"))["currentProgramSceneName"])
        else:
            scenes = [s.get("sceneName") for s in (await client.call("GetSceneList")).get("scenes", [])]
            if scene not in scenes:
                listed = ", ".join(f"'{s}'" for s in scenes) or "none"
                raise ObsError(f"OBS has no scene named '{scene}' (scenes: {listed})")
        kind = self.cfg.input_kind
        if kind == "auto":
            kinds = (await client.call("GetInputKindList", {"unversioned": False})).get("inputKinds", [])
            found = protocol.choose_text_kind(list(kinds), windows=sys.platform == "win32")
            if found is None:
                raise ObsError("this OBS offers no Text input kind (FreeType 2 or GDI+): set --kind")
            kind = found
        settings = protocol.text_source_settings(
            kind, self.state.display(), self.cfg.font_size, self.cfg.font
        )
        resp = await client.request(
            "CreateInput",
            {
                "sceneName": scene,
                "inputName": name,
                "inputKind": kind,
                "inputSettings": settings,
                "sceneItemEnabled": True,
            },
        )
        if not resp.ok:
            raise ObsError(
                f"OBS could not create Text source '{name}' ({kind}) in scene '{scene}': {resp.error()}"
            )
        try:
            video = await client.call("GetVideoSettings")
            await client.call(
                "SetSceneItemTransform",
                {
                    "sceneName": scene,
                    "sceneItemId": resp.data["sceneItemId"],
                    "sceneItemTransform": protocol.bottom_center_transform(
                        video["baseWidth"], video["baseHeight"]
                    ),
                },
            )
        except protocol.ObsRequestError as e:  # only the placement: the source works where it is
            log.warning("could not place the new source at the bottom: %s", e)
        log.info("created Text source '%s' (%s) in scene '%s'", name, kind, scene)
        return f"new Text source '{name}' ({kind}) in scene '{scene}'"

    async def _drive(self, client: ObsClient) -> None:
        workers = [
            asyncio.ensure_future(self._push_text(client)),
            asyncio.ensure_future(self._send_captions(client)),
            asyncio.ensure_future(self._obs_events(client)),
            asyncio.ensure_future(client.wait_closed()),
        ]
        try:
            done, _ = await asyncio.wait(workers, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                t.result()
            raise ConnectionError("OBS connection closed")
        finally:
            for t in workers:
                t.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def _push_text(self, client: ObsClient) -> None:
        while True:
            await self.text_changed.wait()
            self.text_changed.clear()
            text = self.state.display()
            if text == self.shown:
                continue
            resp = await client.request(
                "SetInputSettings",
                {"inputName": self.cfg.source, "inputSettings": {"text": text}, "overlay": True},
            )
            if resp.code == protocol.STATUS_RESOURCE_NOT_FOUND:
                raise ConnectionError(f"the Text source '{self.cfg.source}' was removed")
            if not resp.ok:
                log.warning("OBS refused the caption text: %s", resp.error())
                continue
            self.shown = text

    async def _send_captions(self, client: ObsClient) -> None:
        while True:
            final = await self.captions.get()
            if not self.streaming:
                continue
            resp = await client.request("SendStreamCaption", {"captionText": final.text})
            if resp.code == protocol.STATUS_OUTPUT_NOT_RUNNING:
                # Streaming stopped before the event reached us: wait for StreamStateChanged.
                self.streaming = False
            elif not resp.ok:
                log.warning("OBS refused stream caption %d: %s", final.seq, resp.error())
            else:
                self.captions_sent += 1
                log.debug("stream caption %d sent", final.seq)

    async def _obs_events(self, client: ObsClient) -> None:
        while True:
            ev = await client.events.get()
            if ev.type == "StreamStateChanged":
                active = bool(ev.data.get("outputActive"))
                if active != self.streaming:
                    log.info(
                        "OBS %s streaming%s",
                        "started" if active else "stopped",
                        ": sending native captions" if active and self.cfg.stream_captions else "",
                    )
                self.streaming = active
                if not active:
                    while not self.captions.empty():
                        self.captions.get_nowait()
            elif ev.type == "InputRemoved" and ev.data.get("inputName") == self.cfg.source:
                raise ConnectionError(f"the Text source '{self.cfg.source}' was removed")
            elif ev.type == "ExitStarted":
                raise ConnectionError("OBS is shutting down")


def main(settings: Settings) -> int:
    """`streamer obs`: runs until interrupted, or raises UserError (one line) for what retrying cannot fix."""
    asyncio.run(Bridge(settings, stream=settings.stream, token=settings.server.token).run())
    return 0
