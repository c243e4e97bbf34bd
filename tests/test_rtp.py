"""The pure RTP parts: parser, payload decoders, jitter buffer, timeline, SDP, receiving session.

No sockets, threads or models: property tests with hypothesis for open-ended input, and
known-answer tests against FFmpeg's own decoders (through PyAV) for the payload formats.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import struct

import av
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamer.audio.codecs import (
    ALAW_TO_LINEAR,
    ULAW_TO_LINEAR,
    PayloadFormat,
    make_decoder,
)
from streamer.audio.jitter import JitterBuffer, Timeline
from streamer.audio.rtp import RtpError, RtpPacket, SeqUnwrapper, build, parse, seq_delta
from streamer.audio.rtpsession import RtpOptions, RtpSession
from streamer.audio.sdp import SdpError, parse_sdp

# -- parser ------------------------------------------------------------------------------------

packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127).filter(lambda pt: not 72 <= pt <= 78),
    sequence=st.integers(0, 65535),
    timestamp=st.integers(0, 2**32 - 1),
    ssrc=st.integers(0, 2**32 - 1),
    payload=st.binary(max_size=64),
    marker=st.booleans(),
    csrc=st.lists(st.integers(0, 2**32 - 1), max_size=15).map(tuple),
    extension=st.none() | st.tuples(st.integers(0, 65535), st.binary(max_size=16).map(lambda b: b * 4)),
    padding=st.integers(0, 255),
)


@given(packets)
@settings(deadline=None)
def test_build_then_parse_gives_the_packet_back(p: RtpPacket) -> None:
    assert parse(build(p)) == p


@given(st.binary(max_size=200))
@settings(deadline=None)
def test_arbitrary_bytes_parse_or_raise_the_typed_error(data: bytes) -> None:
    try:
        p = parse(data)
    except RtpError as e:
        assert e.kind in {"truncated", "version", "padding", "csrc", "extension", "rtcp"}
        return
    assert p.version == 2 and 0 <= p.payload_type <= 127 and len(p.payload) <= len(data) - 12


@given(packets, st.data())
@settings(deadline=None)
def test_truncated_or_corrupted_packets_never_escape_with_another_error(
    p: RtpPacket, data: st.DataObject
) -> None:
    raw = bytearray(build(p))
    cut = data.draw(st.integers(0, len(raw)))
    flips = data.draw(st.lists(st.tuples(st.integers(0, max(cut - 1, 0)), st.integers(0, 255)), max_size=4))
    raw = raw[:cut]
    for i, v in flips:
        if i < len(raw):
            raw[i] = v
    with contextlib.suppress(RtpError):
        parse(bytes(raw))


def test_header_fields_and_malformed_kinds() -> None:
    raw = bytes([0x80 | 0x10 | 0x01, 0x80 | 97]) + struct.pack("!HII", 65535, 123456, 0xDEADBEEF)
    raw += struct.pack("!I", 42) + struct.pack("!HH", 0xBEDE, 1) + b"\x01\x02\x03\x04" + b"payload"
    p = parse(raw)
    assert (p.marker, p.payload_type, p.sequence, p.timestamp, p.ssrc) == (
        True,
        97,
        65535,
        123456,
        0xDEADBEEF,
    )
    assert p.csrc == (42,) and p.extension == (0xBEDE, b"\x01\x02\x03\x04") and p.payload == b"payload"
    cases = {
        "truncated": b"\x80\x00\x00",
        "version": bytes([0x40]) + bytes(11),
        "padding": bytes([0xA0, 0]) + bytes(10) + b"\x00",  # padding bit with a zero count
        "csrc": bytes([0x8F, 0]) + bytes(10) + bytes(8),
        "extension": bytes([0x90, 0]) + bytes(10) + struct.pack("!HH", 1, 9),
        "rtcp": bytes([0x80, 200]) + bytes(10),
    }
    for kind, data in cases.items():
        with pytest.raises(RtpError) as e:
            parse(data)
        assert e.value.kind == kind
    with pytest.raises(RtpError) as e:  # padding longer than the packet
        parse(bytes([0xA0, 0]) + bytes(10) + b"\xff")
    assert e.value.kind == "padding"


def test_sequence_numbers_wrap() -> None:
    assert seq_delta(0, 65535) == 1 and seq_delta(65535, 0) == -1 and seq_delta(5, 10) == -5
    u = SeqUnwrapper()
    got = [u.extend(s) for s in (65534, 65535, 0, 65535, 1, 2)]
    assert [g - got[0] for g in got] == [0, 1, 2, 1, 3, 4]


# -- payload formats -----------------------------------------------------------------------------


def _ffmpeg_decode(codec: str, data: bytes, rate: int = 8000) -> np.ndarray:
    ctx = av.CodecContext.create(codec, "r")
    ctx.sample_rate = rate
    ctx.layout = "mono"
    frames = ctx.decode(av.Packet(data))
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames])


def test_g711_tables_match_known_values_and_ffmpeg() -> None:
    every = bytes(range(256))
    assert np.array_equal(ULAW_TO_LINEAR, _ffmpeg_decode("pcm_mulaw", every))
    assert np.array_equal(ALAW_TO_LINEAR, _ffmpeg_decode("pcm_alaw", every))
    # Values from the ITU-T G.711 tables: µ-law 0x00/0x80 are the extremes, 0xFF/0x7F zero;
    # A-law 0xD5/0x55 are the smallest magnitudes (+/-8), 0xAA/0x2A the largest.
    assert [ULAW_TO_LINEAR[b] for b in (0x00, 0x80, 0xFF, 0x7F)] == [-32124, 32124, 0, 0]
    assert [ALAW_TO_LINEAR[b] for b in (0xD5, 0x55, 0xAA, 0x2A)] == [8, -8, 32256, -32256]


def _encode(codec: str, samples: np.ndarray, rate: int, layout: str = "mono") -> list[bytes]:
    enc = av.CodecContext.create(codec, "w")
    enc.sample_rate, enc.layout, enc.format = rate, layout, "s16"
    enc.open()
    size = enc.frame_size or 160
    out: list[bytes] = []
    channels = 2 if layout == "stereo" else 1
    pcm = (samples * 32767).astype(np.int16)
    for i in range(0, len(pcm) - size + 1, size):
        block = np.repeat(pcm[i : i + size], channels).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(block, format="s16", layout=layout)
        frame.sample_rate, frame.pts = rate, i
        out += [bytes(p) for p in enc.encode(frame)]
    out += [bytes(p) for p in enc.encode(None)]
    return out


def _tone(rate: int, seconds: float, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.mark.parametrize("codec,name", [("pcm_mulaw", "PCMU"), ("pcm_alaw", "PCMA")])
def test_g711_decoder_reproduces_an_ffmpeg_encoding(codec: str, name: str) -> None:
    tone = _tone(8000, 0.2)
    payload = b"".join(_encode(codec, tone, 8000))
    got = make_decoder(PayloadFormat(0 if name == "PCMU" else 8, name, 8000)).decode(payload)
    assert got.shape == tone.shape and np.max(np.abs(got - tone)) < 0.02


def test_l16_stereo_is_big_endian_and_mixed_down() -> None:
    left, right = np.array([1000, -2000, 32767], dtype=">i2"), np.array([3000, 2000, -32768], dtype=">i2")
    payload = np.stack([left, right], axis=1).astype(">i2").tobytes()
    got = make_decoder(PayloadFormat(10, "L16", 44100, 2)).decode(payload)
    expected = (left.astype(np.float32) + right.astype(np.float32)) / 2 / 32768
    assert np.allclose(got, expected)
    with pytest.raises(RtpError):
        make_decoder(PayloadFormat(11, "L16", 44100, 1)).decode(b"\x00\x01\x02")


@pytest.mark.parametrize("layout", ["mono", "stereo"])
def test_opus_decodes_what_libopus_encoded(layout: str) -> None:
    tone = _tone(48000, 0.5)
    packets_ = _encode("libopus", tone, 48000, layout)
    dec = make_decoder(PayloadFormat(97, "OPUS", 48000, 2 if layout == "stereo" else 1))
    out = np.concatenate([dec.decode(p) for p in packets_])
    assert len(out) == 960 * len(packets_)  # 20 ms per packet
    spectrum = np.abs(np.fft.rfft(out[4800:]))
    peak_hz = np.argmax(spectrum) * 48000 / len(out[4800:])
    assert abs(peak_hz - 440) < 5
    with pytest.raises(RtpError):
        dec.decode(b"")


# -- jitter buffer and timeline ------------------------------------------------------------------


@st.composite
def sender_runs(draw: st.DrawFn) -> tuple[list[tuple[float, RtpPacket]], set[int], int]:
    """A sender's packets (20 ms at 8 kHz) as received: some dropped, duplicated, delayed < 40 ms."""
    n = draw(st.integers(3, 150))
    seq0, ts0 = draw(st.integers(0, 65535)), draw(st.integers(0, 2**32 - 1))
    rng = random.Random(draw(st.integers(0, 2**32)))
    dropped = {i for i in range(1, n - 1) if rng.random() < 0.1}
    arrivals: list[tuple[float, RtpPacket]] = []
    dups = 0
    for i in range(n):
        if i in dropped:
            continue
        p = RtpPacket(0, (seq0 + i) % 65536, (ts0 + 160 * i) % 2**32, 7, bytes([i % 256]) * 160)
        arrivals.append((i * 0.02 + rng.uniform(0, 0.039), p))
        if rng.random() < 0.05:
            arrivals.append((i * 0.02 + rng.uniform(0, 0.039), p))
            dups += 1
    arrivals.sort(key=lambda a: a[0])
    return arrivals, dropped, dups


