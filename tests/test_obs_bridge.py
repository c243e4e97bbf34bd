"""`streamer obs` against a real, headless OBS Studio and the real streamer WebSocket server.

Captions are published into a real Bus behind the real server (scripted protocol-2 events:
deterministic and fast); the bridge follows it and drives OBS through obs-websocket. What OBS
shows is read back from OBS itself (GetInputSettings), and native captions are found in the
stream OBS sends to a local RTMP receiver. Without OBS: skipped locally, failed under CI.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from streamer.audio.decode import load_audio
from streamer.bus import Bus
from streamer.config import Settings
from streamer.obs.bridge import Bridge, ObsClient, ObsError
from streamer.obs.captions import last_lines
from streamer.obs.protocol import ObsRequestError

from .components import require
from .helpers_mosquitto import free_port
from .helpers_obs import Obs, RtmpReceiver, cea608_captions, obs_missing_reason
from .sink_events import final, partial
from .sink_harness import http_get, publish, run, settings, start

pytestmark = [pytest.mark.slow, pytest.mark.component]


# Module scope: checked before the module-scoped `obs` fixture tries to start OBS.
@pytest.fixture(scope="module", autouse=True)
def _obs_installed() -> None:
    missing = obs_missing_reason()
    require("OBS Studio", missing is None, missing or "")


REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")


@pytest.fixture(scope="module")
def obs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Obs]:
    o = Obs(tmp_path_factory.mktemp("obs"))
    o.start()
    try:
        yield o
    finally:
        o.stop()


def bridge_settings(obs: Obs, daemon_port: int | None, **obs_keys: Any) -> Settings:
    return Settings(
        obs={
            "url": obs.url,
            "password": obs.password,
            "daemon": f"ws://127.0.0.1:{daemon_port}/ws",
            "reconnect_min": 0.1,
            "reconnect_max": 1.0,
            **obs_keys,
        }
    )


async def until(
    probe: Callable[[], Awaitable[T]], ok: Callable[[T], bool], what: str, timeout: float = 20.0
) -> T:
    """Poll `probe` until `ok` holds: waiting for the state itself, not for a while."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await probe()
            if ok(last):
                return last
        except (ObsError, ObsRequestError, ConnectionError, OSError) as e:
            last = e
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def shown(lines: list[str]) -> str:
    return "\n".join(lines)


class Running:
    """The bridge as a task; its failure surfaces in the test instead of hanging it."""

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self.task = asyncio.ensure_future(bridge.run())

    def check(self) -> None:
        if self.task.done():
            self.task.result()
            raise AssertionError("the bridge stopped")

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def text_of(checker: ObsClient, source: str, running: Running) -> str:
    running.check()
    return str(
        (await checker.call("GetInputSettings", {"inputName": source}))["inputSettings"].get("text", "")
    )


def test_text_source_follows_captions_english_and_korean(obs: Obs) -> None:
    source = "Captions (test)"

    async def main() -> None:
        bus = Bus()
        bus.publish(final(1, "This was said before the bridge started."))
        sinks, _ = await start(bus, settings())
        checker = await ObsClient.open(obs.url, obs.password)
        running = Running(Bridge(bridge_settings(obs, sinks.server_port, source=source), stream="main"))
        try:

            async def text() -> str:
                return await text_of(checker, source, running)

            # Created in the current scene, with the replayed final already shown.
            await until(text, lambda t: t == "This was said before the bridge started.", "the replayed final")

            async def in_scene() -> list[tuple[str, int]]:
                items = (await checker.call("GetSceneItemList", {"sceneName": "Scene"}))["sceneItems"]
                return [
                    (i["inputKind"], i["sceneItemTransform"]["alignment"])
                    for i in items
                    if i["sourceName"] == source
                ]

            # A FreeType 2 text source at the bottom centre of the canvas.
            await until(
                in_scene, lambda k: k == [("text_ft2_source_v2", 8)], "the source in the current scene"
            )

            # Protocol 2: a partial previews the tail, a non-last final settles part of it, the
            # next partial carries the rest: no word shows twice, at most two lines of 42.
            await publish(bus, [partial(2, 0, "And then the weather")])
            running_text = "This was said before the bridge started. And then the weather"
            await until(text, lambda t: t == shown(last_lines(running_text, 42, 2)), "the first partial")
            settled = final(2, "And then the weather turned,")
            await publish(bus, [settled.model_copy(update={"last": False}), partial(3, 4, "cold and grey")])
            running_text = (
                "This was said before the bridge started. And then the weather turned, cold and grey"
            )
            expected = shown(last_lines(running_text, 42, 2))
            got = await until(text, lambda t: t == expected, "the settled final and its tail")
            assert got.endswith("cold and grey") and len(got.splitlines()) == 2
            assert all(len(line) <= 42 for line in got.splitlines())

            # Korean, laid out with wide characters counted double.
            await publish(bus, [final(3, "cold and grey."), partial(4, 0, "안녕하세요, 오늘")])
            await until(text, lambda t: t.endswith("안녕하세요, 오늘"), "a Korean partial")
            await publish(bus, [final(4, "안녕하세요, 오늘 회의를 시작하겠습니다.")])
            running_text += ". 안녕하세요, 오늘 회의를 시작하겠습니다."
            expected = shown(last_lines(running_text, 42, 2))
            got = await until(text, lambda t: t == expected, "the Korean final")
            assert "회의를 시작하겠습니다." in got
            assert not running.bridge.streaming and running.bridge.captions_sent == 0  # OBS is not streaming
        finally:
            await running.stop()
            await checker.call("RemoveInput", {"inputName": source})
            await checker.close()
            await sinks.close()

    run(main(), timeout=90)


