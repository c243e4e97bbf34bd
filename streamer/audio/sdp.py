"""The part of an SDP file (RFC 8866) an RTP receiver needs: where to listen and what arrives.

Read as ffmpeg (`-sdp_file`) and GStreamer write them: `c=` at session or media level (a
multicast address may carry `/ttl`), the first `m=audio PORT RTP/AVP PT...` line, and its
`a=rtpmap:PT CODEC/RATE[/CHANNELS]` and `a=fmtp:PT ...` attributes. Payload types without an
rtpmap fall back to the static table of RFC 3551. Anything else in the file is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from streamer.audio.codecs import PayloadFormat


class SdpError(ValueError):
    """The SDP text lacks what the receiver needs; the message says what."""


@dataclass(frozen=True)
class SdpAudio:
    address: str
    port: int
    formats: tuple[PayloadFormat, ...]  # in the order of the m= line, only the ones we decode
    fmtp: dict[int, str] = field(default_factory=dict)
    unsupported: tuple[str, ...] = ()  # codecs offered that we cannot decode


def parse_sdp(text: str) -> SdpAudio:
    session_addr: str | None = None
    media_addr: str | None = None
    port: int | None = None
    pts: list[int] = []
    rtpmap: dict[int, tuple[str, int, int]] = {}
    fmtp: dict[int, str] = {}
    in_audio = False
    seen_audio = False
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if len(line) < 2 or line[1] != "=":
            continue
        key, value = line[0], line[2:].strip()
        if key == "m":
            if seen_audio:
                in_audio = False  # only the first audio section is used
                continue
            parts = value.split()
            in_audio = bool(parts) and parts[0] == "audio"
            if not in_audio:
                continue
            seen_audio = True
            if len(parts) < 4 or not parts[2].startswith("RTP/"):
                raise SdpError(f"line {lineno}: expected 'm=audio PORT RTP/AVP PT...', got {line!r}")
            try:
                port = int(parts[1].split("/")[0])
                pts = [int(p) for p in parts[3:]]
            except ValueError:
                raise SdpError(f"line {lineno}: port and payload types must be numbers: {line!r}") from None
            if not 0 < port < 65536:
                raise SdpError(f"line {lineno}: port {port} is outside 1..65535")
        elif key == "c":
            parts = value.split()
            if len(parts) < 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
                raise SdpError(f"line {lineno}: expected 'c=IN IP4 ADDRESS', got {line!r}")
            addr = parts[2].split("/")[0]
            if in_audio:
                media_addr = addr
            elif not seen_audio:
                session_addr = addr
        elif key == "a" and in_audio:
            name, _, rest = value.partition(":")
            if name == "rtpmap":
                pt_s, _, enc = rest.partition(" ")
                bits = enc.strip().split("/")
                try:
                    rtpmap[int(pt_s)] = (bits[0].upper(), int(bits[1]), int(bits[2]) if len(bits) > 2 else 1)
                except (ValueError, IndexError):
                    raise SdpError(f"line {lineno}: expected 'a=rtpmap:PT CODEC/RATE[/CHANNELS]'") from None
            elif name == "fmtp":
                pt_s, _, params = rest.partition(" ")
                if pt_s.isdigit():
                    fmtp[int(pt_s)] = params.strip()
    if port is None:
        raise SdpError("no 'm=audio PORT RTP/AVP PT' line")
    address = media_addr or session_addr
    if address is None:
        raise SdpError("no 'c=IN IP4 ADDRESS' line for the audio")
    formats: list[PayloadFormat] = []
    unsupported: list[str] = []
    for pt in pts:
        if pt in rtpmap:
            codec, rate, channels = rtpmap[pt]
            try:
                formats.append(PayloadFormat(pt, codec, rate, channels))
            except ValueError:
                unsupported.append(f"{pt} {codec}/{rate}/{channels}")
        else:
            static = PayloadFormat.static(pt)
            if static is None:
                unsupported.append(f"{pt} (no rtpmap)")
            else:
                formats.append(static)
    if not formats:
        offered = ", ".join(unsupported) or "nothing"
        raise SdpError(
            f"no audio format this receiver decodes (offered: {offered}; decodes PCMU, PCMA, L16, opus)"
        )
    return SdpAudio(address, port, tuple(formats), fmtp, tuple(unsupported))
