"""Hostile clients against the file API (issue 18), without a Whisper model.

The engine is a stand-in that never decodes: every file here is silence, so the real pipeline
(file source, Silero VAD, segmenter) runs and never asks for a decode. Requests are raw bytes
on sockets where the attack needs it (a slow body, a hang-up mid-upload).
"""

from __future__ import annotations

import io
import json
import socket
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import av
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from streamer.api import http as api_http
from streamer.api.engines import EnginePool
from streamer.api.openai_compat import ApiError
from streamer.bus import Bus
from streamer.config import Settings
from streamer.sinks.start import Sinks

from .raw_http import BadRecords, metric, serve_in_thread, status_of
from .sink_harness import StreamHealth, settings

BOUNDARY = "hostileboundary"


class StubEngine:
    """What the file API and a lockstep stream use of a DecodeEngine; silence never decodes."""

    model_name = "tiny.en"
    multilingual = False
    level = 0
    options = SimpleNamespace(task="transcribe", temperatures=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0))

    def submit(self, req: Any) -> Any:
        raise AssertionError("silence was sent to the decoder")

    def cancel(self, request_id: int) -> bool:
        return False

    def close(self) -> None:
        pass


def wav(seconds: float) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\0\0" * int(seconds * 16000))
    return buf.getvalue()


def lying_flac(seconds: float, declared: float) -> bytes:
    """A FLAC of `seconds` of silence whose STREAMINFO says it holds `declared` seconds."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="flac") as c:
        s = c.add_stream("flac", rate=16000, layout="mono")
        n = int(seconds * 16000)
        for i in range(0, n, 4096):
            f = av.AudioFrame.from_ndarray(
                np.zeros((1, min(4096, n - i)), np.int16), format="s16", layout="mono"
            )
            f.sample_rate = 16000
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    data = bytearray(buf.getvalue())
    assert data[:4] == b"fLaC"
    # STREAMINFO starts at byte 8; its total-samples field is the low 36 bits of bytes 18..25.
    v = int.from_bytes(data[18:26], "big")
    v = (v & ~((1 << 36) - 1)) | int(declared * 16000)
    data[18:26] = v.to_bytes(8, "big")
    return bytes(data)


def form(fields: dict[str, str], file: bytes | None, filename: str = "a.wav") -> bytes:
    out = b""
    for k, v in fields.items():
        out += (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n'.encode()
            + v.encode()
            + b"\r\n"
        )
    if file is not None:
        out += (
            (
                f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + file
            + b"\r\n"
        )
    return out + f"--{BOUNDARY}--\r\n".encode()


def head(port: int, path: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def post(port: int, path: str, body: bytes, timeout: float = 60) -> tuple[int, dict[str, Any]]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head(port, path, len(body)) + body)
        data = b""
        while more := s.recv(65536):
            data += more
    _, _, payload = data.partition(b"\r\n\r\n")
    try:
        doc = json.loads(payload) if payload.strip() else {}
    except ValueError:
        doc = {"text": payload.decode(errors="replace")}
    return status_of(data), doc


class SlowUpload:
    """The probe's slow client: a multipart head announcing 1 MB, one byte, then (nearly) nothing."""

    def __init__(self, port: int, path: str = "/v1/audio/transcriptions") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.sendall(head(port, path, 1_000_000) + f"--{BOUNDARY}\r\n".encode()[:1])

    def answer(self) -> int:
        """Blocks until the server answers (or closes): the status, 0 if it just closed."""
        data = b""
        try:
            while more := self.sock.recv(65536):
                data += more
        except ConnectionResetError:
            pass
        return status_of(data)

    def close(self) -> None:
        self.sock.close()


def api_settings(tmp: Path, **api: Any) -> Settings:
    return settings(api={"state_dir": str(tmp / "state"), "engine_cache": 1, **api})


@pytest.fixture
def served(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Sinks, BadRecords]]:
    api = getattr(request, "param", {})
    with serve_in_thread(api_settings(tmp_path, **api), Bus(), {"main": StreamHealth()}, StubEngine()) as s:
        yield s


