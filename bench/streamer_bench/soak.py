"""`streamer bench --soak`: does a long-running daemon stay the same size?

Runs the real daemon (`streamer run --source stdin`) on looping speech fed as fast as it takes it
(the stdin source waits for room in its ring rather than dropping, so that is fast replay), with
many WebSocket clients and a subscriber on a real mosquitto broker, until the clients together
received `--soak-events` caption events (partials, finals and status; a million by default). It
samples the daemon's resident memory (RSS) and open file descriptors: the figures at the end of
the warm-up and at the end, and their growth, which should stay within 5 %.

Clients also check what they receive: every client's finals must have gapless `seq` numbers.
The bus's memory window is set small (`server.history_finals`) so that finals leave it many
times during the run: the soak then exercises the bounded steady state, not the filling window.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import wave
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import psutil
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from streamer.audio.decode import load_audio
from streamer_bench.dataset import default_audio_dir

DEFAULT_CLIP = Path("long") / "en_ljspeech_LJ001-0001_to_0032_concat.flac"
GROWTH_LIMIT = 0.05


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("soak (--soak)")
    g.add_argument(
        "--soak",
        action="store_true",
        help="run the soak benchmark instead: daemon + WebSocket clients + MQTT on looping speech",
    )
    g.add_argument("--soak-events", type=int, default=1_000_000, metavar="N", help="events to deliver")
    g.add_argument("--soak-clients", type=int, default=300, metavar="N", help="WebSocket clients")
    g.add_argument(
        "--soak-warmup", type=float, default=0.1, metavar="F", help="fraction of events before the baseline"
    )
    g.add_argument("--soak-model", default="tiny.en", metavar="NAME")
    g.add_argument("--soak-clip", type=Path, default=None, metavar="FILE", help="speech to loop")
    g.add_argument(
        "--soak-tracemalloc",
        action="store_true",
        help="run the daemon under tracemalloc and write where Python memory grew to soak-tracemalloc.txt",
    )


# Runs `streamer run` with a thread that compares tracemalloc snapshots once a minute: where the
# Python heap grows (it does not see native allocations: CTranslate2, onnxruntime, the allocator).
_TRACE_WRAPPER = r"""
import sys, threading, time, tracemalloc
out = sys.argv.pop(1)
tracemalloc.start(12)
def watch():
    time.sleep(120)
    base = tracemalloc.take_snapshot()
    while True:
        time.sleep(60)
        snap = tracemalloc.take_snapshot()
        cur, peak = tracemalloc.get_traced_memory()
        with open(out, "w") as f:
            f.write(f"traced {cur / 2**20:.1f} MiB (peak {peak / 2**20:.1f})\n")
            for st in snap.compare_to(base, "traceback")[:15]:
                f.write(f"{st.size_diff / 2**20:+.2f} MiB {st.count_diff:+d} blocks\n")
                f.write("\n".join("    " + line for line in st.traceback.format()[-12:]) + "\n")
