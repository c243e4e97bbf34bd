"""Audio input: sources (mic, file, stdin), the ring buffer between capture and the stream loop,
and decoding/resampling to 16 kHz mono float32."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamer.audio.demo import DemoSource
from streamer.audio.file import FileSource
from streamer.audio.ingest import IngestSource
from streamer.audio.mic import MicSource
from streamer.audio.ring import SAMPLE_RATE, RingBuffer
from streamer.audio.rtpsource import RtpSource, RtpSpecError, parse_rtp_spec
from streamer.audio.source import Source, SourceError
from streamer.audio.stdin import StdinSource
from streamer.config import ConfigError

if TYPE_CHECKING:
    from streamer.config import Settings

__all__ = ["SAMPLE_RATE", "RingBuffer", "Source", "SourceError", "SourceSpec", "open_source", "parse_spec"]

ACCEPTED_FORMS = (
    "mic, mic:DEVICE (name or index), file:PATH, stdin, stdin:RATE (Hz of s16le mono input), "
    "demo (a built-in speech sample, looped), ingest (audio sent to /ingest), "
    "rtp://HOST:PORT[?codec=pcmu|pcma|l16|opus&rate=HZ&channels=N&pt=N&jitter=S&quiet=S"
    "&allow=ADDR,..&iface=ADDR], "
    "sdp:PATH[?jitter=S&quiet=S&allow=ADDR,..&iface=ADDR]"
)
_MIN_RATE, _MAX_RATE = 1000, 384_000


@dataclass(frozen=True)
class SourceSpec:
    kind: str  # "mic" | "file" | "stdin" | "demo" | "rtp" | "ingest"
    device: str | None = None
    path: Path | None = None
    rate: int = SAMPLE_RATE
    rtp: Any = None  # streamer.audio.rtpsource.RtpSpec for rtp:// and sdp:


def _bad(spec: str, problem: str, key: str = "source.spec") -> ConfigError:
    return ConfigError(f"key '{key}' = {spec!r}: {problem}; accepted forms: {ACCEPTED_FORMS}")


def parse_spec(spec: str, key: str = "source.spec") -> SourceSpec:
    """Parse a source spec; ConfigError naming `key` and the accepted forms if it is wrong."""
    try:
        return _parse_spec(spec)
    except ConfigError as e:
        if key == "source.spec":
            raise
        raise ConfigError(str(e).replace("key 'source.spec'", f"key '{key}'", 1)) from None


def _parse_spec(spec: str) -> SourceSpec:
    kind, sep, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind in ("rtp", "sdp"):
        try:
            return SourceSpec("rtp", rtp=parse_rtp_spec(spec.strip()))
        except RtpSpecError as e:
            raise _bad(spec, str(e)) from None
    if kind == "mic":
        if sep and not arg.strip():
            raise _bad(spec, "missing device after 'mic:'")
        return SourceSpec("mic", device=arg.strip() if sep else None)
    if kind == "ingest" and not sep:
        return SourceSpec("ingest")
    if kind == "demo" and not sep:
        return SourceSpec("demo")
    if kind == "file":
        if not arg.strip():
            raise _bad(spec, "missing path after 'file:'")
        return SourceSpec("file", path=Path(arg).expanduser())
    if kind == "stdin":
        if not sep:
            return SourceSpec("stdin")
        try:
            rate = int(arg.strip())
        except ValueError:
            raise _bad(spec, f"sample rate {arg!r} is not a whole number") from None
        if not _MIN_RATE <= rate <= _MAX_RATE:
            raise _bad(spec, f"sample rate {rate} is outside {_MIN_RATE}..{_MAX_RATE} Hz")
        return SourceSpec("stdin", rate=rate)
    raise _bad(spec, f"unknown source kind {kind!r}" if sep else "not a source")


def open_source(spec: str, settings: Settings, stream: str | None = None, key: str = "source.spec") -> Source:
    """Build the source for `spec`; file, device and port problems raise SourceError right away."""
    parsed = parse_spec(spec, key)
    if parsed.kind == "rtp":
        return RtpSource(parsed.rtp, stream=stream or settings.stream)
    if parsed.kind == "file":
        assert parsed.path is not None
        return FileSource(parsed.path, realtime=settings.source.realtime)
    if parsed.kind == "stdin":
        return StdinSource(parsed.rate)
    if parsed.kind == "ingest":
        return IngestSource(stream=stream or settings.stream)
    if parsed.kind == "demo":
        return DemoSource()
    return MicSource(parsed.device)
