"""The OpenAI-compatible file API against a real daemon, with the official `openai` client and curl.

One daemon (tiny.en, `--source stdin` kept open so it stays up) serves the client tests; the jobs
test runs its own daemon twice over one state directory to restart it in the middle of a job.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from .components import tool
from .e2e_util import REPO, streamer

pytestmark = [pytest.mark.model, pytest.mark.slow]

EN = "en/ljspeech_LJ001-0002.flac"  # 2 s
LONG = "long/en_pocketsphinx_sense_and_sensibility_01_0870-0930_concat.flac"  # 26 s
KO = "ko/emotiontts_adb00002.flac"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll a condition the daemon makes true (a job state, a file gone) until it holds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


class Daemon:
    def __init__(self, state: Path, **api: Any) -> None:
        self.port = free_port()
        self.state = state
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "STREAMER_API__STATE_DIR": str(state)}
        for key, value in api.items():
            env[f"STREAMER_API__{key.upper()}"] = str(value)
        self.log = state.parent / f"daemon-{self.port}.log"
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "streamer", "run", "--source", "stdin", "--model", "tiny.en"),
                *("--language", "en", "--port", str(self.port), "--transcripts", ""),
            ],
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,  # kept open and silent: the daemon runs until we stop it
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("wb"),
        )
        self.url = f"http://127.0.0.1:{self.port}"
        wait_for(self._up, 120, "the daemon's port")

    def _up(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text()
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def stop(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)
        self.proc.wait(timeout=60)
        if self.proc.stdin:
            self.proc.stdin.close()

    def uploads(self) -> list[str]:
        d = self.state / "uploads"
        return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def curl(*args: str) -> tuple[int, str]:
    """curl, returning (HTTP status, body)."""
    res = subprocess.run(
        [tool("curl", "curl"), "-sS", "-o", "-", "-w", "\n%{http_code}", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    body, _, code = res.stdout.rpartition("\n")
    return int(code or 0), body


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("api") / "state", max_upload_mb=1, max_requests=1)
    yield d
    d.stop()


@pytest.fixture(scope="module")
def client(daemon: Daemon) -> openai.OpenAI:
    return openai.OpenAI(base_url=daemon.url + "/v1", api_key="unused", max_retries=0, timeout=300)


def test_every_response_format_matches_streamer_transcribe(
    daemon: Daemon, client: openai.OpenAI, audio_dir: Path
) -> None:
    path = audio_dir / EN
    res = streamer("transcribe", str(path), "--model", "tiny.en", "--language", "en", "--no-progress")
    assert res.returncode == 0, res.stderr
    expected = " ".join(line.strip() for line in res.stdout.splitlines() if line.strip())
    assert expected
    with path.open("rb") as f:
        assert client.audio.transcriptions.create(model="whisper-1", file=f).text == expected
    with path.open("rb") as f:
        text = client.audio.transcriptions.create(model="tiny.en", file=f, response_format="text")
    assert text.strip() == expected
    with path.open("rb") as f:
        srt = client.audio.transcriptions.create(model="tiny.en", file=f, response_format="srt")
    assert srt.startswith("1\n00:00:0") and " --> " in srt
    with path.open("rb") as f:
        vtt = client.audio.transcriptions.create(model="tiny.en", file=f, response_format="vtt")
    assert vtt.startswith("WEBVTT") and " --> " in vtt
    for cues in (srt, vtt):  # the same words, laid out as captions
        body = " ".join(x for x in cues.splitlines() if x and "-->" not in x and not x.isdigit())
        assert body.replace("WEBVTT", "").split() == expected.split()
    with path.open("rb") as f:
        verbose = client.audio.transcriptions.create(
            model="tiny.en",
            file=f,
            response_format="verbose_json",
            timestamp_granularities=["word", "segment"],
        )
    assert verbose.text == expected and verbose.language == "en"
    assert 1.5 < verbose.duration < 2.5
    words = verbose.words or []
    assert [w.word for w in words] == expected.split()
    starts = [w.start for w in words]
    assert starts == sorted(starts) and all(w.start <= w.end <= verbose.duration + 0.5 for w in words)
    segments = verbose.segments or []
    assert segments and " ".join(s.text.strip() for s in segments) == expected
    assert daemon.uploads() == []


def test_streaming_gives_deltas_then_done(client: openai.OpenAI, audio_dir: Path) -> None:
    with (audio_dir / EN).open("rb") as f:
        expected = client.audio.transcriptions.create(model="tiny.en", file=f).text
    with (audio_dir / EN).open("rb") as f:
        events = list(client.audio.transcriptions.create(model="tiny.en", file=f, stream=True))
    assert len(events) >= 2
    assert [e.type for e in events[:-1]] == ["transcript.text.delta"] * (len(events) - 1)
    assert events[-1].type == "transcript.text.done" and events[-1].text == expected
    assert "".join(e.delta for e in events[:-1]) == expected  # type: ignore[union-attr]


def test_translation_of_korean_speech_to_english(client: openai.OpenAI, audio_dir: Path) -> None:
    with (audio_dir / KO).open("rb") as f:
        out = client.audio.translations.create(model="base", file=f)
    text = out.text
    letters = [c for c in text if c.isalpha()]
    assert len(letters) > 10, text
    # English: a transcript would be all Hangul. base may leave a word it cannot translate as it
    # is (seen on one CPU: "the Tepfung 발생 case"), so the check is on the letters as a whole.
    assert sum(c.isascii() for c in letters) >= 0.9 * len(letters), text
    # tiny.en cannot translate: said, not guessed.
    with (audio_dir / KO).open("rb") as f, pytest.raises(openai.BadRequestError, match="English-only"):
        client.audio.translations.create(model="tiny.en", file=f)


def error_of(e: openai.APIStatusError) -> dict[str, Any]:
    body = e.response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return dict(body["error"])


def test_errors_are_openai_shaped_and_leave_nothing_behind(
    daemon: Daemon, client: openai.OpenAI, audio_dir: Path, tmp_path: Path
) -> None:
    good = audio_dir / EN
    with good.open("rb") as f, pytest.raises(openai.NotFoundError) as nf:
        client.audio.transcriptions.create(model="no-such-model", file=f)
    assert error_of(nf.value)["code"] == "model_not_found"
    with good.open("rb") as f, pytest.raises(openai.NotFoundError):
        client.audio.transcriptions.create(model="../../etc", file=f)  # never a path from a request
    corrupt = tmp_path / "broken.flac"
    corrupt.write_bytes(b"fLaC" + os.urandom(4000))
    with pytest.raises(openai.BadRequestError) as bad:
        client.audio.transcriptions.create(model="tiny.en", file=corrupt)
    err = error_of(bad.value)
    assert err["param"] == "file" and "broken.flac" in err["message"] and "audio" in err["message"]
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(openai.BadRequestError) as bad:
        client.audio.transcriptions.create(model="tiny.en", file=empty)
    assert error_of(bad.value)["code"] == "empty_file"
    with good.open("rb") as f, pytest.raises(openai.BadRequestError) as bad:
        client.audio.transcriptions.create(model="tiny.en", file=f, response_format="docx")  # type: ignore[arg-type]
    assert error_of(bad.value)["param"] == "response_format"
    with good.open("rb") as f, pytest.raises(openai.BadRequestError) as bad:
        client.audio.transcriptions.create(model="tiny.en", file=f, language="klingon")
    assert error_of(bad.value)["param"] == "language"
    # Missing fields, with curl's multipart form.
    url = daemon.url + "/v1/audio/transcriptions"
    status, body = curl("-F", "model=tiny.en", url)
    assert status == 400 and json.loads(body)["error"]["param"] == "file"
    status, body = curl("-F", f"file=@{good}", url)
    assert status == 400 and json.loads(body)["error"]["param"] == "model"
    big = tmp_path / "big.wav"
    big.write_bytes(os.urandom(1_500_000))  # over api.max_upload_mb = 1
    status, body = curl("-F", f"file=@{big}", "-F", "model=tiny.en", url)
    assert status == 413 and json.loads(body)["error"]["code"] == "file_too_large"
    assert daemon.uploads() == []


@pytest.mark.component  # curl
def test_busy_server_says_429_and_a_client_that_hangs_up_frees_it(
    daemon: Daemon, client: openai.OpenAI, audio_dir: Path
) -> None:
    url = daemon.url + "/v1/audio/transcriptions"
    # curl -N streams the server-sent events as they come; we read the first and hang up later.
    stream = subprocess.Popen(
        [
            tool("curl", "curl"),
            "-sS",
            "-N",
            "-F",
            f"file=@{audio_dir / LONG}",
            "-F",
            "model=tiny.en",
            "-F",
            "stream=true",
            url,
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert stream.stdout is not None
        first = stream.stdout.readline().decode()
        assert json.loads(first.removeprefix("data: "))["type"] == "transcript.text.delta"
        # api.max_requests = 1 and it is in use.
        with (audio_dir / EN).open("rb") as f, pytest.raises(openai.RateLimitError) as busy:
            client.audio.transcriptions.create(model="tiny.en", file=f)
        assert busy.value.response.headers["Retry-After"].isdigit()
        assert error_of(busy.value)["type"] == "rate_limit_error"
    finally:
        stream.kill()
        stream.wait()
    # We hung up mid-stream: the daemon stops that transcription, removes the upload, and the
    # next request is served.
    wait_for(lambda: daemon.uploads() == [], 60, "the abandoned upload to be removed")

    def served() -> bool:
        try:
            with (audio_dir / EN).open("rb") as f:
                return bool(client.audio.transcriptions.create(model="tiny.en", file=f).text)
        except openai.RateLimitError:
            return False

    wait_for(served, 120, "the abandoned transcription to stop")
    # A client that disconnects in the middle of its upload leaves no file behind either.
    with socket.create_connection(("127.0.0.1", daemon.port)) as s:
        boundary = "XyZ"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.flac"\r\n'
            "Content-Type: audio/flac\r\n\r\n"
        ).encode()
        s.sendall(
            f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1:{daemon.port}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            "Content-Length: 900000\r\n\r\n".encode()
            + head
            + (audio_dir / LONG).read_bytes()[:200_000]
        )
        wait_for(lambda: daemon.uploads() != [], 30, "the upload to start")
    wait_for(lambda: daemon.uploads() == [], 30, "the cut-off upload to be removed")


def test_models_list(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids[0] == "tiny.en" and "base" in ids


@pytest.mark.component  # curl
def test_jobs_with_curl_survive_a_restart(audio_dir: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    path = audio_dir / LONG
    a = Daemon(state)
    try:
        status, body = curl("-F", f"file=@{path}", "-F", "model=tiny.en", a.url + "/v1/jobs")
        assert status == 202, body
        job = json.loads(body)
        jid = job["id"]
        assert job["state"] in ("queued", "running") and 25 < job["audio_seconds"] < 27

        def progressed() -> dict[str, Any] | None:
            doc = json.loads(curl(f"{a.url}/v1/jobs/{jid}")[1])
            return doc if doc["state"] == "running" and doc["audio_seconds_done"] > 0 else None

        doc = wait_for(progressed, 120, "the job to make progress")
    finally:
        a.stop(signal.SIGKILL)  # a crash, not a clean stop: the state on disk must be enough
    assert 0 < doc["progress"] < 1 and doc["audio_seconds_done"] < doc["audio_seconds"]
    b = Daemon(state, result_ttl=8, max_jobs=1)
    try:

        def finished() -> dict[str, Any] | None:
            doc = json.loads(curl(f"{b.url}/v1/jobs/{jid}")[1])
            return doc if doc["state"] in ("done", "failed") else None

        doc = wait_for(finished, 240, "the resumed job to finish")
        assert doc["state"] == "done" and doc["attempts"] == 2 and doc["progress"] == 1.0, doc
        status, txt = curl(f"{b.url}/v1/jobs/{jid}/result.txt")
        assert status == 200 and len(txt.split()) > 30
        status, srt = curl(f"{b.url}/v1/jobs/{jid}/result.srt")
        assert status == 200 and srt.startswith("1\n")
        status, vtt = curl(f"{b.url}/v1/jobs/{jid}/result.vtt")
        assert status == 200 and vtt.startswith("WEBVTT")
        status, js = curl(f"{b.url}/v1/jobs/{jid}/result.json")
        assert status == 200 and json.loads(js)["text"].split() == txt.split()
        # A second job, deleted while it runs: gone, its directory removed.
        status, body = curl("-F", f"file=@{path}", "-F", "model=tiny.en", b.url + "/v1/jobs")
        second = json.loads(body)["id"]
        status, body = curl(f"{b.url}/v1/jobs/{second}/result.txt")
        assert status == 409 and json.loads(body)["error"]["code"] == "job_not_done"
        # api.max_jobs = 1: a third job while the second is queued or running is refused.
        status, body = curl("-i", "-F", f"file=@{path}", "-F", "model=tiny.en", b.url + "/v1/jobs")
        assert status == 429 and "retry-after:" in body.lower(), body[:300]
        status, body = curl("-X", "DELETE", f"{b.url}/v1/jobs/{second}")
        assert status == 200 and json.loads(body)["deleted"] is True
        assert curl(f"{b.url}/v1/jobs/{second}")[0] == 404
        wait_for(lambda: not (state / "jobs" / second).exists(), 60, "the deleted job's files to go")
        # The finished job expires after api.result_ttl.
        wait_for(lambda: curl(f"{b.url}/v1/jobs/{jid}")[0] == 404, 60, "the result to expire")
        assert not (state / "jobs" / jid).exists() and b.uploads() == []
    finally:
        b.stop()


def test_token_and_unusable_state_dir(tmp_path: Path) -> None:
    """The file API needs the token; an unusable state dir disables only it (503, in /health)."""
    import asyncio
    import urllib.error
    import urllib.request

    from streamer.bus import Bus
    from streamer.decode.engine import DecodeEngine
    from streamer.sinks.context import SinkContext
    from streamer.sinks.start import start_sinks

    from .sink_harness import settings

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    s = settings(api={"state_dir": str(blocker / "state")}, server={"token": "s3cret"})
    engine = DecodeEngine.from_settings(s)

    def get(url: str, token: str | None = "s3cret") -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    async def main() -> None:
        sinks = await start_sinks(
            SinkContext(settings=s, bus=Bus(), streams={}, model="tiny.en", engine=engine)
        )
        try:
            base = f"http://127.0.0.1:{sinks.server_port}"
            for token in (None, "wrong"):  # the token guards the file API like /ws and /metrics
                status, body = await asyncio.to_thread(get, base + "/v1/models", token)
                assert status == 401 and body["error"]["code"] == "invalid_api_key"
            status, body = await asyncio.to_thread(get, base + "/v1/models")
            assert status == 503 and "api.state_dir" in body["error"]["message"]
            status, body = await asyncio.to_thread(get, base + "/health")
            assert body["api"]["enabled"] is False and "not-a-dir" in body["api"]["problem"]
        finally:
            await sinks.close()

    try:
        asyncio.run(main())
    finally:
        engine.close()