@given(sender_runs())
@settings(deadline=None)  # the machine may be busy: hypothesis timing is not what is tested
def test_jitter_buffer_restores_order_and_counts_what_was_done(run: tuple) -> None:
    arrivals, dropped, dups = run
    jb = JitterBuffer(8000)
    out: list[RtpPacket] = []
    for t, p in arrivals:
        out += jb.pop(t)
        out += jb.push(p, t)
    out += jb.pop(arrivals[-1][0] + 1.0)
    seqs = [p.sequence for p in out]
    assert all(seq_delta(b, a) > 0 for a, b in itertools.pairwise(seqs))
    n_sent = len({p.sequence for _, p in arrivals})
    assert len(out) == n_sent
    assert jb.stats.lost == len(dropped)
    assert jb.stats.duplicates == dups
    assert jb.stats.late == 0


@given(sender_runs())
@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
def test_session_output_length_follows_the_sender_timestamps(run: tuple) -> None:
    arrivals, dropped, _ = run
    # L16 at 16 kHz: no resampling, so the output is exact to the sample.
    session = RtpSession(RtpOptions(formats={96: PayloadFormat(96, "L16", 16000)}, quiet_after=5.0))
    total = 0
    for t, p in arrivals:
        payload = np.full(160, (p.payload[0] + 1) / 512, dtype=">i2").tobytes()  # 160 samples
        packet = RtpPacket(96, p.sequence, p.timestamp, p.ssrc, payload)
        total += len(session.on_tick(t)) + len(session.on_datagram(build(packet), "127.0.0.1", t))
    total += len(session.on_tick(arrivals[-1][0] + 1.0))
    first_seq = min(arrivals, key=lambda a: seq_delta(a[1].sequence, arrivals[0][1].sequence))[1].sequence
    n = max(seq_delta(p.sequence, first_seq) for _, p in arrivals) + 1
    assert total == 160 * n  # first to last packet, with every lost packet's time filled
    assert session.stats.concealed_seconds == pytest.approx(len(dropped) * 160 / 16000)
    assert session.state == "receiving"


