"""RTP over UDP as a source: `rtp://HOST:PORT[?OPTIONS]` or `sdp:PATH[?OPTIONS]`.

HOST is the address to listen on (0.0.0.0 for every interface), or a multicast group to join.
An SDP file (as ffmpeg's `-sdp_file` or GStreamer write it) gives the address, port and formats.
Options, as URL query parameters (the same for both forms, so each stream carries its own):

    codec=pcmu|pcma|l16|opus  rate=HZ  channels=N  pt=N   the payload when there is no SDP
                                                          (static types 0, 8, 10, 11 need none;
                                                          without pt, any dynamic type 96-127)
    jitter=SECONDS   jitter buffer depth (default 0.06)
    quiet=SECONDS    no packets this long = the sender is quiet (default 1.0)
    allow=ADDR,ADDR  accept datagrams from these sender addresses only
    iface=ADDR       the local interface address to join a multicast group on (default: the
                     kernel's choice, usually the default route's interface)

The thread here only moves bytes: every decision is in `RtpSession` (streamer.audio.rtpsession).

Datagrams the kernel drops because the socket's receive buffer is full never reach the session,
so the jitter buffer can only call them lost. The socket asks for SO_RXQ_OVFL (Linux): every
datagram then carries the socket's drop counter, exported as `streamer_rtp_kernel_drops` and
`kernel_drops` in the source's status, so a receiver that falls behind is told apart from a lossy
network.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from streamer import metrics
from streamer.audio.codecs import CODECS, PayloadFormat
from streamer.audio.ring import RingBuffer
from streamer.audio.rtpsession import RtpOptions, RtpSession, RtpStats
from streamer.audio.sdp import SdpError, parse_sdp
from streamer.audio.source import Source
from streamer.errors import SourceError

log = logging.getLogger(__name__)

_TICK = 0.005  # how often the receiver wakes without a datagram: releases held packets in time
_METRICS_EVERY = 0.25
_RCVBUF = 1 << 20
_MAX_DATAGRAM = 65536
# Linux's SO_RXQ_OVFL (asm-generic/socket.h); Python's socket module does not name it.
SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)
_ANCILLARY = socket.CMSG_SPACE(4)


class RtpSpecError(ValueError):
    """A wrong rtp:// or sdp: spec; the message says which part."""


@dataclass(frozen=True)
class RtpSpec:
    host: str | None  # None: from the SDP file
    port: int | None
    sdp: Path | None = None
    options: RtpOptions = field(default_factory=RtpOptions)
    iface: str | None = None  # local address to join a multicast group on


def _number(q: dict[str, list[str]], key: str, kind: type, lo: float, hi: float) -> float | int | None:
    if key not in q:
        return None
    raw = q[key][-1]
    try:
        value = kind(raw)
    except ValueError:
        raise RtpSpecError(f"option {key}={raw!r} is not a {'whole ' if kind is int else ''}number") from None
    if not lo <= value <= hi:
        raise RtpSpecError(f"option {key}={raw} is outside {lo}..{hi}")
    return value


def parse_rtp_spec(spec: str) -> RtpSpec:
    """`rtp://...` or `sdp:...` -> RtpSpec (the SDP file is read later, by `open_rtp`)."""
    if spec.lower().startswith("sdp:"):
        path, _, query = spec[4:].partition("?")
        if not path.strip():
            raise RtpSpecError("missing path after 'sdp:'")
        q = parse_qs(query, keep_blank_values=True)
        bad = set(q) - {"jitter", "quiet", "allow", "iface"}
        if bad:
            raise RtpSpecError(f"unknown option(s) {', '.join(sorted(bad))} (the SDP file gives the format)")
        return RtpSpec(None, None, Path(path).expanduser(), _options(q, {}), _iface(q))
    parts = urlsplit(spec)
    try:
        host, port = parts.hostname, parts.port
    except ValueError as e:
        raise RtpSpecError(f"bad address: {e}") from None
    if not host or port is None or port == 0:
        raise RtpSpecError("expected HOST:PORT after 'rtp://', e.g. rtp://0.0.0.0:5004")
    if parts.path not in ("", "/"):
        raise RtpSpecError(f"unexpected path {parts.path!r}")
    q = parse_qs(parts.query, keep_blank_values=True)
    bad = set(q) - {"codec", "rate", "channels", "pt", "jitter", "quiet", "allow", "iface"}
    if bad:
        raise RtpSpecError(f"unknown option(s) {', '.join(sorted(bad))}")
    formats: dict[int, PayloadFormat] = {}
    options = _options(q, formats)
    if "codec" in q:
        codec = q["codec"][-1].upper()
        if codec not in CODECS:
            raise RtpSpecError(f"codec={q['codec'][-1]!r}; accepted: pcmu, pcma, l16, opus")
        default_rate = {"PCMU": 8000, "PCMA": 8000, "OPUS": 48000}.get(codec, 16000)
        rate = int(_number(q, "rate", int, 1000, 384_000) or default_rate)
        channels = int(_number(q, "channels", int, 1, 8) or (2 if codec == "OPUS" else 1))
        pt = _number(q, "pt", int, 0, 127)
        try:
            if pt is None:
                PayloadFormat(96, codec, rate, channels)  # validates
                options = replace(options, dynamic=(codec, rate, channels))
            else:
                formats[int(pt)] = PayloadFormat(int(pt), codec, rate, channels)
        except ValueError as e:
            raise RtpSpecError(str(e)) from None
    elif {"rate", "channels", "pt"} & set(q):
        raise RtpSpecError("rate, channels and pt need codec=...")
    return RtpSpec(host, port, None, options, _iface(q))


