"""Hostile senders against the network sources (issue 18): ingest reconnect churn, RTP floods the
kernel drops, random datagrams and many SSRCs. No model, no server: the sources and a ring."""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from collections.abc import Callable

import numpy as np

from streamer.audio.ingest import IngestSource
from streamer.audio.ring import RingBuffer
from streamer.audio.rtp import RtpPacket, build
from streamer.audio.rtpsource import RtpSource, parse_rtp_spec

from .raw_http import metric
from .rtp_util import free_udp_port


def _until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait for a condition another thread makes true (a count, a sample in the ring)."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


# --- 8. ingest churn -----------------------------------------------------------------------------


def test_ingest_reconnect_churn_is_counted_as_a_gap_never_as_a_burst_of_silence() -> None:
    src = IngestSource(stream="churn")
    ring, stop = RingBuffer(16000 * 30), threading.Event()
    thread = threading.Thread(target=src.run, args=(ring, stop), daemon=True)
    gap_before = metric("streamer_ingest_gap_seconds_total", stream="churn")
    thread.start()
    marker = (np.full(320, 1234, dtype="<i2")).tobytes()
    t0 = time.monotonic()
    try:
        # The probe's churn: 200 clients, each sending 20 ms of audio and leaving at once.
        for _ in range(200):
            src.connect("127.0.0.1")
            src.push(b"\x10\x00" * 320)
            src.disconnect()
            _until(lambda: src._queue.qsize() < 64, 10, "the capture thread")  # no queue overflow
        src.connect("127.0.0.1")
        src.push(marker)
        got: list[np.ndarray] = []
        # Read the ring as the stream would, until the last client's audio is in it.
        while not got or not np.any(np.isclose(got[-1], 1234 / 32768, atol=1e-4)):
            _, block = ring.read(timeout=10)
            assert len(block), "the last client's audio never reached the ring"
            got.append(block)
        elapsed = time.monotonic() - t0
    finally:
        stop.set()
        thread.join(5)
    total = sum(len(b) for b in got) / 16000
    # Before: 200 x 1.5 s = 300 s of silence in a moment, which the stream reported as audio it
    # dropped. Now silence only stands for time that passed, and is counted as a gap.
    assert src.gap_seconds <= elapsed + 0.1, (src.gap_seconds, elapsed)
    assert total <= 200 * 0.02 + 0.02 + elapsed + 0.1
    assert ring.dropped == 0 and src.dropped_frames == 0
    gap = metric("streamer_ingest_gap_seconds_total", stream="churn") - gap_before
    assert abs(gap - src.gap_seconds) < 1e-6
    assert src.status()["gap_seconds"] == round(src.gap_seconds, 3)


def test_ingest_gap_after_a_speaker_is_the_tail_at_wall_clock_pace() -> None:
    src = IngestSource(tail=0.3, stream="tail")
    ring, stop = RingBuffer(16000 * 30), threading.Event()
    thread = threading.Thread(target=src.run, args=(ring, stop), daemon=True)
    thread.start()
    try:
        src.connect("127.0.0.1")
        src.push(b"\x10\x00" * 1600)
        t0 = time.monotonic()
        src.disconnect()
        # The whole tail arrives (the open utterance can end), and not faster than wall time.
        _until(lambda: ring.written >= 1600 + int(0.3 * 16000), 10, "the tail's silence")
        assert time.monotonic() - t0 >= 0.3 - 0.06
        assert abs(src.gap_seconds - 0.3) < 1e-3
    finally:
        stop.set()
        thread.join(5)


# --- 9. RTP: datagrams the kernel drops --------------------------------------------------------


def _proc_drops(sock: socket.socket) -> int | None:
    """The socket's `drops` column in /proc/net/udp (found by inode), None if not readable."""
    inode = os.fstat(sock.fileno()).st_ino
    try:
        lines = open("/proc/net/udp").read().splitlines()[1:]  # noqa: SIM115
    except OSError:
        return None
    for line in lines:
        cols = line.split()
        if int(cols[9]) == inode:
            return int(cols[12])
    return None


def test_rtp_kernel_receive_drops_are_counted_in_metrics_and_status() -> None:
    port = free_udp_port()
    src = RtpSource(parse_rtp_spec(f"rtp://127.0.0.1:{port}?codec=pcmu"), stream="flood")
    assert src._sock is not None
    # A small receive buffer, so a small flood is enough to make the kernel drop.
    src._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    before = metric("streamer_rtp_kernel_drops_total", stream="flood")
    assert src.status()["kernel_drops"] == 0
    ring, stop = RingBuffer(16000 * 60), threading.Event()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
        # The flood arrives while nobody reads the socket (the receiver fell behind).
        for i in range(500):
            out.sendto(build(RtpPacket(0, i, 160 * i, 7, b"\xff" * 160)), ("127.0.0.1", port))
        kernel = _proc_drops(src._sock)
        thread = threading.Thread(target=src.run, args=(ring, stop), daemon=True)
        thread.start()
        try:
            # Datagrams queued after the drops carry the count: send until one has told it.
            i = 500
            while not src.status()["kernel_drops"]:
                assert i < 1000, "no datagram ever carried the drop count"
                seen = src.session.stats.datagrams
                out.sendto(build(RtpPacket(0, i, 160 * i, 7, b"\xff" * 160)), ("127.0.0.1", port))
                i += 1
                _until(lambda n=seen: src.session.stats.datagrams > n, 5, "the datagram to be read")  # type: ignore[misc]
            drops = src.status()["kernel_drops"]
            assert isinstance(drops, int) and drops > 0
            if kernel is not None:  # the count the kernel shows in /proc/net/udp, then and now
                assert kernel <= drops <= (_proc_drops(src._sock) or 0)
            _until(
                lambda: metric("streamer_rtp_kernel_drops_total", stream="flood") >= before + drops,
                5,
                "metric",
            )
        finally:
            stop.set()
            thread.join(5)
            src.close()


# --- the probe's RTP groups: random datagrams and many SSRCs ------------------------------------


def test_rtp_random_datagrams_and_many_ssrcs_never_stop_the_source() -> None:
    port = free_udp_port()
    src = RtpSource(parse_rtp_spec(f"rtp://127.0.0.1:{port}?codec=pcmu&quiet=5"), stream="garbage")
    ring, stop = RingBuffer(16000 * 60), threading.Event()
    thread = threading.Thread(target=src.run, args=(ring, stop), daemon=True)
    thread.start()
    rng = random.Random(18)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
            for _ in range(500):  # random bytes, and random headers with version 2
                data = rng.randbytes(rng.randrange(0, 300))
                if rng.random() < 0.5 and data:
                    data = bytes([0x80 | (data[0] & 0x3F)]) + data[1:]
                out.sendto(data, ("127.0.0.1", port))
            for ssrc in range(200):  # 200 senders taking turns
                out.sendto(build(RtpPacket(0, ssrc, 0, ssrc, b"\xff" * 160)), ("127.0.0.1", port))
            # Then one steady sender: its audio comes through.
            for i in range(25):
                out.sendto(build(RtpPacket(0, i, 160 * i, 999, b"\xff" * 160)), ("127.0.0.1", port))
        _until(lambda: src.session.stats.datagrams >= 725, 10, "every datagram to be read")
        assert thread.is_alive()
        _until(lambda: ring.written > 0, 10, "audio from the steady sender")
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()
