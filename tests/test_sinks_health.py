"""The /health verdict (pure)."""

from __future__ import annotations

from typing import Any

from streamer.sinks.health import evaluate, stream_problem


def h(state: str, age: float | None, dropped: float = 0.0) -> dict[str, Any]:
    return {
        "state": state,
        "source": "mic",
        "audio_seconds": 5.0,
        "dropped_seconds": dropped,
        "speech_seconds": 1.0,
        "last_audio_age": age,
        "finals": 2,
    }


def test_live_stream_with_recent_audio_is_healthy() -> None:
    status, body = evaluate({"main": h("running", 0.1)}, stall_timeout=10, uptime=100)
    assert status == 200 and body["status"] == "ok" and body["streams"]["main"]["healthy"]
    assert body["last_audio_age"] == 0.1


def test_stalled_live_stream_is_503_with_reason() -> None:
    status, body = evaluate(
        {"main": h("running", 12.0, 0.5), "b": h("running", 1.0)},
        stall_timeout=10,
        uptime=100,
        extra={"clients": 3},
    )
    assert status == 503 and body["status"] == "unhealthy"
    assert body["problems"] == {"main": "no audio for 12.0 s"}
    assert body["dropped_audio_seconds"] == 0.5 and body["clients"] == 3


def test_retrying_source_counts_as_should_be_live() -> None:
    assert stream_problem(h("retrying", 30.0), stall_timeout=10, uptime=100) == "no audio for 30.0 s"


def test_no_audio_yet_is_fine_during_startup_then_not() -> None:
    assert stream_problem(h("starting", None), stall_timeout=10, uptime=3) is None
    assert stream_problem(h("starting", None), stall_timeout=10, uptime=11) == "no audio received in 11.0 s"


def test_finished_stream_is_fine_failed_one_is_not() -> None:
    assert stream_problem(h("stopped", 500.0), stall_timeout=10, uptime=600) is None
    assert stream_problem(h("error", 1.0), stall_timeout=10, uptime=600) == "stream failed"


def test_fast_file_source_is_not_expected_to_be_live() -> None:
    fast = {**h("running", 60.0), "live": False}
    assert stream_problem(fast, stall_timeout=10, uptime=100) is None
    assert stream_problem({**fast, "live": True}, stall_timeout=10, uptime=100) == "no audio for 60.0 s"