def _port(sinks: Sinks) -> int:
    assert sinks.server_port
    return sinks.server_port


# --- 2. a slow upload never holds a transcription slot -------------------------------------------


@pytest.mark.parametrize(
    "served", [{"max_requests": 1, "upload_min_rate": 1000, "max_requests_per_address": 0}], indirect=True
)
def test_slow_uploads_never_hold_a_transcription_slot(
    served: tuple[Sinks, BadRecords], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api_http, "UPLOAD_GRACE", 2.0)
    sinks, bad = served
    port = _port(sinks)
    before = metric("streamer_api_refused_total", reason="too_slow")
    slow = [SlowUpload(port), SlowUpload(port)]
    try:
        # While both slow bodies are still "arriving", a real request gets the only slot.
        status, doc = post(port, "/v1/audio/transcriptions", form({"model": "whisper-1"}, wav(1.0)))
        assert (status, doc) == (200, {"text": ""}), doc
        # And the slow ones are told so once the minimum rate cannot be met any more.
        assert [s.answer() for s in slow] == [408, 408]
    finally:
        for s in slow:
            s.close()
    assert metric("streamer_api_refused_total", reason="too_slow") == before + 2
    assert not bad.records, bad.bad()


# --- 3. decoded duration -------------------------------------------------------------------------


@pytest.mark.parametrize("served", [{"max_audio_seconds": 5}], indirect=True)
def test_max_audio_seconds_by_header_and_while_decoding(served: tuple[Sinks, BadRecords]) -> None:
    assert Settings().api.max_audio_seconds == 10800  # the default: 3 h
    sinks, bad = served
    port = _port(sinks)
    # The header tells: refused before any decoding.
    status, doc = post(port, "/v1/audio/transcriptions", form({"model": "whisper-1"}, wav(10.0)))
    assert status == 413 and doc["error"]["code"] == "audio_too_long", doc
    assert "api.max_audio_seconds" in doc["error"]["message"] and "10 s" in doc["error"]["message"]
    # The header lies (1 s declared, 20 s inside): cut at 5 s while decoding, then 413.
    lie = lying_flac(20.0, declared=1.0)
    status, doc = post(port, "/v1/audio/transcriptions", form({"model": "whisper-1"}, lie, "a.flac"))
    assert status == 413 and doc["error"]["code"] == "audio_too_long", doc
    # A job holding the lying file fails with the same reason, having read no more than the limit.
    status, job = post(port, "/v1/jobs", form({"model": "whisper-1"}, lie, "a.flac"))
    assert status == 202, job
    deadline = time.monotonic() + 60
    while job["state"] not in ("failed", "done") and time.monotonic() < deadline:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(
                f"GET /v1/jobs/{job['id']} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
            )
            data = b""
            while more := s.recv(65536):
                data += more
        job = json.loads(data.partition(b"\r\n\r\n")[2])
    assert job["state"] == "failed" and "max_audio_seconds" in json.dumps(job), job
    status, doc = post(port, "/v1/audio/transcriptions", form({"model": "whisper-1"}, wav(4.0)))
    assert status == 200, doc
    assert not bad.records, bad.bad()


# --- 5. a client hanging up mid-upload -----------------------------------------------------------