threading.Thread(target=watch, daemon=True).start()
from streamer.cli import main
sys.exit(main(sys.argv[1:]))
"""


@dataclass
class Sample:
    t: float
    events: int
    rss: int
    fds: int
    audio_seconds: float


@dataclass
class Counts:
    events: int = 0
    finals: int = 0
    partials: int = 0
    status: int = 0
    mqtt: int = 0
    seq_errors: int = 0
    disconnects: int = 0
    per_client_last: dict[int, int] = field(default_factory=dict)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _mosquitto(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    exe = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if exe is None:
        raise RuntimeError("mosquitto not found (apt-get install mosquitto)")
    port = _free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nuser {getpass.getuser()}\n"
    )
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("mosquitto did not start")


def _health(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            doc: dict[str, Any] = json.loads(r.read())
            return doc
    except urllib.error.HTTPError as e:
        doc = json.loads(e.read())
        return doc
    except OSError:
        return None


def _loop_file(clip: Path, path: Path, seconds: float) -> float:
    """A WAV of `clip` repeated to at least `seconds`: the looping speech, replayed with --fast."""
    pcm = (np.clip(load_audio(clip), -1.0, 1.0) * 32767).astype("<i2").tobytes()
    copies = max(1, math.ceil(seconds * 32000 / len(pcm)))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        for _ in range(copies):
            w.writeframes(pcm)
    return copies * len(pcm) / 32000


async def _ws_client(idx: int, port: int, counts: Counts, stop: asyncio.Event) -> None:
    since = 0
    while not stop.is_set():
        try:
            async with connect(f"ws://127.0.0.1:{port}/ws?since={since}", max_size=None) as ws:
                async for raw in ws:
                    doc = json.loads(raw)
                    kind = doc.get("type")
                    if kind == "final":
                        last = counts.per_client_last.get(idx, 0)
                        if doc["seq"] != last + 1 and doc["seq"] > last:
                            counts.seq_errors += 1
                        if doc["seq"] > last:
                            counts.per_client_last[idx] = doc["seq"]
                            since = doc["seq"]
                        counts.finals += 1
                        counts.events += 1
                    elif kind == "partial":
                        counts.partials += 1
                        counts.events += 1
                    elif kind == "status":
                        counts.status += 1
                        counts.events += 1
                    if stop.is_set():
                        return
        except (ConnectionClosed, OSError):
            counts.disconnects += 1
            await asyncio.sleep(0.5)


async def _mqtt_client(port: int, prefix: str, counts: Counts, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            async with aiomqtt.Client("127.0.0.1", port) as client:
                await client.subscribe(f"{prefix}/+/final", qos=1)
                await client.subscribe(f"{prefix}/+/partial", qos=0)
                await client.subscribe(f"{prefix}/+/status", qos=1)
                async for _ in client.messages:
                    counts.mqtt += 1
                    counts.events += 1
                    if stop.is_set():
                        return
        except aiomqtt.MqttError:
            await asyncio.sleep(0.5)


def run(args: argparse.Namespace) -> int:
    clip = args.soak_clip or (args.audio or default_audio_dir()) / DEFAULT_CLIP
    if not clip.is_file():
        print(f"streamer bench --soak: speech clip '{clip}' not found (--soak-clip)", file=sys.stderr)
        return 2
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="streamer-soak-"))
    # About two events per second of speech per client (a partial per decode step, finals):
    # generous audio so the target is reached before the file ends.
    loop_seconds = _loop_file(
        clip, work / "loop.wav", 1.5 * args.soak_events / (1.2 * (args.soak_clients + 1))
    )
    broker, mqtt_port = _mosquitto(work)
    port = _free_port()
    env = {
        **os.environ,
        "STREAMER_SERVER__MAX_CLIENTS": str(args.soak_clients + 50),
        "STREAMER_SERVER__MAX_CLIENTS_PER_ADDRESS": "0",  # every soak client comes from loopback
        "STREAMER_SERVER__HISTORY_FINALS": "200",
        "STREAMER_SERVER__STALL_TIMEOUT": "600",
        "HF_HUB_OFFLINE": "1",
    }
    env.pop("STREAMER_CONFIG", None)
    env.pop("STREAMER_TOKEN", None)
    # --fast: the file source runs in lockstep with the decoder (as fast as the machine decodes,
    # with the same decisions as a live run), which is the time compression.
    launcher = [sys.executable, "-m", "streamer"]
    if args.soak_tracemalloc:
        launcher = [sys.executable, "-c", _TRACE_WRAPPER, str(out.resolve() / "soak-tracemalloc.txt")]
    cmd = [
        *launcher, "run", "--source", f"file:{work / 'loop.wav'}", "--fast",
        "--model", args.soak_model, "--language", "en", "--port", str(port),
        "--mqtt", f"mqtt://127.0.0.1:{mqtt_port}", "--mqtt-prefix", "soak",
        "--transcripts", str(work / "tx"), "--log-level", "warning",
    ]  # fmt: skip
    log_path = out / "soak-daemon.log"
    log = log_path.open("wb")
    daemon = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env)
    proc = psutil.Process(daemon.pid)
    samples: list[Sample] = []
    counts = Counts()
    result: dict[str, Any] = {"loop_audio_seconds": loop_seconds}
    try:
        deadline = time.monotonic() + 300
        while _health(port) is None:
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"daemon did not start; see {log_path}")
            time.sleep(0.2)
        result.update(asyncio.run(_drive(args, port, mqtt_port, proc, daemon, counts, samples)))
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)  # the graceful stop: flush sinks, exit 0
        try:
            rc = daemon.wait(120)
        except subprocess.TimeoutExpired:
            daemon.kill()
            rc = daemon.wait(10)
        log.close()
        broker.terminate()
        broker.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    result["daemon_exit"] = rc
    result["samples"] = [asdict(s) for s in samples]
    (out / "soak.json").write_text(json.dumps(result, indent=1) + "\n")
    print(_summary(result))
    print(f"\nfigures: {out / 'soak.json'}  daemon log: {log_path}")
    ok = result["rss_growth"] <= GROWTH_LIMIT and result["seq_errors"] == 0 and rc == 0
    return 0 if ok else 1


async def _drive(
    args: argparse.Namespace,
    port: int,
    mqtt_port: int,
    proc: Any,
    daemon: subprocess.Popen[bytes],
    counts: Counts,
    samples: list[Sample],
) -> dict[str, Any]:
    stop = asyncio.Event()
    tasks = [asyncio.ensure_future(_mqtt_client(mqtt_port, "soak", counts, stop))]
    for i in range(args.soak_clients):
        tasks.append(asyncio.ensure_future(_ws_client(i, port, counts, stop)))
        if i % 50 == 49:
            await asyncio.sleep(0.05)  # do not trip the server's accept backlog
    t0 = time.monotonic()
    warm: Sample | None = None
    target = args.soak_events
    warm_at = int(target * args.soak_warmup)
    last_print = 0.0

    def sample() -> Sample:
        h = _health(port) or {}
        audio = sum(float(s.get("audio_seconds", 0.0)) for s in h.get("streams", {}).values())
        return Sample(time.monotonic() - t0, counts.events, proc.memory_info().rss, proc.num_fds(), audio)

    while counts.events < target and daemon.poll() is None:
        await asyncio.sleep(2.0)
        s = await asyncio.to_thread(sample)
        samples.append(s)
        if warm is None and s.events >= warm_at:
            warm = s
        if s.t - last_print >= 30:
            last_print = s.t
            print(
                f"soak: {s.events:>9,} events  {s.t:6.0f} s  rss {s.rss / 2**20:6.1f} MiB  fds {s.fds}",
                file=sys.stderr,
                flush=True,
            )
    if daemon.poll() is not None:
        raise RuntimeError(f"the daemon exited early (status {daemon.returncode}) at {counts.events} events")
    end = await asyncio.to_thread(sample)
    samples.append(end)
    stop.set()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert warm is not None
    # RSS moves by tens of MiB from one sample to the next (allocator arenas, decode buffers): the
    # verdict compares medians of two windows, the 10 % of events after the warm-up and the last
    # 10 %, rather than two single samples.
    span = max(1, int(target * 0.1))
    base_w = [x.rss for x in samples if warm_at <= x.events < warm_at + span] or [warm.rss]
    end_w = [x.rss for x in samples if x.events >= end.events - span] or [end.rss]
    base_rss, end_rss = statistics.median(base_w), statistics.median(end_w)
    return {
        "events": end.events,
        "target": target,
        "clients": args.soak_clients,
        "model": args.soak_model,
        "wall_seconds": end.t,
        "audio_seconds": end.audio_seconds,
        "finals_received": counts.finals,
        "partials_received": counts.partials,
        "status_received": counts.status,
        "mqtt_received": counts.mqtt,
        "finals_produced": max(counts.per_client_last.values(), default=0),
        "seq_errors": counts.seq_errors,
        "disconnects": counts.disconnects,
        "warmup": asdict(warm),
        "end": asdict(end),
        "rss_baseline_median": base_rss,
        "rss_end_median": end_rss,
        "rss_growth": (end_rss - base_rss) / base_rss,
        "rss_growth_points": (end.rss - warm.rss) / warm.rss,
        "fds_growth": end.fds - warm.fds,
        "rss_max": max(s.rss for s in samples),
    }


def _summary(r: dict[str, Any]) -> str:
    mib = 2**20
    w, e = r["warmup"], r["end"]
    verdict = "ok" if r["rss_growth"] <= GROWTH_LIMIT else f"OVER the {GROWTH_LIMIT:.0%} limit"
    return "\n".join(
        [
            f"soak: {r['events']:,} events to {r['clients']} WebSocket clients + 1 MQTT subscriber "
            f"in {r['wall_seconds']:.0f} s ({r['audio_seconds']:.0f} s of audio, model {r['model']})",
            f"  received: {r['finals_received']:,} finals, {r['partials_received']:,} partials, "
            f"{r['status_received']:,} status over WebSocket; {r['mqtt_received']:,} MQTT messages; "
            f"{r['finals_produced']} finals produced",
            f"  RSS, median over the 10 % of events after the warm-up: "
            f"{r['rss_baseline_median'] / mib:.1f} MiB; over the last 10 %: "
            f"{r['rss_end_median'] / mib:.1f} MiB; growth {r['rss_growth']:+.1%} ({verdict})",
            f"  RSS samples: {w['rss'] / mib:.1f} MiB at the end of the warm-up ({w['events']:,} events), "
            f"{e['rss'] / mib:.1f} MiB at the end ({r['rss_growth_points']:+.1%}); "
            f"peak {r['rss_max'] / mib:.1f} MiB",
            f"  open file descriptors: {w['fds']} after warm-up, {e['fds']} at the end",
            f"  client seq errors: {r['seq_errors']}; reconnects: {r['disconnects']}; "
            f"daemon exit status: {r.get('daemon_exit')}",
        ]
    )
