"""The file API's routes on the caption server (aiohttp): OpenAI-style transcriptions and jobs.

    POST   /v1/audio/transcriptions   multipart: file, model, language, prompt, temperature,
    POST   /v1/audio/translations       response_format, timestamp_granularities[], stream
    GET    /v1/models
    POST   /v1/jobs                   same form; answers 202 with the job at once
    GET    /v1/jobs/{id}              state, progress, audio seconds done, ETA
    GET    /v1/jobs/{id}/result.{txt|srt|vtt|json}
    DELETE /v1/jobs/{id}

Uploads stream to `api.state_dir`/uploads chunk by chunk (aiohttp's multipart reader), bounded by
`api.max_upload_mb` (413), and are removed whatever happens to the request. Every file goes
through runner.FileRun - the pipeline `streamer transcribe` runs. Errors are OpenAI's error JSON.

Hostile clients: the whole body is read before a transcription slot (`api.max_requests`) is
taken, and it must arrive at `api.upload_min_rate` on average after a grace of UPLOAD_GRACE (408
otherwise), so a slow upload holds a connection, never a slot. One address may have at most
`api.max_requests_per_address` uploads or transcriptions in progress (429). The decoded audio is
bounded by `api.max_audio_seconds` (413): checked on the container's header as soon as the
upload is in, and counted while decoding, so a file whose header understates its length is cut
at the limit. A client that hangs up mid-upload is one INFO line, not a traceback.

Priority: a request runs at once on the engine, sharing the daemon's decode queue with the live
streams but in the scheduler's background tier (FileRun runs its stream with background=True):
live finals and step decodes always go first, and file decodes do not count as load that
degrades the live streams. Jobs run one at a time, so a queue of long files holds at most one
file's decodes in the engine at any moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import BodyPartReader, web
from aiohttp.client_exceptions import ClientConnectionResetError
from aiohttp.http_exceptions import HttpProcessingError

from streamer import metrics
from streamer.api.engines import EnginePool
from streamer.api.jobs import ACTIVE, MAX_ATTEMPTS, Job, JobStore, expired, new_id
from streamer.api.openai_compat import (
    ApiError,
    Task,
    TranscribeOptions,
    delta_event,
    done_event,
    full_text,
    parse_form,
    render,
    sse,
)
from streamer.api.runner import Cancelled, FileRun, TooLong, audio_duration
from streamer.audio.decode import probe
from streamer.errors import SourceError
from streamer.events import Final, Partial
from streamer.sinks import formats
from streamer.sinks.access import address_key
from streamer.sinks.server import CaptionServer, RequestError

if TYPE_CHECKING:
    from streamer.config import Settings
    from streamer.decode.engine import DecodeEngine

log = logging.getLogger(__name__)

CHUNK = 1 << 16
MAX_FIELD = 64 * 1024  # a text field (prompt, model, ...) larger than this is not a form we know
RESULT_KINDS = ("txt", "srt", "vtt", "json")
# Seconds an upload may take before `api.upload_min_rate` applies: connection set-up, a client
# that assembles its form before sending the file, a mobile link's slow start.
UPLOAD_GRACE = 10.0
_UPLOAD_ROUTES = frozenset({"POST"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error_response(e: ApiError) -> web.Response:
    headers = dict(e.headers)
    return web.json_response(e.body(), status=e.status, headers=headers)


class _UploadClock:
    """The body's deadline: by `start + grace + received / min_rate` the next bytes must be in.

    A client sending at `min_rate` or faster is always `grace` seconds ahead of it; one that
    trickles (a byte a second) meets it at about `grace`. Each read waits only until then.
    """

    def __init__(self, min_rate: int, grace: float | None = None) -> None:
        self.min_rate = min_rate
        self.grace = UPLOAD_GRACE if grace is None else grace
        self.start = time.monotonic()
        self.received = 0

    async def read(self, aw: Awaitable[Any]) -> Any:
        if not self.min_rate:
            return await aw
        left = self.start + self.grace + self.received / self.min_rate - time.monotonic()
        try:
            return await asyncio.wait_for(aw, max(left, 0.0))
        except asyncio.TimeoutError:
            metrics.API_REFUSED.labels("too_slow").inc()
            raise ApiError(
                408,
                f"The upload is too slow: under {self.min_rate} bytes/s on average "
                f"(api.upload_min_rate, after {self.grace:g} s).",
                code="upload_too_slow",
                headers={"Connection": "close"},
            ) from None


class _Upload:
    """The form of one request: text fields, and the file on disk (removed by `discard`)."""

    def __init__(self) -> None:
        self.fields: dict[str, list[str]] = {}
        self.path: Path | None = None
        self.filename: str | None = None
        self.size = 0

    def discard(self) -> None:
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
            self.path = None


class FileApi:
    def __init__(self, settings: Settings, engine: DecodeEngine, server: CaptionServer) -> None:
        self.settings = settings
        self.cfg = settings.api
        self.server = server
        self.pool = EnginePool(settings, engine, settings.api.engine_cache)
        self.store = JobStore(settings.api.state_dir)
        self.limit = int(self.cfg.max_upload_mb * 1_000_000)
        self._active_requests = 0
        self._per_address: dict[str, int] = {}  # address_key -> POSTs in progress (upload or run)
        self._jobs: dict[str, Job] = {}
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._running: dict[str, FileRun] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._unavailable: str | None = None  # why the file API cannot work (state_dir unusable)

    # --- lifecycle -----------------------------------------------------------------------------
    def mount(self) -> None:
        r = self.server.app.router
        r.add_post("/v1/audio/transcriptions", self._guard(self._transcriptions))
        r.add_post("/v1/audio/translations", self._guard(self._translations))
        r.add_get("/v1/models", self._guard(self._models))
        r.add_post("/v1/jobs", self._guard(self._create_job))
        r.add_get("/v1/jobs/{id}", self._guard(self._get_job))
        r.add_delete("/v1/jobs/{id}", self._guard(self._delete_job))
        r.add_get("/v1/jobs/{id}/result.{ext}", self._guard(self._job_result))
        self.server.on_close.append(self.close)

    async def start(self) -> None:
        try:
            await asyncio.to_thread(self.store.prepare)
        except OSError as e:
            # Captioning matters more than the file API: run without it and say why.
            self._unavailable = f"api.state_dir '{self.cfg.state_dir}' is not usable: {e.strerror or e}"
            log.error("file API disabled: %s", self._unavailable)
            return
        now = time.time()
        for job in await asyncio.to_thread(self.store.load_all):
            if expired(job, now, self.cfg.result_ttl):
                self.store.remove(job.id)
                continue
            self._jobs[job.id] = job
            if job.state in ACTIVE:
                if job.attempts >= MAX_ATTEMPTS:
                    self._finish(
                        job, "failed", f"gave up after {job.attempts} starts (the daemon stopped each time)"
                    )
                    continue
                log.info(
                    "job %s: resuming after a restart (%s, start %d)", job.id, job.state, job.attempts + 1
                )
                job.state, job.done_seconds = "queued", 0.0
                self.store.save(job)
                self._queue.put_nowait(job.id)
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._worker()))
        self._tasks.append(loop.create_task(self._reaper()))

    async def close(self) -> None:
        """Stop running work; queued and running jobs stay on disk and resume at the next start."""
        self._closing = True
        for run in list(self._running.values()):
            run.stop()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t
        await asyncio.to_thread(self.pool.close)

    # --- plumbing ------------------------------------------------------------------------------
    def _guard(self, handler: Handler) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                try:
                    self.server.require_token(request)
                except RequestError:
                    raise ApiError(
                        401,
                        "Incorrect or missing API key: send Authorization: Bearer TOKEN (server.token).",
                        code="invalid_api_key",
                        headers={"WWW-Authenticate": 'Bearer realm="streamer"'},
                    ) from None
                if self._unavailable is not None:
                    raise ApiError(
                        503, f"The file API is unavailable: {self._unavailable}.", type="server_error"
                    )
                if request.method not in _UPLOAD_ROUTES:
                    return await handler(request)
                key = address_key(request.remote)
                self._enter(key)
                try:
                    return await handler(request)
                finally:
                    self._leave(key)
            except ApiError as e:
                return _error_response(e)
            except ConnectionError as e:  # aiohttp's ClientConnectionResetError is one too
                # The client hung up (mid-upload, mid-stream): its doing, not an error of ours.
                log.info("file API: %s from %s went away (%s)", request.path, request.remote, e)
                return web.Response(status=499)

        return wrapped

    def _enter(self, key: str) -> None:
        limit = self.cfg.max_requests_per_address
        if limit and self._per_address.get(key, 0) >= limit:
            metrics.API_REFUSED.labels("per_address").inc()
            metrics.ADDRESS_LIMIT_REFUSED.labels("api").inc()
            raise ApiError(
                429,
                f"Too many requests in progress from one address (api.max_requests_per_address = "
                f"{limit}); wait for one to finish.",
                type="rate_limit_error",
                code="rate_limit_exceeded",
                headers={"Retry-After": "5", "Connection": "close"},
            )
        self._per_address[key] = self._per_address.get(key, 0) + 1

    def _leave(self, key: str) -> None:
        left = self._per_address.get(key, 1) - 1
        if left > 0:
            self._per_address[key] = left
        else:
            self._per_address.pop(key, None)

    async def _receive(self, request: web.Request) -> _Upload:
        """Read the multipart form; the file part goes to disk. Raises ApiError (file removed)."""
        if request.content_length is not None and request.content_length > self.limit + MAX_FIELD:
            metrics.API_REFUSED.labels("too_large").inc()
            raise ApiError(413, self._too_large(), code="file_too_large", headers={"Connection": "close"})
        if not request.content_type.startswith("multipart/form-data"):
            raise ApiError(
                400,
                f"Expected a multipart/form-data body with a 'file' field, got {request.content_type!r}.",
                param="file",
            )
        up = _Upload()
        clock = _UploadClock(self.cfg.upload_min_rate)
        try:
            reader = await request.multipart()
            while True:
                part = await clock.read(reader.next())
                if part is None:
                    break
                if not isinstance(part, BodyPartReader):
                    raise ApiError(400, "Nested multipart forms are not supported.")
                name = part.name or ""
                if name == "file" and part.filename is not None:
                    if up.path is not None:
                        raise ApiError(400, "Only one 'file' is accepted.", param="file")
                    up.filename = part.filename[:200]
                    up.path = self.store.tmp / f"up_{secrets.token_hex(8)}"
                    with up.path.open("wb") as f:
                        while chunk := await clock.read(part.read_chunk(CHUNK)):
                            up.size += len(chunk)
                            clock.received += len(chunk)
                            if up.size > self.limit:
                                metrics.API_REFUSED.labels("too_large").inc()
                                raise ApiError(
                                    413,
                                    self._too_large(),
                                    code="file_too_large",
                                    headers={"Connection": "close"},
                                )
                            f.write(chunk)
                else:
                    data = bytearray()
                    while chunk := await clock.read(part.read_chunk(CHUNK)):
                        data += chunk
                        clock.received += len(chunk)
                        if len(data) > MAX_FIELD:
                            raise ApiError(400, f"Form field {name[:40]!r} is too large.", param=name[:40])
                    up.fields.setdefault(name, []).append(data.decode("utf-8", "replace"))
        except ApiError:
            up.discard()
            raise
        except (ConnectionError, ClientConnectionResetError, asyncio.CancelledError):
            up.discard()  # the caller logs the one line (_guard)
            raise
        except (ValueError, HttpProcessingError) as e:  # a malformed multipart body, or one cut short
            # (a part's header with a control character is an HttpProcessingError, not a ValueError)
            up.discard()
            message = e.message if isinstance(e, HttpProcessingError) else str(e)
            raise ApiError(400, f"Malformed multipart body: {str(message)[:200]}") from None
        except BaseException:
            up.discard()
            raise
        if up.path is None:
            raise ApiError(
                400, "Missing required parameter: 'file'.", param="file", code="missing_required_parameter"
            )
        if up.size == 0:
            up.discard()
            raise ApiError(400, "The uploaded file is empty.", param="file", code="empty_file")
        return up

    def _too_large(self) -> str:
        return (
            f"The file is larger than this server accepts ({self.cfg.max_upload_mb:g} MB, api.max_upload_mb)."
        )

    async def _probe(self, up: _Upload) -> float:
        """Seconds of audio in the upload; ApiError 400 naming the problem if it is not audio."""
        assert up.path is not None
        try:
            await asyncio.to_thread(probe, up.path)
            duration = await asyncio.to_thread(audio_duration, up.path)
        except SourceError as e:
            # The message names our temporary file; the client knows its file by its own name.
            msg = str(e).replace(f"'{up.path}'", repr(up.filename or "file"))
            raise ApiError(
                400, f"Unsupported or corrupt audio: {msg}", param="file", code="invalid_audio"
            ) from None
        except Exception as e:
            raise ApiError(
                400, f"Unsupported or corrupt audio: {str(e)[:200]}", param="file", code="invalid_audio"
            ) from None
        if duration > self.cfg.max_audio_seconds:
            # What the header says; a header that says less is caught while decoding (TooLong).
            raise self._too_long(f"the file declares {duration:.0f} s")
        return duration

    def _too_long(self, what: str) -> ApiError:
        metrics.API_REFUSED.labels("too_long").inc()
        limit = self.cfg.max_audio_seconds
        return ApiError(
            413,
            f"The audio is longer than this server accepts ({limit:g} s, api.max_audio_seconds): {what}. "
            "Split it, or ask the operator to raise the limit.",
            param="file",
            code="audio_too_long",
        )

    def _busy(self) -> ApiError:
        metrics.API_REFUSED.labels("busy").inc()
        return ApiError(
            429,
            f"Too many transcriptions at once (api.max_requests = {self.cfg.max_requests}); "
            "retry shortly or use POST /v1/jobs for long files.",
            type="rate_limit_error",
            code="rate_limit_exceeded",
            headers={"Retry-After": "5"},
        )

    # --- OpenAI audio --------------------------------------------------------------------------
    async def _transcriptions(self, request: web.Request) -> web.StreamResponse:
        return await self._audio(request, "transcribe")

    async def _translations(self, request: web.Request) -> web.StreamResponse:
        return await self._audio(request, "translate")

    async def _audio(self, request: web.Request, task: Task) -> web.StreamResponse:
        if self._active_requests >= self.cfg.max_requests:
            # Full already: say so before the client sends a body that would be thrown away.
            raise self._busy()
        up = await self._receive(request)
        engine: DecodeEngine | None = None
        slot = False
        try:
            opts = parse_form(up.fields, task)
            duration = await self._probe(up)
            # The slot is taken only now that the whole body is here: a slow upload never holds one.
            if self._active_requests >= self.cfg.max_requests:
                raise self._busy()
            self._active_requests += 1
            slot = True
            engine = await asyncio.to_thread(self.pool.acquire, opts)
            assert up.path is not None
            if opts.stream:
                return await self._stream(request, engine, up.path, opts)
            run = FileRun(self.settings, engine, up.path, opts, max_seconds=self.cfg.max_audio_seconds)
            finals = await self._run_watched(request, run)
            if finals is None:
                return web.Response(status=499)  # nobody is listening any more
            body, ctype = render(opts, finals, duration, self.settings.layout.rules())
            return web.Response(body=body.encode(), headers={"Content-Type": ctype})
        finally:
            if slot:
                self._active_requests -= 1
            if engine is not None:
                self.pool.release(engine)
            up.discard()

    async def _run_watched(self, request: web.Request, run: FileRun) -> list[Final] | None:
        """Run in a thread; stop it if the client hangs up. None if it was stopped."""
        task = asyncio.ensure_future(asyncio.to_thread(run.run))
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=0.25)
                if done:
                    break
                transport = request.transport
                if transport is None or transport.is_closing():
                    log.info("file API: client went away; stopping its transcription")
                    run.stop()
            return task.result()
        except Cancelled:
            return None
        except TooLong:
            raise self._too_long("its decoded audio goes on past that") from None
        except SourceError as e:
            raise ApiError(
                400, f"Unsupported or corrupt audio: {e}", param="file", code="invalid_audio"
            ) from None
        finally:
            if not task.done():
                run.stop()
                with contextlib.suppress(BaseException):
                    await task

    async def _stream(
        self, request: web.Request, engine: DecodeEngine, path: Path, opts: TranscribeOptions
    ) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Final | None] = asyncio.Queue()

        def on_event(ev: Partial | Final) -> None:
            if isinstance(ev, Final) and ev.text.strip():
                loop.call_soon_threadsafe(events.put_nowait, ev)

        run = FileRun(
            self.settings, engine, path, opts, on_event=on_event, max_seconds=self.cfg.max_audio_seconds
        )
        task = asyncio.ensure_future(asyncio.to_thread(run.run))
        task.add_done_callback(lambda _t: events.put_nowait(None))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
        texts: list[str] = []
        try:
            await resp.prepare(request)
            while True:
                ev = await events.get()
                if ev is None:
                    break
                delta = ev.text.strip() if not texts else " " + ev.text.strip()
                texts.append(ev.text.strip())
                await resp.write(sse(delta_event(delta)))
            try:
                finals = task.result()
                await resp.write(sse(done_event(full_text(finals))))
            except TooLong:
                await resp.write(sse(self._too_long("its decoded audio goes on past that").body()))
            except (SourceError, Cancelled) as e:
                err = ApiError(400, f"Transcription failed: {e}", code="invalid_audio")
                await resp.write(sse(err.body()))
            await resp.write_eof()
        except (ConnectionError, ClientConnectionResetError):
            log.info("file API: client went away mid-stream; stopping its transcription")
        finally:
            if not task.done():
                run.stop()
                with contextlib.suppress(BaseException):
                    await task
        return resp

    async def _models(self, request: web.Request) -> web.Response:
        names = await asyncio.to_thread(self.pool.available)
        data = [{"id": n, "object": "model", "created": 0, "owned_by": "streamer"} for n in names]
        return web.json_response({"object": "list", "data": data})

    # --- jobs ----------------------------------------------------------------------------------
    def status(self) -> dict[str, object]:
        """For /health: the file API's load."""
        states = [j.state for j in self._jobs.values()]
        return {
            "enabled": self._unavailable is None,
            "problem": self._unavailable,
            "requests": self._active_requests,
            "jobs": {s: states.count(s) for s in ("queued", "running", "done", "failed")},
        }

    def _active_jobs(self) -> int:
        return sum(1 for j in self._jobs.values() if j.state in ACTIVE)

    async def _create_job(self, request: web.Request) -> web.Response:
        if self._active_jobs() >= self.cfg.max_jobs:
            raise ApiError(
                429,
                f"Too many jobs queued or running (api.max_jobs = {self.cfg.max_jobs}); retry later.",
                type="rate_limit_error",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(self._retry_after())},
            )
        up = await self._receive(request)
        try:
            task: Task = (
                "translate" if (up.fields.get("task") or [""])[-1].strip() == "translate" else "transcribe"
            )
            opts = parse_form(up.fields, task, jobs=True)
            duration = await self._probe(up)
            # Refuse now what the engine would refuse later (unknown model, English-only limits).
            engine = await asyncio.to_thread(self.pool.acquire, opts)
            self.pool.release(engine)
            if self._active_jobs() >= self.cfg.max_jobs:  # filled while this upload arrived
                raise ApiError(
                    429,
                    "Too many jobs queued or running.",
                    type="rate_limit_error",
                    code="rate_limit_exceeded",
                    headers={"Retry-After": str(self._retry_after())},
                )
            assert up.path is not None
            job = Job(
                id=new_id(self.cfg.node),
                filename=up.filename or "file",
                options=opts.to_doc(),
                created=time.time(),
                audio_seconds=duration,
            )
            await asyncio.to_thread(self.store.create, job, up.path)
            up.path = None  # moved into the job's directory
            self._jobs[job.id] = job
            self._queue.put_nowait(job.id)
            log.info("job %s: queued (%s, %.1f s of audio)", job.id, job.filename, duration)
            return web.json_response(job.public(time.time(), self.cfg.result_ttl), status=202)
        finally:
            up.discard()

    def _retry_after(self) -> int:
        running = [j for j in self._jobs.values() if j.state == "running"]
        eta = min((j.eta(time.time()) or 30.0 for j in running), default=30.0)
        return max(1, min(3600, math.ceil(eta)))

    def _job(self, request: web.Request) -> Job:
        job = self._jobs.get(request.match_info["id"])
        if job is None:
            raise ApiError(
                404,
                f"No job {request.match_info['id'][:40]!r} (unknown, deleted or expired).",
                param="id",
                code="job_not_found",
            )
        return job

    async def _get_job(self, request: web.Request) -> web.Response:
        job = self._job(request)
        run = self._running.get(job.id)
        if run is not None:
            job.done_seconds = run.done_seconds
        return web.json_response(job.public(time.time(), self.cfg.result_ttl))

    async def _job_result(self, request: web.Request) -> web.Response:
        job = self._job(request)
        ext = request.match_info["ext"]
        if ext not in RESULT_KINDS:
            raise ApiError(404, f"No result format {ext[:20]!r}; use txt, srt, vtt or json.", param="format")
        if job.state != "done":
            raise ApiError(
                409, f"Job {job.id} is {job.state}; results exist once it is done.", code="job_not_done"
            )
        finals = await asyncio.to_thread(self.store.load_result, job)
        body = formats.format_as(ext, finals, self.settings.layout.rules())
        return web.Response(body=body.encode(), headers={"Content-Type": formats.MEDIA_TYPES[ext]})

    async def _delete_job(self, request: web.Request) -> web.Response:
        job = self._job(request)
        run = self._running.get(job.id)
        self._jobs.pop(job.id, None)
        if run is not None:
            run.stop()  # the worker sees the job gone and removes its directory
        else:
            await asyncio.to_thread(self.store.remove, job.id)
        log.info("job %s: deleted (%s)", job.id, job.state)
        return web.json_response({"id": job.id, "object": "transcription.job", "deleted": True})

    def _finish(self, job: Job, state: str, error: str | None = None) -> None:
        job.state, job.error, job.finished = state, error, time.time()
        job._run_wall = None
        self.store.save(job)

    async def _worker(self) -> None:
        """Runs queued jobs one at a time (file work must not crowd out live captions)."""
        while True:
            job_id = await self._queue.get()
            job = self._jobs.get(job_id)
            if job is None or job.state != "queued":
                continue
            try:
                await self._run_job(job)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # never let one job stop the worker
                log.exception("job %s failed", job.id)
                if job.id in self._jobs:
                    self._finish(job, "failed", f"internal error: {type(e).__name__}: {e}")

    async def _run_job(self, job: Job) -> None:
        opts = TranscribeOptions.from_doc(job.options)
        job.state, job.started, job.attempts, job.done_seconds = "running", time.time(), job.attempts + 1, 0.0
        job._run_wall = time.time()
        self.store.save(job)
        try:
            engine = await asyncio.to_thread(self.pool.acquire, opts)
        except ApiError as e:
            self._finish(job, "failed", e.message)
            return
        run = FileRun(
            self.settings, engine, self.store.input_path(job), opts, max_seconds=self.cfg.max_audio_seconds
        )
        self._running[job.id] = run
        task = asyncio.ensure_future(asyncio.to_thread(run.run))
        try:
            last_save = time.monotonic()
            while True:
                done, _ = await asyncio.wait({task}, timeout=1.0)
                job.done_seconds = run.done_seconds
                if done:
                    break
                if time.monotonic() - last_save > 5.0:  # progress survives a crash, roughly
                    await asyncio.to_thread(self.store.save, job)
                    last_save = time.monotonic()
            finals = task.result()
        except Cancelled:
            if self._closing:
                # Daemon stopping cleanly: not a failed start; the job resumes at the next start.
                job.attempts -= 1
                self.store.save(job)
                return
            await asyncio.to_thread(self.store.remove, job.id)  # deleted by the client
            return
        except TooLong as e:
            self._finish(
                job,
                "failed",
                f"the decoded audio is longer than {e.limit:g} s (api.max_audio_seconds); "
                "only that much was read",
            )
            return
        except SourceError as e:
            self._finish(job, "failed", str(e).replace(str(self.store.input_path(job)), job.filename))
            return
        except asyncio.CancelledError:
            run.stop()
            with contextlib.suppress(BaseException):
                await task
            raise
        finally:
            self._running.pop(job.id, None)
            self.pool.release(engine)
        if job.id not in self._jobs:  # deleted just as it finished
            await asyncio.to_thread(self.store.remove, job.id)
            return
        await asyncio.to_thread(self.store.save_result, job, finals)
        job.done_seconds = job.audio_seconds
        self._finish(job, "done")
        log.info("job %s: done (%d finals)", job.id, len(finals))

    async def _reaper(self) -> None:
        """Removes finished jobs `api.result_ttl` seconds after they finished."""
        period = max(0.5, min(60.0, self.cfg.result_ttl / 4))
        while True:
            await asyncio.sleep(period)
            now = time.time()
            for job in list(self._jobs.values()):
                if expired(job, now, self.cfg.result_ttl):
                    self._jobs.pop(job.id, None)
                    await asyncio.to_thread(self.store.remove, job.id)
                    log.info("job %s: result expired and removed", job.id)
