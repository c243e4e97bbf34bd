"""MQTT sink against a real mosquitto broker and a real mosquitto_sub subscriber."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streamer.bus import Bus, BusEvent
from streamer.config import ConfigError, MqttConfig, Settings
from streamer.events import Status
from streamer.sinks.mqtt import MqttSink, check_prefix, parse_mqtt_url

from .helpers_mosquitto import Broker, Subscriber, free_port, make_certificates, retained, running_broker
from .sink_events import final, partial
from .sink_harness import publish, run, settings, start


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    yield from running_broker(tmp_path)


def mqtt_settings(url: str, **mqtt: object) -> Settings:
    return settings(server={"enabled": False}, mqtt={"url": url, "prefix": "t", "reconnect_max": 1.0, **mqtt})


async def until(pred: Callable[[], object], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def test_url_and_prefix_validation() -> None:
    t = parse_mqtt_url("mqtts://u%40x:p%3Aw@broker.example")
    assert (t.host, t.port, t.tls, t.username, t.password) == ("broker.example", 8883, True, "u@x", "p:w")
    assert parse_mqtt_url("mqtt://10.0.0.2:1999").port == 1999
    for bad, why in (
        ("http://x", "scheme"),
        ("broker:1883", "scheme"),
        ("mqtt://", "host"),
        ("mqtt://h:99999", "port"),
        ("mqtt://h/topic", "path"),
    ):
        with pytest.raises(ConfigError, match=rf"mqtt\.url = .*{why}"):
            parse_mqtt_url(bad)
    assert check_prefix("/a/b/") == "a/b"
    with pytest.raises(ConfigError, match=r"mqtt\.prefix"):
        check_prefix("a/#")


@pytest.mark.component
def test_topics_payloads_partial_rate_and_status(broker: Broker) -> None:
    sub = Subscriber(broker, "t/#")
    sub.wait_ready("t/probe")

    async def main() -> None:
        bus = Bus()
        sinks, _ = await start(bus, mqtt_settings(broker.url, partial_interval=0.3))
        assert sinks.mqtt is not None
        m = sinks.mqtt
        await until(lambda: m.connected)
        online = json.loads(retained(broker, "t/status"))
        assert online["status"] == "online" and online["streams"] == ["main"] and online["model"] == "tiny.en"
        # 30 revisions of one utterance within ~0.6 s: the partial topic gets a few, not 30.
        evs: list[BusEvent] = [partial(1, r, f"héllo {r}") for r in range(30)]
        evs.append(final(1, "héllo wörld"))
        evs += [final(i) for i in range(2, 6)]
        evs.append(Status(stream="main", state="retrying", detail="mic unplugged", emitted_at=12.0))
        await publish(bus, evs, interval=0.02)
        await asyncio.to_thread(sub.wait_for, lambda ms: len([m for m in ms if m[0] == "t/main/text"]) == 5)
        await sinks.close()

    run(main())
    finals = sub.finals()
    assert [f["seq"] for f in finals] == [1, 2, 3, 4, 5]
    assert finals[0] == final(1, "héllo wörld").model_dump(mode="json")
    assert sub.payloads("/main/text") == ["héllo wörld"] + [f"final number {i}" for i in range(2, 6)]
    parts = [json.loads(p) for p in sub.payloads("/main/partial")]
    assert 1 <= len(parts) <= 6 and all(p["type"] == "partial" and p["seq"] == 1 for p in parts)
    assert [p["rev"] for p in parts] == sorted(p["rev"] for p in parts)
    st = json.loads(sub.payloads("/main/status")[-1])  # the live feed of the stream's status
    assert (st["type"], st["state"], st["detail"]) == ("status", "retrying", "mic unplugged")
    # The state a late subscriber reads is in the one retained liveness message.
    online_states = [json.loads(p) for t, p in sub.messages if t == "t/status" and '"online"' in p]
    assert online_states[-1]["states"]["main"] == {
        "state": "retrying",
        "detail": "mic unplugged",
        "emitted_at": 12.0,
    }
    assert retained(broker, "t/main/status", timeout=1) == ""  # nothing there can go stale
    offline = json.loads(retained(broker, "t/status"))
    assert offline == {
        "status": "offline",
        "server": offline["server"],
        "client_id": offline["client_id"],
        "reason": "shutdown",
        "states": {"main": {"state": "offline"}},
    }
    sub.stop()


@pytest.mark.component
def test_broker_killed_and_restarted_every_final_exactly_once_in_order(broker: Broker) -> None:
    broker.set_users({"streamer": "pw"})
    broker.stop()
    broker.start()
    sub = Subscriber(broker, "t/#")
    sub.wait_ready("t/probe")
    url = f"mqtt://streamer:pw@127.0.0.1:{broker.port}"

    async def main() -> None:
        bus = Bus()
        sinks, _ = await start(bus, mqtt_settings(url))
        m = sinks.mqtt
        assert m is not None
        await until(lambda: m.connected)
        await publish(bus, [final(i) for i in range(1, 6)])
        await until(lambda: len(m.outbox) == 0 and sum(1 for _ in sub.payloads("/main/text")) == 5)

        assert m.state()["last_error"] is None
        broker.kill()
        await until(lambda: not m.connected and m.last_error is not None)
        await publish(bus, [final(i) for i in range(6, 11)])  # into the outbox
        await until(lambda: len(m.outbox) == 5)
        assert m.state()["connected"] is False and m.state()["outbox"] == 5

        # Back up, but the publisher is refused until the subscriber has resubscribed: finals
        # published to a broker without the subscriber would be lost for it (no persistence).
        broker.set_users({})
        await asyncio.to_thread(broker.start)
        await asyncio.to_thread(sub.wait_ready, "t/probe")
        broker.set_users({"streamer": "pw"})
        broker.reload()
        await publish(bus, [final(i) for i in range(11, 16)])
        await until(lambda: len(m.outbox) == 0, timeout=30)
        assert m.reconnects >= 1
        # Reconnected: /health no longer shows the error of the outage.
        assert m.state()["connected"] is True and m.state()["last_error"] is None
        await sinks.close()

    run(main(), timeout=90)
    # Every publish of the daemon was acknowledged by the broker before close() returned, so a
    # probe published now reaches the subscriber after any duplicate would have: the end marker.
    sub.wait_ready("t/probe")
    assert [f["seq"] for f in sub.finals()] == list(range(1, 16))
    assert sub.payloads("/main/text") == [f"final number {i}" for i in range(1, 16)]
    sub.stop()


@pytest.mark.component
def test_outbox_bounded_while_broker_unreachable_then_delivered_in_order(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "late", port=free_port())  # not started yet
    broker.set_users({})  # when it starts, the publisher is refused until the subscriber is ready
    url = f"mqtt://streamer:pw@127.0.0.1:{broker.port}"

    async def main() -> None:
        bus = Bus()
        sinks, _ = await start(bus, mqtt_settings(url, outbox=3))
        m = sinks.mqtt
        assert m is not None
        await publish(bus, [final(i) for i in range(1, 7)] + [partial(7, 0)])
        await until(lambda: m.outbox.overflow == 3)
        assert [f.seq for f in m.outbox.pending()] == [4, 5, 6]
        await asyncio.to_thread(broker.start)
        sub = await asyncio.to_thread(Subscriber, broker, "t/#")
        try:
            await asyncio.to_thread(sub.wait_ready, "t/probe")
            assert not m.connected
            broker.set_users({"streamer": "pw"})
            broker.reload()
            await until(lambda: m.connected and len(m.outbox) == 0, timeout=30)
            await publish(bus, [final(7)])
            await asyncio.to_thread(sub.wait_for, lambda ms: [t for t, _ in ms].count("t/main/text") == 4)
            await sinks.close()
            assert [f["seq"] for f in sub.finals()] == [4, 5, 6, 7]
            assert sub.payloads("/main/partial") == []  # partials from the outage are not replayed
        finally:
            sub.stop()
            broker.stop()

    run(main(), timeout=60)


@pytest.mark.component
def test_last_will_marks_offline_when_the_daemon_dies(broker: Broker, tmp_path: Path) -> None:
    script = tmp_path / "sinkproc.py"
    script.write_text(
        textwrap.dedent(f"""
        import asyncio, sys
        sys.path.insert(0, {str(Path(__file__).parent.parent)!r})
        from tests.sink_harness import settings, start
        from streamer.bus import Bus, BusEvent

        from streamer.events import Status

        async def main():
            s = settings(server={{"enabled": False}}, mqtt={{"url": {broker.url!r}, "prefix": "t"}})
            bus = Bus()
            sinks, _ = await start(bus, s)
            while not sinks.mqtt.connected:
                await asyncio.sleep(0.02)
            bus.publish(Status(stream="main", state="running", detail="file", emitted_at=1.0))
            print("connected", flush=True)
            await asyncio.sleep(60)

        asyncio.run(main())
    """)
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"connected"
        live = Subscriber(broker, "t/status")
        live.wait_for(lambda ms: any('"running"' in p for _, p in ms))  # the stream's state, retained
        assert json.loads(retained(broker, "t/status"))["states"]["main"]["state"] == "running"
    finally:
        proc.kill()  # SIGKILL, no DISCONNECT: the broker publishes the will
        proc.wait(10)
    live.wait_for(lambda ms: any('"offline"' in p for _, p in ms))
    live.stop()
    gone = json.loads(retained(broker, "t/status"))
    assert gone["status"] == "offline" and gone["reason"] == "connection lost"
    assert gone["states"] == {"main": {"state": "offline"}}  # no retained "running" survives the daemon
    assert retained(broker, "t/main/status", timeout=1) == ""


def test_mqtt_is_optional() -> None:
    async def main() -> None:
        sinks, _ = await start(Bus(), settings(server={"enabled": False}))
        assert sinks.mqtt is None and sinks.server is None and sinks.server_port is None
        await sinks.close()

    run(main())


def test_bad_mqtt_url_fails_before_anything_starts(tmp_path: Path) -> None:
    async def main() -> None:
        s = settings(mqtt={"url": "http://broker"}, transcripts={"dir": str(tmp_path / "tx")})
        with pytest.raises(ConfigError, match=r"mqtt\.url"):
            await start(Bus(), s)
        assert not (tmp_path / "tx").exists()

    run(main())


@pytest.mark.component
def test_mqtts_with_private_ca(tmp_path: Path) -> None:
    ca, cert, key = make_certificates(tmp_path / "pki")
    broker = Broker(tmp_path / "tlsbroker", tls=(cert, key))
    broker.start()
    sub = Subscriber(broker, "t/#")  # on the plain listener of the same broker
    try:
        sub.wait_ready("t/probe")
        url = f"mqtts://127.0.0.1:{broker.tls_port}"

        async def main() -> None:
            untrusted, _ = await start(Bus(), mqtt_settings(url))  # system CAs: the broker is a stranger
            u = untrusted.mqtt
            assert u is not None
            await until(lambda: u.reconnects >= 1)
            assert not u.connected and "certificate" in (u.last_error or "").lower()
            await untrusted.close()

            bus = Bus()
            sinks, _ = await start(bus, mqtt_settings(url, ca_file=str(ca)))
            m = sinks.mqtt
            assert m is not None
            await until(lambda: m.connected)
            await publish(bus, [final(1, "over TLS")])
            await asyncio.to_thread(sub.wait_for, lambda ms: ("t/main/text", "over TLS") in ms)
            await sinks.close()

        run(main())
        with pytest.raises(ConfigError, match=r"mqtt\.ca_file"):
            MqttSink(
                MqttConfig(url=url, ca_file=tmp_path / "missing.pem"),
                Bus(),
                streams=["main"],
                model="m",
                version="v",
            )
    finally:
        sub.stop()
        broker.stop()