def test_reconnects_to_the_daemon_and_to_obs_independently(tmp_path: Path) -> None:
    source = "Captions (reconnect)"
    # An OBS of its own: this test stops and restarts it.
    obs = Obs(tmp_path / "obs")
    obs.start()

    async def main() -> None:
        bus = Bus()
        sinks, _ = await start(bus, settings())
        port = sinks.server_port
        checker = await ObsClient.open(obs.url, obs.password)
        running = Running(Bridge(bridge_settings(obs, port, source=source), stream="main"))
        try:

            async def text() -> str:
                return await text_of(checker, source, running)

            await publish(bus, [final(1, "before the daemon went away")])
            await until(text, lambda t: t == "before the daemon went away", "the first final")

            # The daemon's server goes away and comes back on the same port with the same session:
            # the bridge resumes with since=1 and gets what it missed exactly once.
            await sinks.close()
            await publish(bus, [final(2, "said while the bridge was away")])
            sinks, _ = await start(bus, settings(server={"port": port}))
            await publish(bus, [final(3, "and after.")])
            await until(
                text,
                lambda t: (
                    t
                    == shown(
                        last_lines(
                            "before the daemon went away said while the bridge was away and after.", 42, 2
                        )
                    )
                ),
                "the missed and the new final",
            )

            # OBS's Text source disappears (a user deleted it): the bridge creates it again.
            await checker.call("RemoveInput", {"inputName": source})
            await until(text, lambda t: t.endswith("and after."), "the re-created source")

            # OBS itself goes away and comes back (same port): the bridge reconnects, finds or
            # creates the source again and shows what it has, including a final that came
            # while OBS was gone.
            await checker.close()
            await asyncio.to_thread(obs.stop)
            await publish(bus, [final(4, "OBS was restarted.")])
            await asyncio.to_thread(obs.start)
            checker = await ObsClient.open(obs.url, obs.password)
            everything = (
                "before the daemon went away said while the bridge was away and after. OBS was restarted."
            )
            await until(text, lambda t: t == shown(last_lines(everything, 42, 2)), "the restarted OBS")
        finally:
            await running.stop()
            with contextlib.suppress(Exception):
                await checker.call("RemoveInput", {"inputName": source})
            await checker.close()
            await sinks.close()

    try:
        run(main(), timeout=90)
    finally:
        obs.stop()


def test_waits_while_the_daemon_is_full(obs: Obs) -> None:
    """HTTP 503 (server.max_clients reached) is retried, not fatal; the bridge follows once a slot frees."""
    source = "Captions (full)"

    async def main() -> None:
        bus = Bus()
        sinks, _ = await start(bus, settings(server={"max_clients": 1}))
        checker = await ObsClient.open(obs.url, obs.password)
        other = await connect(f"ws://127.0.0.1:{sinks.server_port}/ws")
        running = Running(Bridge(bridge_settings(obs, sinks.server_port, source=source), stream="main"))
        try:
            await until(lambda: text_of(checker, source, running), lambda t: t == "", "the source")
            await publish(bus, [final(1, "the daemon had no room for the bridge")])
            refused = await until(
                lambda: http_get(sinks.server_port or 0, "/metrics"),
                lambda r: 'streamer_ws_rejected_total{reason="max_clients"}' in r[2].decode(),
                "a refused upgrade",
            )
            assert refused[0] == 200
            await other.close()
            await until(
                lambda: text_of(checker, source, running),
                lambda t: t == "the daemon had no room for the bridge",
                "the bridge following once a slot is free",
            )
        finally:
            await running.stop()
            with contextlib.suppress(Exception):
                await checker.call("RemoveInput", {"inputName": source})
            await checker.close()
            await sinks.close()

    run(main(), timeout=60)


