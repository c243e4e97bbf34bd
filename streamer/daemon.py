"""`streamer run`: every configured stream from its source to every configured sink, supervised.

Without `[[streams]]` there is one stream (`stream`, `source.spec`). With them, each stream has its
own source, ring, VAD and caption state, while streams that name the same model share one loaded
model. A stream that fails (its source gone for good) ends alone: the others go on, and the exit
status is 1 once all have ended if any failed.

The asyncio loop in the main thread owns the network sinks and the supervision: it tells
systemd (notify protocol) when the daemon is ready, feeds the watchdog while every pipeline makes
progress, reloads the configuration on SIGHUP, and on SIGINT/SIGTERM stops the source, lets the
stream close the open utterance with a final decode, flushes every sink (MQTT outbox, transcript
files, WebSocket clients closed with 1001) and exits 0. At the end of a file or stdin it shuts
down the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from streamer import __version__, metrics
from streamer.audio import open_source
from streamer.bus import Bus, BusEvent
from streamer.config import ConfigError, Settings, settings_from_args, stream_settings
from streamer.decode.engine import DecodeEngine, DecodeOptions
from streamer.errors import SourceError, UserError
from streamer.events import Final
from streamer.pipeline import Stream
from streamer.service.notify import Notifier, watchdog_interval
from streamer.service.probes import DecodeMonitor, LoopHeartbeat, install_test_hang
from streamer.service.reload import is_option_key, plan_reload
from streamer.service.watchdog import StreamProbe, stalls, status_line
from streamer.sinks.console import ConsoleSink
from streamer.sinks.context import SinkContext
from streamer.sinks.server import resolve_token
from streamer.sinks.start import Sinks, start_sinks

if TYPE_CHECKING:
    from streamer.audio.source import Source

log = logging.getLogger(__name__)

#: STATUS= refresh when systemd asks for no watchdog pings.
STATUS_INTERVAL = 5.0
#: How long a starting daemon waits for its first MQTT connection before it gives up with an
#: error: long enough for a broker started beside it (compose, systemd) to open its port.
MQTT_STARTUP_TIMEOUT = 10.0
_POLL = 0.1


def main(settings: Settings, args: argparse.Namespace) -> int:
    per_stream = stream_settings(settings)
    sources: list[Source] = []
    try:
        # Sources first: a bad file or a port in use fails before a model loads.
        if not settings.streams:
            sources.append(open_source_or_demo(settings))
        else:
            for i, s in enumerate(per_stream):
                sources.append(open_source(s.source.spec, s, s.stream, key=f"streams.{i}.source"))
        engines = _engines(per_stream)
    except BaseException:
        for src in sources:
            _close_source(src)
        raise
    try:
        return asyncio.run(_serve(settings, args, list(zip(per_stream, sources, engines, strict=True))))
    finally:
        for engine in _distinct(engines):
            engine.close()


def _distinct(engines: list[DecodeEngine]) -> list[DecodeEngine]:
    return list({id(e): e for e in engines}.values())


def _close_source(source: Source) -> None:
    close = getattr(source, "close", None)
    if callable(close):
        close()


def _engines(per_stream: list[Settings]) -> list[DecodeEngine]:
    """The engine of each stream: one loaded model and one decode scheduler per model name, shared
    by its streams (each request carries its stream's task and hotwords), so the scheduler orders
    the work of every stream on that model fairly."""
    by_model: dict[str, DecodeEngine] = {}
    out: list[DecodeEngine] = []
    for s in per_stream:
        dec = s.decoder
        engine = by_model.get(s.model.name)
        if engine is None:
            engine = by_model[s.model.name] = DecodeEngine.from_settings(s)
        if not engine.multilingual and dec.language not in (None, "en"):
            raise UserError(
                f"stream {s.stream}: model '{engine.model_name}' is English-only; "
                f"it cannot do language '{dec.language}'"
            )
        out.append(engine)
    return out


# -- first run ------------------------------------------------------------------------------


def _mic_is_default(settings: Settings) -> bool:
    """True when nobody chose the source (flag, environment or file): the first-run case."""
    return "spec" not in settings.source.model_fields_set and settings.source.spec == "mic"


def open_source_or_demo(settings: Settings) -> Source:
    """The configured source; with the default microphone unusable, the demo instead (one line)."""
    try:
        return open_source(settings.source.spec, settings)
    except SourceError as e:
        if not _mic_is_default(settings):
            raise
        print(
            f"streamer: no usable microphone ({e}); running the built-in demo instead "
            "(choose a source with --source)",
            file=sys.stderr,
            flush=True,
        )
        settings.source.spec = "demo"
        return open_source("demo", settings)


# -- supervision state ----------------------------------------------------------------------


@dataclass
class _Daemon:
    settings: Settings
    args: argparse.Namespace
    engine: DecodeEngine  # the first stream's (the file API's)
    bus: Bus
    streams: list[Stream]
    notifier: Notifier
    heartbeats: dict[str, LoopHeartbeat]
    decodes: list[DecodeMonitor]  # one per distinct engine
    engines: list[DecodeEngine] = field(default_factory=list)  # each stream's, in stream order
    sinks: Sinks | None = None
    last_caption: float | None = None
    stopping: bool = False
    reloads: set[asyncio.Task[None]] = field(default_factory=set)

    def on_event(self, event: BusEvent) -> None:
        if isinstance(event, Final):
            self.last_caption = time.monotonic()

    def clients(self) -> int:
        server = self.sinks.server if self.sinks is not None else None
        return server.client_count if server is not None else 0

    def probes(self, now: float) -> list[StreamProbe]:
        return [
            StreamProbe(
                name=s.name,
                state=str(s.health()["state"]),
                beat_age=self.heartbeats[s.name].age(now),
                oldest_decode_age=max(
                    (a for m in self.decodes if (a := m.oldest_age(s.name, now)) is not None), default=None
                ),
            )
            for s in self.streams
        ]

    def running(self) -> bool:
        return not all(s.join(timeout=0) for s in self.streams)

    def status(self, now: float, problems: list[str] | None = None) -> str:
        age = None if self.last_caption is None else now - self.last_caption
        return status_line(self.probes(now), self.clients(), age, problems or [])


async def _serve(
    settings: Settings, args: argparse.Namespace, plan: list[tuple[Settings, Source, DecodeEngine]]
) -> int:
    bus = Bus(max_finals=settings.server.history_finals, max_age=settings.server.history_seconds)
    streams = []
    for cfg, source, stream_engine in plan:
        bus.add_stream(cfg.stream)
        streams.append(Stream(cfg, source, stream_engine, bus.publish))
    engines = [e for _, _, e in plan]
    engine = engines[0]
    d = _Daemon(
        settings=settings,
        args=args,
        engine=engine,
        bus=bus,
        streams=streams,
        notifier=Notifier.from_env(),
        heartbeats={s.name: LoopHeartbeat(s.ring) for s in streams},
        decodes=[DecodeMonitor(e) for e in _distinct(engines)],
        engines=engines,
    )
    for e in _distinct(engines):
        install_test_hang(e)
    console = ConsoleSink(jsonl=getattr(args, "jsonl", False))
    bus.subscribe(console)
    bus.subscribe(d.on_event)
    d.sinks = await _start_sinks(settings, bus, streams, engine)
    _print_address(d.sinks)
    _install_signal_handlers(d)
    for s, e in zip(streams, engines, strict=True):
        s.start()
        log.info("stream %s: %s -> model %s", s.name, s.source.description, e.model_name)
    try:
        if await _wait_capturing(d):
            d.notifier.ready(d.status(time.monotonic()))
            await _supervise(d)
    finally:
        if not d.stopping:  # the source ended by itself
            d.notifier.stopping("source ended; flushing captions")
        if d.sinks is not None:
            await d.sinks.close()
            await asyncio.to_thread(_fsync_transcripts, d.sinks)
        await asyncio.to_thread(console.close)  # bounded: a stuck stdout does not hold the exit
        d.notifier.close()
    for s in streams:
        _close_source(s.source)
    failed = [s for s in streams if s.error]
    for s in failed:
        prefix = f"stream {s.name}: " if len(streams) > 1 else ""
        print(f"streamer: {prefix}{s.error}", file=sys.stderr)
    return 1 if failed else 0


async def _start_sinks(settings: Settings, bus: Bus, streams: list[Stream], engine: DecodeEngine) -> Sinks:
    try:
        sinks = await start_sinks(
            SinkContext(
                settings=settings,
                bus=bus,
                streams={s.name: s for s in streams},
                model=engine.model_name,
                engine=engine,  # the file API runs uploads on the daemon's engine
                version=__version__,
            )
        )
    except OSError as e:
        raise UserError(
            f"cannot listen on {settings.server.host}:{settings.server.port}: {e.strerror or e}"
        ) from None
    if sinks.mqtt is not None:
        try:
            # A broker that was never reached is a configuration error, not an outage: fail now
            # with one line instead of captioning into a reconnect loop nobody sees.
            await sinks.mqtt.wait_connected(MQTT_STARTUP_TIMEOUT)
        except UserError:
            await sinks.close()
            raise
    return sinks


def _fsync_transcripts(sinks: Sinks) -> None:
    """Put the closed transcript files (and their directory entries) on disk before exit 0.

    fsync works on the file, whichever descriptor asks, so the writer's own files need not change.
    """
    if sinks.files is None:
        return
    paths = [p for p in sinks.files.files if p.exists()]
    for path in [*paths, *{p.parent for p in paths}]:
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            log.warning("could not sync %s to disk: %s", path, e)


def _print_address(sinks: Sinks) -> None:
    server = sinks.server
    if server is None or server.port is None:
        return
    host = server.cfg.host
    shown = host if host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    if ":" in shown:
        shown = f"[{shown}]"
    print(f"streamer: captions at http://{shown}:{server.port}/", file=sys.stderr, flush=True)


def _install_signal_handlers(d: _Daemon) -> None:
    loop = asyncio.get_running_loop()
    handlers = {signal.SIGINT: _stop, signal.SIGTERM: _stop, signal.SIGHUP: _reload}
    for sig, handler in handlers.items():
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on the main thread
            loop.add_signal_handler(sig, handler, d)


def _stop(d: _Daemon) -> None:
    if not d.stopping:
        d.stopping = True
        log.info("stopping: closing the open utterance and flushing every sink")
        d.notifier.stopping("stopping: flushing captions")
    for s in d.streams:
        s.stop()


async def _wait_capturing(d: _Daemon) -> bool:
    """Wait until every stream loop has read audio (READY=1 means captions can flow).

    A network source that waits for senders (RTP) is ready once it listens: a room whose mixer is
    not sending yet must not hold the daemon in "activating" until systemd gives up on it.
    """
    while d.running():
        if all(
            s.health()["last_audio_age"] is not None or s.join(timeout=0) or s.source.listening
            for s in d.streams
        ):
            return True
        await asyncio.sleep(_POLL)
    return False


async def _supervise(d: _Daemon) -> None:
    """Until the streams end: feed the watchdog while every pipeline progresses, refresh STATUS."""
    interval = watchdog_interval(os.environ)
    period = interval if interval is not None else STATUS_INTERVAL
    next_tick = time.monotonic()
    stalled_before = False
    while d.running():
        now = time.monotonic()
        if now >= next_tick and not d.stopping:
            next_tick = now + period
            probes = d.probes(now)
            for p in probes:
                ages = [a for a in (p.beat_age, p.oldest_decode_age) if a is not None]
                metrics.PROGRESS_AGE.labels(p.name).set(max(ages, default=0.0))
            problems = stalls(probes, d.settings.service.progress_timeout)
            status = d.status(now, problems)
            if problems:
                if not stalled_before:
                    log.error("watchdog not fed: %s", "; ".join(problems))
                d.notifier.status(status)
            elif interval is not None:
                d.notifier.watchdog(status)
            else:
                d.notifier.status(status)
            stalled_before = bool(problems)
        await asyncio.sleep(_POLL)


# -- reload -----------------------------------------------------------------------------------


def _reload(d: _Daemon) -> None:
    if d.stopping:
        return
    task = asyncio.get_running_loop().create_task(_reload_config(d))
    d.reloads.add(task)
    task.add_done_callback(d.reloads.discard)


def _load_new_settings(args: argparse.Namespace) -> Settings:
    return settings_from_args(args)


async def _reload_config(d: _Daemon) -> None:
    d.notifier.reloading()
    try:
        try:
            new = await asyncio.to_thread(_load_new_settings, d.args)
        except ConfigError as e:
            log.error("reload rejected, keeping the running configuration: %s", e)
            return
        plan = plan_reload(d.settings, new)
        if not plan.changed:
            log.info("reload: configuration unchanged")
            return
        _apply_live(d, new, plan.live)
        for key, value in plan.restart.items():
            log.warning(
                "reload: %s = %r needs a restart to apply; still running with the old value", key, value
            )
        if plan.live:
            log.info("reload: applied %s", ", ".join(sorted(plan.live)))
    finally:
        d.notifier.ready(d.status(time.monotonic()))


def _apply_live(d: _Daemon, new: Settings, live: dict[str, Any]) -> None:
    """Apply the live keys. The daemon's Settings record them (the sinks read theirs on use, on
    this event loop); each stream gets a new immutable snapshot of its decision options and each
    engine new DecodeOptions, swapped whole: no stream thread ever reads a half-written Settings."""
    for key in live:
        section, _, name = key.rpartition(".")
        target = getattr(d.settings, section) if section else d.settings
        setattr(target, name, getattr(getattr(new, section) if section else new, name))
    if "log_level" in live:
        logging.getLogger().setLevel(d.settings.log_level.upper())
    if any(is_option_key(k) for k in live):
        # The streams' own [[streams]] keys stay as they were started (changing them is a restart).
        per_stream = {
            cfg.stream: cfg for cfg in stream_settings(new.model_copy(update={"streams": d.settings.streams}))
        }
        engines = d.engines or [d.engine] * len(d.streams)
        for s, engine in zip(d.streams, engines, strict=True):
            cfg = per_stream.get(s.name)
            if cfg is None:
                continue
            s.reconfigure(cfg)
            if isinstance(engine, DecodeEngine):
                engine.options = DecodeOptions.from_settings(cfg)
    server = d.sinks.server if d.sinks is not None else None
    if server is not None and "server.token" in live:
        # Checked on each new connection and request; connected clients stay connected.
        server.token = resolve_token(d.settings.server.token)