def _iface(q: dict[str, list[str]]) -> str | None:
    if "iface" not in q:
        return None
    raw = q["iface"][-1].strip()
    try:
        return str(ipaddress.IPv4Address(raw))
    except ValueError:
        raise RtpSpecError(f"iface: {raw!r} is not an IPv4 interface address") from None


def _options(q: dict[str, list[str]], formats: dict[int, PayloadFormat]) -> RtpOptions:
    allow: set[str] = set()
    for item in ",".join(q.get("allow", [])).split(","):
        if not item.strip():
            continue
        try:
            allow.add(str(ipaddress.ip_address(item.strip())))
        except ValueError:
            raise RtpSpecError(f"allow: {item.strip()!r} is not an IP address") from None
    jitter = _number(q, "jitter", float, 0.0, 2.0)
    quiet = _number(q, "quiet", float, 0.1, 60.0)
    return RtpOptions(
        formats=formats,
        jitter=RtpOptions.jitter if jitter is None else float(jitter),
        quiet_after=RtpOptions.quiet_after if quiet is None else float(quiet),
        allow=frozenset(allow),
    )


def resolve(spec: RtpSpec) -> RtpSpec:
    """Read the SDP file of an `sdp:` spec into address, port and formats (SourceError if unusable)."""
    if spec.sdp is None:
        return spec
    try:
        text = spec.sdp.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise SourceError(f"cannot read SDP file '{spec.sdp}': {e.strerror or e}") from None
    try:
        sdp = parse_sdp(text)
    except SdpError as e:
        raise SourceError(f"SDP file '{spec.sdp}': {e}") from None
    formats = {f.payload_type: f for f in sdp.formats}
    return replace(spec, host=sdp.address, port=sdp.port, options=replace(spec.options, formats=formats))


def _bind(host: str, port: int, iface: str | None = None) -> socket.socket:
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        addr = ipaddress.ip_address(socket.gethostbyname(host))
    family = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
        with contextlib.suppress(OSError):  # not Linux: kernel drops stay unknown (status: None)
            sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
        if addr.is_multicast:
            # Binding to the group (not 0.0.0.0) keeps other groups on the same port out.
            sock.bind((str(addr), port))
            if family == socket.AF_INET:
                mreq = struct.pack("4s4s", addr.packed, socket.inet_aton(iface or "0.0.0.0"))
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
            else:
                mreq6 = struct.pack("16sI", addr.packed, 0)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq6)
        else:
            sock.bind((str(addr), port))
    except OSError:
        sock.close()
        raise
    return sock