def test_native_captions_reach_the_stream(obs: Obs, tmp_path: Path) -> None:
    """Finals become CEA-608 captions in the stream OBS sends (x264 + RTMP to a local receiver)."""
    source = "Captions (stream)"
    receiver = RtmpReceiver(tmp_path)
    texts = ["Hello from the caption bridge.", "Native captions work end to end.", "Third and last caption."]

    async def main() -> None:
        bus = Bus()
        sinks, _ = await start(bus, settings())
        checker = await ObsClient.open(obs.url, obs.password)
        bridge = Bridge(bridge_settings(obs, sinks.server_port, source=source), stream="main")
        running = Running(bridge)
        try:
            await until(lambda: text_of(checker, source, running), lambda t: t == "", "the source")
            # Not streaming: finals are shown but not sent (SendStreamCaption would answer 501).
            await publish(bus, [final(1, "not streaming yet")])
            await until(
                lambda: text_of(checker, source, running), lambda t: t == "not streaming yet", "final 1"
            )
            assert bridge.captions_sent == 0

            await checker.call(
                "SetStreamServiceSettings",
                {
                    "streamServiceType": "rtmp_custom",
                    "streamServiceSettings": {"server": receiver.url, "key": receiver.key},
                },
            )

            async def start_stream() -> bool:
                # OBS ignores a StartStream sent while its window is still loading; ask again.
                if not (await checker.call("GetStreamStatus"))["outputActive"]:
                    await checker.request("StartStream")
                    await asyncio.sleep(0.5)
                return bridge.streaming

            await until(start_stream, bool, "OBS streaming (seen by the bridge)", timeout=30)
            # A caption on the stream's very first frame is in the stream, but FFmpeg's decoder
            # does not report it: start once the stream carries pictures.
            await until(
                lambda: checker.call("GetStreamStatus"), lambda st: st["outputTotalFrames"] >= 15, "frames"
            )
            for i, t in enumerate(texts, start=2):
                await publish(bus, [final(i, t)])
                await until(
                    lambda: asyncio.sleep(0, bridge.captions_sent), lambda n, i=i: n == i - 1, f"caption {i}"
                )
                # OBS shows a caption until the next one: let each stay a few frames.
                await asyncio.sleep(1.0)
            await checker.call("StopStream")
            await until(
                lambda: asyncio.sleep(0, bridge.streaming), lambda s: not s, "the bridge seeing the stop"
            )
        finally:
            await running.stop()
            with contextlib.suppress(Exception):
                await checker.call("StopStream")
            with contextlib.suppress(Exception):
                await checker.call("RemoveInput", {"inputName": source})
            await checker.close()
            await sinks.close()

    try:
        run(main(), timeout=90)
        receiver.wait()
    finally:
        receiver.stop()
    srt = cea608_captions(receiver.flv)
    flat = " ".join(srt.split())
    for t in texts:
        assert " ".join(t.split()) in flat, srt
    assert "not streaming yet" not in flat


# --- the command line ------------------------------------------------------------------------


def cli(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "STREAMER_CONFIG": "", "PYTHONUNBUFFERED": "1"}
    env.pop("STREAMER_OBS__PASSWORD", None)
    return subprocess.Popen(
        [sys.executable, "-m", "streamer", "obs", "--log-level", "info", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def errors(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("streamer:")]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--obs-password", "not-the-password"], "streamer: wrong OBS WebSocket password"),
        ([], "streamer: OBS WebSocket asks for a password: pass --obs-password or set obs.password"),
        (["--source", "No such source", "--no-create"], "streamer: OBS has no source named 'No such source'"),
        (
            ["--scene", "No such scene", "--source", "New"],
            "streamer: OBS has no scene named 'No such scene' (scenes: 'Scene')",
        ),
    ],
)
def test_cli_one_line_errors(obs: Obs, extra: list[str], message: str) -> None:
    password = [] if "--obs-password" in extra or not extra else ["--obs-password", obs.password]
    # No daemon is listening: the bridge retries that side while the OBS side fails for good.
    proc = cli("--obs", obs.url, "--daemon", f"ws://127.0.0.1:{free_port()}/ws", *password, *extra)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # it should have ended by itself: do not leave it retrying
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 1, err
    lines = errors(err)
    assert len(lines) == 1 and lines[0].startswith(message), err


