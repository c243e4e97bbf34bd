"""The file API load-balanced by real HAProxy (deploy/haproxy/haproxy.cfg, unchanged) over two
real daemons (tiny.en), driven by the official `openai` client.

- 20 transcriptions at once through HAProxy: all succeed with the right text, and both daemons
  answered some (the `X-Streamer-Node` header HAProxy adds, checked against HAProxy's own
  per-server counters from its stats socket);
- a job submitted through HAProxy carries the accepting daemon's node name and is polled and
  fetched through HAProxy from that daemon; once that daemon is down, HAProxy says so (503)
  instead of letting the other daemon answer "no such job".
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest

from .components import tool
from .helpers_mosquitto import free_port

pytestmark = [pytest.mark.model, pytest.mark.slow, pytest.mark.component]

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "deploy" / "haproxy" / "haproxy.cfg"
CLIP = "en/ljspeech_LJ001-0002.flac"  # 2 s: "in being comparatively modern."
REQUESTS = 20


def wait_for(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


class ApiDaemon:
    """`streamer run` with the file API, its live source stdin kept open and silent."""

    def __init__(self, node: str, tmp: Path) -> None:
        self.node = node
        self.port = free_port()
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "STREAMER_API__NODE": node,
            "STREAMER_API__STATE_DIR": str(tmp / f"state-{node}"),
            "STREAMER_API__MAX_REQUESTS": "2",  # = maxconn in haproxy.cfg
            # As haproxy.cfg says: every request comes from HAProxy's address.
            "STREAMER_API__MAX_REQUESTS_PER_ADDRESS": "0",
        }
        env.pop("STREAMER_CONFIG", None)
        env.pop("STREAMER_TOKEN", None)
        self.log = tmp / f"daemon-{node}.log"
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "streamer", "run", "--source", "stdin", "--model", "tiny.en"),
                *("--language", "en", "--port", str(self.port), "--transcripts", ""),
            ],
            cwd=tmp,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("wb"),
        )

    def up(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text()[-3000:]
        return port_open(self.port)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdin:
            self.proc.stdin.close()


class HAProxy:
    def __init__(self, tmp: Path, nodes: dict[str, ApiDaemon]) -> None:
        self.port = free_port()
        self.socket = tmp / "haproxy.sock"
        env = {
            **os.environ,
            "STREAMER_API_BIND": f"127.0.0.1:{self.port}",
            "HAPROXY_STATS_SOCKET": str(self.socket),
            **{f"STREAMER_NODE_{n.upper()}": f"127.0.0.1:{d.port}" for n, d in nodes.items()},
        }
        haproxy = tool("haproxy", "haproxy")
        check = subprocess.run([haproxy, "-c", "-f", str(CONFIG)], env=env, capture_output=True, text=True)
        assert check.returncode == 0, check.stderr + check.stdout
        self.log = tmp / "haproxy.log"
        self.proc = subprocess.Popen(
            [haproxy, "-db", "-f", str(CONFIG)], env=env, stdout=self.log.open("wb"), stderr=subprocess.STDOUT
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, dict[str, str]]:
        """`show stat` of the backend's servers: name -> column -> value."""
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.socket))
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        lines = data.decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
        return {r["svname"]: r for r in rows if r["pxname"] == "streamer_api" and r["svname"] in ("a", "b")}

    def servers_are(self, state: str, *names: str) -> bool:
        """Every named server is in `state` ("UP", "DOWN"), not on its way ("UP 1/2": failing)."""
        try:
            st = self.stats()
        except OSError:
            return False
        return all(st.get(n, {}).get("status") == state for n in names)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[HAProxy, dict[str, ApiDaemon]]]:
    nodes = {n: ApiDaemon(n, tmp_path) for n in ("a", "b")}
    proxy: HAProxy | None = None
    try:
        for d in nodes.values():
            wait_for(d.up, 120, f"daemon {d.node}")
        proxy = started = HAProxy(tmp_path, nodes)
        wait_for(lambda: started.servers_are("UP", "a", "b"), 30, "both servers UP in HAProxy")
        yield proxy, nodes
    finally:
        if proxy is not None:
            proxy.stop()
        for d in nodes.values():
            d.stop()


def test_twenty_concurrent_requests_and_a_job_through_haproxy(
    fleet: tuple[HAProxy, dict[str, ApiDaemon]], audio_dir: Path
) -> None:
    proxy, nodes = fleet
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="unused", max_retries=0, timeout=300)
    clip = audio_dir / CLIP

    def transcribe(_: int) -> tuple[str, str]:
        with clip.open("rb") as f:
            raw = client.audio.transcriptions.with_raw_response.create(model="whisper-1", file=f)
        return raw.headers["x-streamer-node"], raw.parse().text

    with ThreadPoolExecutor(REQUESTS) as pool:
        results = list(pool.map(transcribe, range(REQUESTS)))
    served = Counter(node for node, _ in results)
    print(f"\nhaproxy: {REQUESTS} concurrent transcriptions, served by {dict(sorted(served.items()))}")
    assert len(results) == REQUESTS
    assert all("comparatively modern" in text.lower() for _, text in results), results
    assert set(served) == {"a", "b"}, served
    stats = proxy.stats()
    # HAProxy's own count of 2xx answers per server agrees with the header (nothing else ran yet
    # but health checks, which are not counted as responses).
    assert {n: int(stats[n]["hrsp_2xx"]) for n in ("a", "b")} == {n: served[n] for n in ("a", "b")}

    # A job: submitted, polled and fetched through HAProxy.
    status, headers, body = curl(proxy.url + "/v1/jobs", "-F", f"file=@{clip}", "-F", "model=whisper-1")
    assert status in (200, 201, 202), body
    job = json.loads(body)
    holder = headers["x-streamer-node"]
    assert job["id"].startswith(f"job_{holder}_"), job

    def done() -> dict[str, Any] | None:
        status, headers, body = curl(f"{proxy.url}/v1/jobs/{job['id']}")
        assert status == 200 and headers["x-streamer-node"] == holder, body
        doc: dict[str, Any] = json.loads(body)
        return doc if doc["state"] in ("done", "failed") else None

    final = wait_for(done, 120, "the job to finish")
    assert final["state"] == "done", final
    status, headers, body = curl(f"{proxy.url}/v1/jobs/{job['id']}/result.txt")
    assert status == 200 and headers["x-streamer-node"] == holder
    assert "comparatively modern" in body.lower()

    # The daemon holding the job stops: HAProxy answers for it rather than the other daemon.
    nodes[holder].stop()
    wait_for(lambda: proxy.servers_are("DOWN", holder), 30, f"HAProxy to mark {holder} DOWN")
    status, _, body = curl(f"{proxy.url}/v1/jobs/{job['id']}")
    assert status == 503, body
    assert json.loads(body)["error"]["code"] == "node_unavailable", body


def curl(url: str, *args: str) -> tuple[int, dict[str, str], str]:
    """curl: (HTTP status, lower-cased response headers, body); text mode turned CRLF into LF."""
    res = subprocess.run(
        [tool("curl", "curl"), "-sS", "-D", "-", url, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    head, _, body = res.stdout.partition("\n\n")
    while head.split(" ", 2)[1:2] == ["100"]:  # "100 Continue" before the answer to an upload
        head, _, body = body.partition("\n\n")
    lines = head.split("\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body