@given(st.lists(st.one_of(st.binary(max_size=80), packets.map(build)), max_size=60))
@settings(deadline=None)
def test_session_counts_every_bad_datagram_and_never_raises(datagrams: list[bytes]) -> None:
    session = RtpSession(RtpOptions(formats={96: PayloadFormat(96, "L16", 16000, 2)}))
    for i, d in enumerate(datagrams):
        session.on_datagram(d, "127.0.0.1", i * 0.01)
        session.on_tick(i * 0.01 + 0.005)
    st_ = session.stats
    accepted = session.jitter_stats.packets + session.jitter_stats.duplicates + session.jitter_stats.late
    assert st_.datagrams == len(datagrams)
    assert accepted + st_.rtcp + st_.malformed.total() - st_.malformed["payload"] == len(datagrams)


def test_ssrc_change_starts_over_without_silence_and_quiet_sender_is_noticed() -> None:
    session = RtpSession(RtpOptions(quiet_after=0.5))
    out = 0
    for i in range(10):
        out += len(
            session.on_datagram(build(RtpPacket(0, 100 + i, 5000 + 160 * i, 1, b"\xff" * 160)), "a", i * 0.02)
        )
    # A new sender: random sequence and timestamp, no silence between the two.
    for i in range(10):
        p = RtpPacket(0, 40000 + i, 999_999 + 160 * i, 2, b"\xff" * 160)
        out += len(session.on_datagram(build(p), "a", 0.2 + i * 0.02))
    out += len(session.on_tick(0.45))
    assert session.jitter_stats.resets == 1 and session.stats.concealed_seconds == 0
    assert abs(out - 20 * 320) < 64  # 20 packets of 20 ms at 16 kHz, less the resampler's delay
    assert session.state == "receiving"
    out += len(session.on_tick(0.38 + 0.5))
    assert session.state == "quiet"
    more = len(session.on_tick(2.38))
    assert more == pytest.approx(1.5 * 16000, abs=64)  # silence keeps the clock with the wall
    session.on_datagram(build(RtpPacket(0, 40010, 999_999 + 1600, 2, b"\xff" * 160)), "a", 2.4)
    assert session.state == "receiving"


