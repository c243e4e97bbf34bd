"""Fan-out benchmark: one stream's events to many WebSocket clients on loopback.

A publisher thread plays the pipeline: it publishes partials and finals into a real Bus at a fixed
rate and records when each event was created. The real server (CaptionServer) sends them to
`clients` real websockets clients, which record when each arrives. Result: latency from event
creation to receipt at the clients (p50/p90/p99/max, finals and partials apart), whether every
client got every final in order, and how long `bus.publish` took (it must never wait on a client).

Optionally `stuck` clients complete the handshake and then never read (websockets' sans-I/O
client over a socket with a small receive buffer); they must be closed with 4008 while nobody
else is delayed. Everything runs in this process and is bounded by `timeout`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterable
from typing import Any

from websockets.asyncio.client import connect
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from streamer import metrics
from streamer.bus import Bus
from streamer.config import Settings
from streamer.events import Final, Partial
from streamer.sinks.context import SinkContext
from streamer.sinks.start import start_sinks

STREAM = "bench"
_HEAD = re.compile(r'"type":"(final|partial)".*?"rev":(\d+),"seq":(\d+)')


class StuckClient:
    """A WebSocket client that completes the handshake and then reads nothing until `drain()`.

    websockets' own sans-I/O client protocol over a blocking socket: the server sees a correct
    WebSocket peer that stopped reading (a frozen tab). The small receive buffer keeps loopback
    TCP autotuning from absorbing megabytes first.
    """

    def __init__(self, port: int, query: str = "", rcvbuf: int = 8192) -> None:
        self.proto = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/ws?{query}"), max_size=None)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        self.proto.send_request(self.proto.connect())
        self._flush()
        while self.proto.state is State.CONNECTING:
            data = self.sock.recv(512)
            if not data:
                raise ConnectionError("server closed during the handshake")
            self.proto.receive_data(data)
        if self.proto.handshake_exc is not None:
            raise self.proto.handshake_exc
        self._early = self.proto.events_received()  # the handshake response, maybe `hello` too

    def _flush(self) -> None:
        for chunk in self.proto.data_to_send():
            if chunk:
                self.sock.sendall(chunk)

    def drain(self, timeout: float = 10.0) -> tuple[list[dict[str, Any]], int | None, str]:
        """Read until the connection ends: (messages, close code received, close reason)."""
        self.sock.settimeout(timeout)
        msgs: list[dict[str, Any]] = []
        events: list[Any] = list(self._early)
        try:
            while True:
                try:
                    data = self.sock.recv(65536)
                except (ConnectionResetError, TimeoutError):
                    break
                if data:
                    self.proto.receive_data(data)
                else:
                    self.proto.receive_eof()
                events += self.proto.events_received()
                for ev in events:
                    if isinstance(ev, Frame) and ev.opcode is Opcode.TEXT:
                        msgs.append(json.loads(bytes(ev.data)))
                events = []
                self._flush()
                if not data:
                    break
        finally:
            self.sock.close()
        rcvd = self.proto.close_rcvd
        return msgs, (rcvd.code if rcvd else None), (rcvd.reason if rcvd else "")


class _BenchStream:
    name = STREAM

    def health(self) -> dict[str, Any]:
        return {
            "state": "running",
            "source": "bench",
            "audio_seconds": 0.0,
            "dropped_seconds": 0.0,
            "speech_seconds": 0.0,
            "last_audio_age": 0.0,
            "finals": 0,
        }


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def _summary_ms(values: list[float]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name, q in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100)):
        v = _pct(values, q)
        out[name] = None if v is None else round(v * 1000, 3)
    return out


def _events(finals: int, partials: int, text_bytes: int) -> list[Partial | Final]:
    per = partials // finals if finals else 0
    extra = partials - per * finals
    evs: list[Partial | Final] = []
    filler = ("lorem ipsum " * (text_bytes // 12 + 1))[:text_bytes]
    for k in range(1, finals + 1):
        n = per + (1 if k <= extra else 0)
        t0 = k * 3.0
        for r in range(n):
            evs.append(
                Partial(
                    stream=STREAM,
                    utterance=k - 1,
                    rev=r,
                    seq=k,
                    text=f"{k}.{r} {filler}",
                    stable="",
                    start=t0,
                    end=t0 + 0.5 * (r + 1),
                    emitted_at=t0 + 0.5 * (r + 1),
                )
            )
        evs.append(
            Final(
                stream=STREAM,
                utterance=k - 1,
                rev=n,
                seq=k,
                text=f"{k} {filler}",
                stable=f"{k} {filler}",
                start=t0,
                end=t0 + 2.5,
                emitted_at=t0 + 2.7,
            )
        )
    return evs


async def _bench(
    clients: int,
    finals: int,
    partials: int,
    rate: float,
    stuck: int,
    text_bytes: int,
    client_queue: int,
    settle: float,
) -> dict[str, Any]:
    token = secrets.token_urlsafe(12)
    settings = Settings(
        stream=STREAM,
        server={
            "port": 0,
            "token": token,
            "client_queue": client_queue,
            "max_clients": clients + stuck + 8,
            "max_clients_per_address": 0,  # every bench client comes from 127.0.0.1
            "replay_finals": 0,
        },
        mqtt={"url": None},
        transcripts={"dir": None},
    )
    bus = Bus()
    sinks = await start_sinks(
        SinkContext(settings=settings, bus=bus, streams={STREAM: _BenchStream()}, model="bench")
    )
    port = sinks.server_port
    assert port is not None
    url = f"ws://127.0.0.1:{port}/ws?token={token}"
    slow_before = metrics.WS_SLOW_CLOSED._value.get()
    created: dict[tuple[str, int, int], float] = {}
    lat: dict[str, list[float]] = {"final": [], "partial": []}
    got_finals: list[list[int]] = [[] for _ in range(clients)]
    partials_rx = [0]
    conns: list[Any] = []
    readers: list[asyncio.Task[None]] = []
    stuck_clients: list[StuckClient] = []
    publish: dict[str, float] = {"max": 0.0, "lag": 0.0}
    try:

        async def open_one(i: int) -> None:
            ws = await connect(url, max_size=None, open_timeout=30, ping_interval=None)
            await ws.recv()  # hello
            conns.append(ws)
            readers.append(asyncio.ensure_future(read(i, ws)))

        async def read(i: int, ws: Any) -> None:
            async for msg in ws:
                now = time.perf_counter()
                m = _HEAD.search(msg[:200])
                if m is None:
                    continue
                kind, rev, seq = m.group(1), int(m.group(2)), int(m.group(3))
                t = created.get((kind, seq, rev))
                if t is not None:
                    lat[kind].append(now - t)
                if kind == "final":
                    got_finals[i].append(seq)
                    if seq == finals:
                        return
                else:
                    partials_rx[0] += 1

        for start in range(0, clients, 50):  # connect in batches: a burst of 200 SYNs is not the point
            await asyncio.gather(*(open_one(i) for i in range(start, min(clients, start + 50))))
        for _ in range(stuck):
            stuck_clients.append(await asyncio.to_thread(StuckClient, port, f"token={token}"))

        evs = _events(finals, partials, text_bytes)
        done = threading.Event()

        def publisher() -> None:
            t_start = time.perf_counter()
            for i, ev in enumerate(evs):
                due = t_start + i / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                publish["lag"] = max(publish["lag"], time.perf_counter() - due)
                t0 = time.perf_counter()
                created[(ev.type, ev.seq, ev.rev)] = t0
                bus.publish(ev)
                publish["max"] = max(publish["max"], time.perf_counter() - t0)
            done.set()

        t_begin = time.perf_counter()
        thread = threading.Thread(target=publisher, name="bench-publisher", daemon=True)
        thread.start()
        await asyncio.to_thread(thread.join)
        publish_seconds = time.perf_counter() - t_begin
        pending = [t for t in readers if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=settle)
        stuck_results = [await asyncio.to_thread(sc.drain, 10.0) for sc in stuck_clients]
        complete = sum(1 for g in got_finals if g == list(range(1, finals + 1)))
        return {
            "clients": clients,
            "stuck_clients": stuck,
            "finals": finals,
            "partials": partials,
            "rate_events_per_s": rate,
            "text_bytes": text_bytes,
            "client_queue": client_queue,
            "publish_seconds": round(publish_seconds, 3),
            "final_latency_ms": _summary_ms(lat["final"]),
            "partial_latency_ms": _summary_ms(lat["partial"]),
            "clients_with_every_final": complete,
            "partials_received": partials_rx[0],
            "partials_sent": partials * clients,
            "publish_max_ms": round(publish["max"] * 1000, 3),
            "publisher_lag_max_ms": round(publish["lag"] * 1000, 3),
            "stuck_close": [(code, reason) for _, code, reason in stuck_results],
            "slow_clients_closed": metrics.WS_SLOW_CLOSED._value.get() - slow_before,
            # Everything shares this machine: a busy one shows up as publisher lag and long tails.
            "cpu_count": os.cpu_count(),
            "loadavg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        }
    finally:
        for t in readers:
            t.cancel()
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
        await sinks.close()


def run_fanout_bench(
    clients: int = 200,
    finals: int = 60,
    partials: int = 240,
    *,
    rate: float = 50.0,
    stuck: int = 0,
    text_bytes: int = 120,
    client_queue: int = 256,
    timeout: float = 180.0,
) -> dict[str, Any]:
    """Run the benchmark (blocking, in a fresh event loop) and return its numbers.

    Latency is creation (just before `bus.publish`) to receipt by the client's websockets
    connection, loopback, server and clients sharing this process and its GIL.
    """
    if clients < 1 or finals < 1 or rate <= 0:
        raise ValueError("run_fanout_bench needs clients >= 1, finals >= 1 and rate > 0")

    async def bounded() -> dict[str, Any]:
        settle = max(10.0, timeout / 4)
        return await asyncio.wait_for(
            _bench(clients, finals, partials, rate, stuck, text_bytes, client_queue, settle), timeout
        )

    return asyncio.run(bounded())


def format_result(result: dict[str, Any]) -> str:
    lines = [
        f"fan-out: {result['clients']} clients (+{result['stuck_clients']} stuck), "
        f"{result['finals']} finals + {result['partials']} partials at {result['rate_events_per_s']}/s"
    ]
    for kind in ("final", "partial"):
        s = result[f"{kind}_latency_ms"]
        lines.append(
            f"  {kind:8s} latency ms: p50 {s['p50']}  p90 {s['p90']}  p99 {s['p99']}  max {s['max']}"
        )
    lines.append(
        f"  clients with every final: {result['clients_with_every_final']}/{result['clients']}; "
        f"partials received {result['partials_received']}/{result['partials_sent']}"
    )
    lines.append(
        f"  bus.publish max {result['publish_max_ms']} ms; publisher lag max "
        f"{result['publisher_lag_max_ms']} ms; slow clients closed {result['slow_clients_closed']}"
    )
    lines.append(f"  machine: {result['cpu_count']} CPUs, load average {result['loadavg_1m']}")
    return "\n".join(lines)


def main(argv: Iterable[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m streamer_bench.fanout")
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--finals", type=int, default=60)
    p.add_argument("--partials", type=int, default=240)
    p.add_argument("--rate", type=float, default=50.0)
    p.add_argument("--stuck", type=int, default=0)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(list(argv) if argv is not None else None)
    r = run_fanout_bench(a.clients, a.finals, a.partials, rate=a.rate, stuck=a.stuck)
    print(json.dumps(r, indent=1) if a.json else format_result(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
