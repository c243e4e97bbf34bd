"""Live caption latency with and without a file job running: `python -m streamer_bench.load`.

Runs the real daemon on a recording paced at 1x (a live source), follows its captions over the
WebSocket for `--seconds`, and reports the latency of finals and partials on the audio clock
(`emitted_at - end`). The second run submits a long file as a job (POST /v1/jobs) at the start,
so the job's decodes compete with the live stream's; it also reports how far the job got.
A figure, not a test: see docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

import streamer
from streamer_bench.dataset import default_audio_dir

# The daemon runs from the checkout that holds streamer (as capacity.py does), whatever the caller's cwd.
REPO = Path(streamer.__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return round(v[min(len(v) - 1, int(q * len(v)))] * 1000, 1)


def _post_job(url: str, path: Path, model: str) -> dict[str, Any]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\n{model}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + path.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    req = urllib.request.Request(
        url, data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=120) as r:
        doc: dict[str, Any] = json.loads(r.read())
        return doc


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=30) as r:
        doc: dict[str, Any] = json.loads(r.read())
        return doc


async def _follow(port: int, seconds: float) -> tuple[list[float], list[float]]:
    finals: list[float] = []
    partials: list[float] = []
    deadline = time.monotonic() + seconds
    async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
        while time.monotonic() < deadline:
            try:
                msg = json.loads(await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic())))
            except (asyncio.TimeoutError, TimeoutError):
                break
            if msg.get("type") == "final":
                finals.append(msg["emitted_at"] - msg["end"])
            elif msg.get("type") == "partial":
                partials.append(msg["emitted_at"] - msg["end"])
    return finals, partials


def run_once(live: Path, job_file: Path | None, seconds: float, model: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="streamer-load-bench-") as tmp:  # no jobs left from earlier runs
        return _run_once(live, job_file, seconds, model, Path(tmp))


def _run_once(live: Path, job_file: Path | None, seconds: float, model: str, state: Path) -> dict[str, Any]:
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "STREAMER_API__STATE_DIR": str(state)}
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "streamer", "run", "--source", f"file:{live}", "--model", model),
            *("--language", "en", "--port", str(port), "--transcripts", ""),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("daemon did not start") from None
                time.sleep(0.2)
        job = _post_job(f"http://127.0.0.1:{port}/v1/jobs", job_file, model) if job_file else None
        finals, partials = asyncio.run(_follow(port, seconds))
        job_doc = _get(f"http://127.0.0.1:{port}/v1/jobs/{job['id']}") if job else None
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    out: dict[str, Any] = {
        "finals": len(finals),
        "final_latency_ms": {"p50": _pct(finals, 0.5), "p90": _pct(finals, 0.9), "max": _pct(finals, 1.0)},
        "partial_latency_ms": {
            "p50": _pct(partials, 0.5),
            "p90": _pct(partials, 0.9),
            "max": _pct(partials, 1.0),
        },
        "final_latency_mean_ms": round(statistics.mean(finals) * 1000, 1) if finals else None,
    }
    if job_doc is not None:
        out["job"] = {k: job_doc[k] for k in ("state", "audio_seconds", "audio_seconds_done", "progress")}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m streamer_bench.load")
    p.add_argument("--audio", type=Path, default=None, help="recorded test audio (STREAMER_TEST_AUDIO)")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--model", default="tiny.en")
    a = p.parse_args(argv)
    audio = a.audio or default_audio_dir()
    live = audio / "long" / "en_ljspeech_LJ001-0001_to_0032_concat.flac"
    result = {
        "without_job": run_once(live, None, a.seconds, a.model),
        "with_job": run_once(live, live, a.seconds, a.model),
        "loadavg_1m": os.getloadavg()[0],
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