def test_timeline_conceals_gaps_cuts_overlaps_and_restarts_on_jumps() -> None:
    tl = Timeline(8000, max_gap=1.0)
    one = np.ones(160, dtype=np.float32)
    assert sum(len(c) for c in tl.place(1000, one)) == 160
    parts = tl.place(1000 + 480, one)  # two packets missing
    assert [len(c) for c in parts] == [320, 160] and not parts[0].any()
    assert sum(len(c) for c in tl.place(1000 + 480 + 100, one)) == 100  # 60 samples overlap
    assert sum(len(c) for c in tl.place(1000 + 10 * 8000, one)) == 160  # 10 s jump: no silence
    assert tl.stats.discontinuities == 1 and tl.stats.concealed == 320 and tl.stats.trimmed == 60


def test_restarted_sequence_with_same_ssrc_resets_after_confirmation() -> None:
    jb = JitterBuffer(8000)
    got = [p.sequence for i in range(5) for p in jb.push(RtpPacket(0, 10 + i, 160 * i, 9, b""), i * 0.02)]
    got += [p.sequence for p in jb.push(RtpPacket(0, 30000, 800, 9, b""), 0.1)]
    got += [p.sequence for p in jb.push(RtpPacket(0, 30001, 960, 9, b""), 0.12)]
    got += [p.sequence for p in jb.pop(1.0)]
    assert got == [10, 11, 12, 13, 14, 30001] and jb.stats.resets == 1


def test_allow_list_rejects_other_senders() -> None:
    session = RtpSession(RtpOptions(allow=frozenset({"10.0.0.1"})))
    pkt = build(RtpPacket(0, 1, 0, 1, b"\xff" * 160))
    assert len(session.on_datagram(pkt, "10.0.0.2", 0.0)) == 0
    session.on_datagram(pkt, "10.0.0.1", 0.0)
    assert session.stats.rejected == 1 and session.stats.datagrams == 1


# -- SDP -----------------------------------------------------------------------------------------

FFMPEG_OPUS = """v=0
o=- 0 0 IN IP4 127.0.0.1
s=No Name
c=IN IP4 127.0.0.1
t=0 0
a=tool:libavformat LIBAVFORMAT_VERSION
m=audio 45000 RTP/AVP 97
b=AS:64
a=rtpmap:97 opus/48000/2
"""

GSTREAMER_L16 = """v=0
o=- 1188340656180883 1 IN IP4 192.0.2.1
s=Session streamed by GStreamer
i=server.sh
t=0 0
a=tool:GStreamer
a=type:broadcast
m=audio 5000 RTP/AVP 96
c=IN IP4 239.1.2.3/15
a=rtpmap:96 L16/44100/2
a=fmtp:96 channel-order=stereo
"""


def test_sdp_from_ffmpeg_and_gstreamer() -> None:
    s = parse_sdp(FFMPEG_OPUS)
    assert (s.address, s.port, s.formats) == ("127.0.0.1", 45000, (PayloadFormat(97, "OPUS", 48000, 2),))
    g = parse_sdp(GSTREAMER_L16.replace("\n", "\r\n"))
    assert (g.address, g.port, g.formats) == ("239.1.2.3", 5000, (PayloadFormat(96, "L16", 44100, 2),))
    assert g.fmtp == {96: "channel-order=stereo"}
    static = parse_sdp(
        "v=0\nc=IN IP4 127.0.0.1\nm=audio 5004 RTP/AVP 0 8 101\na=rtpmap:101 telephone-event/8000\n"
    )
    assert [f.codec for f in static.formats] == ["PCMU", "PCMA"] and static.unsupported


