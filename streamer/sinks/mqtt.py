"""MQTT publisher (aiomqtt): finals QoS 1 in order through an outbox, partials QoS 0 rate-limited.

Topics (prefix `mqtt.prefix`, default `streamer`):
  {prefix}/{stream}/final    final event JSON, QoS 1
  {prefix}/{stream}/text     the final's text only (UTF-8), QoS 1
  {prefix}/{stream}/partial  partial event JSON, QoS 0, at most one per mqtt.partial_interval
  {prefix}/{stream}/status   status events of the stream (JSON), QoS 1, not retained
  {prefix}/status            retained {"status": "online", "states": {stream: {...}}, ...};
                             the last will replaces it with "offline"

Liveness and stream state live in one retained message on purpose. A connection has exactly
one last will, so only one topic can be corrected by the broker when the daemon dies without a
word (SIGKILL, power loss): a retained per-stream "running" would outlive the daemon. So
`{prefix}/status` carries every stream's state and is republished on each change, and the will
overwrites all of it at once ("birth and death certificate", as in Sparkplug). Per-stream status
topics are a live feed only; a retained message left there by an older version is cleared at
connect.

Finals go through `Outbox` (outbox.py) and leave it only when the broker acknowledged them, so a
broker outage loses nothing up to `mqtt.outbox` finals; they are published in order after the
reconnect (exponential backoff with jitter). Partials produced while disconnected are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomqtt
from aiomqtt.exceptions import MqttConnectError

from streamer import metrics
from streamer.bus import Bus, BusEvent
from streamer.config import ConfigError, MqttConfig
from streamer.errors import UserError
from streamer.events import Final, Partial, Status
from streamer.sinks.outbox import Backoff, Entry, Outbox

log = logging.getLogger(__name__)

# CONNACK refusals that retrying cannot fix: MQTT 3.1.1 return codes 4 (bad user name or
# password) and 5 (not authorised), MQTT 5 reason codes 134 and 135 (paho reports the former as
# the latter).
_REFUSED_CREDENTIALS = frozenset({4, 5, 134, 135})


def refused_credentials(e: Exception) -> bool:
    """True if the broker answered the CONNECT with "bad user name or password" or "not authorised"."""
    if not isinstance(e, MqttConnectError):
        return False
    rc = e.rc
    value = rc if isinstance(rc, int) else getattr(rc, "value", None)
    return value in _REFUSED_CREDENTIALS


@dataclass(frozen=True)
class MqttTarget:
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_mqtt_url(url: str) -> MqttTarget:
    """`mqtt://[user[:password]@]host[:port]` or `mqtts://...`; raises ConfigError naming mqtt.url."""

    def bad(why: str) -> ConfigError:
        return ConfigError(f"mqtt.url = {url!r}: {why} (expected mqtt://host:1883 or mqtts://host:8883)")

    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise bad(f"unsupported scheme {parts.scheme!r}" if parts.scheme else "missing mqtt:// or mqtts://")
    try:
        port = parts.port
    except ValueError:
        raise bad("invalid port") from None
    if not parts.hostname:
        raise bad("missing host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise bad("unexpected path or query")
    tls = parts.scheme == "mqtts"
    return MqttTarget(
        host=parts.hostname,
        port=port or (8883 if tls else 1883),
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def check_prefix(prefix: str) -> str:
    p = prefix.strip("/")
    if not p or any(ch in p for ch in "+#\0"):
        raise ConfigError(f"mqtt.prefix = {prefix!r}: must be non-empty and contain no '+', '#' or NUL")
    return p


def tls_context(cfg: MqttConfig) -> ssl.SSLContext:
    """Verifying TLS context for mqtts://, trusting mqtt.ca_file if set (else the system CAs)."""
    try:
        return ssl.create_default_context(cafile=str(cfg.ca_file) if cfg.ca_file else None)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"mqtt.ca_file = '{cfg.ca_file}': cannot load CA certificates ({e})") from None


