"""A real mosquitto broker and `mosquitto_sub` subscriber for tests (Debian mosquitto, mosquitto-clients).

The broker listens on a free loopback port with a generated config (allow_anonymous, no
persistence). Clients that give a username are checked against an optional password file, which
the restart test uses to decide when the publisher may come back (SIGHUP reloads it).
"""

from __future__ import annotations

import getpass
import json
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .components import tool


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _need(name: str) -> str:
    return tool(name, "mosquitto mosquitto-clients openssl")


class Broker:
    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        tls: tuple[Path, Path] | None = None,
        websockets: bool = False,
    ) -> None:
        """`tls`: (certfile, keyfile) adds a TLS listener on `tls_port` besides the plain one;
        `websockets` an MQTT-over-WebSocket listener on `ws_port` (browsers)."""
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.conf = self.dir / "mosquitto.conf"
        self.passwd = self.dir / "passwd"
        self.log = self.dir / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.tls = tls
        self.tls_port = free_port() if tls else None
        self.ws_port = free_port() if websockets else None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def set_users(self, users: dict[str, str]) -> None:
        """Replace the password file (an empty dict lets no named user in)."""
        self.passwd.write_text("")
        for user, password in users.items():
            subprocess.run([_need("mosquitto_passwd"), "-b", str(self.passwd), user, password], check=True)

    def start(self) -> None:
        # `user`: when started as root, mosquitto would switch to user "mosquitto", who cannot read
        # the test's private temporary directory.
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence false",
            f"user {getpass.getuser()}",
        ]
        if self.passwd.exists():
            lines.append(f"password_file {self.passwd}")
        if self.ws_port is not None:
            lines += [f"listener {self.ws_port} 127.0.0.1", "protocol websockets"]
        if self.tls is not None:
            lines += [
                f"listener {self.tls_port} 127.0.0.1",
                f"certfile {self.tls[0]}",
                f"keyfile {self.tls[1]}",
            ]
        self.conf.write_text("\n".join(lines) + "\n")
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([_need("mosquitto"), "-c", str(self.conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening")

    def kill(self) -> None:
        """SIGKILL: the broker dies without closing anything cleanly."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def reload(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None


class Subscriber:
    """`mosquitto_sub -v -q 1` on a topic filter; collects (topic, payload) lines in a thread."""

    def __init__(self, broker: Broker, topic: str, *extra: str) -> None:
        self.broker = broker
        self.messages: list[tuple[str, str]] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            [
                _need("mosquitto_sub"),
                "-h",
                "127.0.0.1",
                "-p",
                str(broker.port),
                "-t",
                topic,
                "-v",
                "-q",
                "1",
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8").rstrip("\n")
            topic, _, payload = line.partition(" ")
            with self._cond:
                self.messages.append((topic, payload))
                self._cond.notify_all()

    def wait_for(self, pred: Callable[[list[tuple[str, str]]], bool], timeout: float = 20.0) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: pred(self.messages), timeout):
                raise AssertionError(f"timed out; received: {self.messages[-10:]}")

    def wait_ready(self, probe_topic: str, timeout: float = 20.0) -> None:
        """Publish probes until one arrives: the subscription is (again) in place."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            marker = f"probe-{uuid.uuid4().hex}"
            subprocess.run(
                [
                    _need("mosquitto_pub"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.broker.port),
                    "-t",
                    probe_topic,
                    "-m",
                    marker,
                    "-q",
                    "1",
                ],
                stderr=subprocess.DEVNULL,
                check=False,
            )
            try:
                self.wait_for(lambda ms, m=marker: any(p == m for _, p in ms), timeout=0.5)  # type: ignore[misc]
                return
            except AssertionError:
                continue
        raise AssertionError("subscriber never became ready")

    def payloads(self, suffix: str) -> list[str]:
        with self._cond:
            return [p for t, p in self.messages if t.endswith(suffix)]

    def finals(self) -> list[dict[str, Any]]:
        return [json.loads(p) for p in self.payloads("/final")]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


def retained(broker: Broker, topic: str, timeout: float = 5.0) -> str:
    """The retained message on `topic` (mosquitto_sub -C 1 ends after one message)."""
    out = subprocess.run(
        [
            _need("mosquitto_sub"),
            "-h",
            "127.0.0.1",
            "-p",
            str(broker.port),
            "-t",
            topic,
            "-C",
            "1",
            "-W",
            str(int(timeout)),
        ],
        capture_output=True,
        check=False,
    )
    return out.stdout.decode().strip()


def make_certificates(d: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 (openssl CLI): (ca, cert, key)."""
    d.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def openssl(*args: str) -> None:
        subprocess.run([_need("openssl"), *args], check=True, capture_output=True, cwd=d)

    openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=streamer test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    )
    return d / "ca.crt", d / "server.crt", d / "server.key"


def running_broker(tmp_path: Path) -> Iterator[Broker]:
    """Body of a `broker` fixture: `yield from running_broker(tmp_path)`."""
    broker = Broker(tmp_path / "broker")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
