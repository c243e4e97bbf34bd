"""compose.yaml and its broker configuration, as far as this machine can check them.

`compose up` itself cannot run here: there is no container registry for the eclipse-mosquitto
and python images and no compose tool. So: the streamer service's settings are valid streamer
settings and point at the broker service under the prefix the /rooms page reads; the image
contract matches the Containerfile (port, volume, read-only root); and the broker configuration
runs in real mosquitto (ports moved to free ones) with its WebSocket listener answering.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from websockets.sync.client import connect

from streamer.config import load_settings

from .helpers_mosquitto import _need, free_port

REPO = Path(__file__).resolve().parent.parent


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((REPO / "compose.yaml").read_text())
    return doc


def test_streamer_service_settings_and_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    services = compose()["services"]
    s = services["streamer"]
    for key, value in s["environment"].items():
        monkeypatch.setenv(key, str(value))
    settings = load_settings()  # raises ConfigError on a wrong key or value
    broker = urlsplit(settings.mqtt.url or "")
    assert broker.hostname in services and broker.hostname == "mosquitto"
    assert f"{broker.port}:{broker.port}" in services["mosquitto"]["ports"]
    root, _, room = settings.mqtt.prefix.partition("/")
    assert root == "rooms" and room and "/" not in room  # what /rooms subscribes to by default
    assert s["command"][:3] == ["run", "--source", "demo"]
    assert s["read_only"] is True and "tmpfs" not in s  # tested so: podman --read-only-tmpfs=false
    assert any(v.endswith(":/data") for v in s["volumes"])
    containerfile = (REPO / "Containerfile").read_text()
    assert "EXPOSE 8765" in containerfile and "8765:8765" in s["ports"]
    assert int(re.sub(r"\D", "", s["stop_grace_period"])) >= 10


@pytest.mark.component  # mosquitto
def test_broker_configuration_in_real_mosquitto(tmp_path: Path) -> None:
    mq = compose()["services"]["mosquitto"]
    conf_src = REPO / "deploy" / "mosquitto" / "mosquitto.conf"
    assert any(v.startswith("./deploy/mosquitto/mosquitto.conf:") for v in mq["volumes"])
    tcp, ws = free_port(), free_port()
    text = conf_src.read_text()
    assert "listener 9001\nprotocol websockets" in text and "9001:9001" in mq["ports"]
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        text.replace("listener 1883", f"listener {tcp} 127.0.0.1").replace(
            "listener 9001", f"listener {ws} 127.0.0.1"
        )
    )
    log = (tmp_path / "mosquitto.log").open("wb")
    proc = subprocess.Popen([_need("mosquitto"), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with connect(f"ws://127.0.0.1:{ws}/", subprotocols=["mqtt"], open_timeout=2) as c:
                    assert c.subprotocol == "mqtt"
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "no WebSocket listener"
                time.sleep(0.1)
        pub = subprocess.run(
            [_need("mosquitto_pub"), "-p", str(tcp), "-t", "rooms/demo/status", "-m", "x", "-r", "-q", "1"],
            capture_output=True,
            timeout=10,
        )
        assert pub.returncode == 0, pub.stderr
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