def test_client_hanging_up_mid_upload_is_one_line_without_traceback(served: tuple[Sinks, BadRecords]) -> None:
    sinks, bad = served
    port = _port(sinks)
    body = form({"model": "whisper-1"}, wav(30.0))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head(port, "/v1/audio/transcriptions", len(body)) + body[: len(body) // 2])
    deadline = time.monotonic() + 30
    while not any("went away" in m for m in bad.messages):
        assert time.monotonic() < deadline, bad.messages[-10:]
        time.sleep(0.05)  # polling for the server's log line: an event we wait for
    assert not bad.records, bad.bad()
    assert not list((sinks.server.ctx.settings.api.state_dir / "uploads").glob("*"))  # type: ignore[union-attr]


# --- 10. translate on an English-only model ------------------------------------------------------


def test_translate_on_english_only_model_is_400_without_loading_a_model(
    served: tuple[Sinks, BadRecords], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_load(*args: Any) -> Any:
        raise AssertionError("a model was loaded to answer a request that could be refused at once")

    monkeypatch.setattr(EnginePool, "_load", no_load)
    sinks, bad = served
    port = _port(sinks)
    for path, fields in (
        ("/v1/audio/translations", {"model": "whisper-1"}),
        ("/v1/audio/translations", {"model": "tiny.en"}),
        ("/v1/audio/translations", {"model": "base.en"}),
        ("/v1/audio/transcriptions", {"model": "small.en", "language": "ko"}),
        ("/v1/jobs", {"model": "whisper-1", "task": "translate"}),
    ):
        status, doc = post(port, path, form(fields, wav(1.0)))
        assert status == 400 and "English-only" in doc["error"]["message"], (path, fields, doc)
    assert not bad.records, bad.bad()


# --- 11. per-address limit for API requests ------------------------------------------------------


@pytest.mark.parametrize("served", [{"max_requests_per_address": 1, "upload_min_rate": 0}], indirect=True)
def test_one_address_cannot_hold_every_api_request(served: tuple[Sinks, BadRecords]) -> None:
    sinks, bad = served
    port = _port(sinks)
    before = metric("streamer_address_limit_refused_total", route="api")
    slow = SlowUpload(port)
    try:
        # Wait until the server counts the slow upload (its body is being read), then try another.
        deadline = time.monotonic() + 10
        while True:
            status, doc = post(port, "/v1/audio/transcriptions", form({"model": "whisper-1"}, wav(1.0)))
            if status == 429 or time.monotonic() > deadline:
                break
        assert status == 429 and "max_requests_per_address" in doc["error"]["message"], doc
    finally:
        slow.close()
    # The hang-up frees the address's share.
    deadline = time.monotonic() + 10
    while True:
        status, doc = post(port, "/v1/audio/transcriptions", form({"model": "whisper-1"}, wav(1.0)))
        if status == 200 or time.monotonic() > deadline:
            break
    assert status == 200, doc
    assert metric("streamer_address_limit_refused_total", route="api") >= before + 1
    assert not bad.records, bad.bad()


# --- the API form fields, fuzzed ---------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sinks, BadRecords]]:
    tmp = tmp_path_factory.mktemp("fuzz-api")
    patch = pytest.MonkeyPatch()
    patch.setattr(EnginePool, "_load", _no_model)  # never load a real model here
    try:
        with serve_in_thread(api_settings(tmp), Bus(), {"main": StreamHealth()}, StubEngine()) as s:
            yield s
    finally:
        patch.undo()


def _no_model(*args: Any) -> Any:
    raise ApiError(404, "no such model in this test", code="model_not_found")


_FIELD = st.text(max_size=40) | st.sampled_from(
    ["", "whisper-1", "en", "ko", "json", "verbose_json", "srt", "1", "-1", "nan", "true", "x" * 70000]
)


@hsettings(max_examples=40, deadline=None)
@given(
    path=st.sampled_from(["/v1/audio/transcriptions", "/v1/audio/translations", "/v1/jobs"]),
    fields=st.dictionaries(
        st.sampled_from(
            [
                "model",
                "language",
                "prompt",
                "temperature",
                "response_format",
                "timestamp_granularities[]",
                "stream",
                "task",
                "x",
            ]
        ),
        _FIELD,
        max_size=6,
    ),
    with_file=st.booleans(),
    filename=st.text(max_size=30).filter(lambda t: '"' not in t and "\r" not in t and "\n" not in t),
)
def test_fuzz_api_form_fields(
    fuzz_api: tuple[Sinks, BadRecords], path: str, fields: dict[str, str], with_file: bool, filename: str
) -> None:
    sinks, bad = fuzz_api
    status, _ = post(_port(sinks), path, form(fields, wav(0.5) if with_file else None, filename or "f"))
    assert 200 <= status < 500, (status, fields)
    assert not bad.records, bad.bad()