class MqttSink:
    def __init__(
        self,
        cfg: MqttConfig,
        bus: Bus,
        *,
        streams: list[str],
        model: str,
        version: str,
        rand: Callable[[], float] | None = None,
    ) -> None:
        if not cfg.url:
            raise ConfigError("mqtt.url is not set: MQTT is disabled")
        self.cfg = cfg
        self.target = parse_mqtt_url(cfg.url)
        self.prefix = check_prefix(cfg.prefix)
        self.bus = bus
        self.streams = streams
        self.model = model
        self.version = version
        self.client_id = cfg.client_id or f"streamer-{uuid.uuid4().hex[:12]}"
        self._tls = tls_context(cfg) if self.target.tls else None
        self.outbox = Outbox(cfg.outbox)
        self.backoff = Backoff(
            cfg.reconnect_min, max(cfg.reconnect_min, cfg.reconnect_max), rand=rand or random.random
        )
        self.connected = False
        self.reconnects = 0
        self.last_error: str | None = None
        self._partials: dict[str, Partial] = {}
        self._partial_sent_at: dict[str, float] = {}
        self._last_final: dict[str, int] = {}
        self._status: dict[str, Status] = {}
        self._status_dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._online_since = time.time()
        self._first_connect = asyncio.Event()  # set at the first connection, or when it is hopeless
        self.fatal: str | None = None  # why the first connection can never succeed

    # --- topics and payloads ---------------------------------------------------------------------
    def topic(self, stream: str, kind: str) -> str:
        return f"{self.prefix}/{stream}/{kind}"

    @property
    def status_topic(self) -> str:
        return f"{self.prefix}/status"

    def _status_payload(self, status: str, reason: str | None = None) -> str:
        doc: dict[str, Any] = {"status": status, "server": self.version, "client_id": self.client_id}
        if status == "online":
            doc.update(streams=self.streams, model=self.model, since=self._online_since)
            doc["states"] = {name: self._stream_state(name) for name in self._stream_names()}
        else:
            # Nothing of this daemon is running any more, whatever the streams said last.
            doc["states"] = {name: {"state": "offline"} for name in self._stream_names()}
        if reason:
            doc["reason"] = reason
        return json.dumps(doc)

    def _stream_names(self) -> list[str]:
        return list(dict.fromkeys([*self.streams, *self._status]))

    def _stream_state(self, stream: str) -> dict[str, Any]:
        st = self._status.get(stream)
        if st is None:
            return {"state": "unknown"}
        return {"state": st.state, "detail": st.detail, "emitted_at": st.emitted_at}

    def state(self) -> dict[str, Any]:
        """For /health."""
        return {
            "enabled": True,
            "broker": str(self.target),
            "connected": self.connected,
            "outbox": len(self.outbox),
            "outbox_overflow": self.outbox.overflow,
            "reconnects": self.reconnects,
            "last_error": self.last_error,
        }

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._unsubscribe = self.bus.subscribe(self._on_event)
        self._task = self._loop.create_task(self._run(), name="mqtt")

    async def close(self) -> None:
        """Deliver the outbox (waiting at most mqtt.drain_timeout), publish offline, disconnect."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        await asyncio.sleep(0)  # let events the bus already scheduled reach the outbox
        self._stopping = True
        self._wake.set()
        task = self._task
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=self.cfg.drain_timeout + 2.0)
        except asyncio.TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if len(self.outbox):
            log.warning("MQTT: %d finals not delivered to %s at shutdown", len(self.outbox), self.target)
        metrics.MQTT_CONNECTED.set(0)

    async def wait_connected(self, timeout: float) -> None:
        """Wait for the first connection; UserError (one line) if it fails or does not come in time.

        A daemon configured to publish to a broker it has never reached is misconfigured (a wrong
        host or port, refused credentials) far more often than it meets an outage, and a daemon
        that silently keeps retrying looks healthy while nothing reaches the broker. Once
        connected, outages are retried for ever as before (the outbox keeps the finals).
        """
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._first_connect.wait(), timeout)
        if self.connected or (self._first_connect.is_set() and self.fatal is None):
            return
        task, self._task = self._task, None  # close() then has nothing left to wait for
        if task is not None:
            task.cancel()  # do not leave a reconnect loop behind the error
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        why = self.fatal or (
            f"cannot connect to the MQTT broker {self.target} within {timeout:.0f} s"
            f" ({self.last_error or 'no answer'}); check mqtt.url"
        )
        raise UserError(why)

    # --- bus side (any thread -> loop) -----------------------------------------------------------
    def _on_event(self, event: BusEvent) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._accept, event)

    def _accept(self, event: BusEvent) -> None:
        if isinstance(event, Final):
            dropped = self.outbox.push(event)
            if dropped:
                metrics.MQTT_OUTBOX_OVERFLOW.inc(dropped)
                log.warning(
                    "MQTT outbox full (mqtt.outbox = %d): dropped %d oldest final(s), %d so far",
                    self.cfg.outbox,
                    dropped,
                    self.outbox.overflow,
                )
            metrics.MQTT_OUTBOX.set(len(self.outbox))
            self._last_final[event.stream] = max(event.seq, self._last_final.get(event.stream, 0))
            p = self._partials.get(event.stream)
            if p is not None and p.seq <= event.seq:
                del self._partials[event.stream]
        elif isinstance(event, Partial):
            # Partials are for live display only: none are kept from a time without a broker.
            if self.connected and event.seq > self._last_final.get(event.stream, 0):
                self._partials[event.stream] = event
        elif isinstance(event, Status):
            self._status[event.stream] = event
            self._status_dirty.add(event.stream)
        else:
            return
        self._wake.set()

    # --- connection loop ---------------------------------------------------------------------------
    def _client(self) -> aiomqtt.Client:
        will = aiomqtt.Will(
            self.status_topic, self._status_payload("offline", "connection lost"), qos=1, retain=True
        )
        username = self.cfg.username or self.target.username
        password = self.cfg.password or self.target.password
        return aiomqtt.Client(
            self.target.host,
            self.target.port,
            username=username,
            password=password,
            identifier=self.client_id,
            will=will,
            tls_context=self._tls,
            keepalive=15,
            timeout=10,
            logger=log,
        )

    async def _run(self) -> None:
        while True:
            try:
                async with self._client() as client:
                    self._set_connected(True)
                    self.fatal = None
                    self._first_connect.set()
                    self.backoff.reset()
                    self.last_error = None  # /health shows the current trouble, not a healed one
                    log.info("MQTT connected to %s as %s", self.target, self.client_id)
                    for stream in self._stream_names():
                        # An empty retained message deletes one an older version left there.
                        await client.publish(self.topic(stream, "status"), b"", qos=1, retain=True)
                    await client.publish(
                        self.status_topic, self._status_payload("online"), qos=1, retain=True
                    )
                    self._status_dirty.clear()  # the online message above has every state
                    await self._serve(client)
                    await client.publish(
                        self.status_topic, self._status_payload("offline", "shutdown"), qos=1, retain=True
                    )
                    return
            except aiomqtt.MqttError as e:
                self.last_error = str(e)
                if not self._first_connect.is_set() and refused_credentials(e):
                    # A daemon starting with credentials the broker refuses stops at once with
                    # this line (wait_connected). The loop itself goes on retrying: a broker whose
                    # user list is being set up (or reloaded) takes the same credentials later.
                    user = self.cfg.username or self.target.username
                    self.fatal = (
                        f"the MQTT broker {self.target} refused the credentials "
                        f"({'user ' + repr(user) if user else 'no user name'}: {e}); "
                        "check mqtt.username and mqtt.password"
                    )
                    self._first_connect.set()
                if self.connected:
                    log.warning("MQTT connection to %s lost: %s", self.target, e)
                else:
                    log.info("MQTT cannot connect to %s: %s", self.target, e)
            finally:
                self._set_connected(False)
            if self._stopping and not len(self.outbox):
                return
            delay = self.backoff.next()
            self.reconnects += 1
            metrics.MQTT_RECONNECTS.inc()
            await asyncio.sleep(delay)

    def _set_connected(self, up: bool) -> None:
        self.connected = up
        metrics.MQTT_CONNECTED.set(1 if up else 0)
        if not up:
            self._partials.clear()

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Publish until stopping (returns) or the connection drops (raises MqttError)."""
        watch = asyncio.ensure_future(self._watch(client))
        work = asyncio.ensure_future(self._publish_loop(client))
        try:
            done, _ = await asyncio.wait({watch, work}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (watch, work):
                if not t.done():
                    t.cancel()
                    with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                        await t
        for t in done:
            t.result()  # re-raises MqttError from either task

    @staticmethod
    async def _watch(client: aiomqtt.Client) -> None:
        # We subscribe to nothing; the iterator raises MqttError as soon as the connection drops,
        # which notices a dead broker while there is nothing to publish.
        async for _ in client.messages:
            pass
        raise aiomqtt.MqttError("message iterator ended")

    async def _publish_entry(self, client: aiomqtt.Client, entry: Entry) -> None:
        f = entry.final
        for part in entry.pending_parts():
            if part == "final":
                await client.publish(self.topic(f.stream, "final"), f.to_json(), qos=1)
            else:
                await client.publish(self.topic(f.stream, "text"), f.text.encode("utf-8"), qos=1)
            # Acknowledged (PUBACK): never publish this part again.
            self.outbox.ack(entry, part)
            metrics.MQTT_PUBLISHES.labels(part).inc()
        metrics.MQTT_OUTBOX.set(len(self.outbox))

    async def _publish_loop(self, client: aiomqtt.Client) -> None:
        while True:
            self._wake.clear()
            entry = self.outbox.head()
            if entry is not None:
                await self._publish_entry(client, entry)
                continue
            if self._status_dirty:
                for stream in list(self._status_dirty):
                    self._status_dirty.discard(stream)
                    st = self._status[stream]
                    await client.publish(self.topic(stream, "status"), st.to_json(), qos=1)
                    metrics.MQTT_PUBLISHES.labels("status").inc()
                await client.publish(self.status_topic, self._status_payload("online"), qos=1, retain=True)
            if self._stopping and self.outbox.head() is None:
                return  # the last stream status (e.g. "stopped") went out too
            if self.outbox.head() is not None:
                continue
            wait: float | None = None
            now = time.monotonic()
            for stream, p in list(self._partials.items()):
                due = self._partial_sent_at.get(stream, -1e9) + self.cfg.partial_interval
                if now >= due:
                    del self._partials[stream]
                    self._partial_sent_at[stream] = now
                    await client.publish(self.topic(stream, "partial"), p.to_json(), qos=0)
                    metrics.MQTT_PUBLISHES.labels("partial").inc()
                else:
                    wait = due - now if wait is None else min(wait, due - now)
            if self._wake.is_set() or self.outbox.head() is not None:
                continue
            if wait is None:
                await self._wake.wait()
            else:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=wait)
