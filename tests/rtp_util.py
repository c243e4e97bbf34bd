"""Helpers for RTP end-to-end tests: a live daemon with its events, real ffmpeg senders, a UDP relay."""

from __future__ import annotations

import heapq
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streamer.audio.rtp import RtpError, parse, seq_delta

from .components import ffmpeg

REPO = Path(__file__).resolve().parent.parent

# How each codec is sent: ffmpeg output options. PCMU at 8 kHz is payload type 0 (no SDP needed),
# L16 at 16 kHz and Opus are dynamic types described by the SDP file ffmpeg writes.
# `-packetsize` (RTP header + payload) makes 20 ms packets as telephony does; ffmpeg would
# otherwise fill each packet up to 1460 bytes (180 ms of PCMU).
FFMPEG_CODECS = {
    "pcmu": ["-ac", "1", "-ar", "8000", "-c:a", "pcm_mulaw", "-packetsize", "172"],
    "l16": ["-ac", "1", "-ar", "16000", "-c:a", "pcm_s16be", "-packetsize", "652"],
    "opus": ["-ac", "1", "-c:a", "libopus", "-b:a", "32k"],
}


def free_udp_port() -> int:
    # Even ports: ffmpeg sends RTCP to port + 1, which must not be another test's RTP port.
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port % 2 == 0 and port < 65534:
            return port


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ffmpeg_send(
    path: Path,
    codec: str,
    port: int,
    sdp: Path | None = None,
    *,
    seconds: float | None = None,
    realtime: bool = True,
) -> subprocess.Popen[bytes]:
    cmd = [ffmpeg(), "-hide_banner", "-loglevel", "error", "-nostdin"]
    if realtime:
        cmd.append("-re")
    cmd += ["-i", str(path)]
    if seconds is not None:
        cmd += ["-t", str(seconds)]
    cmd += [*FFMPEG_CODECS[codec], "-f", "rtp"]
    if sdp is not None:
        cmd += ["-sdp_file", str(sdp)]
    cmd.append(f"rtp://127.0.0.1:{port}")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def write_sdp(codec: str, port: int, sdp: Path, sample: Path) -> None:
    """The SDP file ffmpeg writes for this codec and port, made before any receiver listens."""
    proc = ffmpeg_send(sample, codec, port, sdp, seconds=0.02, realtime=False)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and sdp.is_file(), err.decode(errors="replace")


class Daemon:
    """`streamer run --jsonl` in a subprocess; its events are collected as they come."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_tcp_port()
        full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamer",
                "run",
                "--jsonl",
                "--port",
                str(self.port),
                "--transcripts",
                "",
                *args,
            ],
            cwd=REPO,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.stderr = ""
        self.token: str | None = None  # the read token, for /metrics

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                with self._cond:
                    self.events.append(json.loads(line))
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for e in self.events:
                    if pred(e):
                        return e
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"event not seen; stderr: {self._stderr_now()}")
                self._cond.wait(min(left, 0.5))

    def _stderr_now(self) -> str:
        if self.proc.poll() is None:
            return "(daemon still running)"
        assert self.proc.stderr is not None
        return self.proc.stderr.read()[-3000:]

    def wait_running(self, stream: str | None = None, timeout: float = 180) -> None:
        self.wait_for(
            lambda e: (
                e["type"] == "status"
                and e["state"] == "running"
                and (stream is None or e["stream"] == stream)
            ),
            timeout,
        )

    def get(self, path: str) -> bytes:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", headers=headers)
        with urllib.request.urlopen(req, timeout=10) as r:
            return bytes(r.read())

    def health(self) -> dict[str, Any]:
        try:
            body = self.get("/health")
        except urllib.error.HTTPError as e:  # 503 still carries the JSON
            body = e.read()
        return dict(json.loads(body))

    def wait_state(self, stream: str, state: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.health()["streams"][stream]["state"] == state:
                return
            time.sleep(0.1)
        raise AssertionError(f"stream {stream} never reached state {state}: {self.health()}")

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a Prometheus sample's values whose labels include `labels`."""
        total = 0.0
        for line in self.get("/metrics").decode().splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            sample, _, value = line.rpartition(" ")
            if all(f'{k}="{v}"' in sample for k, v in labels.items()):
                total += float(value)
        return total

    def stop(self, timeout: float = 120) -> int:
        """SIGINT (the last finals come out), then kill if it hangs; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._reader.join(10)
        if self.proc.stderr is not None:
            self.stderr = self.proc.stderr.read()
        return code

    def finals(self, stream: str | None = None) -> list[dict[str, Any]]:
        with self._cond:
            return [
                e for e in self.events if e["type"] == "final" and (stream is None or e["stream"] == stream)
            ]


class Relay(threading.Thread):
    """A seeded UDP relay: drops `loss` of the packets, duplicates `dup`, delays each by 0-`reorder` s."""

    def __init__(
        self, target: int, *, loss: float = 0.05, dup: float = 0.03, reorder: float = 0.04, seed: int = 1
    ) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.target = ("127.0.0.1", target)
        self.loss, self.dup, self.reorder = loss, dup, reorder
        self.rng = random.Random(seed)
        self.dropped: list[int] = []
        self.forwarded: list[int] = []
        self.duplicated = 0
        self.reordered = 0
        self.max_lateness = 0.0  # how much later than planned a packet left (a busy machine)
        self.received = 0
        self._halt = threading.Event()

    def run(self) -> None:
        out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        queue: list[tuple[float, int, bytes]] = []
        n = 0
        last_due = 0.0
        # stop() comes after the senders finished, but this thread may be behind on a busy machine:
        # everything already in the socket is still relayed. The relay ends once a read found the
        # socket empty after the halt, and the delay queue is empty.
        drained = False
        while not drained or queue:
            halted = self._halt.is_set()
            self.sock.settimeout(max(0.0005, min(0.002, queue[0][0] - time.monotonic())) if queue else 0.002)
            try:
                data, _ = self.sock.recvfrom(65536)
            except TimeoutError:
                data = None
                drained = halted
            now = time.monotonic()
            if data is not None:
                self.received += 1
                try:
                    seq = parse(data).sequence
                except RtpError:
                    seq = -1
                if self.rng.random() < self.loss:
                    self.dropped.append(seq)
                else:
                    copies = 2 if self.rng.random() < self.dup else 1
                    self.duplicated += copies - 1
                    for _ in range(copies):
                        due = now + self.rng.uniform(0, self.reorder)
                        self.reordered += due < last_due
                        last_due = max(last_due, due)
                        heapq.heappush(queue, (due, n, data))
                        n += 1
                    self.forwarded.append(seq)
            while queue and queue[0][0] <= now:
                due, _, payload = heapq.heappop(queue)
                out.sendto(payload, self.target)
                self.max_lateness = max(self.max_lateness, time.monotonic() - due)
        out.close()
        self.sock.close()

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(5)

    def detectable_losses(self) -> int:
        """Dropped packets a receiver can notice: those before the last one it got."""
        last = self.forwarded[-1]
        return sum(1 for s in self.dropped if seq_delta(s, last) < 0)