@pytest.mark.parametrize(
    "text,needle",
    [
        ("v=0\nc=IN IP4 1.2.3.4\n", "m=audio"),
        ("v=0\nm=audio 5004 RTP/AVP 0\n", "c=IN IP4"),
        ("v=0\nc=IN IP4 1.2.3.4\nm=audio x RTP/AVP 0\n", "numbers"),
        ("v=0\nc=IN IP4 1.2.3.4\nm=audio 5004 RTP/AVP 96\na=rtpmap:96 speex/16000\n", "(?i)speex"),
    ],
)
def test_sdp_errors_say_what_is_missing(text: str, needle: str) -> None:
    with pytest.raises(SdpError, match=needle):
        parse_sdp(text)


# -- source specs and the CLI ----------------------------------------------------------------------


def test_rtp_specs_parse_into_formats_and_options() -> None:
    from streamer.audio.rtpsource import RtpSpecError, parse_rtp_spec

    s = parse_rtp_spec(
        "rtp://0.0.0.0:5004?codec=L16&rate=44100&channels=2&pt=96&jitter=0.1&allow=10.0.0.1,::1"
    )
    assert (s.host, s.port) == ("0.0.0.0", 5004)
    assert s.options.formats == {96: PayloadFormat(96, "L16", 44100, 2)}
    assert s.options.jitter == 0.1 and s.options.allow == frozenset({"10.0.0.1", "::1"})
    any_dynamic = parse_rtp_spec("rtp://[::1]:5006?codec=opus").options
    assert any_dynamic.dynamic == ("OPUS", 48000, 2) and not any_dynamic.formats
    assert parse_rtp_spec("sdp:/tmp/room.sdp?quiet=3").options.quiet_after == 3.0
    for bad, needle in [
        ("rtp://0.0.0.0", "HOST:PORT"),
        ("rtp://0.0.0.0:5004?codec=speex", "codec"),
        ("rtp://0.0.0.0:5004?rate=8000", "need codec"),
        ("rtp://0.0.0.0:5004?jitter=9", "outside"),
        ("rtp://0.0.0.0:5004?allow=bob", "not an IP"),
        ("rtp://0.0.0.0:5004?volume=11", "unknown option"),
        ("sdp:x.sdp?codec=pcmu", "SDP file gives the format"),
    ]:
        with pytest.raises(RtpSpecError, match=needle):
            parse_rtp_spec(bad)


def test_cli_bad_rtp_spec_exits_2_and_a_port_in_use_exits_1_before_loading_a_model() -> None:
    import socket

    from .e2e_util import streamer

    res = streamer("run", "--source", "rtp://127.0.0.1:5004?codec=speex", "--no-server", timeout=60)
    assert res.returncode == 2 and "source.spec" in res.stderr and "codec" in res.stderr
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        res = streamer("run", "--source", f"rtp://127.0.0.1:{port}", "--no-server", timeout=60)
    assert res.returncode == 1 and "cannot listen for RTP" in res.stderr and "loaded" not in res.stderr


def test_multicast_group_is_joined_on_the_given_interface() -> None:
    """Loopback only: the group is joined on 127.0.0.1 and the sender sends out of it (TTL 1)."""
    import socket
    import threading

    from streamer.audio.ring import RingBuffer
    from streamer.audio.rtpsource import RtpSource, parse_rtp_spec

    from .rtp_util import free_udp_port

    src = RtpSource(parse_rtp_spec(f"rtp://239.255.42.42:{free_udp_port()}?iface=127.0.0.1&quiet=5"))
    ring, stop = RingBuffer(16000 * 5), threading.Event()
    thread = threading.Thread(target=src.run, args=(ring, stop))
    thread.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
            out.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
            out.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
            for i in range(25):
                out.sendto(build(RtpPacket(0, i, 160 * i, 9, b"\xff" * 160)), ("239.255.42.42", src.port))
        # 25 packets of 20 ms come out as 0.5 s at 16 kHz (less the resampler's few samples).
        got = 0
        while got < 25 * 320 - 64:
            _, more = ring.read(timeout=5)
            assert len(more), f"only {got} samples arrived"
            got += len(more)
    finally:
        stop.set()
        thread.join(5)
    assert src.status()["packets"] == 25 and src.status()["lost"] == 0