def test_cli_waits_for_obs_that_is_not_running() -> None:
    url = f"ws://127.0.0.1:{free_port()}"
    proc = cli("--obs", url, "--daemon", f"ws://127.0.0.1:{free_port()}/ws")
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 30
        seen: list[str] = []
        while time.monotonic() < deadline and not any("OBS WebSocket is not running" in s for s in seen):
            seen.append(proc.stderr.readline())
        line = next(s for s in seen if "OBS WebSocket is not running" in s)
        assert f"OBS WebSocket is not running or not listening at {url} (connection refused)" in line
        assert proc.poll() is None  # still retrying
    finally:
        proc.terminate()
        proc.wait(10)


# --- with the real daemon --------------------------------------------------------------------


class Daemon:
    """`streamer run --source stdin` (tiny.en) on a given port; its finals read by a plain client."""

    def __init__(self, port: int, log: Path) -> None:
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        env.pop("STREAMER_CONFIG", None)
        self.port = port
        self.log = log
        with log.open("ab") as f:
            self.proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "streamer", "run", "--source", "stdin", "--model", "tiny.en"),
                    *("--language", "en", "--port", str(port), "--transcripts", ""),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=f,
                env=env,
                cwd=REPO,
            )

    async def ready(self) -> None:
        async def listening() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited: {self.log.read_text()[-2000:]}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                return False
            writer.close()
            return True

        await until(listening, bool, "the daemon's port", timeout=120)

    async def speak(self, pcm: bytes) -> None:
        """Feed the speech at about 4x real time, then end the input (the daemon exits)."""
        assert self.proc.stdin is not None
        step = 16000
        for i in range(0, len(pcm), step):
            await asyncio.to_thread(self.proc.stdin.write, pcm[i : i + step])
            await asyncio.to_thread(self.proc.stdin.flush)
            await asyncio.sleep(0.125)
        self.proc.stdin.close()

    async def finals(self) -> list[str]:
        """Every final of this daemon run, read until it closes the connection at exit."""
        texts: list[str] = []
        async with connect(f"ws://127.0.0.1:{self.port}/ws?since=0") as ws:
            try:
                async for raw in ws:
                    doc = json.loads(raw)
                    if doc["type"] == "final":
                        texts.append(doc["text"].strip())
            except ConnectionClosed:
                pass
        return texts

    def wait(self) -> int:
        return self.proc.wait(120)


@pytest.mark.model
def test_real_daemon_speech_and_its_restart(obs: Obs, audio_dir: Path, tmp_path: Path) -> None:
    """Two runs of the real daemon on one port: the bridge shows the first run's finals, then
    sees a new session and follows the second run from its start."""

    def pcm(name: str) -> bytes:
        samples = np.clip(load_audio(audio_dir / "en" / name), -1.0, 1.0)
        return bytes((samples * 32767).astype("<i2").tobytes())

    source = "Captions (daemon)"
    port = free_port()

    async def main() -> None:
        checker = await ObsClient.open(obs.url, obs.password)
        bridge = Bridge(bridge_settings(obs, port, source=source), stream="main")
        running = Running(bridge)
        said: list[str] = []
        previous: str | None = None
        try:
            for run_no, clip in enumerate(["ljspeech_LJ001-0004.flac", "ljspeech_LJ001-0011.flac"]):
                daemon = Daemon(port, tmp_path / f"daemon{run_no}.log")
                await daemon.ready()
                reader = asyncio.ensure_future(daemon.finals())
                # Speak once the bridge follows this daemon run: the second run is a new session
                # (seq starts again at 1), which the bridge must notice.
                previous = await until(
                    lambda: asyncio.sleep(0, bridge.state.session),
                    lambda s, p=previous: s is not None and s != p,
                    f"the bridge following daemon run {run_no}",
                )
                await daemon.speak(pcm(clip))
                finals = await reader
                assert daemon.wait() == 0, daemon.log.read_text()[-2000:]
                assert finals, daemon.log.read_text()[-2000:]
                said += finals
                expected = shown(last_lines(" ".join(said), 42, 2))
                await until(
                    lambda: text_of(checker, source, running), lambda t, e=expected: t == e, f"run {run_no}"
                )
        finally:
            await running.stop()
            with contextlib.suppress(Exception):
                await checker.call("RemoveInput", {"inputName": source})
            await checker.close()

    run(main(), timeout=240)
