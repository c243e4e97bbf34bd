"""200 real WebSocket clients follow one stream while one more never reads.

Correctness only (timings are reported by `streamer bench` / streamer_bench.fanout, not asserted): every
reading client gets every final in order, bus.publish never waits for a client, and the stuck
client is closed with 4008.
"""

from __future__ import annotations

import pytest

from streamer_bench.fanout import run_fanout_bench


@pytest.mark.slow  # 200 real WebSocket clients
def test_200_clients_one_stuck() -> None:
    r = run_fanout_bench(
        clients=200,
        finals=120,
        partials=240,
        rate=40.0,
        stuck=1,
        text_bytes=3000,
        client_queue=8,
        timeout=240,
    )
    assert r["clients_with_every_final"] == 200, str(r)
    # Publishing only hands each event to the loop: it never waits for a socket. The bound is
    # loose because two busy cores and the GIL can delay any thread by a scheduler slice.
    assert r["publish_max_ms"] < 200, r
    assert r["stuck_close"] and r["stuck_close"][0][0] == 4008, r
    assert r["stuck_close"][0][1].startswith("too slow: reconnect with since="), r
    assert r["slow_clients_closed"] >= 1, r