class RtpSource(Source):
    live = True
    listening = True  # bound in __init__

    def __init__(self, spec: RtpSpec, *, stream: str = "main") -> None:
        self.spec = resolve(spec)
        assert self.spec.host is not None and self.spec.port is not None
        self.host, self.port = self.spec.host, self.spec.port
        self.stream = stream
        self.session = RtpSession(self.spec.options)
        # Bind now: a port in use fails before the daemon loads a model, not in a thread later.
        try:
            self._sock: socket.socket | None = _bind(self.host, self.port, self.spec.iface)
        except OSError as e:
            raise SourceError(
                f"cannot listen for RTP on {self.host}:{self.port}: {e.strerror or e}"
            ) from None
        self.port = self._sock.getsockname()[1]
        self._reported = RtpStats()
        self._reported_jitter: dict[str, int] = {}
        self.kernel_drops: int | None = self._rxq_ovfl_enabled()  # None: this kernel does not say
        self._reported_kernel_drops = 0

    def _rxq_ovfl_enabled(self) -> int | None:
        assert self._sock is not None
        try:
            on = self._sock.getsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL)
        except OSError:
            return None
        return 0 if on else None

    def _on_ancillary(self, ancdata: list[tuple[int, int, bytes]]) -> None:
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL and len(data) >= 4:
                # The socket's drop counter when this datagram was queued (cumulative, u32).
                count = int.from_bytes(data[:4], "little" if sys.byteorder == "little" else "big")
                self.kernel_drops = max(self.kernel_drops or 0, count)

    @property
    def description(self) -> str:
        return f"rtp://{self.host}:{self.port}" if self.spec.sdp is None else f"sdp:{self.spec.sdp.name}"

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def status(self) -> dict[str, object]:
        s, j = self.session.stats, self.session.jitter_stats
        return {
            "state": self.session.state,
            "sender": self.session.sender,
            "format": None if self.session.format is None else self.session.format.codec,
            "packets": j.packets,
            "lost": j.lost,
            "reordered": j.reorders,
            "late": j.late,
            "duplicates": j.duplicates,
            "malformed": s.malformed.total(),
            "rejected": s.rejected,
            "concealed_seconds": round(s.concealed_seconds, 3),
            "kernel_drops": self.kernel_drops,
        }

    def run(self, ring: RingBuffer, stop: threading.Event) -> None:
        sock = self._sock
        if sock is None:
            raise SourceError(f"RTP socket on {self.host}:{self.port} is closed")
        state = self.session.state
        if state == "waiting":
            # Not "running" until a sender sends: an idle room is not a dead microphone, so /health
            # does not turn 503 for it (the state says what is going on).
            self._notify("waiting", f"waiting for RTP on {self.host}:{self.port}")
        next_metrics = 0.0
        try:
            while not stop.is_set() and not ring.closed:
                # Wait for a datagram, then take every one already queued before the clock tick:
                # a gap must not be given up on while its packet sits unread in the socket.
                timeout: float | None = _TICK
                while True:
                    sock.settimeout(timeout)
                    try:
                        data, ancdata, _flags, addr = sock.recvmsg(_MAX_DATAGRAM, _ANCILLARY)
                    except (TimeoutError, BlockingIOError):
                        break
                    except OSError as e:
                        raise SourceError(
                            f"RTP socket on {self.host}:{self.port}: {e.strerror or e}"
                        ) from None
                    if ancdata:
                        self._on_ancillary(ancdata)
                    audio = self.session.on_datagram(data, addr[0], time.monotonic())
                    if audio.shape[0]:
                        ring.write(audio)
                    timeout = 0.0
                now = time.monotonic()
                audio = self.session.on_tick(now)
                if audio.shape[0]:
                    ring.write(audio)
                if self.session.state != state:
                    state = self.session.state
                    self._announce(state)
                if now >= next_metrics:
                    self._export_metrics()
                    next_metrics = now + _METRICS_EVERY
        finally:
            self._export_metrics()
            if stop.is_set():
                self.close()

    def _announce(self, state: str) -> None:
        if state == "quiet":
            log.info("stream %s: RTP sender went quiet", self.stream)
            detail = f"no RTP packets for {self.session.options.quiet_after:g} s"
            self._notify("quiet", detail)
        elif state == "receiving":
            log.info("stream %s: RTP from %s", self.stream, self.session.sender)
            self._notify("running", f"{self.description} from {self.session.sender}")

    def _notify(self, state: str, detail: str) -> None:
        if self.on_state is not None:
            self.on_state(state, detail)

    def _export_metrics(self) -> None:
        name = self.stream
        s, j = self.session.stats, self.session.jitter_stats
        r = self._reported
        metrics.RTP_PACKETS.labels(name).inc(s.datagrams - r.datagrams)
        metrics.RTP_BYTES.labels(name).inc(s.bytes - r.bytes)
        metrics.RTP_REJECTED.labels(name).inc(s.rejected - r.rejected)
        metrics.RTP_CONCEALED.labels(name).inc(max(0.0, s.concealed_seconds - r.concealed_seconds))
        if self.kernel_drops is not None and self.kernel_drops > self._reported_kernel_drops:
            metrics.RTP_KERNEL_DROPS.labels(name).inc(self.kernel_drops - self._reported_kernel_drops)
            self._reported_kernel_drops = self.kernel_drops
        for kind, n in s.malformed.items():
            metrics.RTP_MALFORMED.labels(name, kind).inc(n - r.malformed[kind])
        now_j = {"lost": j.lost, "reordered": j.reorders, "late": j.late, "duplicate": j.duplicates}
        for key, value in now_j.items():
            metrics.RTP_EVENTS.labels(name, key).inc(value - self._reported_jitter.get(key, 0))
        self._reported_jitter = now_j
        self._reported = RtpStats(
            datagrams=s.datagrams,
            bytes=s.bytes,
            rejected=s.rejected,
            malformed=s.malformed.copy(),
            concealed_seconds=s.concealed_seconds,
        )
