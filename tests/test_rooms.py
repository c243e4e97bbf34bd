"""Many rooms, one broker: three real daemons (tiny.en, the built-in demo) publish to one real
mosquitto under a prefix each (rooms/annex, rooms/hall, rooms/studio); the `/rooms` page in real
headless Chromium subscribes over MQTT-over-WebSocket and shows every room's captions and state.
One daemon is killed with SIGKILL: its card says "offline" from its last will at once (the
connection closed); started again, the same card resumes with new captions while the others
never stopped. Another is frozen with SIGSTOP, its connection left open: the broker publishes its
will after 1.5 keep-alives, and when it wakes up it reconnects and its card resumes. Every wait
is on an event (READY=1, a DOM state), none on a fixed time.
"""

from __future__ import annotations

import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers_daemon import Daemon
from .helpers_mosquitto import Broker, free_port
from .web_harness import chromium, screenshot_dir

pytestmark = [pytest.mark.model, pytest.mark.slow, pytest.mark.component]

ROOMS = ("annex", "hall", "studio")
KEEPALIVE = 15  # streamer/sinks/mqtt.py: the broker publishes the will by 1.5 x this at the latest


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "broker", websockets=True)
    b.start()
    try:
        yield b
    finally:
        b.stop()


def start_room(tmp: Path, name: str, broker: Broker, port: int) -> Daemon:
    d = tmp / f"{name}-{time.monotonic_ns()}"
    d.mkdir()
    daemon = Daemon(
        d,
        [
            *("--source", "demo", "--model", "tiny.en", "--language", "en"),
            *("--mqtt", broker.url, "--mqtt-prefix", f"rooms/{name}"),
            *("--port", str(port), "--transcripts", ""),
        ],
    )
    daemon.notify.wait_message("READY", timeout=120)
    return daemon


def room_is(name: str, state: str) -> str:
    return f"document.querySelector(\".room[data-room='{name}']\")?.dataset.state === '{state}'"


def has_final(name: str) -> str:
    return f"!!document.querySelector(\".room[data-room='{name}'] .captions p.final\")"


def test_rooms_page_three_daemons_one_killed_and_back(broker: Broker, tmp_path: Path) -> None:
    ports = {name: free_port() for name in ROOMS}
    daemons: dict[str, Daemon] = {}
    try:
        for name in ROOMS:
            daemons[name] = start_room(tmp_path, name, broker, ports[name])
        page_url = f"http://127.0.0.1:{ports['hall']}/rooms?mqtt=ws://127.0.0.1:{broker.ws_port}&root=rooms"
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1400, "height": 520})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(page_url)
            page.wait_for_function(
                " && ".join(f"{room_is(n, 'online')} && {has_final(n)}" for n in ROOMS), timeout=180_000
            )
            assert page.locator("#broker").get_attribute("data-state") == "connected"

            # kill -9: no DISCONNECT, so the broker publishes the daemon's will ("offline").
            killed_at = time.monotonic()
            daemons["studio"].proc.kill()
            page.wait_for_function(room_is("studio", "offline"), timeout=(1.5 * KEEPALIVE + 5) * 1000)
            offline_after = time.monotonic() - killed_at
            print(f"\nrooms: 'studio' shown offline {offline_after:.2f} s after kill -9")
            assert offline_after <= 1.5 * KEEPALIVE
            assert "connection lost" in page.locator(".room[data-room='studio'] .state").inner_text()
            page.screenshot(path=str(screenshot_dir(tmp_path) / "rooms-offline.png"))
            for n in ("annex", "hall"):
                assert page.locator(f".room[data-room='{n}']").get_attribute("data-state") == "online"

            # Back: the same card, a new session marked "resumed", new finals after the mark.
            daemons["studio"].stop()
            daemons["studio"] = start_room(tmp_path, "studio", broker, ports["studio"])
            page.wait_for_function(
                f"{room_is('studio', 'online')} && "
                "!!document.querySelector(\".room[data-room='studio'] p.resumed ~ p.final\")",
                timeout=120_000,
            )
            # A daemon that hangs with its connection open (SIGSTOP: a frozen host, a cut cable)
            # sends no PINGREQ: the broker gives up after 1.5 keep-alives and publishes its will.
            stopped_at = time.monotonic()
            daemons["annex"].signal(signal.SIGSTOP)
            try:
                page.wait_for_function(room_is("annex", "offline"), timeout=(1.5 * KEEPALIVE + 10) * 1000)
                silent_after = time.monotonic() - stopped_at
                print(f"rooms: 'annex' (SIGSTOP) shown offline {silent_after:.1f} s after it went silent")
                # MQTT's limit is 1.5 keep-alives of silence; mosquitto checks about once a second.
                assert silent_after <= 1.5 * KEEPALIVE + 5
            finally:
                daemons["annex"].signal(signal.SIGCONT)
            # Woken up, it finds its connection closed, reconnects and says "online" again.
            page.wait_for_function(
                f"{room_is('annex', 'online')} && "
                "!!document.querySelector(\".room[data-room='annex'] p.resumed ~ p.final\")",
                timeout=120_000,
            )
            assert page.locator(".room").count() == len(ROOMS)
            for n in ROOMS:
                assert page.locator(f".room[data-room='{n}']").get_attribute("data-state") == "online"
            page.screenshot(path=str(screenshot_dir(tmp_path) / "rooms.png"))
            assert not errors, errors

        # What the watchdog sees is exported for alerts (streamer_progress_age_seconds).
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['hall']}/metrics", timeout=10) as r:
            exposition = r.read().decode()
        assert 'streamer_progress_age_seconds{stream="main"}' in exposition
        assert "streamer_mqtt_connected 1.0" in exposition
    finally:
        for d in daemons.values():
            d.stop()
